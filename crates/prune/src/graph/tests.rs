//! Tests of graph pruning on hand-built graphs.

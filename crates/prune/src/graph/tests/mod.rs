//! Tests of graph pruning: hand-built graphs for each kind of channel tie,
//! and planted structure in the model zoo's networks.

mod compensation;
mod hand_built;
mod models;
mod support;

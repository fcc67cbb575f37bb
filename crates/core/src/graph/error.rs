//! [`GraphError`]: what can be wrong with a whole-network graph. Every variant
//! names the node (or value) at fault.

use crate::error::Error;

/// A malformed graph or a graph operation that cannot be carried out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Two values (graph inputs or nodes) share a name.
    #[error("two values of the graph are named `{name}`")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A node reads a value that no graph input or node produces.
    #[error("node `{node}` reads `{input}`, which no graph input or node produces")]
    DanglingInput {
        /// The reading node.
        node: String,
        /// The missing value.
        input: String,
    },
    /// The nodes do not form a DAG.
    #[error("node `{node}` lies on a cycle: {}", cycle.join(" → "))]
    Cycle {
        /// The first node found on the cycle.
        node: String,
        /// The cycle, each node reading the one before it.
        cycle: Vec<String>,
    },
    /// A node has the wrong number of inputs for its op.
    #[error("node `{node}` ({kind}) takes {expected} inputs, got {got}")]
    Arity {
        /// The node.
        node: String,
        /// Its op kind.
        kind: &'static str,
        /// How many inputs the op takes.
        expected: &'static str,
        /// How many it was given.
        got: usize,
    },
    /// A node's op cannot take the shapes of its inputs (or its output shape
    /// overflows).
    #[error("node `{node}` ({kind}) cannot take its inputs: {cause}")]
    Shape {
        /// The node.
        node: String,
        /// Its op kind.
        kind: &'static str,
        /// The op's own error.
        #[source]
        cause: Box<Error>,
    },
    /// A graph output names no value of the graph.
    #[error("graph output `{name}` is not a value of the graph")]
    UnknownOutput {
        /// The name given as output.
        name: String,
    },
    /// A graph without outputs computes nothing.
    #[error("the graph has no outputs")]
    NoOutputs,
    /// A node's op failed while running.
    #[error("node `{node}` ({kind}) failed: {cause}")]
    Run {
        /// The node.
        node: String,
        /// Its op kind.
        kind: &'static str,
        /// The op's own error.
        #[source]
        cause: Box<Error>,
    },
    /// The arrays given to run a graph do not match its inputs.
    #[error(
        "graph input `{input}`: expected a batch of {expected}, got an array of shape {got:?}"
    )]
    InputShape {
        /// The graph input.
        input: String,
        /// Its per-sample shape.
        expected: crate::shape::ActShape,
        /// The shape given (NCHW), or empty when the array is missing.
        got: Vec<usize>,
    },
    /// The graph was given the wrong number of input arrays.
    #[error("the graph takes {expected} inputs, got {got}")]
    InputCount {
        /// Graph inputs.
        expected: usize,
        /// Arrays given.
        got: usize,
    },
    /// A graph operation named a node the graph does not have.
    #[error("the graph has no node named `{name}`")]
    UnknownNode {
        /// The name looked up.
        name: String,
    },
    /// A node cannot be replaced or transformed as asked.
    #[error("node `{node}` cannot be rewritten: {cause}")]
    Rewrite {
        /// The node.
        node: String,
        /// Why.
        #[source]
        cause: Box<Error>,
    },
    /// A named parameter the graph expects was not given.
    #[error("parameter `{name}` is missing")]
    MissingParameter {
        /// The `state_dict` name.
        name: String,
    },
    /// A parameter was given under a name the graph does not have.
    #[error("the graph has no parameter named `{name}`")]
    UnexpectedParameter {
        /// The name given.
        name: String,
    },
}

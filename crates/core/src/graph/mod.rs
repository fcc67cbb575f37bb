//! [`Graph`]: a whole network as a directed acyclic graph of named nodes.
//!
//! A user's trained CNN is a DAG, not a chain: residual additions, channel
//! concatenations and squeeze–excitation gates join branches. A graph holds
//! named inputs with static per-sample shapes, nodes that each compute one
//! [`NodeOp`] (any op of the IR, a compressed [`crate::Block`], or a
//! multi-input op) from earlier values, and the values it returns. Every value
//! has a static per-sample shape inferred at construction; construction rejects
//! cycles, dangling inputs, duplicate names and shape conflicts with a
//! [`GraphError`] naming the node.
//!
//! Node names follow PyTorch's module names (`layer1.0.conv1`), so a node's
//! parameters are `layer1.0.conv1.weight`, `bn1.running_mean`, … as in a
//! `state_dict`.
//!
//! ```
//! use hasten_core::graph::GraphBuilder;
//! use hasten_core::{ActShape, ConvLayer, ConvSpec, Relu, SeededRng};
//!
//! let mut rng = SeededRng::new(0);
//! let mut b = GraphBuilder::new();
//! let x = b.input("input", ActShape::new(8, 16, 16));
//! let conv = ConvLayer::from_array(rng.normal_array((8, 8, 3, 3), 0.1), ConvSpec::new().with_padding(1))?;
//! let y = b.op("conv", conv, x);
//! let y = b.add("residual", &[y, x]);
//! let y = b.op("relu", Relu, y);
//! b.output(y);
//! let graph = b.build()?;
//! assert_eq!(graph.output_shapes(), vec![ActShape::new(8, 16, 16)]);
//!
//! let input = rng.normal_array((2, 8, 16, 16), 1.0);
//! let out = graph.reference_forward(&[&input])?;
//! assert_eq!(out[0].shape(), &[2, 8, 16, 16]);
//! # Ok::<(), hasten_core::Error>(())
//! ```

mod builder;
mod error;
mod filter;
mod forward;
pub(crate) mod load;
mod merge;
mod node_op;
mod parameters;
mod subgraph;
mod summary;
mod surgery;
mod topology;

pub use builder::{GraphBuilder, Value};
pub use error::GraphError;
pub use filter::NodeFilter;
pub use forward::Trace;
pub use node_op::NodeOp;
pub use parameters::{inner_ops, op_parameters, prefix, tt_core_name};
pub use summary::{Summary, SummaryRow};
pub use surgery::{GraphReport, NodeReport};
pub use topology::NodeDef;

use crate::cost::Cost;
use crate::error::Result;
use crate::shape::ActShape;

/// A value of a graph: one of its inputs or the output of one of its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueId {
    /// The graph input at this index.
    Input(usize),
    /// The output of the node at this index (in topological order).
    Node(usize),
}

/// A named graph input with its per-sample shape.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphInput {
    name: String,
    shape: ActShape,
}

impl GraphInput {
    /// The input's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its per-sample shape.
    pub fn shape(&self) -> ActShape {
        self.shape
    }
}

/// One node: a name, an op and the values it reads. Its output value carries
/// the node's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    name: String,
    op: NodeOp,
    inputs: Vec<ValueId>,
    input_shapes: Vec<ActShape>,
    output_shape: ActShape,
}

impl Node {
    /// The node's name (and its output value's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it computes.
    pub fn op(&self) -> &NodeOp {
        &self.op
    }

    /// Short name of its op kind.
    pub fn kind(&self) -> &'static str {
        self.op.kind()
    }

    /// The values it reads, in order.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// The per-sample shapes of those values.
    pub fn input_shapes(&self) -> &[ActShape] {
        &self.input_shapes
    }

    /// The per-sample shape of its output.
    pub fn output_shape(&self) -> ActShape {
        self.output_shape
    }

    /// MACs, parameters and bytes for one sample.
    pub fn cost(&self) -> Result<Cost> {
        self.op.cost(&self.input_shapes)
    }
}

/// A validated DAG of named nodes in topological order, with static
/// per-sample shapes; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    inputs: Vec<GraphInput>,
    nodes: Vec<Node>,
    outputs: Vec<ValueId>,
}

impl Graph {
    /// The graph inputs, in order.
    pub fn inputs(&self) -> &[GraphInput] {
        &self.inputs
    }

    /// The nodes, in topological order (every node after the nodes it reads).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The values the graph returns, in order.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The value named `name` (a graph input or a node).
    pub fn value(&self, name: &str) -> Option<ValueId> {
        self.inputs
            .iter()
            .position(|i| i.name == name)
            .map(ValueId::Input)
            .or_else(|| self.node_index(name).map(ValueId::Node))
    }

    /// The name of a value.
    pub fn value_name(&self, id: ValueId) -> &str {
        match id {
            ValueId::Input(i) => &self.inputs[i].name,
            ValueId::Node(i) => &self.nodes[i].name,
        }
    }

    /// The per-sample shape of a value.
    pub fn value_shape(&self, id: ValueId) -> ActShape {
        match id {
            ValueId::Input(i) => self.inputs[i].shape,
            ValueId::Node(i) => self.nodes[i].output_shape,
        }
    }

    /// The per-sample shapes of the graph outputs, in order.
    pub fn output_shapes(&self) -> Vec<ActShape> {
        self.outputs.iter().map(|&v| self.value_shape(v)).collect()
    }

    /// The indices of the nodes that read `id`, in topological order (a node
    /// reading it twice is listed once).
    pub fn consumers(&self, id: ValueId) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].inputs.contains(&id))
            .collect()
    }

    /// Whether `id` is one of the graph outputs.
    pub fn is_output(&self, id: ValueId) -> bool {
        self.outputs.contains(&id)
    }

    /// The total cost of one sample through every node.
    pub fn cost(&self) -> Result<Cost> {
        self.nodes
            .iter()
            .try_fold(Cost::default(), |acc, n| acc.checked_add(n.cost()?))
    }
}

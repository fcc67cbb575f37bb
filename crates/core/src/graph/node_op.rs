//! [`NodeOp`]: what a node of a [`super::Graph`] computes — any single-input
//! op of the IR, a compressed [`Block`] spliced in, or one of the multi-input
//! ops that give a network its graph structure (residual [`NodeOp::Add`],
//! channel [`NodeOp::Concat`], squeeze–excitation [`NodeOp::Mul`]).

use ndarray::Array4;

use super::merge;
use crate::block::Block;
use crate::cost::Cost;
use crate::error::Result;
use crate::op::{Op, Operator};
use crate::shape::ActShape;

/// The operation of one graph node.
// Graphs hold hundreds of nodes, not millions: boxing the op would cost every
// match a dereference for no measurable saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeOp {
    /// A single-input op of the IR (convolution, pooling, activation, …).
    Op(Op),
    /// A chain of ops replacing one layer (the output of a `Transform`).
    Block(Block),
    /// Element-wise sum of two or more inputs of equal shape.
    Add,
    /// Concatenation of one or more inputs of equal spatial size along channels.
    Concat,
    /// Element-wise product of `x` and `s`, where `s` has the shape of `x` or is
    /// `C×1×1` and is broadcast over the plane (squeeze–excitation gating).
    Mul,
}

impl From<Op> for NodeOp {
    fn from(op: Op) -> Self {
        NodeOp::Op(op)
    }
}

impl From<Block> for NodeOp {
    fn from(block: Block) -> Self {
        NodeOp::Block(block)
    }
}

impl NodeOp {
    /// Short name of the op kind (the inner op's kind for [`NodeOp::Op`]).
    pub fn kind(&self) -> &'static str {
        match self {
            NodeOp::Op(op) => op.kind(),
            NodeOp::Block(_) => "block",
            NodeOp::Add => "add",
            NodeOp::Concat => "concat",
            NodeOp::Mul => "mul",
        }
    }

    /// The inner op, for a node holding one.
    pub fn as_op(&self) -> Option<&Op> {
        match self {
            NodeOp::Op(op) => Some(op),
            _ => None,
        }
    }

    /// Whether `count` inputs suit this op; `Err` carries the accepted count.
    pub(crate) fn check_arity(&self, count: usize) -> std::result::Result<(), &'static str> {
        let (ok, expected) = match self {
            NodeOp::Op(_) | NodeOp::Block(_) => (count == 1, "exactly 1"),
            NodeOp::Add => (count >= 2, "2 or more"),
            NodeOp::Concat => (count >= 1, "1 or more"),
            NodeOp::Mul => (count == 2, "exactly 2"),
        };
        if ok {
            Ok(())
        } else {
            Err(expected)
        }
    }

    /// Output shape for inputs of per-sample shapes `inputs` (arity already
    /// checked).
    pub fn output_shape(&self, inputs: &[ActShape]) -> Result<ActShape> {
        match self {
            NodeOp::Op(op) => op.output_shape(inputs[0]),
            NodeOp::Block(block) => block.output_shape(inputs[0]),
            NodeOp::Add => merge::add_shape(inputs),
            NodeOp::Concat => merge::concat_shape(inputs),
            NodeOp::Mul => merge::mul_shape(inputs),
        }
    }

    /// MACs, parameters and bytes for one sample.
    pub fn cost(&self, inputs: &[ActShape]) -> Result<Cost> {
        match self {
            NodeOp::Op(op) => op.cost(inputs[0]),
            NodeOp::Block(block) => block.cost(inputs[0]),
            NodeOp::Add | NodeOp::Concat | NodeOp::Mul => {
                let out = self.output_shape(inputs)?;
                merge::cost(self, inputs, out)
            }
        }
    }

    /// The reference forward on NCHW batches (arity and shapes already
    /// checked by the graph).
    pub fn reference_forward(&self, inputs: &[&Array4<f32>]) -> Result<Array4<f32>> {
        match self {
            NodeOp::Op(op) => op.reference_forward(inputs[0]),
            NodeOp::Block(block) => block.reference_forward(inputs[0]),
            NodeOp::Add => merge::add_forward(inputs),
            NodeOp::Concat => merge::concat_forward(inputs),
            NodeOp::Mul => merge::mul_forward(inputs),
        }
    }
}

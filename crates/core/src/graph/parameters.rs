//! The named parameters of a graph, under PyTorch's `state_dict` names: a
//! node named like its PyTorch module holds `<node>.weight` and
//! `<node>.bias` (convolution, linear), or `<node>.weight`, `<node>.bias`,
//! `<node>.running_mean` and `<node>.running_var` (batch norm: γ, β, μ, σ²).

use ndarray::ArrayD;

use super::{Graph, NodeOp};
use crate::op::Op;

impl Graph {
    /// Every dense parameter tensor of the graph with its `state_dict` name,
    /// in topological order (compressed blocks hold packed formats and are
    /// not listed).
    pub fn parameters(&self) -> Vec<(String, ArrayD<f32>)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            if let NodeOp::Op(op) = &node.op {
                for (suffix, v) in op_parameters(op) {
                    out.push((format!("{}.{suffix}", node.name), v));
                }
            }
        }
        out
    }

    /// The number of scalar parameters [`Graph::parameters`] lists.
    pub fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|(_, a)| a.len()).sum()
    }
}

/// The dense parameters of one op by their `state_dict` suffix: `weight`
/// and `bias` (convolution, linear), or `weight`, `bias`, `running_mean`,
/// `running_var` (batch norm: γ, β, μ, σ²); empty for other ops.
pub fn op_parameters(op: &Op) -> Vec<(&'static str, ArrayD<f32>)> {
    let mut out = Vec::new();
    match op {
        Op::Conv(c) => {
            out.push(("weight", c.weight().array().clone().into_dyn()));
            if let Some(b) = c.bias() {
                out.push(("bias", b.clone().into_dyn()));
            }
        }
        Op::Linear(l) => {
            out.push(("weight", l.weight().clone().into_dyn()));
            if let Some(b) = l.bias() {
                out.push(("bias", b.clone().into_dyn()));
            }
        }
        Op::BatchNorm(bn) => {
            for (suffix, v) in [
                ("weight", bn.gamma()),
                ("bias", bn.beta()),
                ("running_mean", bn.mean()),
                ("running_var", bn.var()),
            ] {
                out.push((suffix, v.clone().into_dyn()));
            }
        }
        _ => {}
    }
    out
}

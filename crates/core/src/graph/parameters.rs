//! The named parameters of a graph, under PyTorch's `state_dict` names: a
//! node named like its PyTorch module holds `<node>.weight` and
//! `<node>.bias` (convolution, linear), or `<node>.weight`, `<node>.bias`,
//! `<node>.running_mean` and `<node>.running_var` (batch norm: γ, β, μ, σ²).
//! Inside a [`Block`](crate::Block) (a decomposed or otherwise compressed
//! layer, survey sections 2–3) op `i` of node `<node>` is named
//! `<node>.<i>`, so its dense parameters are `<node>.<i>.weight`, … — the
//! names the training tape and the ONNX export use.

use ndarray::ArrayD;

use super::{Graph, NodeOp};
use crate::op::Op;

/// The `state_dict` prefix of the parameters of op `index` of node `node`:
/// the node name for a single-op node, `node.index` inside a block.
pub fn prefix(node: &str, op: &NodeOp, index: usize) -> String {
    match op {
        NodeOp::Block(_) => format!("{node}.{index}"),
        _ => node.to_string(),
    }
}

/// The ops of a node that can hold parameters: the op itself, a block's
/// ops, none for merge nodes.
pub fn inner_ops(op: &NodeOp) -> &[Op] {
    match op {
        NodeOp::Op(op) => std::slice::from_ref(op),
        NodeOp::Block(b) => b.ops(),
        _ => &[],
    }
}

impl Graph {
    /// Every dense parameter tensor of the graph with its `state_dict` name,
    /// in topological order, those of the dense ops inside blocks included
    /// (`<node>.<i>.weight`; see the module documentation). Packed formats
    /// (int8, codes, sparse, …) hold no dense tensor and are not listed.
    pub fn parameters(&self) -> Vec<(String, ArrayD<f32>)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            for (i, op) in inner_ops(&node.op).iter().enumerate() {
                let pre = prefix(&node.name, &node.op, i);
                for (suffix, v) in op_parameters(op) {
                    out.push((format!("{pre}.{suffix}"), v));
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

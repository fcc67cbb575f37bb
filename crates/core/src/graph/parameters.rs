//! The named parameters of a graph, under PyTorch's `state_dict` names: a
//! node named like its PyTorch module holds `<node>.weight` and
//! `<node>.bias` (convolution, linear), or `<node>.weight`, `<node>.bias`,
//! `<node>.running_mean` and `<node>.running_var` (batch norm: γ, β, μ, σ²).
//! Inside a [`Block`](crate::Block) (a decomposed or otherwise compressed
//! layer, survey sections 2–3) op `i` of node `<node>` is named
//! `<node>.<i>`, so its dense parameters are `<node>.<i>.weight`, … — the
//! names the training tape and the ONNX export use.
//!
//! The compressed ops list the values they store, which fine-tuning trains
//! while their structure (sparsity pattern, codes, kept taps) stays fixed:
//! `values` (the non-zeros of a sparse convolution or linear layer, in CSR
//! order), `centroids` (codebook `[G, k]`, product quantization
//! `[s, k, d]`), `alpha` (binary), `scales` (ternary, fixed point) and
//! `offsets` (fixed point), `weight` (group-wise kept taps `[T, kept]`,
//! perforated convolution `[T, C, kh, kw]`), `dictionary` and `coeffs`
//! (LCNN), `core.0`, `core.1`, … (TT-linear), and `bias`. Int8
//! convolutions, with integer weights and bias, list none, but for the
//! activation fake quantizer with a learned step size
//! (`Int8Conv::learned_quantize_dequantize`), which lists its `scale` `[1]`.

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
    /// (`<node>.<i>.weight`), and the stored values of the compressed ops
    /// (see the module documentation).
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

/// The `state_dict` suffix of TT-linear core `k`: `core.k`.
pub fn tt_core_name(k: usize) -> String {
    format!("core.{k}")
}

/// The parameters of one op by their `state_dict` suffix: `weight` and
/// `bias` (convolution, linear), `weight`, `bias`, `running_mean`,
/// `running_var` (batch norm: γ, β, μ, σ²), the stored values of the
/// compressed ops (see the module documentation); empty for other ops.
pub fn op_parameters(op: &Op) -> Vec<(String, ArrayD<f32>)> {
    let mut out: Vec<(String, ArrayD<f32>)> = Vec::new();
    let mut push = |name: &str, v: ArrayD<f32>| out.push((name.to_string(), v));
    let dyn1 = |v: &[f32]| ArrayD::from_shape_vec(vec![v.len()], v.to_vec()).expect("1-D");
    let bias = match op {
        Op::Conv(c) => {
            push("weight", c.weight().array().clone().into_dyn());
            c.bias()
        }
        Op::Linear(l) => {
            push("weight", l.weight().clone().into_dyn());
            l.bias()
        }
        Op::BatchNorm(bn) => {
            for (suffix, v) in [
                ("weight", bn.gamma()),
                ("bias", bn.beta()),
                ("running_mean", bn.mean()),
                ("running_var", bn.var()),
            ] {
                push(suffix, v.clone().into_dyn());
            }
            None
        }
        Op::SparseConv(s) => {
            push("values", dyn1(s.filters().values()));
            s.bias()
        }
        Op::SparseLinear(s) => {
            push("values", dyn1(s.weight().values()));
            s.bias()
        }
        Op::CodebookConv(c) => {
            push("centroids", c.codebooks().clone().into_dyn());
            c.bias()
        }
        Op::ProductQuantizedConv(q) => {
            push("centroids", q.codebooks().clone().into_dyn());
            q.bias()
        }
        Op::BinaryConv(b) => {
            push("alpha", b.alpha().clone().into_dyn());
            b.bias()
        }
        Op::TernaryConv(t) => {
            push("scales", t.scales().clone().into_dyn());
            t.bias()
        }
        Op::FixedPointConv(f) => {
            push("scales", f.scales().clone().into_dyn());
            push("offsets", f.offsets().clone().into_dyn());
            f.bias()
        }
        Op::GroupwiseConv(g) => {
            push("weight", g.weight().clone().into_dyn());
            g.bias()
        }
        Op::PerforatedConv(p) => {
            push("weight", p.conv().weight().array().clone().into_dyn());
            p.conv().bias()
        }
        Op::LcnnConv(l) => {
            push("dictionary", l.dictionary().clone().into_dyn());
            push("coeffs", dyn1(l.coeffs()));
            l.bias()
        }
        Op::Int8Conv(q) if q.learns_scale() => {
            push("scale", dyn1(&[q.input_params().scale()]));
            None
        }
        Op::TtLinear(t) => {
            for (k, g) in t.cores().iter().enumerate() {
                push(&tt_core_name(k), g.clone().into_dyn());
            }
            t.bias()
        }
        _ => None,
    };
    if let Some(b) = bias {
        out.push(("bias".to_string(), b.clone().into_dyn()));
    }
    out
}

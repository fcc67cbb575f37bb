//! Test helpers: planting exactly-zero channels by node name and channel
//! index (the independent truth the removal must reproduce), and comparing
//! forwards.

use hasten_core::graph::NodeOp;
use hasten_core::{
    relative_error, ActShape, BatchNorm, Conv4d, ConvLayer, ConvSpec, Graph, LinearLayer, Op,
    SeededRng,
};
use ndarray::{Array4, Axis};

/// A 3×3 "same" convolution with a random bias.
pub(super) fn conv(rng: &mut SeededRng, out: usize, inp: usize) -> ConvLayer {
    ConvLayer::new(
        Conv4d::new(rng.normal_array((out, inp, 3, 3), 0.3)).unwrap(),
        Some(rng.normal_array(out, 0.3)),
        ConvSpec::new().with_padding(1),
    )
    .unwrap()
}

/// A batch norm with random statistics.
pub(super) fn bn(rng: &mut SeededRng, c: usize) -> BatchNorm {
    BatchNorm::new(
        rng.uniform_array(c, 0.5, 1.5),
        rng.normal_array(c, 0.5),
        rng.normal_array(c, 0.5),
        rng.uniform_array(c, 0.5, 2.0),
        1e-5,
    )
    .unwrap()
}

/// `graph` with output channels `channels` of each named node set to exactly
/// zero: convolution and linear rows and biases, batch-norm `γ` and `β` (so
/// the batch norm outputs 0 on a zero channel).
pub(super) fn plant(graph: &Graph, zeros: &[(&str, Vec<usize>)]) -> Graph {
    let mut g = graph.clone();
    for (name, channels) in zeros {
        let op: NodeOp = match g.node(name).unwrap().op() {
            NodeOp::Op(Op::Conv(c)) => {
                let mut w = c.weight().array().clone();
                let mut b = c.bias().cloned();
                for &t in channels {
                    w.index_axis_mut(Axis(0), t).fill(0.0);
                    if let Some(b) = b.as_mut() {
                        b[t] = 0.0;
                    }
                }
                NodeOp::Op(
                    ConvLayer::new(Conv4d::new(w).unwrap(), b, *c.spec())
                        .unwrap()
                        .into(),
                )
            }
            NodeOp::Op(Op::Linear(l)) => {
                let mut w = l.weight().clone();
                let mut b = l.bias().cloned();
                for &t in channels {
                    w.index_axis_mut(Axis(0), t).fill(0.0);
                    if let Some(b) = b.as_mut() {
                        b[t] = 0.0;
                    }
                }
                NodeOp::Op(LinearLayer::new(w, b).unwrap().into())
            }
            NodeOp::Op(Op::BatchNorm(n)) => {
                let (mut gamma, mut beta) = (n.gamma().clone(), n.beta().clone());
                for &t in channels {
                    gamma[t] = 0.0;
                    beta[t] = 0.0;
                }
                NodeOp::Op(
                    BatchNorm::new(gamma, beta, n.mean().clone(), n.var().clone(), n.eps())
                        .unwrap()
                        .into(),
                )
            }
            other => panic!("cannot plant zeros in {}", other.kind()),
        };
        g.replace(name, op).unwrap();
    }
    g
}

/// A random batch for `graph`'s single input.
pub(super) fn batch(rng: &mut SeededRng, shape: ActShape, n: usize) -> Array4<f32> {
    rng.normal_array(shape.batched(n), 1.0)
}

/// Relative error between two graphs' single outputs on `x`.
pub(super) fn forward_error(a: &Graph, b: &Graph, x: &Array4<f32>) -> f64 {
    let ya = a.reference_forward(&[x]).unwrap();
    let yb = b.reference_forward(&[x]).unwrap();
    relative_error(&ya[0], &yb[0])
}

/// The complement of `keep` in `0..n`.
pub(super) fn complement(keep: &[usize], n: usize) -> Vec<usize> {
    (0..n).filter(|c| !keep.contains(c)).collect()
}

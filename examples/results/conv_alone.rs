//! The speed-up of the decomposed convolutions alone (the CP /
//! Tucker-2 target is on the convolution, survey section 2): each
//! convolution a decomposition replaced by a block of two or more
//! convolutions is timed as a single-node graph — the original layer and
//! its block, on the same input shape, batch 1, in the current pool — in
//! alternating rounds, and the medians of the rounds are summed over the
//! decomposed layers (those whose input and output shapes no other step
//! changed).

use hasten::bench::plan_latency;
use hasten::core::graph::{GraphBuilder, NodeOp};
use hasten::core::op::Op;
use hasten::core::{Graph, SeededRng};
use hasten::fastconv::{Plan, PlanOptions};

use crate::Error;

/// Rounds of each graph, alternating.
const ROUNDS: usize = 15;

/// Timed runs per round (their median is the round's figure).
const RUNS_PER_ROUND: usize = 40;

/// The decomposed convolutions of a compressed network, timed alone.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvAlone {
    /// The decomposed layers' names.
    pub layers: Vec<String>,
    /// Sum over those layers of the original convolution's median, ms.
    pub original_ms: f64,
    /// Sum over those layers of the decomposed block's median, ms.
    pub decomposed_ms: f64,
}

impl ConvAlone {
    /// `original / decomposed`.
    pub fn speedup(&self) -> f64 {
        self.original_ms / self.decomposed_ms
    }
}

/// Whether `op` is a decomposition: a block of two or more convolutions.
fn decomposed(op: &NodeOp) -> bool {
    matches!(op, NodeOp::Block(b) if b.ops().iter().filter(|o| matches!(o, Op::Conv(_))).count() >= 2)
}

/// The one-node graph computing `op` on an input of `input`'s shape in
/// `network`, and its plan at batch 1.
fn alone(network: &Graph, node: &str) -> Result<Plan, Error> {
    let n = network
        .node(node)
        .ok_or_else(|| format!("no node {node}"))?;
    let shape = network.value_shape(n.inputs()[0]);
    let mut b = GraphBuilder::new();
    let x = b.input("x", shape);
    let y = b.node(node, n.op().clone(), &[x]);
    b.output(y);
    Ok(Plan::for_graph(&b.build()?, 1, PlanOptions::default())?)
}

/// Median milliseconds of `RUNS_PER_ROUND` runs of `plan` on `x`.
fn round(plan: &mut Plan, x: &hasten::core::ndarray::Array4<f32>) -> Result<f64, Error> {
    Ok(plan_latency(plan, x, RUNS_PER_ROUND)?.median_ms())
}

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The decomposed convolutions of `compressed` against the same layers of
/// `original` (those with the same input and output shapes in both),
/// timed alone; `None` when there are none.
pub fn conv_alone(original: &Graph, compressed: &Graph) -> Result<Option<ConvAlone>, Error> {
    let shapes = |g: &Graph, name: &str| {
        g.node(name)
            .map(|n| (g.value_shape(n.inputs()[0]), n.output_shape()))
    };
    // Layers whose input or output another step changed (e.g. pruned
    // channels) have no original counterpart to time against.
    let layers: Vec<String> = compressed
        .nodes()
        .iter()
        .filter(|n| decomposed(n.op()))
        .map(|n| n.name().to_string())
        .filter(|name| shapes(original, name) == shapes(compressed, name))
        .collect();
    if layers.is_empty() {
        return Ok(None);
    }
    let (mut original_ms, mut decomposed_ms) = (0.0, 0.0);
    for layer in &layers {
        let mut before = alone(original, layer)?;
        let mut after = alone(compressed, layer)?;
        let shape = original.value_shape(original.node(layer).ok_or("gone")?.inputs()[0]);
        let x = SeededRng::new(0).normal_array(shape.batched(1), 1.0);
        let (mut b, mut a) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            b.push(round(&mut before, &x)?);
            a.push(round(&mut after, &x)?);
        }
        original_ms += median(b);
        decomposed_ms += median(a);
    }
    Ok(Some(ConvAlone {
        layers,
        original_ms,
        decomposed_ms,
    }))
}

//! Calibration on data: a step of int8 post-training quantization
//! (Vanhoucke et al. \[49\], survey section 5) without a fixed `input_range`
//! gets each selected layer's input range from the activations the graph's
//! reference forward produces on calibration inputs
//! ([`Graph::reference_trace`]) — by min–max or a percentile.

use hasten_core::graph::{inner_ops, GraphReport, NodeFilter, NodeOp, NodeReport};
use hasten_core::ndarray::Array4;
use hasten_core::op::{Op, Operator};
use hasten_core::{ActShape, Block, Graph, IntType, Layer, Report, Transform};
use hasten_quant as quant;
use serde::{Deserialize, Serialize};

use super::method::Granularity;
use super::selection::plain_layers;
use crate::qat::activations::calibrate_values;

/// How a calibrated activation range is read from the captured values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RangeRule {
    /// The observed minimum and maximum.
    #[default]
    MinMax,
    /// The `100 − p` and `p` percentiles, `p ∈ (50, 100]`: outliers are
    /// clipped for a finer step.
    Percentile(f64),
}

impl RangeRule {
    /// The quantizer crate's calibration method.
    fn calibration(self) -> quant::Calibration {
        match self {
            RangeRule::MinMax => quant::Calibration::MinMax,
            RangeRule::Percentile(p) => quant::Calibration::Percentile(p),
        }
    }

    /// Checks the percentile.
    pub(super) fn validate(self) -> std::result::Result<(), String> {
        match self {
            RangeRule::Percentile(p) if !(p > 50.0 && p <= 100.0) => {
                Err(format!("calibrate percentile {p}: must be in (50, 100]"))
            }
            _ => Ok(()),
        }
    }
}

/// Recipe-wide calibration settings: how many training samples are run
/// through the graph to calibrate int8 ranges and to score channels by
/// their activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSettings {
    /// The first `samples` images of the training split.
    pub samples: usize,
}

impl Default for CalibrationSettings {
    fn default() -> Self {
        CalibrationSettings { samples: 256 }
    }
}

/// Int8 quantization of every convolution and linear layer `filter`
/// selects, each with the input range `rule` reads from its own input on
/// `batch` (one NCHW batch for the graph's single input): a plain layer's
/// captured input, and for a layer inside a block an earlier step produced
/// (the factors of a decomposition, say) the block's captured input run
/// through the float ops before it — so every factor of a Tucker-2 or CP
/// block gets the range of what it sees. Selected nodes that hold no such
/// layer are skipped. Errors are messages for the step's error.
pub(super) fn calibrated_int8(
    graph: &Graph,
    filter: &NodeFilter,
    batch: &Array4<f32>,
    rule: RangeRule,
    signed: bool,
    granularity: Granularity,
) -> std::result::Result<(Graph, GraphReport), String> {
    let err = |e: hasten_core::Error| e.to_string();
    let (layers, mut skipped) = plain_layers(
        graph,
        filter,
        |kind| matches!(kind, "conv" | "linear" | "block"),
        "",
        "convolution, linear layer or block to calibrate",
    )?;
    let inputs: Vec<&str> = layers
        .iter()
        .map(|n| graph.value_name(n.inputs()[0]))
        .collect();
    let trace = graph.reference_trace(&[batch], &inputs).map_err(err)?;
    let dtype = if signed { IntType::I8 } else { IntType::U8 };
    let rule = rule.calibration();
    let before = graph.cost().map_err(err)?;
    let mut next = graph.clone();
    let mut nodes = Vec::with_capacity(layers.len());
    for (node, input) in layers.iter().zip(&inputs) {
        let x = &trace.captured[*input];
        let name = node.name();
        let plain = matches!(node.op(), NodeOp::Op(_));
        let ops = inner_ops(node.op());
        let what = |i: usize| match plain {
            true => format!("node `{name}`'s input `{input}`"),
            false => format!("node `{name}`'s op {i} (the block reads `{input}`)"),
        };
        let (block, inner) = calibrated_ops(ops, x, rule, dtype, granularity, what).map_err(err)?;
        if inner.is_empty() {
            skipped.push(name.to_string());
            continue;
        }
        next.replace(name, block).map_err(err)?;
        // A plain layer reports under its own name, a block's layer as `name.i`.
        nodes.extend(inner.into_iter().map(|(i, report)| NodeReport {
            node: if plain {
                name.to_string()
            } else {
                format!("{name}.{i}")
            },
            report,
        }));
    }
    let after = next.cost().map_err(err)?;
    Ok((
        next,
        GraphReport {
            method: "int8".into(),
            nodes,
            skipped,
            before,
            after,
        },
    ))
}

/// The chain `ops` with each convolution and linear layer replaced by its
/// int8 quantization, calibrated by `rule` on the layer's input — `x` run
/// through the float ops before it (`Operator::reference_forward`) — and
/// the report of each replaced op by its index; `what(i)` names op `i`'s
/// input in a calibration error.
fn calibrated_ops(
    ops: &[Op],
    x: &Array4<f32>,
    rule: quant::Calibration,
    dtype: IntType,
    granularity: Granularity,
    what: impl Fn(usize) -> String,
) -> hasten_core::Result<(Block, Vec<(usize, Report)>)> {
    let mut out = Vec::with_capacity(ops.len());
    let mut reports = Vec::new();
    let mut x = std::borrow::Cow::Borrowed(x);
    for (i, op) in ops.iter().enumerate() {
        let layer = match op {
            Op::Conv(c) => Some(Layer::Conv(c.clone())),
            Op::Linear(l) => Some(Layer::Linear(l.clone())),
            _ => None,
        };
        match layer {
            Some(layer) => {
                let params = calibrate_values(&x, rule, dtype, &what(i))?;
                let s = x.shape();
                let shape = ActShape::new(s[1], s[2], s[3]);
                let transform = quant::Int8Quantize::new(params, None, granularity.into());
                let compressed = transform.apply(&layer, shape)?;
                out.extend(compressed.block.into_ops());
                reports.push((i, compressed.report));
            }
            None => out.push(op.clone()),
        }
        if i + 1 < ops.len() {
            x = std::borrow::Cow::Owned(op.reference_forward(&x)?);
        }
    }
    Ok((Block::new(out)?, reports))
}

/// The calibration batch of `data`: its first `settings.samples` training
/// images (all of them when fewer).
pub(super) fn calibration_batch(
    data: &hasten_train::data::Splits,
    settings: &CalibrationSettings,
) -> Array4<f32> {
    data.train.head(settings.samples).images().clone()
}

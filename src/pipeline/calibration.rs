//! Calibration on data: a step of int8 post-training quantization
//! (Vanhoucke et al. \[49\], survey section 5) without a fixed `input_range`
//! gets each selected layer's input range from the activations the graph's
//! reference forward produces on calibration inputs
//! ([`Graph::reference_trace`]) — by min–max or a percentile.

use hasten_core::graph::{GraphReport, NodeFilter};
use hasten_core::ndarray::Array4;
use hasten_core::{Graph, IntType};
use hasten_quant as quant;
use serde::{Deserialize, Serialize};

use super::method::Granularity;
use super::selection::plain_layers;
use crate::qat::calibrate_inputs;

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

/// Int8 quantization of every plain convolution and linear layer `filter`
/// selects, each with the input range `rule` reads from its captured input
/// on `batch` (one NCHW batch for the graph's single input). Nodes that are
/// neither are skipped; a block an earlier step produced is an error (its
/// inner ops' inputs are not node values, so a fixed `input_range` is
/// needed there). Errors are messages for the step's error.
pub(super) fn calibrated_int8(
    graph: &Graph,
    filter: &NodeFilter,
    batch: &Array4<f32>,
    rule: RangeRule,
    signed: bool,
    granularity: Granularity,
) -> std::result::Result<(Graph, GraphReport), String> {
    let err = |e: hasten_core::Error| e.to_string();
    let (layers, skipped) = plain_layers(
        graph,
        filter,
        |kind| matches!(kind, "conv" | "linear"),
        "its inner layers' inputs are not captured, give the int8 step an input_range",
        "convolution or linear layer to calibrate",
    )?;
    let names: Vec<&str> = layers.iter().map(|n| n.name()).collect();
    let dtype = if signed { IntType::I8 } else { IntType::U8 };
    let inputs = calibrate_inputs(graph, &names, batch, rule.calibration(), dtype).map_err(err)?;
    let before = graph.cost().map_err(err)?;
    let mut next = graph.clone();
    let mut nodes = Vec::with_capacity(layers.len());
    for (node, params) in layers.iter().zip(inputs) {
        let transform = quant::Int8Quantize::new(params, None, granularity.into());
        let name = node.name().to_string();
        let only = NodeFilter::predicate(&format!("name {name}"), move |n| n.name() == name);
        let report = next.apply_transform(&transform, &only).map_err(err)?;
        nodes.extend(report.nodes);
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

/// The calibration batch of `data`: its first `settings.samples` training
/// images (all of them when fewer).
pub(super) fn calibration_batch(
    data: &hasten_train::data::Splits,
    settings: &CalibrationSettings,
) -> Array4<f32> {
    data.train.head(settings.samples).images().clone()
}

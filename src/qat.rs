//! Quantization-aware training (QAT): fine-tune a network with quantized
//! weights in the forward and full-precision "shadow" weights in the
//! optimizer, then freeze it into the real packed ops — the loop of survey
//! eq. (5) (Anwar et al. \[53\]; BinaryConnect \[54\], eq. (6)–(7); XNOR-Net
//! \[59\], eq. (8); ternary weights \[55\]; fixed point \[49\]; DoReFa-Net
//! \[61\]).
//!
//! [`QuantAwareTraining`] composes `hasten-train`'s
//! [`FakeQuant`] (the forward with `Ŵ = q(W)`, the straight-through
//! gradient and the weight clipping, run by the [`Trainer`](crate::train::Trainer))
//! with `hasten-quant`'s transforms: the fake quantizer `q` of a
//! [`QatQuantizer`] *is* its transform (quantize, then dequantize the packed
//! op), so [`QuantAwareTraining::freeze`] produces ops whose weights are
//! exactly the `Ŵ` the training used.
//!
//! ```
//! use hasten::core::NodeFilter;
//! use hasten::models::{lenet5, ModelConfig};
//! use hasten::qat::{QatQuantizer, QuantAwareTraining};
//!
//! let graph = lenet5(&ModelConfig::mnist())?;
//! // Binary weights everywhere but the last layer, which gets int8.
//! let qat = QuantAwareTraining::new()
//!     .quantize(NodeFilter::all().except_last(1), QatQuantizer::binary())
//!     .quantize(NodeFilter::kind("linear").except_first(2), QatQuantizer::int8());
//! let fake = qat.fake_quant(&graph)?; // for Trainer::with_fake_quant
//! assert_eq!(fake.len(), 5);
//! // … train, then freeze the trainer's graph:
//! let (frozen, _reports) = qat.freeze(&graph)?;
//! assert_eq!(frozen.node("conv1").unwrap().kind(), "block");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use hasten_core::graph::{GraphReport, NodeFilter};
use hasten_core::ndarray::{Array2, ArrayD};
use hasten_core::SeededRng;
use hasten_core::{Error, Graph, IntType, Result, Transform, WeightLayout};
use hasten_quant::dorefa::dorefa_weight_grad;
use hasten_quant::{
    activation_params, Binarize, DoReFa, FixedPoint, Granularity, Int8Quantize, LayerWeights,
    Mode as FixedPointMode, StochasticBinarize, Ternarize,
};
use hasten_train::{FakeQuant, WeightQuantizer};

pub mod activations;
pub mod dorefa;
pub use activations::{calibrate_inputs, Int8Qat};
pub use dorefa::DoReFaQat;

/// A weight quantizer for quantization-aware training, each one of
/// `hasten-quant`'s transforms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QatQuantizer {
    /// Binary weights with a per-filter scale, `α_t · sign(W_t)` with
    /// `α_t = mean |W_t|` (XNOR-Net's eq. (8), [`Binarize::binary_weights`]);
    /// the straight-through gradient passes where `|W| ≤ clip` and the
    /// shadow weights are clipped to it (BinaryConnect: 1).
    Binary {
        /// The clip region of the straight-through estimator, if any.
        clip: Option<f32>,
    },
    /// BinaryConnect's `sign(W)` with unit scale (eq. (3),
    /// [`Binarize::sign`]); clip region as for [`QatQuantizer::Binary`].
    Sign {
        /// The clip region of the straight-through estimator, if any.
        clip: Option<f32>,
    },
    /// Ternary weight networks, per filter ([`Ternarize::twn`]); plain
    /// straight-through gradient.
    Ternary,
    /// Ternary weight networks with one threshold and scale for the whole
    /// layer.
    TernaryPerTensor,
    /// Symmetric fixed point with `bits` bits and one scale per output
    /// channel ([`FixedPoint`]); 8 bits are int8 weights (`|q| ≤ 127`,
    /// scale `max |W_t| / 127`). Plain straight-through gradient (the range
    /// follows the weights, so nothing saturates).
    FixedPoint {
        /// Bits per weight, `2..=16`.
        bits: u32,
    },
    /// Symmetric fixed point with one scale for the whole layer.
    FixedPointPerTensor {
        /// Bits per weight, `2..=16`.
        bits: u32,
    },
    /// BinaryConnect's stochastic binarization (eq. (3)): each training
    /// forward draws `w_b = +1` with probability
    /// `σ(w) = clip((w + 1)/2, 0, 1)`, else `−1`
    /// ([`hasten_quant::StochasticBinarize`] with unit scale); the draw of
    /// step `s` for parameter `p` is seeded by `(seed, s, p)` alone, so runs
    /// are bit-identical for a seed whatever the threads. Straight-through
    /// gradient where `|W| ≤ 1`, shadow weights clipped to `[−1, 1]`
    /// (eq. (6)–(7)). Evaluation and freezing use the deterministic
    /// `sign(W)` ([`Binarize::sign`], BinaryConnect's test-time rule).
    StochasticBinary {
        /// The seed of the draws.
        seed: u64,
    },
    /// DoReFa-Net k-bit weights with the layer's range kept
    /// ([`DoReFa::new`]): `γ · (2 quantize_k(tanh(W)/(2 max |tanh(W)|) + ½) − 1)`,
    /// `γ = max |W|`. Its straight-through gradient is the derivative of
    /// the smooth `tanh` normalisation
    /// ([`hasten_quant::dorefa::dorefa_weight_grad`]).
    DoReFa {
        /// Bits per weight, `1..=16`.
        bits: u32,
    },
}

/// The seed of a stochastic draw: step `step` of parameter `name` of a run
/// seeded by `seed` (FNV-1a of the name, so no process-dependent hashing).
fn draw_seed(seed: u64, step: u64, name: &str) -> u64 {
    let node = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    SeededRng::new(seed).fork(step).fork(node).next_u64()
}

impl QatQuantizer {
    /// BinaryConnect-style binary weights: [`QatQuantizer::Binary`] with
    /// the clip region `|W| ≤ 1`.
    pub fn binary() -> Self {
        QatQuantizer::Binary { clip: Some(1.0) }
    }

    /// Int8 weights, symmetric per channel: `FixedPoint { bits: 8 }`.
    pub fn int8() -> Self {
        QatQuantizer::FixedPoint { bits: 8 }
    }

    /// The `hasten-quant` transform that freezes a layer.
    pub fn transform(&self) -> Result<Box<dyn Transform>> {
        Ok(match *self {
            QatQuantizer::Binary { .. } => Box::new(Binarize::binary_weights()),
            QatQuantizer::Sign { .. } | QatQuantizer::StochasticBinary { .. } => {
                Box::new(Binarize::sign())
            }
            QatQuantizer::DoReFa { bits } => Box::new(DoReFa::new(bits)?),
            QatQuantizer::Ternary => Box::new(Ternarize::twn(Granularity::PerChannel)),
            QatQuantizer::TernaryPerTensor => Box::new(Ternarize::twn(Granularity::PerTensor)),
            QatQuantizer::FixedPoint { bits } => Box::new(FixedPoint::new(
                bits,
                FixedPointMode::Symmetric,
                Granularity::PerChannel,
            )?),
            QatQuantizer::FixedPointPerTensor { bits } => Box::new(FixedPoint::new(
                bits,
                FixedPointMode::Symmetric,
                Granularity::PerTensor,
            )?),
        })
    }

    /// `Ŵ`: the weights of the transform's packed op for `weights`.
    fn dequantized(&self, weights: &LayerWeights) -> Result<Array2<f32>> {
        Ok(match *self {
            QatQuantizer::Binary { .. } => {
                Binarize::binary_weights().quantize(weights)?.dequantized()
            }
            QatQuantizer::Sign { .. } | QatQuantizer::StochasticBinary { .. } => {
                Binarize::sign().quantize(weights)?.dequantized()
            }
            QatQuantizer::DoReFa { bits } => DoReFa::new(bits)?.quantize(weights)?.dequantized(),
            QatQuantizer::Ternary => Ternarize::twn(Granularity::PerChannel)
                .quantize(weights)?
                .dequantized(),
            QatQuantizer::TernaryPerTensor => Ternarize::twn(Granularity::PerTensor)
                .quantize(weights)?
                .dequantized(),
            QatQuantizer::FixedPoint { bits } => {
                FixedPoint::new(bits, FixedPointMode::Symmetric, Granularity::PerChannel)?
                    .quantize(weights)?
                    .dequantized()
            }
            QatQuantizer::FixedPointPerTensor { bits } => {
                FixedPoint::new(bits, FixedPointMode::Symmetric, Granularity::PerTensor)?
                    .quantize(weights)?
                    .dequantized()
            }
        })
    }
}

impl WeightQuantizer for QatQuantizer {
    fn name(&self) -> String {
        match self.transform() {
            Ok(t) => t.name().to_string(),
            Err(e) => format!("invalid quantizer ({e})"),
        }
    }

    /// The dequantized packed op of the weight seen as a matrix with one
    /// row per output filter (every quantizer here works on that matrix,
    /// whatever the convolution's geometry).
    fn quantize(&self, weight: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        as_matrix(weight, |w| self.dequantized(w))
    }

    fn clip(&self) -> Option<f32> {
        match *self {
            QatQuantizer::Binary { clip } | QatQuantizer::Sign { clip } => clip,
            QatQuantizer::StochasticBinary { .. } => Some(1.0),
            _ => None,
        }
    }

    /// A fresh stochastic draw for [`QatQuantizer::StochasticBinary`]
    /// (seeded by the quantizer's seed, `step` and `name`), `quantize`
    /// otherwise.
    fn quantize_train(&self, weight: &ArrayD<f32>, step: u64, name: &str) -> Result<ArrayD<f32>> {
        match *self {
            QatQuantizer::StochasticBinary { seed } => as_matrix(weight, |w| {
                Ok(StochasticBinarize::new(draw_seed(seed, step, name))
                    .with_scale(1.0)?
                    .quantize(w)?
                    .dequantized())
            }),
            _ => self.quantize(weight),
        }
    }

    /// DoReFa's derivative of the `tanh` normalisation over the layer; the
    /// clipped straight-through gradient otherwise.
    fn backward(&self, weight: &ArrayD<f32>, grad: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        match (*self, self.clip()) {
            (QatQuantizer::DoReFa { .. }, _) => {
                if weight.shape() != grad.shape() {
                    return Err(Error::shape(
                        "DoReFa gradient",
                        format!("{:?}", weight.shape()),
                        format!("{:?}", grad.shape()),
                    ));
                }
                let w: Vec<f64> = weight.iter().map(|&v| f64::from(v)).collect();
                let g: Vec<f64> = grad.iter().map(|&v| f64::from(v)).collect();
                let d = dorefa_weight_grad(&w, &g)?;
                Ok(ArrayD::from_shape_vec(
                    weight.raw_dim(),
                    d.into_iter().map(|v| v as f32).collect(),
                )
                .expect("same length"))
            }
            (_, Some(limit)) => hasten_train::clipped_straight_through(weight, grad, limit),
            (_, None) => Ok(grad.clone()),
        }
    }
}

/// `q` applied to `weight` (a convolution's `[T, C/g, kh, kw]` or a linear
/// layer's `[out, in]`) seen as the matrix with one row per output filter,
/// the result in `weight`'s shape.
fn as_matrix(
    weight: &ArrayD<f32>,
    q: impl FnOnce(&LayerWeights) -> Result<Array2<f32>>,
) -> Result<ArrayD<f32>> {
    let shape = weight.shape().to_vec();
    if !(shape.len() == 2 || shape.len() == 4) {
        return Err(Error::shape(
            "weight to quantize",
            "[out, in] or [T, C/g, kh, kw]",
            format!("{shape:?}"),
        ));
    }
    hasten_core::error::ensure_nonempty("weight to quantize", &shape)?;
    let rows = shape[0];
    let cols = weight.len() / rows;
    let matrix = weight
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((rows, cols))
        .expect("rows · cols values");
    let weights = LayerWeights::new(WeightLayout::linear(rows, cols)?, matrix, None)?;
    Ok(q(&weights)?
        .into_shape_with_order(shape)
        .expect("same element count"))
}

/// The fake quantizer of an `Int8Conv`'s weights, exactly as
/// [`Int8Quantize`] stores them: `s·clamp(round(W/s), ±127)` with
/// `s = max |W_t| / 127` per output channel or for the whole layer (the
/// int8 step of a recipe trained with `qat`, where activations stay f32
/// while training; [`Int8Qat`] also fake-quantizes the activations). Plain
/// straight-through gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int8Weights {
    /// One scale per output channel rather than per layer.
    pub per_channel: bool,
}

impl WeightQuantizer for Int8Weights {
    fn name(&self) -> String {
        format!(
            "int8 weights ({})",
            if self.per_channel {
                "per channel"
            } else {
                "per tensor"
            }
        )
    }

    fn quantize(&self, weight: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let granularity = if self.per_channel {
            Granularity::PerChannel
        } else {
            Granularity::PerTensor
        };
        // The input range only shapes the (unused) activation quantization.
        let input = activation_params(0.0, 1.0, IntType::U8)?;
        as_matrix(weight, |w| {
            let op = Int8Quantize::new(input, None, granularity).quantize(w)?;
            let q = op.weights();
            Ok(Array2::from_shape_fn(q.dim(), |(t, j)| {
                f32::from(q[[t, j]]) * op.weight_scale(t)
            }))
        })
    }
}

/// Which nodes are trained quantization-aware with which quantizer, and
/// their freezing into packed ops; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct QuantAwareTraining {
    rules: Vec<(NodeFilter, QatQuantizer)>,
}

impl QuantAwareTraining {
    /// No quantized nodes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes the convolution and linear nodes `filter` selects with
    /// `quantizer`; where rules overlap, the later one wins.
    pub fn quantize(mut self, filter: NodeFilter, quantizer: QatQuantizer) -> Self {
        self.rules.push((filter, quantizer));
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[(NodeFilter, QatQuantizer)] {
        &self.rules
    }

    /// The fake quantization of `graph`'s weights for
    /// [`Trainer::with_fake_quant`](crate::train::Trainer::with_fake_quant).
    /// Errors: no rule, a rule selecting no convolution or linear node, an
    /// invalid quantizer (bits outside `2..=16`, a clip limit that is not
    /// finite and positive).
    pub fn fake_quant(&self, graph: &Graph) -> hasten_train::Result<FakeQuant> {
        if self.rules.is_empty() {
            return Err(Error::param("quantization-aware rules", 0, ">= 1").into());
        }
        let mut fq = FakeQuant::new();
        for (filter, q) in &self.rules {
            q.transform()?;
            fq.extend(FakeQuant::select(graph, filter, Arc::new(*q))?);
        }
        Ok(fq)
    }

    /// BinaryConnect's shadow weights at the scale of its initialisation:
    /// a copy of `graph` in which every convolution or linear layer a rule
    /// selects has its weight (and bias) multiplied by `a = 1/max |W|`, so
    /// that `max |W| = 1`, and the batch norm that alone reads its output
    /// has its running mean multiplied by `a` and its running variance by
    /// `a²`. Batch norm normalises a positive per-layer rescaling away, so
    /// the network computes the same function (exactly with batch
    /// statistics; in inference mode up to its `ε`, which acts as `ε/a²`).
    /// A trained float network's weights are ≪ 1, which makes each draw of
    /// eq. (3), `P(+1) = clip((w + 1)/2, 0, 1)`, nearly a fair coin and
    /// leaves the clip region `|W| ≤ 1` of eq. (6)–(7) unused; after this
    /// rescaling the draws follow the weights. Returns the graph and each
    /// rescaled layer's `a`, in graph order.
    ///
    /// # Errors
    /// No rule; a selected layer whose output is not read by exactly one
    /// batch norm (nor a graph output), or whose weight is all zeros.
    pub fn rescale_shadow_weights(&self, graph: &Graph) -> Result<(Graph, Vec<(String, f32)>)> {
        use hasten_core::graph::{NodeOp, ValueId};
        use hasten_core::op::Op;
        if self.rules.is_empty() {
            return Err(Error::param("quantization-aware rules", 0, ">= 1"));
        }
        let mut selected: Vec<usize> = self
            .rules
            .iter()
            .flat_map(|(f, _)| f.select(graph))
            .filter(|&i| {
                matches!(
                    graph.nodes()[i].op(),
                    NodeOp::Op(Op::Conv(_) | Op::Linear(_))
                )
            })
            .collect();
        selected.sort_unstable();
        selected.dedup();
        let values: std::collections::BTreeMap<String, ArrayD<f32>> =
            graph.parameters().into_iter().collect();
        let mut params = hasten_core::grad::Params::new();
        let mut factors = Vec::with_capacity(selected.len());
        for i in selected {
            let name = graph.nodes()[i].name();
            let readers = graph.consumers(ValueId::Node(i));
            let bn = match readers[..] {
                [r] if !graph.is_output(ValueId::Node(i))
                    && matches!(graph.nodes()[r].op(), NodeOp::Op(Op::BatchNorm(_))) =>
                {
                    graph.nodes()[r].name()
                }
                _ => {
                    return Err(Error::param(
                        "layer to rescale",
                        name,
                        "a layer whose output only a batch norm reads",
                    ))
                }
            };
            let w = &values[&format!("{name}.weight")];
            let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if !(max.is_finite() && max > 0.0) {
                return Err(Error::param(
                    "layer to rescale",
                    name,
                    "a non-zero finite weight",
                ));
            }
            let a = f64::from(1.0 / max);
            let mut put = |key: String, factor: f64| {
                if let Some(v) = values.get(&key) {
                    params.insert(key, v.mapv(|u| f64::from(u) * factor));
                }
            };
            put(format!("{name}.weight"), a);
            put(format!("{name}.bias"), a);
            put(format!("{bn}.running_mean"), a);
            put(format!("{bn}.running_var"), a * a);
            factors.push((name.to_string(), a as f32));
        }
        Ok((
            hasten_core::grad::graph_with_params(graph, &params)?,
            factors,
        ))
    }

    /// Replaces every node a rule selects by its quantizer's packed op,
    /// quantizing the weights `graph` holds (the trainer's full-precision
    /// ones: the ops then carry exactly the `Ŵ` of the last training
    /// step). Returns the frozen graph and one report per rule, in rule
    /// order. An error leaves nothing half-done.
    pub fn freeze(&self, graph: &Graph) -> Result<(Graph, Vec<GraphReport>)> {
        if self.rules.is_empty() {
            return Err(Error::param("quantization-aware rules", 0, ">= 1"));
        }
        let mut frozen = graph.clone();
        let mut reports = Vec::with_capacity(self.rules.len());
        // Later rules win: apply them first; a replaced node is no longer a
        // convolution or linear layer, so earlier rules skip it.
        for (filter, q) in self.rules.iter().rev() {
            reports.push(frozen.apply_transform(q.transform()?.as_ref(), filter)?);
        }
        reports.reverse();
        Ok((frozen, reports))
    }
}

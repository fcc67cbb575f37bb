//! Int8 quantization-aware training of weights *and* activations (survey
//! section 5: the 8-bit networks of Vanhoucke et al. \[49\], trained with
//! the fake-quantized forward and straight-through backward of eq. (5)).
//!
//! [`Int8Qat`] calibrates each selected layer's input range once on a batch
//! (min–max or a percentile, then fixed) and builds the training graph: each
//! layer becomes a block `[q, layer]` whose first op `q` is the activation
//! fake quantizer [`Int8Conv::quantize_dequantize`] — the very input
//! quantization of the `Int8Conv` the layer freezes into, so the codes the
//! training forward sees are bit-identical to those the frozen op computes
//! — trained through `Int8Conv`'s straight-through backward. The weights
//! are fake-quantized by [`Int8Weights`] (what `Int8Quantize` stores). After
//! training, [`Int8Qat::freeze`] replaces each block by the `Int8Conv` of
//! its full-precision weights with the calibrated input quantization.
//!
//! With [`Int8Qat::learn_ranges`] the activation quantizer's scale `s` is a
//! trained parameter instead (LSQ, Esser et al. 2020: the block's first op
//! is [`Int8Conv::learned_quantize_dequantize`], parameter
//! `<node>.0.scale`, initialised by the calibration, gradient
//! `hasten_core::grad::lsq`). The zero point stays the calibrated one, so
//! the range `[s·(lo − z), s·(hi − z)]` widens or narrows around it (after
//! a ReLU `z = 0`: an unsigned range `[0, 255·s]`). Freezing always uses the
//! scale the training graph holds, so the frozen `Int8Conv` computes the
//! codes the last training forward saw.
//!
//! What differs between the trained and the frozen layer: the frozen op
//! accumulates exactly in integers and stores its bias in units of
//! `s_in·s_w[t]` (rounded), while training sums in f32 with the float bias.

use hasten_core::graph::{NodeFilter, NodeOp};
use hasten_core::ndarray::Array4;
use hasten_core::op::{Int8Conv, Op, QuantParams};
use hasten_core::{Block, Error, Graph, IntType, Result};
use hasten_quant::{activation_params, calibrate, Calibration, Granularity, Int8Quantize};
use hasten_train::FakeQuant;
use std::sync::Arc;

use super::Int8Weights;

/// Calibrated int8 quantization-aware training of the convolution and
/// linear layers a filter selects; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Qat {
    layers: Vec<(String, QuantParams)>,
    per_channel: bool,
    learn_ranges: bool,
}

/// The input quantization of each node of `names`, calibrated by `rule` on
/// the values of its input when `graph` runs on `batch` (its reference
/// forward), as `dtype` codes.
///
/// # Errors
/// An unknown node, a batch the graph cannot run; a range that cannot be
/// calibrated (non-finite activations) is an error naming its node.
pub fn calibrate_inputs(
    graph: &Graph,
    names: &[&str],
    batch: &Array4<f32>,
    rule: Calibration,
    dtype: IntType,
) -> Result<Vec<QuantParams>> {
    let inputs = names
        .iter()
        .map(|name| {
            let node = graph
                .node(name)
                .ok_or_else(|| Error::param("node to calibrate", name, "a node of the graph"))?;
            Ok(graph.value_name(node.inputs()[0]))
        })
        .collect::<Result<Vec<&str>>>()?;
    let trace = graph.reference_trace(&[batch], &inputs)?;
    names
        .iter()
        .zip(&inputs)
        .map(|(name, input)| {
            calibrate_values(
                &trace.captured[*input],
                rule,
                dtype,
                &format!("node `{name}`'s input `{input}`"),
            )
        })
        .collect()
}

/// The input quantization `rule` reads from the activations `values`, as
/// `dtype` codes; `what` names them in the error.
///
/// # Errors
/// A range that cannot be calibrated (non-finite activations).
pub(crate) fn calibrate_values(
    values: &Array4<f32>,
    rule: Calibration,
    dtype: IntType,
    what: &str,
) -> Result<QuantParams> {
    let values = values.as_standard_layout();
    calibrate(values.as_slice().expect("standard"), rule, 8)
        .and_then(|(lo, hi)| activation_params(lo, hi, dtype))
        .map_err(|e| Error::numerical(format!("calibration of {what}"), e))
}

impl Int8Qat {
    /// Selects every plain convolution and linear node of `graph` that
    /// `filter` picks and calibrates its input quantization on `batch` with
    /// `rule` ([`calibrate_inputs`]); weights get one scale per output
    /// channel when `per_channel`, else one per layer.
    ///
    /// # Errors
    /// No such node selected; as [`calibrate_inputs`].
    pub fn calibrate(
        graph: &Graph,
        filter: &NodeFilter,
        batch: &Array4<f32>,
        rule: Calibration,
        dtype: IntType,
        per_channel: bool,
    ) -> Result<Self> {
        let names: Vec<&str> = filter
            .select(graph)
            .into_iter()
            .map(|i| &graph.nodes()[i])
            .filter(|n| matches!(n.op(), NodeOp::Op(Op::Conv(_) | Op::Linear(_))))
            .map(|n| n.name())
            .collect();
        if names.is_empty() {
            return Err(Error::param(
                "int8 quantization-aware filter",
                filter,
                "a filter selecting at least one convolution or linear node",
            ));
        }
        let params = calibrate_inputs(graph, &names, batch, rule, dtype)?;
        Ok(Int8Qat {
            layers: names.iter().map(|n| n.to_string()).zip(params).collect(),
            per_channel,
            learn_ranges: false,
        })
    }

    /// Whether the activation quantizers' scales are trained (LSQ, from the
    /// calibrated value; see the [module docs](self)) rather than fixed.
    pub fn learn_ranges(mut self, learn: bool) -> Self {
        self.learn_ranges = learn;
        self
    }

    /// Whether the activation quantizers' scales are trained.
    pub fn learns_ranges(&self) -> bool {
        self.learn_ranges
    }

    /// The quantized layers and their calibrated input quantization (the
    /// initial value of a learned range), in graph order.
    pub fn layers(&self) -> &[(String, QuantParams)] {
        &self.layers
    }

    fn granularity(&self) -> Granularity {
        if self.per_channel {
            Granularity::PerChannel
        } else {
            Granularity::PerTensor
        }
    }

    /// The graph to train: every layer node becomes the block
    /// `[quantize_dequantize, layer]` (its parameters are then named
    /// `<node>.1.weight`, `<node>.1.bias`, and with learned ranges
    /// `<node>.0.scale`).
    ///
    /// # Errors
    /// A layer that is not a plain convolution or linear node of `graph`.
    pub fn training_graph(&self, graph: &Graph) -> Result<Graph> {
        let mut g = graph.clone();
        for (name, params) in &self.layers {
            prefix_layer(&mut g, name, "int8 layer", |channels| {
                let q = if self.learn_ranges {
                    Int8Conv::learned_quantize_dequantize(channels, *params)?
                } else {
                    Int8Conv::quantize_dequantize(channels, *params)?
                };
                Ok(vec![Op::Int8Conv(q)])
            })?;
        }
        Ok(g)
    }

    /// The weight fake quantization of the training graph, for
    /// [`Trainer::with_fake_quant`](crate::train::Trainer::with_fake_quant).
    ///
    /// # Errors
    /// None in practice (the quantizer has no clip limit).
    pub fn fake_quant(&self) -> hasten_train::Result<FakeQuant> {
        let mut fq = FakeQuant::new();
        let q = Arc::new(Int8Weights {
            per_channel: self.per_channel,
        });
        for (name, _) in &self.layers {
            fq.insert(format!("{name}.1.weight"), q.clone())?;
        }
        Ok(fq)
    }

    /// Freezes a trained training graph (holding the full-precision
    /// weights, `Trainer::graph`): each block becomes the `Int8Conv` of its
    /// layer with the input quantization of the block's quantizer (the
    /// calibrated one, or the learned scale).
    ///
    /// # Errors
    /// A layer node that is not such a block; a quantization error.
    pub fn freeze(&self, trained: &Graph) -> Result<Graph> {
        let mut g = trained.clone();
        for (name, _) in &self.layers {
            let node = g
                .node(name)
                .ok_or_else(|| Error::param("int8 layer", name, "a node of the graph"))?;
            let (params, layer) = match node.op() {
                NodeOp::Block(b) if b.ops().len() == 2 => match &b.ops()[0] {
                    Op::Int8Conv(q) if q.is_quantize_dequantize() => {
                        (*q.input_params(), b.ops()[1].clone())
                    }
                    _ => return Err(not_a_block(name)),
                },
                _ => return Err(not_a_block(name)),
            };
            g.replace(name, layer)?;
            let only = name.clone();
            let filter = NodeFilter::predicate(&format!("name {name}"), move |n| n.name() == only);
            g.apply_transform(
                &Int8Quantize::new(params, None, self.granularity()),
                &filter,
            )?;
        }
        Ok(g)
    }
}

fn not_a_block(name: &str) -> Error {
    Error::param(
        "int8 layer",
        name,
        "a [quantize_dequantize, layer] block of the training graph",
    )
}

/// Replaces the plain convolution or linear node `name` of `graph` by the
/// block `[prefix…, layer]`, `prefix` built from the layer's input channel
/// count — the activation fake quantizers of QAT training graphs.
///
/// # Errors
/// `name` is not a plain convolution or linear node of `graph` (`what`
/// names the role in the message); an error of `prefix` or of the block.
pub(crate) fn prefix_layer(
    graph: &mut Graph,
    name: &str,
    what: &str,
    prefix: impl FnOnce(usize) -> Result<Vec<Op>>,
) -> Result<()> {
    let node = graph
        .node(name)
        .ok_or_else(|| Error::param(what, name, "a node of the graph"))?;
    let NodeOp::Op(layer @ (Op::Conv(_) | Op::Linear(_))) = node.op() else {
        return Err(Error::param(
            what,
            name,
            "a plain convolution or linear node",
        ));
    };
    let layer = layer.clone();
    let mut ops = prefix(node.input_shapes()[0].channels)?;
    ops.push(layer);
    graph.replace(name, Block::new(ops)?)
}

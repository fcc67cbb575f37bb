//! DoReFa-Net quantization-aware training of weights *and* activations
//! (Zhou et al. \[61\], survey section 5): k-bit weights
//! `γ · (2 quantize_k(tanh(W)/(2 max |tanh(W)|) + ½) − 1)` and k-bit
//! activations `quantize_k(clip(x, 0, 1))`, both straight-through.
//!
//! [`DoReFaQat`] makes each selected layer the block
//! `[Clip(0, 1), q, layer]` where `q` is
//! [`Int8Conv::quantize_dequantize`] with scale `1/(2^k − 1)`, zero point 0
//! and u8 codes: on `[0, 1]` it rounds to the `2^k` levels
//! `u/(2^k − 1)`. The backward is the clip's (the gradient passes where
//! `0 ≤ x ≤ 1`) followed by `q`'s saturating straight-through estimator,
//! which passes everything in `[0, 1]` — DoReFa's activation gradient. The
//! weights are fake-quantized by [`QatQuantizer::DoReFa`] (gradient through
//! the `tanh` normalisation). [`DoReFaQat::freeze`] keeps the activation
//! quantizer and replaces the layer by its DoReFa `FixedPointConv`
//! ([`DoReFa::new`]), which holds exactly the trained `Ŵ`.

use std::sync::Arc;

use hasten_core::graph::{NodeFilter, NodeOp};
use hasten_core::op::{Clip, Int8Conv, Op, QuantParams};
use hasten_core::{Block, Error, Graph, IntType, Layer, Result, Transform};
use hasten_quant::DoReFa;
use hasten_train::FakeQuant;

use super::activations::prefix_layer;
use super::QatQuantizer;

/// DoReFa quantization-aware training of the convolution and linear layers
/// a filter selects; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct DoReFaQat {
    layers: Vec<String>,
    weight_bits: u32,
    activation_bits: u32,
}

impl DoReFaQat {
    /// Selects every plain convolution and linear node of `graph` that
    /// `filter` picks, with `weight_bits ∈ 1..=16` and
    /// `activation_bits ∈ 1..=8` (the activation codes are u8).
    ///
    /// # Errors
    /// Bits out of range; no such node selected.
    pub fn new(
        graph: &Graph,
        filter: &NodeFilter,
        weight_bits: u32,
        activation_bits: u32,
    ) -> Result<Self> {
        DoReFa::new(weight_bits)?;
        if !(1..=8).contains(&activation_bits) {
            return Err(Error::param(
                "DoReFa activation bits",
                activation_bits,
                "1..=8",
            ));
        }
        let layers: Vec<String> = filter
            .select(graph)
            .into_iter()
            .map(|i| &graph.nodes()[i])
            .filter(|n| matches!(n.op(), NodeOp::Op(Op::Conv(_) | Op::Linear(_))))
            .map(|n| n.name().to_string())
            .collect();
        if layers.is_empty() {
            return Err(Error::param(
                "DoReFa quantization-aware filter",
                filter,
                "a filter selecting at least one convolution or linear node",
            ));
        }
        Ok(DoReFaQat {
            layers,
            weight_bits,
            activation_bits,
        })
    }

    /// The quantized layers, in graph order.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// The activation quantizer: scale `1/(2^k − 1)`, zero point 0, u8.
    pub fn activation_params(&self) -> QuantParams {
        let levels = ((1u32 << self.activation_bits) - 1) as f32;
        QuantParams::new(1.0 / levels, 0, IntType::U8).expect("1..=8 bits: a valid scale")
    }

    /// `[Clip(0, 1), q]` for a layer with `channels` input channels.
    fn activation_ops(&self, channels: usize) -> Result<[Op; 2]> {
        Ok([
            Op::Clip(Clip::new(0.0, 1.0)?),
            Op::Int8Conv(Int8Conv::quantize_dequantize(
                channels,
                self.activation_params(),
            )?),
        ])
    }

    /// The graph to train: every layer node becomes the block
    /// `[Clip(0, 1), q, layer]` (its parameters are then named
    /// `<node>.2.weight`, `<node>.2.bias`).
    ///
    /// # Errors
    /// A layer that is not a plain convolution or linear node of `graph`.
    pub fn training_graph(&self, graph: &Graph) -> Result<Graph> {
        let mut g = graph.clone();
        for name in &self.layers {
            prefix_layer(&mut g, name, "DoReFa layer", |channels| {
                Ok(self.activation_ops(channels)?.to_vec())
            })?;
        }
        Ok(g)
    }

    /// The weight fake quantization of the training graph
    /// ([`QatQuantizer::DoReFa`]), for
    /// [`Trainer::with_fake_quant`](crate::train::Trainer::with_fake_quant).
    ///
    /// # Errors
    /// None in practice (the quantizer has no clip limit).
    pub fn fake_quant(&self) -> hasten_train::Result<FakeQuant> {
        let mut fq = FakeQuant::new();
        let q = Arc::new(QatQuantizer::DoReFa {
            bits: self.weight_bits,
        });
        for name in &self.layers {
            fq.insert(format!("{name}.2.weight"), q.clone())?;
        }
        Ok(fq)
    }

    /// Freezes a trained training graph (holding the full-precision
    /// weights, `Trainer::graph`): each block becomes
    /// `[Clip(0, 1), q, FixedPointConv]`, the last op [`DoReFa::new`]'s of
    /// the trained weights.
    ///
    /// # Errors
    /// A layer node that is not such a block; a quantization error.
    pub fn freeze(&self, trained: &Graph) -> Result<Graph> {
        let transform = DoReFa::new(self.weight_bits)?;
        let mut g = trained.clone();
        for name in &self.layers {
            let node = g
                .node(name)
                .ok_or_else(|| Error::param("DoReFa layer", name, "a node of the graph"))?;
            let input = node.input_shapes()[0];
            let layer = match node.op() {
                NodeOp::Block(b) if b.ops().len() == 3 => match &b.ops()[2] {
                    Op::Conv(c) => Layer::from(c.clone()),
                    Op::Linear(l) => Layer::from(l.clone()),
                    _ => return Err(not_a_training_block(name)),
                },
                _ => return Err(not_a_training_block(name)),
            };
            let compressed = transform.apply(&layer, input)?;
            let mut ops = self.activation_ops(input.channels)?.to_vec();
            ops.extend(compressed.block.ops().iter().cloned());
            g.replace(name, Block::new(ops)?)?;
        }
        Ok(g)
    }
}

fn not_a_training_block(name: &str) -> Error {
    Error::param(
        "DoReFa layer",
        name,
        "a [clip, quantize_dequantize, layer] block of the training graph",
    )
}

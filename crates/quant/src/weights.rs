//! The weight matrix every quantizer works on: a layer's filters as rows
//! (`[T, C/g·kh·kw]` or `[out, in]`), its [`WeightLayout`] and bias, and the
//! shared `apply` step that codes a layer into one packed op and wraps it into
//! a [`Compressed`].

use hasten_core::ndarray::{Array1, Array2};
use hasten_core::{
    relative_error, ActShape, Block, Compressed, Layer, Op, Result, Transform, WeightLayout,
};

/// A layer seen as a weight matrix.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Geometry of the layer.
    pub layout: WeightLayout,
    /// Weights `[rows, row_len]`, one row per output filter.
    pub matrix: Array2<f32>,
    /// The layer's bias.
    pub bias: Option<Array1<f32>>,
}

impl LayerWeights {
    /// The filters of `layer` as rows.
    pub fn of(layer: &Layer) -> Self {
        let layout = WeightLayout::of_layer(layer);
        let (matrix, bias) = match layer {
            Layer::Conv(c) => (c.weight().filter_matrix().to_owned(), c.bias().cloned()),
            Layer::Linear(l) => (l.weight().clone(), l.bias().cloned()),
        };
        LayerWeights {
            layout,
            matrix,
            bias,
        }
    }
}

/// The shared body of every quantizer's [`Transform::apply`], available on
/// every [`Transform`] of this crate.
pub(crate) trait QuantizeLayer: Transform {
    /// Views `layer` as its weight matrix ([`LayerWeights::of`]), codes it
    /// into one packed op with `quantize`, and wraps that op into a
    /// [`Compressed`] named after this quantizer, whose report carries the
    /// relative error of `dequantize(&op)` against the original weights.
    fn quantize_layer<P: Into<Op>>(
        &self,
        quantize: impl FnOnce(&Self, &LayerWeights) -> Result<P>,
        dequantize: impl FnOnce(&P) -> Array2<f32>,
        layer: &Layer,
        input: ActShape,
    ) -> Result<Compressed> {
        let weights = LayerWeights::of(layer);
        let op = quantize(self, &weights)?;
        let weight_error = relative_error(&weights.matrix, &dequantize(&op));
        Compressed::new(
            self.name(),
            layer,
            Block::single(op),
            input,
            Some(weight_error),
        )
    }
}

impl<T: Transform> QuantizeLayer for T {}

/// Whether a quantizer shares one set of parameters over the layer or keeps
/// one per output channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// One scale / codebook for the whole layer.
    #[default]
    PerTensor,
    /// One scale / codebook per output channel (filter).
    PerChannel,
}

impl Granularity {
    /// The row groups: one group of all rows, or one per row.
    pub(crate) fn groups(self, rows: usize) -> Vec<std::ops::Range<usize>> {
        match self {
            Granularity::PerTensor => std::iter::once(0..rows).collect(),
            Granularity::PerChannel => (0..rows).map(|r| r..r + 1).collect(),
        }
    }
}

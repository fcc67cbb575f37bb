//! The weight matrix every quantizer works on: a layer's filters as rows
//! (`[T, C/g·kh·kw]` or `[out, in]`), its [`WeightLayout`] and bias, and the
//! shared `apply` step that codes a layer into one packed op and wraps it into
//! a [`Compressed`].

use hasten_core::error::ensure_finite;
use hasten_core::ndarray::{Array1, Array2};
use hasten_core::{
    relative_error, ActShape, Block, Compressed, Error, Layer, Op, Result, Transform, WeightLayout,
};

/// A layer seen as a weight matrix: validated once, so every quantizer can
/// rely on a `[rows, row_len]` matrix of finite values in standard
/// (row-major) layout and a matching finite bias.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    layout: WeightLayout,
    matrix: Array2<f32>,
    bias: Option<Array1<f32>>,
}

impl LayerWeights {
    /// Weights `matrix` (`[layout.rows(), layout.row_len()]`, any memory
    /// layout; stored row-major) and an optional `bias` for a layer of
    /// geometry `layout`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the matrix or bias does not match the
    /// layout; [`Error::NonFinite`] for a NaN or infinity in either.
    pub fn new(
        layout: WeightLayout,
        matrix: Array2<f32>,
        bias: Option<Array1<f32>>,
    ) -> Result<Self> {
        let want = (layout.rows(), layout.row_len());
        if matrix.dim() != want {
            return Err(Error::shape(
                "weight matrix",
                format!("{} × {}", want.0, want.1),
                format!("{} × {}", matrix.nrows(), matrix.ncols()),
            ));
        }
        let matrix = if matrix.is_standard_layout() {
            matrix
        } else {
            matrix.as_standard_layout().into_owned()
        };
        ensure_finite("weight matrix", matrix.iter())?;
        if let Some(b) = &bias {
            if b.len() != want.0 {
                return Err(Error::shape("bias length", want.0, b.len()));
            }
            ensure_finite("bias", b.iter())?;
        }
        Ok(LayerWeights {
            layout,
            matrix,
            bias,
        })
    }

    /// Geometry of the layer.
    pub fn layout(&self) -> &WeightLayout {
        &self.layout
    }

    /// Weights `[rows, row_len]`, one row per output filter, row-major.
    pub fn matrix(&self) -> &Array2<f32> {
        &self.matrix
    }

    /// The layer's bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// The filters of `layer` as rows (a layer is already validated).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        activation_params, Binarize, DoReFa, FixedPoint, Int8Quantize, Lcnn, Mode, ProductQuantize,
        ScalarKMeans, Solver, Ternarize,
    };
    use hasten_core::ndarray::ShapeBuilder;
    use hasten_core::{ConvSpec, Error, IntType, SeededRng};

    fn layout() -> WeightLayout {
        WeightLayout::conv([6, 2, 2, 2], ConvSpec::new()).unwrap()
    }

    /// The same 6 × 8 matrix, row-major and column-major.
    fn matrices() -> (Array2<f32>, Array2<f32>) {
        let mut rng = SeededRng::new(3);
        let row: Array2<f32> = rng.normal_array((6, 8), 1.0);
        let mut col = Array2::<f32>::zeros((6, 8).f());
        col.assign(&row);
        assert!(!col.is_standard_layout());
        (row, col)
    }

    /// Every quantizer of the crate, as a function from weights to the
    /// dequantized matrix of its op.
    type Quantizer = (
        &'static str,
        Box<dyn Fn(&LayerWeights) -> Result<Array2<f32>>>,
    );

    fn quantizers() -> Vec<Quantizer> {
        let input = activation_params(-4.0, 4.0, IntType::U8).unwrap();
        vec![
            (
                "scalar k-means",
                Box::new(|w| {
                    let t = ScalarKMeans::new(3, Granularity::PerTensor, Solver::Optimal)?;
                    Ok(t.quantize(w)?.dequantized())
                }),
            ),
            (
                "fixed point",
                Box::new(|w| {
                    let t = FixedPoint::new(4, Mode::Affine, Granularity::PerChannel)?;
                    Ok(t.quantize(w)?.dequantized())
                }),
            ),
            (
                "ternary",
                Box::new(|w| {
                    Ok(Ternarize::twn(Granularity::PerTensor)
                        .quantize(w)?
                        .dequantized())
                }),
            ),
            (
                "binary",
                Box::new(|w| Ok(Binarize::binary_weights().quantize(w)?.dequantized())),
            ),
            (
                "int8",
                Box::new(move |w| {
                    let op = Int8Quantize::new(input, None, Granularity::PerChannel).quantize(w)?;
                    let scales = op.weight_scales().clone();
                    Ok(Array2::from_shape_fn(op.weights().dim(), |(t, j)| {
                        f32::from(op.weights()[[t, j]])
                            * scales[if scales.len() == 1 { 0 } else { t }]
                    }))
                }),
            ),
            (
                "product",
                Box::new(|w| {
                    Ok(ProductQuantize::new(2, 3, 20, 1)?
                        .quantize(w)?
                        .dequantized())
                }),
            ),
            (
                "DoReFa",
                Box::new(|w| Ok(DoReFa::new(3)?.quantize(w)?.dequantized())),
            ),
            (
                "LCNN",
                Box::new(|w| Ok(Lcnn::new(3, 1, 3, 1)?.quantize(w)?.dequantized())),
            ),
        ]
    }

    #[test]
    fn any_memory_layout_quantizes_like_row_major() {
        let (row, col) = matrices();
        let a = LayerWeights::new(layout(), row, None).unwrap();
        let b = LayerWeights::new(layout(), col, None).unwrap();
        assert!(b.matrix().is_standard_layout());
        assert_eq!(a.matrix(), b.matrix());
        for (name, q) in quantizers() {
            assert_eq!(q(&a).unwrap(), q(&b).unwrap(), "{name}");
        }
    }

    #[test]
    fn non_finite_weights_are_rejected_once_for_every_quantizer() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let (mut row, _) = matrices();
            row[[2, 5]] = bad;
            match LayerWeights::new(layout(), row, None) {
                Err(Error::NonFinite { index, .. }) => assert_eq!(index, 2 * 8 + 5),
                other => panic!("{bad}: expected NonFinite, got {other:?}"),
            }
        }
        // A NaN bias as well.
        let (row, _) = matrices();
        let mut bias = Array1::<f32>::zeros(6);
        bias[4] = f32::NAN;
        assert!(matches!(
            LayerWeights::new(layout(), row.clone(), Some(bias)),
            Err(Error::NonFinite { index: 4, .. })
        ));
        // So no quantizer ever sees a NaN: each gets validated weights.
        let w = LayerWeights::new(layout(), row, None).unwrap();
        for (name, q) in quantizers() {
            assert!(q(&w).unwrap().iter().all(|v| v.is_finite()), "{name}");
        }
    }

    #[test]
    fn shapes_must_match_the_layout() {
        let (row, _) = matrices();
        assert!(matches!(
            LayerWeights::new(layout(), row.t().to_owned(), None),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            LayerWeights::new(layout(), row, Some(Array1::zeros(5))),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

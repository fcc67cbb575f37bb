//! Product quantization of a weight matrix (Jégou et al. \[52\], applied to
//! network weights by Gong et al. \[51\]; survey section 5): `W = [W_1 … W_s]`
//! is split by columns into `s` sub-matrices, the rows of each are clustered
//! by k-means and stored as `⌈log₂ k⌉`-bit codes plus a `k × (row_len / s)`
//! codebook, in a [`ProductQuantizedConv`]. For a convolution, a row is a
//! filter flattened in (channel, kh, kw) order.

use hasten_core::ndarray::{s, Array2, Array3};
use hasten_core::{
    bits_for, ActShape, Compressed, Error, Layer, PackedCodes, ProductQuantizedConv, Result,
    SeededRng, Transform,
};

use crate::kmeans::kmeans;
use crate::weights::{LayerWeights, QuantizeLayer};

/// Product quantization with `subblocks` column blocks and `k` centroids each.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::NonFinite`] for a NaN or infinite
/// weight and with the input-shape errors of the layer, and when `subblocks` does not divide the row length or `k` exceeds the rows; [`ProductQuantize::new`] refuses zero sub-blocks and `k` outside `1..=65536`.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_quant::ProductQuantize;
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// // Rows of C·k² = 36 weights in 4 sub-blocks of 9, 4 centroids each.
/// let c = ProductQuantize::new(4, 4, 20, 1)?.apply(&layer, input)?;
/// assert_eq!(c.block.ops()[0].kind(), "product_quantized_conv");
/// assert!(ProductQuantize::new(5, 4, 20, 1)?.apply(&layer, input).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductQuantize {
    subblocks: usize,
    k: usize,
    max_iter: usize,
    seed: u64,
}

impl ProductQuantize {
    /// `subblocks ≥ 1`, `k ∈ 1..=65536`, Lloyd capped at `max_iter`, seeded.
    ///
    /// # Errors
    /// As listed on [`ProductQuantize`].
    pub fn new(subblocks: usize, k: usize, max_iter: usize, seed: u64) -> Result<Self> {
        if subblocks == 0 {
            return Err(Error::param("product sub-blocks", subblocks, ">= 1"));
        }
        if !(1..=1 << 16).contains(&k) {
            return Err(Error::param("k (codebook size)", k, "1..=65536"));
        }
        Ok(ProductQuantize {
            subblocks,
            k,
            max_iter,
            seed,
        })
    }

    /// The op for a layer's weights: `subblocks` must divide the row length
    /// and `k` must not exceed the number of rows.
    ///
    /// # Errors
    /// As listed on [`ProductQuantize`].
    pub fn quantize(&self, weights: &LayerWeights) -> Result<ProductQuantizedConv> {
        let m = &weights.matrix();
        let (rows, cols) = m.dim();
        if cols % self.subblocks != 0 {
            return Err(Error::param(
                "product sub-blocks",
                self.subblocks,
                format!("a divisor of the row length {cols}"),
            ));
        }
        if self.k > rows {
            return Err(Error::param(
                "k (codebook size)",
                self.k,
                format!("<= {rows} (rows to cluster)"),
            ));
        }
        let d = cols / self.subblocks;
        let mut books = Array3::<f32>::zeros((self.subblocks, self.k, d));
        let mut codes = vec![0u32; self.subblocks * rows];
        let mut rng = SeededRng::new(self.seed);
        for i in 0..self.subblocks {
            let block: Array2<f64> = m.slice(s![.., i * d..(i + 1) * d]).mapv(f64::from);
            let r = kmeans(&block, self.k, self.max_iter, &mut rng.fork(i as u64))?;
            books
                .slice_mut(s![i, .., ..])
                .assign(&r.centroids.mapv(|v| v as f32));
            codes[i * rows..(i + 1) * rows].copy_from_slice(&r.assignment);
        }
        ProductQuantizedConv::new(
            *weights.layout(),
            PackedCodes::pack(&codes, self.subblocks, rows, bits_for(self.k))?,
            books,
            weights.bias().cloned(),
        )
    }
}

impl Transform for ProductQuantize {
    fn name(&self) -> &str {
        "product quantization"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        self.quantize_layer(
            Self::quantize,
            ProductQuantizedConv::dequantized,
            layer,
            input,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvLayer, ConvSpec, LinearLayer, Op, Operator};
    use proptest::prelude::*;

    #[test]
    fn one_subblock_equals_kmeans_on_rows() {
        let mut rng = SeededRng::new(1);
        let layer: Layer = LinearLayer::new(rng.normal_array((30, 8), 1.0), None)
            .unwrap()
            .into();
        let w = LayerWeights::of(&layer);
        let op = ProductQuantize::new(1, 5, 40, 9)
            .unwrap()
            .quantize(&w)
            .unwrap();
        let km = kmeans(
            &w.matrix().mapv(f64::from),
            5,
            40,
            &mut SeededRng::new(9).fork(0),
        )
        .unwrap();
        let want = Array2::from_shape_fn((30, 8), |(t, j)| {
            km.centroids[[km.assignment[t] as usize, j]] as f32
        });
        assert_eq!(op.dequantized(), want);
    }

    #[test]
    fn planted_product_structure_is_exact_and_forward_matches_dense() {
        // Each 9-wide sub-block of every filter is one of 3 prototypes.
        let mut rng = SeededRng::new(2);
        let protos: Array3<f32> = rng.normal_array((2, 3, 9), 1.0);
        let w = hasten_core::ndarray::Array4::from_shape_fn((12, 2, 3, 3), |(t, c, i, j)| {
            protos[[c, (t * (c + 1)) % 3, i * 3 + j]]
        });
        let layer: Layer = ConvLayer::from_array(w, ConvSpec::new().with_padding(1))
            .unwrap()
            .into();
        let c = ProductQuantize::new(2, 3, 50, 3)
            .unwrap()
            .apply(&layer, ActShape::new(2, 5, 5))
            .unwrap();
        assert!(c.report.weight_error.unwrap() < 1e-6);
        let Op::ProductQuantizedConv(op) = &c.block.ops()[0] else {
            panic!()
        };
        let dense = op.layout().dense_layer(op.dequantized(), None).unwrap();
        let x = rng.normal_array((1, 2, 5, 5), 1.0);
        let (a, b) = (
            op.reference_forward(&x).unwrap(),
            dense.to_op().reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-5);
        }
        // Codes: 2 rows of 12 two-bit codes (1 word each); codebooks 2·3·9 f32.
        assert_eq!(c.report.after.weight_bytes, 2 * 8 + 54 * 4);
    }

    #[test]
    fn bad_subblocks_and_k_are_typed_errors() {
        let layer: Layer = LinearLayer::from_slice(2, 3, &[1., 2., 3., 4., 5., 6.], None)
            .unwrap()
            .into();
        assert!(ProductQuantize::new(0, 2, 10, 0).is_err());
        assert!(ProductQuantize::new(1, 0, 10, 0).is_err());
        assert!(ProductQuantize::new(2, 2, 10, 0)
            .unwrap()
            .apply(&layer, ActShape::flat(3))
            .is_err());
        assert!(ProductQuantize::new(3, 3, 10, 0)
            .unwrap()
            .apply(&layer, ActShape::flat(3))
            .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn never_panics(rows in 1usize..6, cols in 1usize..8, s in 0usize..5, k in 0usize..8) {
            let mut rng = SeededRng::new(rows as u64);
            let layer: Layer = LinearLayer::new(rng.normal_array((rows, cols), 1.0), None).unwrap().into();
            let r = ProductQuantize::new(s, k, 10, 0).and_then(|t| t.apply(&layer, ActShape::flat(cols)));
            let ok = s >= 1 && cols % s == 0 && k >= 1 && k <= rows;
            prop_assert_eq!(r.is_ok(), ok);
        }
    }
}

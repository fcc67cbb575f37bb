//! Scalar quantization by k-means, survey eq. (4) (Gong et al. \[51\]): the
//! weights of a layer (or of each output channel) are clustered into `k`
//! centroids and each weight is stored as the `⌈log₂ k⌉`-bit index of its
//! nearest centroid, in a [`CodebookConv`].

use hasten_core::ndarray::Array2;
use hasten_core::{
    bits_for, ActShape, CodebookConv, Compressed, Error, Layer, PackedCodes, Result, SeededRng,
    Transform,
};

use crate::kmeans1d::{assign_1d, lloyd_1d, optimal_1d, KMeans1d};
use crate::weights::{Granularity, LayerWeights, QuantizeLayer};

/// Which 1-D k-means solver to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solver {
    /// k-means++ seeding and at most `max_iter` Lloyd iterations.
    Lloyd {
        /// Iteration cap.
        max_iter: usize,
        /// Seed of the k-means++ seeding.
        seed: u64,
    },
    /// The exact optimum (dynamic programming); see [`crate::kmeans1d::optimal_1d`].
    Optimal,
}

impl Solver {
    /// Runs the solver on `values`.
    pub fn solve(&self, values: &[f32], k: usize, rng_index: u64) -> Result<KMeans1d> {
        match *self {
            Solver::Lloyd { max_iter, seed } => {
                let mut rng = SeededRng::new(seed).fork(rng_index);
                lloyd_1d(values, k, max_iter, &mut rng)
            }
            Solver::Optimal => optimal_1d(values, k),
        }
    }
}

/// Scalar k-means quantization with `k` centroids per layer or per channel.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::NonFinite`] for a NaN or infinite
/// weight and with the input-shape errors of the layer, and when `k` exceeds the weights of a group; [`ScalarKMeans::new`] refuses `k` outside `1..=65536`.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_quant::{Granularity, ScalarKMeans, Solver};
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let q = ScalarKMeans::new(16, Granularity::PerTensor, Solver::Optimal)?;
/// let c = q.apply(&layer, input)?;
/// assert_eq!(c.block.ops()[0].kind(), "codebook_conv");
/// assert!(ScalarKMeans::new(0, Granularity::PerTensor, Solver::Optimal).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalarKMeans {
    k: usize,
    granularity: Granularity,
    solver: Solver,
}

impl ScalarKMeans {
    /// `k ∈ 1..=65536` centroids (`⌈log₂ k⌉ ≤ 16` bits per weight).
    ///
    /// # Errors
    /// As listed on [`ScalarKMeans`].
    pub fn new(k: usize, granularity: Granularity, solver: Solver) -> Result<Self> {
        if !(1..=1 << 16).contains(&k) {
            return Err(Error::param("k (codebook size)", k, "1..=65536"));
        }
        Ok(ScalarKMeans {
            k,
            granularity,
            solver,
        })
    }

    /// Codebook size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The op for a layer's weights; `k` must not exceed the weights per group.
    ///
    /// # Errors
    /// As listed on [`ScalarKMeans`].
    pub fn quantize(&self, weights: &LayerWeights) -> Result<CodebookConv> {
        let m = &weights.matrix();
        let (rows, cols) = m.dim();
        let flat = m.as_slice().expect("standard layout");
        let groups = self.granularity.groups(rows);
        let mut books = Array2::<f32>::zeros((groups.len(), self.k));
        let mut codes = vec![0u32; rows * cols];
        for (g, range) in groups.iter().enumerate() {
            let span = range.start * cols..range.end * cols;
            let values = &flat[span.clone()];
            let sol = self.solver.solve(values, self.k, g as u64)?;
            codes[span].copy_from_slice(&assign_1d(values, &sol.centroids));
            for (b, &c) in books.row_mut(g).iter_mut().zip(&sol.centroids) {
                *b = c as f32;
            }
        }
        CodebookConv::new(
            *weights.layout(),
            PackedCodes::pack(&codes, rows, cols, bits_for(self.k))?,
            books,
            weights.bias().cloned(),
        )
    }
}

impl Transform for ScalarKMeans {
    fn name(&self) -> &str {
        match self.solver {
            Solver::Lloyd { .. } => "scalar k-means (Lloyd, eq. 4)",
            Solver::Optimal => "scalar k-means (optimal 1-D DP, eq. 4)",
        }
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        self.quantize_layer(Self::quantize, CodebookConv::dequantized, layer, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvLayer, ConvSpec, LinearLayer, Op, Operator};
    use proptest::prelude::*;

    #[test]
    fn codebook_layer_is_recovered_exactly() {
        // A layer whose weights take 5 values is coded with zero error at k ≥ 5.
        let mut rng = SeededRng::new(1);
        let levels = [-0.5f32, -0.1, 0.0, 0.2, 0.7];
        let w = hasten_core::ndarray::Array4::from_shape_simple_fn((8, 4, 3, 3), || {
            levels[rng.below(5)]
        });
        let layer: Layer = ConvLayer::from_array(w, ConvSpec::new().with_padding(1))
            .unwrap()
            .into();
        for solver in [
            Solver::Optimal,
            Solver::Lloyd {
                max_iter: 50,
                seed: 3,
            },
        ] {
            let c = ScalarKMeans::new(8, Granularity::PerTensor, solver)
                .unwrap()
                .apply(&layer, ActShape::new(4, 6, 6))
                .unwrap();
            assert_eq!(c.report.weight_error, Some(0.0));
            // 36 weights · 3 bits = 108 bits = 2 words per filter; 8 codebook entries.
            assert_eq!(c.report.after.weight_bytes, 8 * 2 * 8 + 8 * 4);
        }
    }

    #[test]
    fn forward_equals_dense_on_dequantized_per_channel() {
        let mut rng = SeededRng::new(2);
        let layer: Layer = ConvLayer::from_array(
            rng.normal_array((4, 3, 3, 3), 0.3),
            ConvSpec::new().with_stride(2),
        )
        .unwrap()
        .into();
        let c = ScalarKMeans::new(4, Granularity::PerChannel, Solver::Optimal)
            .unwrap()
            .apply(&layer, ActShape::new(3, 9, 9))
            .unwrap();
        let Op::CodebookConv(op) = &c.block.ops()[0] else {
            panic!()
        };
        assert_eq!(op.codebooks().dim(), (4, 4));
        let dense = op.layout().dense_layer(op.dequantized(), None).unwrap();
        let x = rng.normal_array((2, 3, 9, 9), 1.0);
        let (a, b) = (
            op.reference_forward(&x).unwrap(),
            dense.to_op().reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-5);
        }
        // Per-channel optimal error ≤ per-tensor optimal error.
        let t = ScalarKMeans::new(4, Granularity::PerTensor, Solver::Optimal)
            .unwrap()
            .apply(&layer, ActShape::new(3, 9, 9))
            .unwrap();
        assert!(c.report.weight_error.unwrap() <= t.report.weight_error.unwrap() + 1e-12);
    }

    #[test]
    fn bad_k_is_typed_error() {
        assert!(ScalarKMeans::new(0, Granularity::PerTensor, Solver::Optimal).is_err());
        assert!(ScalarKMeans::new(70_000, Granularity::PerTensor, Solver::Optimal).is_err());
        let layer: Layer = LinearLayer::from_slice(2, 3, &[1., 2., 3., 4., 5., 6.], None)
            .unwrap()
            .into();
        let t = ScalarKMeans::new(4, Granularity::PerChannel, Solver::Optimal).unwrap();
        assert!(t.apply(&layer, ActShape::flat(3)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn packed_codes_round_trip(rows in 1usize..4, cols in 1usize..40, k in 1usize..20, seed in 0u64..30) {
            let mut rng = SeededRng::new(seed);
            let layer: Layer = LinearLayer::new(rng.normal_array((rows, cols), 1.0), None).unwrap().into();
            let t = ScalarKMeans::new(k, Granularity::PerTensor, Solver::Lloyd { max_iter: 20, seed }).unwrap();
            match t.quantize(&LayerWeights::of(&layer)) {
                Ok(op) => {
                    prop_assert!(k <= rows * cols);
                    let deq = op.dequantized();
                    let codes = op.codes().unpack();
                    for (v, c) in deq.iter().zip(&codes) {
                        prop_assert_eq!(*v, op.codebooks()[[0, *c as usize]]);
                    }
                }
                Err(_) => prop_assert!(k > rows * cols),
            }
        }
    }
}

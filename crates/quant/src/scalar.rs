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
/// weight and with the input-shape errors of the layer; [`ScalarKMeans::new`] refuses `k` outside `1..=65536`.
/// A group with no more weights than `k` (the 3×3 filters of a first
/// convolution on one input channel, per channel) is coded exactly: each
/// weight is its own centroid.
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

    /// The op for a layer's weights; a group of at most `k` weights keeps
    /// them exactly (its unused codebook entries are 0).
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
            let sol = self
                .solver
                .solve(values, self.k.min(values.len()), g as u64)?;
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
        let t = ScalarKMeans::new(2, Granularity::PerChannel, Solver::Optimal).unwrap();
        assert!(t.apply(&layer, ActShape::flat(4)).is_err());
    }

    #[test]
    fn groups_smaller_than_k_are_coded_exactly() {
        // Per channel, a 1-input-channel 3×3 convolution has 9 weights per
        // group: k = 16 (4 bits) keeps every weight, at 4 bits per code.
        let mut rng = SeededRng::new(4);
        let w = rng.normal_array((6, 1, 3, 3), 0.5);
        let layer: Layer = ConvLayer::from_array(w.clone(), ConvSpec::new().with_padding(1))
            .unwrap()
            .into();
        for solver in [
            Solver::Optimal,
            Solver::Lloyd {
                max_iter: 20,
                seed: 1,
            },
        ] {
            let c = ScalarKMeans::new(16, Granularity::PerChannel, solver)
                .unwrap()
                .apply(&layer, ActShape::new(1, 8, 8))
                .unwrap();
            let Op::CodebookConv(op) = &c.block.ops()[0] else {
                panic!("not a codebook conv")
            };
            assert_eq!(op.codebooks().dim(), (6, 16));
            assert_eq!(op.codes().bits(), 4);
            let w = w.as_slice().unwrap();
            assert_eq!(op.dequantized().as_slice().unwrap(), w);
            assert_eq!(c.report.weight_error, Some(0.0));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn packed_codes_round_trip(rows in 1usize..4, cols in 1usize..40, k in 1usize..20, seed in 0u64..30) {
            let mut rng = SeededRng::new(seed);
            let layer: Layer = LinearLayer::new(rng.normal_array((rows, cols), 1.0), None).unwrap().into();
            let t = ScalarKMeans::new(k, Granularity::PerTensor, Solver::Lloyd { max_iter: 20, seed }).unwrap();
            let op = t.quantize(&LayerWeights::of(&layer)).unwrap();
            let deq = op.dequantized();
            let codes = op.codes().unpack();
            for (v, c) in deq.iter().zip(&codes) {
                prop_assert_eq!(*v, op.codebooks()[[0, *c as usize]]);
            }
            if k >= rows * cols {
                // No more weights than centroids: every weight is kept.
                let weights = LayerWeights::of(&layer);
                prop_assert_eq!(deq.as_slice().unwrap(), weights.matrix().as_slice().unwrap());
            }
        }
    }
}

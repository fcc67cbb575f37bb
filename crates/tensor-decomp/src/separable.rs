//! Separable filters, Jaderberg, Vedaldi & Zisserman \[15\] (survey section 2,
//! Table 1 "two-component": `K·d·(C + N)` MACs per pixel).
//!
//! The `d×d, C→N` kernel is replaced by a vertical `d×1, C→K` convolution
//! followed by a horizontal `1×d, K→N` convolution (their scheme 2):
//! `W[n, c, i, j] ≈ Σ_k V[k, c, i] · H[n, k, j]`.
//! This is a rank-`K` factorisation of the matrix `M[(c, i), (n, j)]`, so the
//! filter-reconstruction objective of \[15\] is minimised by alternating least
//! squares; started from the truncated SVD of `M` (the Eckart–Young optimum)
//! ALS stays there, started at random it converges to it.
//!
//! The vertical convolution carries the vertical stride, padding and dilation,
//! the horizontal one the horizontal ones, so the block computes exactly the
//! convolution with the reconstructed kernel.

use hasten_core::error::{Error, Result};
use hasten_core::linalg;
use hasten_core::ndarray::{Array2, Array4};
use hasten_core::{ActShape, Block, Compressed, ConvLayer, Layer, SeededRng, Transform};

use crate::common::{
    conv_op, dense_conv, horizontal_spec, kernel_error, matrix_error, vertical_spec,
};
use crate::rank::{RankProblem, RankSpec};
use crate::svd::low_rank;

/// How the ALS fit of the separable factors starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeparableInit {
    /// From the truncated SVD (already optimal; ALS only confirms it).
    Svd,
    /// From Gaussian factors drawn with this seed.
    Random(u64),
}

/// Separable (`d×1` then `1×d`) approximation of a convolution, \[15\].
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully connected, grouped or 1-wide layer,
/// [`Error::InvalidRank`] for a rank outside `1..=min(C·kh, N·kw)`, and with
/// the input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::{RankSpec, SeparableFilters};
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// // Full rank min(C·kh, N·kw) = 12 is exact: a 3×1 then a 1×3 convolution.
/// let c = SeparableFilters::new(RankSpec::Fixed(12)).apply(&layer, ActShape::new(4, 8, 8))?;
/// assert_eq!(c.block.ops().len(), 2);
/// assert!(c.report.weight_error.unwrap() < 1e-6);
/// assert!(SeparableFilters::new(RankSpec::Fixed(13)).apply(&layer, ActShape::new(4, 8, 8)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SeparableFilters {
    rank: RankSpec,
    init: SeparableInit,
    als_iterations: usize,
}

/// The fitted separable factors of a kernel.
#[derive(Debug, Clone)]
pub struct SeparableFactors {
    /// Vertical kernel `[K, C, kh, 1]`.
    pub vertical: Array4<f64>,
    /// Horizontal kernel `[N, K, 1, kw]`.
    pub horizontal: Array4<f64>,
    /// Relative reconstruction error after each ALS sweep (first entry: the start).
    pub error_history: Vec<f64>,
}

impl SeparableFilters {
    /// Separable filters with the rank chosen by `rank`, SVD start and 5 ALS sweeps.
    pub fn new(rank: RankSpec) -> Self {
        SeparableFilters {
            rank,
            init: SeparableInit::Svd,
            als_iterations: 5,
        }
    }

    /// Sets the ALS start.
    pub fn with_init(mut self, init: SeparableInit) -> Self {
        self.init = init;
        self
    }

    /// Sets the number of ALS sweeps.
    pub fn with_als_iterations(mut self, n: usize) -> Self {
        self.als_iterations = n;
        self
    }
}

/// The matrix `M[(c, i), (n, j)] = W[n, c, i, j]` whose rank is the separable rank.
pub fn separable_matrix(kernel: &Array4<f64>) -> Array2<f64> {
    let (n, c, kh, kw) = kernel.dim();
    kernel
        .view()
        .permuted_axes([1, 2, 0, 3])
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((c * kh, n * kw))
        .expect("element count preserved")
}

/// Fits rank-`rank` separable factors to `kernel` (`[N, C, kh, kw]`) by ALS
/// from `init`, `iterations` sweeps.
pub fn fit_separable(
    kernel: &Array4<f64>,
    rank: usize,
    init: SeparableInit,
    iterations: usize,
) -> Result<SeparableFactors> {
    let (n, c, kh, kw) = kernel.dim();
    if kh == 1 && kw == 1 {
        return Err(Error::unsupported(
            "separable filters",
            "a 1×1 kernel (nothing to separate; use the truncated SVD)",
        ));
    }
    let m = separable_matrix(kernel);
    let max = (c * kh).min(n * kw);
    if rank == 0 || rank > max {
        return Err(Error::InvalidRank { rank, max });
    }
    let (mut left, mut right) = match init {
        SeparableInit::Svd => {
            let lr = low_rank(m.view(), rank)?;
            (lr.left, lr.right)
        }
        SeparableInit::Random(seed) => {
            let mut rng = SeededRng::new(seed);
            (
                rng.normal_array_f64((c * kh, rank), 1.0),
                rng.normal_array_f64((rank, n * kw), 1.0),
            )
        }
    };
    let mut history = vec![matrix_error(&m, &left.dot(&right))];
    for _ in 0..iterations {
        // right = argmin ‖M − left·right‖, then left = argmin with right fixed.
        right = linalg::lstsq(left.view(), m.view())?;
        left = linalg::lstsq(right.t(), m.t())?.reversed_axes();
        history.push(matrix_error(&m, &left.dot(&right)));
    }
    let vertical = left
        .t()
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((rank, c, kh, 1))
        .map_err(|e| Error::shape("vertical kernel", rank, e))?;
    let horizontal = right
        .into_shape_with_order((rank, n, 1, kw))
        .map_err(|e| Error::shape("horizontal kernel", rank, e))?
        .permuted_axes([1, 0, 2, 3])
        .as_standard_layout()
        .into_owned();
    Ok(SeparableFactors {
        vertical,
        horizontal,
        error_history: history,
    })
}

impl SeparableFactors {
    /// The kernel `Σ_k V[k, c, i] H[n, k, j]` the factors represent; fails
    /// when the factor shapes do not fit together.
    pub fn reconstruct(&self) -> Result<Array4<f64>> {
        let (k, c, kh, one_v) = self.vertical.dim();
        let (n, k2, one_h, kw) = self.horizontal.dim();
        if k != k2 || one_v != 1 || one_h != 1 {
            return Err(Error::shape(
                "separable factors ([K, C, kh, 1] and [N, K, 1, kw])",
                format!("[{k}, {c}, {kh}, 1] and [{n}, {k}, 1, {kw}]"),
                format!(
                    "{:?} and {:?}",
                    self.vertical.shape(),
                    self.horizontal.shape()
                ),
            ));
        }
        let v = self
            .vertical
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((k, c * kh))
            .expect("element count");
        let h = self
            .horizontal
            .view()
            .permuted_axes([1, 0, 2, 3])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((k, n * kw))
            .expect("element count");
        let m = v.t().dot(&h); // [(c, i), (n, j)]
        Ok(m.into_shape_with_order((c, kh, n, kw))
            .expect("element count")
            .permuted_axes([2, 0, 1, 3])
            .as_standard_layout()
            .into_owned())
    }
}

fn separable_macs(conv: &ConvLayer, input: ActShape, rank: usize) -> Result<u64> {
    let [n, c, kh, kw] = conv.weight().dims();
    let vspec = vertical_spec(conv.spec(), 1);
    let (vh, vw) = vspec.output_hw(input.height, input.width, kh, 1)?;
    let out = conv.output_shape(input)?;
    Ok((rank * c * kh * vh * vw + n * rank * kw * out.area()) as u64)
}

impl Transform for SeparableFilters {
    fn name(&self) -> &str {
        "separable-filters"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let conv = dense_conv(self.name(), layer)?;
        let [n, c, kh, kw] = conv.weight().dims();
        if kh == 1 && kw == 1 {
            return Err(Error::unsupported(
                self.name(),
                "a 1×1 kernel (nothing to separate; use the truncated SVD)",
            ));
        }
        let kernel = conv.weight().to_f64();
        let m = separable_matrix(&kernel);
        let needs_spectrum = matches!(self.rank, RankSpec::Energy(_));
        let spectrum = if needs_spectrum {
            linalg::thin_svd(m.view())?.s.to_vec()
        } else {
            Vec::new()
        };
        let macs = |r: usize| separable_macs(conv, input, r);
        let rank = self.rank.resolve(&RankProblem {
            method: self.name(),
            max: (c * kh).min(n * kw),
            spectrum: needs_spectrum.then_some(spectrum.as_slice()),
            matrix: Some(m.view()),
            base_macs: layer.cost(input)?.macs,
            macs: &macs,
        })?;
        let f = fit_separable(&kernel, rank, self.init, self.als_iterations)?;
        let block = Block::new(vec![
            conv_op(&f.vertical, None, vertical_spec(conv.spec(), 1))?,
            conv_op(&f.horizontal, conv.bias(), horizontal_spec(conv.spec(), 1))?,
        ])?;
        let err = kernel_error(conv.weight(), &f.reconstruct()?)?;
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{as_layer, assert_block_is_conv, layer_from, specs};
    use hasten_core::ConvSpec;
    use proptest::prelude::*;

    /// A kernel built from rank-`k` separable factors.
    fn planted(n: usize, c: usize, d: usize, k: usize, seed: u64) -> Array4<f64> {
        let mut rng = SeededRng::new(seed);
        let f = SeparableFactors {
            vertical: rng.normal_array_f64((k, c, d, 1), 1.0),
            horizontal: rng.normal_array_f64((n, k, 1, d), 1.0),
            error_history: vec![],
        };
        f.reconstruct().unwrap()
    }

    #[test]
    fn reconstruct_matches_definition() {
        let mut rng = SeededRng::new(1);
        let f = SeparableFactors {
            vertical: rng.normal_array_f64((2, 3, 3, 1), 1.0),
            horizontal: rng.normal_array_f64((4, 2, 1, 3), 1.0),
            error_history: vec![],
        };
        let w = f.reconstruct().unwrap();
        let mut e = 0.0;
        for k in 0..2 {
            e += f.vertical[[k, 2, 1, 0]] * f.horizontal[[3, k, 0, 2]];
        }
        assert!((w[[3, 2, 1, 2]] - e).abs() < 1e-12);
    }

    #[test]
    fn exact_recovery_and_block_is_layer() {
        let (n, c, d, k) = (8, 5, 3, 4);
        let kernel = planted(n, c, d, k, 2);
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            let res = SeparableFilters::new(RankSpec::Fixed(k))
                .apply(&as_layer(&conv), ActShape::new(c, 9, 10))
                .unwrap();
            assert!(res.report.weight_error.unwrap() < 1e-5);
            let f = fit_separable(&kernel, k, SeparableInit::Svd, 5).unwrap();
            assert_block_is_conv(&res.block, &conv, &f.reconstruct().unwrap(), (c, 9, 10));
        }
    }

    #[test]
    fn table1_two_component_cost() {
        // Stride 1, same padding: K·d·(C + N) MACs per pixel.
        let (n, c, d, k, h) = (16, 12, 3, 5, 7);
        let kernel = planted(n, c, d, 8, 3);
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let res = SeparableFilters::new(RankSpec::Fixed(k))
            .apply(&as_layer(&conv), ActShape::new(c, h, h))
            .unwrap();
        assert_eq!(res.report.after.macs, (k * d * (c + n) * h * h) as u64);
        assert_eq!(res.report.before.macs, (c * n * d * d * h * h) as u64);
    }

    #[test]
    fn evbmf_picks_the_planted_separable_rank() {
        // Separable rank 4 plus white noise 100× below the signal: the
        // (C·d) × (N·d) separable matrix has 4 singular values in the tens
        // and the rest below EVBMF's threshold (≈ σ(√L + √M) ≈ 0.13), so
        // EVBMF picks K = 4, which Table 1's cost K·d·(C + N) per pixel shows.
        let (n, c, d, k, h) = (16, 12, 3, 4, 7);
        let noisy = planted(n, c, d, k, 6) + SeededRng::new(7).normal_array_f64((n, c, d, d), 0.01);
        let conv = layer_from(&noisy, ConvSpec::new().with_padding(1), 0);
        let input = ActShape::new(c, h, h);
        let res = SeparableFilters::new(RankSpec::Evbmf)
            .apply(&as_layer(&conv), input)
            .unwrap();
        assert_eq!(res.report.after.macs, (k * d * (c + n) * h * h) as u64);
        assert!(res.report.weight_error.unwrap() < 1e-2);
        // Pure noise: no component above the threshold, a typed error.
        let noise = SeededRng::new(8).normal_array_f64((n, c, d, d), 0.01);
        let conv = layer_from(&noise, ConvSpec::new().with_padding(1), 0);
        assert!(SeparableFilters::new(RankSpec::Evbmf)
            .apply(&as_layer(&conv), input)
            .is_err());
    }

    #[test]
    fn als_from_random_start_reaches_svd_optimum() {
        let kernel = SeededRng::new(4).normal_array_f64((6, 4, 3, 3), 1.0);
        let svd = fit_separable(&kernel, 3, SeparableInit::Svd, 3).unwrap();
        let als = fit_separable(&kernel, 3, SeparableInit::Random(5), 300).unwrap();
        let opt = svd.error_history[0];
        for w in svd.error_history.windows(2) {
            assert!(w[1] <= w[0] + 1e-12, "{:?}", svd.error_history);
        }
        for w in als.error_history.windows(2) {
            assert!(w[1] <= w[0] + 1e-12);
        }
        // ALS never beats Eckart–Young and gets within 1e-6 of it.
        let last = *als.error_history.last().unwrap();
        assert!(last >= opt - 1e-12 && last - opt < 1e-6, "{last} vs {opt}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let one = layer_from(&Array4::ones((3, 2, 1, 1)), ConvSpec::new(), 0);
        let err = SeparableFilters::new(RankSpec::Fixed(1))
            .apply(&as_layer(&one), ActShape::new(2, 4, 4))
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }));
        let conv = layer_from(&Array4::ones((3, 2, 3, 3)), ConvSpec::new(), 0);
        for r in [0, 7] {
            assert!(SeparableFilters::new(RankSpec::Fixed(r))
                .apply(&as_layer(&conv), ActShape::new(2, 4, 4))
                .is_err());
        }
        assert!(fit_separable(&Array4::ones((3, 2, 1, 1)), 1, SeparableInit::Svd, 1).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn never_panics(n in 1usize..5, c in 1usize..4, kh in 1usize..4, kw in 1usize..4,
                        rank in 0usize..12, energy in -0.5f64..1.5) {
            let kernel = SeededRng::new(6).normal_array_f64((n, c, kh, kw), 1.0);
            let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
            let input = ActShape::new(c, 4, 4);
            let r = SeparableFilters::new(RankSpec::Fixed(rank)).apply(&as_layer(&conv), input);
            let valid = !(kh == 1 && kw == 1) && rank >= 1 && rank <= (c * kh).min(n * kw);
            prop_assert_eq!(r.is_ok(), valid);
            let e = SeparableFilters::new(RankSpec::Energy(energy)).apply(&as_layer(&conv), input);
            prop_assert_eq!(e.is_ok(), !(kh == 1 && kw == 1) && energy > 0.0 && energy <= 1.0);
        }
    }
}

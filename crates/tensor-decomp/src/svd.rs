//! Truncated SVD of a fully connected layer (survey section 5, eq. (2):
//! `W ≈ U′Vᵀ`, two smaller linear maps) and the channel SVD of a convolution
//! (the kernel's filter matrix `[T, C·kh·kw]` factored into a `kh×kw, C→K`
//! convolution followed by a `1×1, K→T` convolution; the data-free special
//! case of Zhang et al. \[23\]).
//!
//! Both are optimal in the Frobenius norm for their rank (Eckart–Young).

use hasten_core::error::{Error, Result};
use hasten_core::linalg::{self, Svd};
use hasten_core::ndarray::{Array2, ArrayView2};
use hasten_core::{ActShape, Block, Compressed, Layer, LinearLayer, Transform};

use crate::common::{balanced_factors, conv_op, dense_conv, matrix_error, pointwise_op};
use crate::rank::{RankProblem, RankSpec};

/// A rank-`r` factorisation `M ≈ left · right` from the truncated SVD, with
/// the singular values split evenly (`left = U√S`, `right = √S Vᵀ`).
#[derive(Debug, Clone)]
pub struct LowRank {
    /// `m × r`.
    pub left: Array2<f64>,
    /// `r × n`.
    pub right: Array2<f64>,
    /// All singular values of the matrix, non-increasing.
    pub singular_values: Vec<f64>,
}

impl LowRank {
    /// The rank-`r` product `left · right`; fails when the inner sizes differ.
    pub fn reconstruct(&self) -> Result<Array2<f64>> {
        if self.left.ncols() != self.right.nrows() {
            return Err(Error::shape(
                "low-rank factors (left columns = right rows)",
                self.left.ncols(),
                self.right.nrows(),
            ));
        }
        Ok(self.left.dot(&self.right))
    }
}

/// The best rank-`rank` factorisation of `m` (`1 ≤ rank ≤ min(m, n)`) in
/// the Frobenius norm (Eckart–Young): the truncated SVD of eq. (2), its
/// singular values split evenly between the two factors.
///
/// # Errors
/// [`Error::InvalidRank`] for a rank outside `1..=min(m, n)`, and the input
/// errors of [`linalg::thin_svd`] (empty or non-finite matrix).
///
/// ```
/// use hasten_core::{ndarray::Array2, SeededRng};
/// use hasten_tensor_decomp::low_rank;
///
/// // A rank-2 matrix is recovered exactly at rank 2.
/// let mut rng = SeededRng::new(0);
/// let a: Array2<f64> = rng.normal_array_f64((6, 2), 1.0);
/// let b: Array2<f64> = rng.normal_array_f64((2, 5), 1.0);
/// let m = a.dot(&b);
/// let f = low_rank(m.view(), 2)?;
/// assert_eq!((f.left.dim(), f.right.dim()), ((6, 2), (2, 5)));
/// let err = (&f.reconstruct()? - &m).iter().fold(0.0f64, |e, v| e.max(v.abs()));
/// assert!(err < 1e-10);
/// assert!(low_rank(m.view(), 6).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn low_rank(m: ArrayView2<f64>, rank: usize) -> Result<LowRank> {
    let svd = linalg::thin_svd(m)?;
    from_svd(&svd, rank)
}

fn from_svd(svd: &Svd, rank: usize) -> Result<LowRank> {
    let max = svd.s.len();
    if rank == 0 || rank > max {
        return Err(Error::InvalidRank { rank, max });
    }
    let (left, right) = balanced_factors(svd, rank);
    Ok(LowRank {
        left,
        right,
        singular_values: svd.s.to_vec(),
    })
}

/// Truncated SVD of a linear layer (eq. (2)) or channel SVD of a convolution.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::{RankSpec, TruncatedSvd};
///
/// let w = SeededRng::new(0).normal_array((32, 16, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let c = TruncatedSvd::new(RankSpec::Fixed(8)).apply(&layer, ActShape::new(16, 8, 8))?;
/// assert_eq!(c.block.ops().len(), 2);
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TruncatedSvd {
    rank: RankSpec,
}

impl TruncatedSvd {
    /// Truncated SVD with the rank chosen by `rank`.
    pub fn new(rank: RankSpec) -> Self {
        TruncatedSvd { rank }
    }

    /// The rank specification.
    pub fn rank(&self) -> RankSpec {
        self.rank
    }

    fn apply_linear(&self, layer: &Layer, l: &LinearLayer, input: ActShape) -> Result<Compressed> {
        let w = l.weight().mapv(f64::from);
        let svd = linalg::thin_svd(w.view())?;
        let (out, inp) = w.dim();
        let macs = |r: usize| Ok((r * (out + inp)) as u64);
        let rank = self.rank.resolve(&RankProblem {
            method: self.name(),
            max: svd.s.len(),
            spectrum: Some(svd.s.as_slice().unwrap_or(&[])),
            matrix: Some(w.view()),
            base_macs: (out * inp) as u64,
            macs: &macs,
        })?;
        let lr = from_svd(&svd, rank)?;
        let first = LinearLayer::new(lr.right.mapv(|v| v as f32), None)?;
        let second = LinearLayer::new(lr.left.mapv(|v| v as f32), l.bias().cloned())?;
        let err = matrix_error(&w, &lr.reconstruct()?);
        let block = Block::new(vec![first.into(), second.into()])?;
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

impl Transform for TruncatedSvd {
    fn name(&self) -> &str {
        "truncated-svd"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        if let Layer::Linear(l) = layer {
            return self.apply_linear(layer, l, input);
        }
        let conv = dense_conv(self.name(), layer)?;
        let out = conv.output_shape(input)?;
        let [t, c, kh, kw] = conv.weight().dims();
        let fm = conv.weight().filter_matrix().mapv(f64::from);
        let svd = linalg::thin_svd(fm.view())?;
        let area = out.area() as u64;
        let macs = |r: usize| Ok(r as u64 * (c * kh * kw + t) as u64 * area);
        let rank = self.rank.resolve(&RankProblem {
            method: self.name(),
            max: svd.s.len(),
            spectrum: Some(svd.s.as_slice().unwrap_or(&[])),
            matrix: Some(fm.view()),
            base_macs: layer.cost(input)?.macs,
            macs: &macs,
        })?;
        let lr = from_svd(&svd, rank)?;
        let spatial = lr
            .right
            .clone()
            .into_shape_with_order((rank, c, kh, kw))
            .map_err(|e| Error::shape("channel-SVD kernel", rank, e))?;
        let block = Block::new(vec![
            conv_op(&spatial, None, *conv.spec())?,
            pointwise_op(&lr.left, conv.bias())?,
        ])?;
        let err = matrix_error(&fm, &lr.reconstruct()?);
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{as_layer, assert_block_is_conv, layer_from, specs};
    use hasten_core::ndarray::{Array1, Array4};
    use hasten_core::{ConvSpec, SeededRng};
    use proptest::prelude::*;

    #[test]
    fn linear_exact_recovery_and_forward() {
        let mut rng = SeededRng::new(1);
        let a: Array2<f64> = rng.normal_array_f64((20, 4), 1.0);
        let b: Array2<f64> = rng.normal_array_f64((4, 30), 1.0);
        let w = a.dot(&b).mapv(|v| v as f32);
        let bias: Array1<f32> = rng.normal_array(20, 1.0);
        let l = LinearLayer::new(w, Some(bias)).unwrap();
        let layer = Layer::from(l.clone());
        let c = TruncatedSvd::new(RankSpec::Fixed(4))
            .apply(&layer, ActShape::new(30, 1, 1))
            .unwrap();
        assert!(c.report.weight_error.unwrap() < 1e-6);
        // Two linear ops: r(in + out) = 4·50 MACs instead of 600.
        assert_eq!(c.report.after.macs, 200);
        let x: Array4<f32> = rng.normal_array((3, 30, 1, 1), 1.0);
        let want = Block::single(l).reference_forward(&x).unwrap();
        let got = c.block.reference_forward(&x).unwrap();
        assert!(crate::testutil::rel(&got, &want) < 1e-5);
        // EVBMF sees 4 components (no noise at all: only 4 non-zero values).
        let e = TruncatedSvd::new(RankSpec::Energy(0.999999))
            .apply(&layer, ActShape::new(30, 1, 1))
            .unwrap();
        assert_eq!(e.block.ops().len(), 2);
        assert_eq!(e.report.after.macs, 200);
    }

    #[test]
    fn channel_svd_exact_and_block_is_layer() {
        let mut rng = SeededRng::new(2);
        let (t, c, d, r) = (12, 5, 3, 3);
        let a: Array2<f64> = rng.normal_array_f64((t, r), 1.0);
        let b: Array2<f64> = rng.normal_array_f64((r, c * d * d), 1.0);
        let kernel = a.dot(&b).into_shape_with_order((t, c, d, d)).unwrap();
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            let input = ActShape::new(c, 9, 8);
            let res = TruncatedSvd::new(RankSpec::Fixed(r))
                .apply(&as_layer(&conv), input)
                .unwrap();
            assert!(res.report.weight_error.unwrap() < 1e-5);
            assert_block_is_conv(&res.block, &conv, &kernel, (c, 9, 8));
            let out = conv.output_shape(input).unwrap();
            assert_eq!(
                res.report.after.macs,
                (r * (c * d * d + t) * out.area()) as u64
            );
        }
    }

    #[test]
    fn evbmf_picks_the_planted_rank_of_a_noisy_layer() {
        // Rank 5 plus white noise 100× below the signal: EVBMF's noise
        // threshold (≈ σ(√L + √M) ≈ 0.13 here) separates the 5 planted
        // singular values (tens) from the noise ones, for a convolution's
        // filter matrix and for a linear layer.
        let mut rng = SeededRng::new(9);
        let (t, c, d, r) = (24, 8, 3, 5);
        let planted = rng
            .normal_array_f64((t, r), 1.0)
            .dot(&rng.normal_array_f64((r, c * d * d), 1.0));
        let noisy = &planted + &rng.normal_array_f64((t, c * d * d), 0.01);
        let kernel = noisy.clone().into_shape_with_order((t, c, d, d)).unwrap();
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let input = ActShape::new(c, 6, 6);
        let res = TruncatedSvd::new(RankSpec::Evbmf)
            .apply(&as_layer(&conv), input)
            .unwrap();
        assert_eq!(res.report.after.macs, (r * (c * d * d + t) * 36) as u64);
        let lin = LinearLayer::new(noisy.mapv(|v| v as f32), None).unwrap();
        let res = TruncatedSvd::new(RankSpec::Evbmf)
            .apply(&Layer::from(lin), ActShape::new(c * d * d, 1, 1))
            .unwrap();
        assert_eq!(res.report.after.macs, (r * (c * d * d + t)) as u64);
        // Pure noise has no component above the threshold: a typed error.
        let noise = LinearLayer::new(rng.normal_array((t, c * d * d), 0.01), None).unwrap();
        assert!(TruncatedSvd::new(RankSpec::Evbmf)
            .apply(&Layer::from(noise), ActShape::new(c * d * d, 1, 1))
            .is_err());
    }

    #[test]
    fn speedup_rank_meets_target() {
        let w = SeededRng::new(3).normal_array((64, 32, 3, 3), 1.0);
        let conv = hasten_core::ConvLayer::from_array(w, ConvSpec::new().with_padding(1)).unwrap();
        let c = TruncatedSvd::new(RankSpec::Speedup(4.0))
            .apply(&as_layer(&conv), ActShape::new(32, 8, 8))
            .unwrap();
        assert!(c.report.mac_speedup() >= 4.0);
        // One more rank would miss the target: r ≤ 64·288/(4·(288+64)) = 13.09.
        assert_eq!(c.block.ops()[0].kind(), "conv");
        assert_eq!(c.report.after.macs, (13 * (288 + 64) * 64) as u64);
    }

    #[test]
    fn grouped_and_bad_ranks_are_errors() {
        let w = Array4::<f32>::ones((4, 2, 3, 3));
        let g = hasten_core::ConvLayer::from_array(w, ConvSpec::new().with_groups(2)).unwrap();
        let err = TruncatedSvd::new(RankSpec::Fixed(1))
            .apply(&as_layer(&g), ActShape::new(4, 5, 5))
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        let conv = hasten_core::ConvLayer::from_array(Array4::ones((4, 2, 3, 3)), ConvSpec::new())
            .unwrap();
        for bad in [
            RankSpec::Fixed(0),
            RankSpec::Fixed(5),
            RankSpec::Energy(1.5),
            RankSpec::Speedup(0.5),
        ] {
            assert!(TruncatedSvd::new(bad)
                .apply(&as_layer(&conv), ActShape::new(2, 5, 5))
                .is_err());
        }
        assert!(low_rank(Array2::<f64>::ones((3, 3)).view(), 4).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn never_panics(t in 1usize..6, c in 1usize..5, k in 1usize..4, h in 1usize..6,
                        rank in 0usize..20, groups in 1usize..3, nan in any::<bool>()) {
            let mut w: Array4<f32> = SeededRng::new(5).normal_array((t * groups, c, k, k), 1.0);
            if nan { w[[0, 0, 0, 0]] = f32::NAN; }
            let Ok(conv) = hasten_core::ConvLayer::from_array(w, ConvSpec::new().with_groups(groups)) else {
                prop_assert!(nan || t * groups % groups != 0);
                return Ok(());
            };
            let r = TruncatedSvd::new(RankSpec::Fixed(rank)).apply(&as_layer(&conv), ActShape::new(c * groups, h, h));
            let valid = groups == 1 && rank >= 1 && rank <= t.min(c * k * k) && h >= k;
            prop_assert_eq!(r.is_ok(), valid);
        }
    }
}

//! Tensor-Train decomposition (TT-SVD, Oseledets) of N-way tensors, of fully
//! connected layers in TT-matrix format (Novikov et al. \[26\], survey
//! section 2) and of convolution kernels.
//!
//! - [`tt_svd`]: sequential truncated SVDs of the unfoldings, with a maximal
//!   bond rank or a relative accuracy `ε` (each SVD truncated at
//!   `ε‖X‖/√(d−1)`, which bounds the total error by `ε‖X‖`).
//! - [`TtMatrix`]: `W[out, in]` with `out = Π m_k`, `in = Π n_k` becomes a
//!   [`hasten_core::TtLinear`] op whose forward contracts the cores.
//! - [`TtConv`]: the kernel ordered `[C, kh, kw, N]` is TT-decomposed into
//!   `G₁[C, r₁]`, `G₂[r₁, kh, r₂]`, `G₃[r₂, kw, r₃]`, `G₄[r₃, N]`, i.e. the
//!   block `1×1 C→r₁`, `kh×1 r₁→r₂`, `1×kw r₂→r₃`, `1×1 r₃→N`.

use hasten_core::error::{Error, Result};
use hasten_core::linalg;
use hasten_core::ndarray::{s, Array2, Array3, Array4, ArrayD, IxDyn};
use hasten_core::{ActShape, Block, Compressed, ConvLayer, Layer, Transform, TtLinear};

use crate::common::{
    conv_op, dense_conv, horizontal_spec, kernel_error, matrix_error, pointwise_op, vertical_spec,
};
use crate::rank::RankSpec;
use crate::tensor::{check_tensor, norm};

/// How TT-SVD truncates each bond.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TtRank {
    /// At most this rank on every bond (capped by the bond's own bound).
    Max(usize),
    /// Relative accuracy `0 ≤ ε < 1`: total error at most `ε‖X‖`.
    Accuracy(f64),
}

/// A tensor train: cores `[r_{k−1}, I_k, r_k]` with `r_0 = r_d = 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct TtTensor {
    /// The cores.
    pub cores: Vec<Array3<f64>>,
}

impl TtTensor {
    /// Checks the train: at least one core, boundary ranks 1, adjacent ranks
    /// equal, no empty dimension, finite values.
    pub fn validate(&self) -> Result<()> {
        let first = self.cores.first().ok_or_else(|| Error::EmptyDimension {
            what: "tensor train".into(),
            shape: "0 cores".into(),
        })?;
        if first.shape()[0] != 1 {
            return Err(Error::shape("TT first core left rank", 1, first.shape()[0]));
        }
        for (k, g) in self.cores.iter().enumerate() {
            hasten_core::error::ensure_nonempty(&format!("TT core {k}"), g.shape())?;
            hasten_core::error::ensure_finite(&format!("TT core {k}"), g.iter())?;
            if k > 0 && g.shape()[0] != self.cores[k - 1].shape()[2] {
                return Err(Error::shape(
                    format!("TT core {k} left rank"),
                    self.cores[k - 1].shape()[2],
                    g.shape()[0],
                ));
            }
        }
        let last = self.cores.last().expect("non-empty").shape()[2];
        if last != 1 {
            return Err(Error::shape("TT last core right rank", 1, last));
        }
        Ok(())
    }

    /// Bond ranks `r_0 = 1, …, r_d = 1`.
    pub fn ranks(&self) -> Vec<usize> {
        let mut r = vec![1];
        r.extend(self.cores.iter().map(|g| g.shape()[2]));
        r
    }

    /// Mode sizes.
    pub fn shape(&self) -> Vec<usize> {
        self.cores.iter().map(|g| g.shape()[1]).collect()
    }

    /// The full tensor; fails on an invalid train (see [`TtTensor::validate`]).
    pub fn to_tensor(&self) -> Result<ArrayD<f64>> {
        self.validate()?;
        let mut acc = Array2::<f64>::ones((1, 1)); // [Π I_{≤k}, r_k]
        for g in &self.cores {
            let (r0, i, r1) = g.dim();
            if acc.ncols() != r0 {
                return Err(Error::shape("TT core left rank", acc.ncols(), r0));
            }
            let flat = g
                .view()
                .into_shape_with_order((r0, i * r1))
                .map_err(|e| Error::shape("TT core", r0, e))?;
            let p = acc.nrows();
            acc = acc
                .dot(&flat)
                .into_shape_with_order((p * i, r1))
                .map_err(|e| Error::shape("TT product", p * i, e))?;
        }
        acc.into_shape_with_order(IxDyn(&self.shape()))
            .map_err(|e| Error::shape("TT tensor", format!("{:?}", self.shape()), e))
    }

    /// Number of stored values.
    pub fn len(&self) -> usize {
        self.cores.iter().map(|g| g.len()).sum()
    }

    /// Always false: a train has at least one core.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }
}

/// The largest meaningful rank of bond `k` (between modes `k` and `k+1`):
/// `min(Π_{j≤k} I_j, Π_{j>k} I_j)`.
pub fn tt_bond_bounds(shape: &[usize]) -> Vec<usize> {
    (1..shape.len())
        .map(|k| {
            let left: usize = shape[..k].iter().product();
            let right: usize = shape[k..].iter().product();
            left.min(right)
        })
        .collect()
}

/// TT-SVD of `tensor` (order ≥ 2): sequential truncated SVDs of its
/// unfoldings (Oseledets), the decomposition behind Novikov et al. \[26\]
/// (survey section 2). With [`TtRank::Accuracy`]`(ε)` each bond is truncated
/// at `ε‖X‖/√(d−1)`, so the total error is at most `ε‖X‖`.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a tensor of order below 2,
/// [`Error::EmptyDimension`] or [`Error::NonFinite`] for an empty or
/// non-finite tensor, [`Error::InvalidRank`] for [`TtRank::Max`] outside
/// `1..=` the largest bond bound, and [`Error::InvalidParameter`] for an
/// accuracy outside `[0, 1)`.
///
/// ```
/// use hasten_core::{ndarray::IxDyn, SeededRng};
/// use hasten_tensor_decomp::{tt_svd, TtRank};
///
/// let x = SeededRng::new(0).normal_array_f64(IxDyn(&[3, 4, 5]), 1.0);
/// // ε = 0 keeps every bond at full rank: the train is exact.
/// let tt = tt_svd(&x, TtRank::Accuracy(0.0))?;
/// assert_eq!(tt.ranks(), vec![1, 3, 5, 1]);
/// let err = (&tt.to_tensor()? - &x).iter().fold(0.0f64, |e, v| e.max(v.abs()));
/// assert!(err < 1e-10);
/// assert_eq!(tt_svd(&x, TtRank::Max(2))?.ranks(), vec![1, 2, 2, 1]);
/// assert!(tt_svd(&x, TtRank::Accuracy(1.0)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn tt_svd(tensor: &ArrayD<f64>, rank: TtRank) -> Result<TtTensor> {
    check_tensor("TT-SVD input", tensor)?;
    let shape = tensor.shape().to_vec();
    let d = shape.len();
    let bounds = tt_bond_bounds(&shape);
    let max_bound = bounds.iter().copied().max().unwrap_or(1);
    let delta = match rank {
        TtRank::Max(r) => {
            if r == 0 || r > max_bound {
                return Err(Error::InvalidRank {
                    rank: r,
                    max: max_bound,
                });
            }
            None
        }
        TtRank::Accuracy(eps) => {
            if !(0.0..1.0).contains(&eps) {
                return Err(Error::param("TT accuracy ε", eps, "0 <= ε < 1"));
            }
            Some(eps * norm(tensor) / ((d - 1) as f64).sqrt())
        }
    };
    let mut cores = Vec::with_capacity(d);
    let mut r_prev = 1usize;
    let mut rest: Vec<f64> = tensor.iter().copied().collect(); // row-major [r_prev, Π_{j≥k} I_j]
    let mut remaining = tensor.len();
    for k in 0..d - 1 {
        let rows = r_prev * shape[k];
        remaining /= shape[k];
        let m = Array2::from_shape_vec((rows, remaining), rest)
            .map_err(|e| Error::shape("TT unfolding", rows, e))?;
        let svd = linalg::thin_svd(m.view())?;
        let sv = svd.s.as_slice().unwrap_or(&[]);
        let r = match (rank, delta) {
            (TtRank::Max(r), _) => r.min(bounds[k]).min(sv.len()),
            (_, Some(delta)) => {
                // Smallest r whose discarded tail has energy ≤ δ² (tail sums
                // accumulated from the smallest value, free of cancellation).
                let mut r = sv.len();
                let mut tail = 0.0;
                while r > 0 && tail + sv[r - 1] * sv[r - 1] <= delta * delta {
                    tail += sv[r - 1] * sv[r - 1];
                    r -= 1;
                }
                r.max(1)
            }
            _ => unreachable!("delta is set for accuracy"),
        };
        let core = svd
            .u
            .slice(s![.., ..r])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((r_prev, shape[k], r))
            .map_err(|e| Error::shape("TT core", r, e))?;
        cores.push(core);
        let next = &svd.vt.slice(s![..r, ..])
            * &svd
                .s
                .slice(s![..r])
                .insert_axis(hasten_core::ndarray::Axis(1));
        rest = next.as_standard_layout().iter().copied().collect();
        r_prev = r;
    }
    let last = Array3::from_shape_vec((r_prev, shape[d - 1], 1), rest)
        .map_err(|e| Error::shape("TT last core", r_prev, e))?;
    cores.push(last);
    Ok(TtTensor { cores })
}

/// The TT rank a [`RankSpec`] asks for: a fixed maximal bond rank, an energy
/// `e` as the TT-SVD accuracy `√(1 − e)`, or — for a speed-up target — the
/// largest uniform maximal bond rank (up to the largest of `bounds`) whose
/// block, costed by `macs(rank)`, meets the target against `layer`'s MACs on
/// `input`. EVBMF is not supported.
fn resolve_tt_rank(
    spec: RankSpec,
    method: &str,
    bounds: &[usize],
    layer: &Layer,
    input: ActShape,
    macs: &dyn Fn(usize) -> Result<u64>,
) -> Result<TtRank> {
    match spec {
        RankSpec::Speedup(target) => {
            let problem = crate::rank::RankProblem {
                method,
                max: bounds.iter().copied().max().unwrap_or(1),
                spectrum: None,
                matrix: None,
                base_macs: layer.cost(input)?.macs,
                macs,
            };
            Ok(TtRank::Max(RankSpec::Speedup(target).resolve(&problem)?))
        }
        spec => tt_rank_of(spec, method),
    }
}

/// The TT rank of a fixed or energy [`RankSpec`] (speed-up targets are
/// resolved by [`resolve_tt_rank`]).
fn tt_rank_of(spec: RankSpec, method: &str) -> Result<TtRank> {
    spec.validate()?;
    match spec {
        RankSpec::Fixed(r) => Ok(TtRank::Max(r)),
        RankSpec::Energy(e) => Ok(TtRank::Accuracy((1.0 - e).max(0.0).sqrt())),
        RankSpec::Speedup(_) => unreachable!("handled by resolve_tt_rank"),
        RankSpec::Evbmf => Err(Error::unsupported(method, "rank selection by EVBMF")),
    }
}

/// TT-matrix decomposition of a fully connected layer (Novikov et al. \[26\]).
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a convolution or for EVBMF rank selection,
/// [`Error::ShapeMismatch`] when the mode products are not the layer's
/// output and input widths, [`Error::InvalidParameter`] for a zero mode, and
/// with the rank errors of [`RankSpec`].
///
/// ```
/// use hasten_core::{ActShape, Layer, LinearLayer, SeededRng, Transform};
/// use hasten_tensor_decomp::{RankSpec, TtMatrix};
///
/// let w = SeededRng::new(0).normal_array((12, 24), 0.1);
/// let layer = Layer::from(LinearLayer::new(w, None)?);
/// // 12 = 3·4 outputs, 24 = 4·6 inputs.
/// let t = TtMatrix::new(vec![3, 4], vec![4, 6], RankSpec::Fixed(12));
/// let c = t.apply(&layer, ActShape::new(24, 1, 1))?;
/// assert!(c.report.weight_error.unwrap() < 1e-5);
/// assert!(TtMatrix::new(vec![5, 3], vec![4, 6], RankSpec::Fixed(2)).apply(&layer, ActShape::new(24, 1, 1)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TtMatrix {
    out_modes: Vec<usize>,
    in_modes: Vec<usize>,
    rank: RankSpec,
}

impl TtMatrix {
    /// TT-matrix with `out = Π out_modes`, `in = Π in_modes` (same number of
    /// modes, ≥ 1 each) and bond ranks from `rank` (fixed maximum, energy →
    /// accuracy `√(1 − e)`, or target speed-up).
    pub fn new(out_modes: Vec<usize>, in_modes: Vec<usize>, rank: RankSpec) -> Self {
        TtMatrix {
            out_modes,
            in_modes,
            rank,
        }
    }

    /// The tensor `T[(m_1 n_1), (m_2 n_2), …]` whose TT cores are the TT-matrix cores.
    fn tensor(&self, w: &Array2<f64>) -> Result<ArrayD<f64>> {
        let d = self.out_modes.len();
        let mut shape = self.out_modes.clone();
        shape.extend(&self.in_modes);
        let t = w
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))
            .map_err(|e| Error::shape("TT-matrix reshape", format!("{shape:?}"), e))?;
        let axes: Vec<usize> = (0..d).flat_map(|k| [k, d + k]).collect();
        let merged: Vec<usize> = (0..d)
            .map(|k| self.out_modes[k] * self.in_modes[k])
            .collect();
        t.permuted_axes(IxDyn(&axes))
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&merged))
            .map_err(|e| Error::shape("TT-matrix tensor", format!("{merged:?}"), e))
    }

    /// Fits the TT-matrix op (without bias) to an `[out, in]` weight.
    pub fn decompose(&self, w: &Array2<f64>, rank: TtRank) -> Result<TtLinear> {
        self.check(w.nrows(), w.ncols())?;
        let x = self.tensor(w)?;
        let tt = if x.ndim() == 1 {
            TtTensor {
                cores: vec![x
                    .into_shape_with_order((1, w.len(), 1))
                    .map_err(|e| Error::shape("TT core", 1, e))?],
            }
        } else {
            tt_svd(&x, rank)?
        };
        let cores = tt
            .cores
            .iter()
            .enumerate()
            .map(|(k, g)| {
                let (r0, _, r1) = g.dim();
                g.mapv(|v| v as f32)
                    .into_shape_with_order((r0, self.out_modes[k], self.in_modes[k], r1))
                    .map_err(|e| Error::shape("TT-matrix core", r0, e))
            })
            .collect::<Result<Vec<_>>>()?;
        TtLinear::new(cores, None)
    }

    fn check(&self, out: usize, inp: usize) -> Result<()> {
        let d = self.out_modes.len();
        if d == 0 || self.in_modes.len() != d {
            return Err(Error::shape(
                "TT-matrix modes (as many input as output modes, ≥ 1)",
                d.max(1),
                self.in_modes.len(),
            ));
        }
        if self.out_modes.contains(&0) || self.in_modes.contains(&0) {
            return Err(Error::param("TT-matrix mode", 0, ">= 1"));
        }
        let (po, pi) = (
            self.out_modes.iter().product::<usize>(),
            self.in_modes.iter().product::<usize>(),
        );
        if po != out || pi != inp {
            return Err(Error::shape(
                "TT-matrix mode products (out, in)",
                format!("({out}, {inp})"),
                format!("({po}, {pi})"),
            ));
        }
        Ok(())
    }
}

impl Transform for TtMatrix {
    fn name(&self) -> &str {
        "tt-matrix"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let Layer::Linear(l) = layer else {
            return Err(Error::unsupported(
                self.name(),
                "a convolution (use TtConv)",
            ));
        };
        let w = l.weight().mapv(f64::from);
        self.check(w.nrows(), w.ncols())?;
        let merged: Vec<usize> = (0..self.out_modes.len())
            .map(|k| self.out_modes[k] * self.in_modes[k])
            .collect();
        let bounds = tt_bond_bounds(&merged);
        let macs = |r: usize| -> Result<u64> {
            let op = self.decompose(
                &w,
                TtRank::Max(r.min(bounds.iter().copied().max().unwrap_or(1))),
            )?;
            Ok(hasten_core::Operator::cost(&op, input)?.macs)
        };
        let rank = resolve_tt_rank(self.rank, self.name(), &bounds, layer, input, &macs)?;
        let op = self.decompose(&w, rank)?;
        let with_bias = TtLinear::new(op.cores().to_vec(), l.bias().cloned())?;
        let err = matrix_error(&w, &with_bias.to_dense());
        Compressed::new(
            self.name(),
            layer,
            Block::single(with_bias),
            input,
            Some(err),
        )
    }
}

/// TT decomposition of a convolution kernel: `1×1`, `kh×1`, `1×kw`, `1×1`.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully connected or grouped layer or for EVBMF
/// rank selection, and with the rank and input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_tensor_decomp::{RankSpec, TtConv};
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let c = TtConv::new(RankSpec::Fixed(3)).apply(&layer, ActShape::new(4, 8, 8))?;
/// assert_eq!(c.block.ops().len(), 4);
/// assert!(TtConv::new(RankSpec::Evbmf).apply(&layer, ActShape::new(4, 8, 8)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TtConv {
    rank: RankSpec,
}

impl TtConv {
    /// TT of the kernel with bond ranks from `rank` (fixed maximum, energy →
    /// accuracy `√(1 − e)`, or target speed-up).
    pub fn new(rank: RankSpec) -> Self {
        TtConv { rank }
    }

    /// TT-SVD of a kernel `[N, C, kh, kw]` in the order `[C, kh, kw, N]`.
    pub fn decompose(kernel: &Array4<f64>, rank: TtRank) -> Result<TtTensor> {
        let t = kernel
            .view()
            .permuted_axes([1, 2, 3, 0])
            .as_standard_layout()
            .into_owned()
            .into_dyn();
        tt_svd(&t, rank)
    }

    /// The kernel `[N, C, kh, kw]` a conv-ordered train represents.
    pub fn reconstruct(tt: &TtTensor) -> Result<Array4<f64>> {
        let t = tt.to_tensor()?;
        t.into_dimensionality::<hasten_core::ndarray::Ix4>()
            .map_err(|e| Error::shape("TT kernel", 4, e))
            .map(|t| {
                t.permuted_axes([3, 0, 1, 2])
                    .as_standard_layout()
                    .into_owned()
            })
    }

    /// The block for a conv-ordered train of `conv`'s kernel.
    pub fn block(conv: &ConvLayer, tt: &TtTensor) -> Result<Block> {
        let [n, c, kh, kw] = conv.weight().dims();
        tt.validate()?;
        let r = tt.ranks();
        if tt.shape() != [c, kh, kw, n] {
            return Err(Error::shape(
                "TT cores of the kernel",
                format!("{:?}", [c, kh, kw, n]),
                format!("{:?}", tt.shape()),
            ));
        }
        let g = &tt.cores;
        let first = g[0].slice(s![0, .., ..]).t().to_owned(); // [r1, C]
        let vertical = Array4::from_shape_fn((r[2], r[1], kh, 1), |(b, a, i, _)| g[1][[a, i, b]]);
        let horizontal = Array4::from_shape_fn((r[3], r[2], 1, kw), |(e, b, _, j)| g[2][[b, j, e]]);
        let last = g[3].slice(s![.., .., 0]).t().to_owned(); // [N, r3]
        Block::new(vec![
            pointwise_op(&first, None)?,
            conv_op(&vertical, None, vertical_spec(conv.spec(), 1))?,
            conv_op(&horizontal, None, horizontal_spec(conv.spec(), 1))?,
            pointwise_op(&last, conv.bias())?,
        ])
    }
}

impl Transform for TtConv {
    fn name(&self) -> &str {
        "tt-conv"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let conv = dense_conv(self.name(), layer)?;
        conv.output_shape(input)?;
        let kernel = conv.weight().to_f64();
        let [n, c, kh, kw] = conv.weight().dims();
        let bounds = tt_bond_bounds(&[c, kh, kw, n]);
        let macs = |r: usize| -> Result<u64> {
            let b = Self::block(conv, &Self::decompose(&kernel, TtRank::Max(r))?)?;
            Ok(b.cost(input)?.macs)
        };
        let rank = resolve_tt_rank(self.rank, self.name(), &bounds, layer, input, &macs)?;
        let tt = Self::decompose(&kernel, rank)?;
        let block = Self::block(conv, &tt)?;
        let err = kernel_error(conv.weight(), &Self::reconstruct(&tt)?)?;
        Compressed::new(self.name(), layer, block, input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::relative_error;
    use crate::testutil::{as_layer, assert_block_is_conv, layer_from, specs};
    use hasten_core::ndarray::{Array1, Array4 as A4};
    use hasten_core::{ConvSpec, LinearLayer, SeededRng};
    use proptest::prelude::*;

    fn random_tt(shape: &[usize], ranks: &[usize], seed: u64) -> TtTensor {
        let mut rng = SeededRng::new(seed);
        TtTensor {
            cores: shape
                .iter()
                .enumerate()
                .map(|(k, &d)| rng.normal_array_f64((ranks[k], d, ranks[k + 1]), 1.0))
                .collect(),
        }
    }

    /// Ported from TensorLy's `test_tensor_train`: TT-SVD recovers an exact
    /// TT tensor (f64) to < 1e-9, with the planted ranks.
    #[test]
    fn tensorly_exact_tt_is_recovered() {
        let tt = random_tt(&[3, 4, 5, 3], &[1, 2, 3, 2, 1], 1234);
        let x = tt.to_tensor().unwrap();
        let fit = tt_svd(&x, TtRank::Max(3)).unwrap();
        assert!(relative_error(&x, &fit.to_tensor().unwrap()).unwrap() < 1e-9);
        // Bonds are capped by the planted ranks only through accuracy:
        let acc = tt_svd(&x, TtRank::Accuracy(1e-10)).unwrap();
        assert_eq!(acc.ranks(), vec![1, 2, 3, 2, 1]);
        assert!(relative_error(&x, &acc.to_tensor().unwrap()).unwrap() < 1e-9);
        // Entry check of to_tensor by brute force.
        let mut v = Array2::<f64>::ones((1, 1));
        for (k, i) in [1usize, 2, 4, 0].iter().enumerate() {
            v = v.dot(&tt.cores[k].slice(s![.., *i, ..]));
        }
        assert!((x[[1, 2, 4, 0]] - v[[0, 0]]).abs() < 1e-12);
    }

    #[test]
    fn accuracy_bound_holds() {
        let x = SeededRng::new(2).normal_array_f64(IxDyn(&[4, 5, 6, 3]), 1.0);
        for eps in [0.1, 0.3, 0.6] {
            let fit = tt_svd(&x, TtRank::Accuracy(eps)).unwrap();
            assert!(relative_error(&x, &fit.to_tensor().unwrap()).unwrap() <= eps + 1e-12);
        }
    }

    #[test]
    fn tt_matrix_exact_and_forward() {
        // A weight that is an exact TT-matrix with ranks (1, 2, 3, 1).
        let (om, im) = (vec![2, 3, 2], vec![3, 2, 4]);
        let mut rng = SeededRng::new(3);
        let ranks = [1, 2, 3, 1];
        let cores: Vec<A4<f32>> = (0..3)
            .map(|k| rng.normal_array((ranks[k], om[k], im[k], ranks[k + 1]), 1.0))
            .collect();
        let planted = TtLinear::new(cores, None).unwrap();
        let w = planted.to_dense().mapv(|v| v as f32);
        let bias: Array1<f32> = rng.normal_array(12, 1.0);
        let l = LinearLayer::new(w, Some(bias)).unwrap();
        let layer = Layer::from(l.clone());
        let t = TtMatrix::new(om.clone(), im.clone(), RankSpec::Fixed(3));
        let res = t.apply(&layer, ActShape::new(24, 1, 1)).unwrap();
        assert!(res.report.weight_error.unwrap() < 1e-5);
        let x: A4<f32> = rng.normal_array((2, 24, 1, 1), 1.0);
        let want = Block::single(l).reference_forward(&x).unwrap();
        let got = res.block.reference_forward(&x).unwrap();
        assert!(crate::testutil::rel(&got, &want) < 1e-5);
        assert!(res.report.after.params < res.report.before.params);
        // Wrong modes, conv layers, EVBMF: errors.
        assert!(TtMatrix::new(vec![2, 6], vec![4, 6], RankSpec::Fixed(2))
            .apply(&layer, ActShape::new(24, 1, 1))
            .is_ok());
        assert!(TtMatrix::new(vec![5, 3], vec![24, 1], RankSpec::Fixed(2))
            .apply(&layer, ActShape::new(24, 1, 1))
            .is_err());
        assert!(TtMatrix::new(vec![12], vec![4, 6], RankSpec::Fixed(2))
            .apply(&layer, ActShape::new(24, 1, 1))
            .is_err());
        assert!(TtMatrix::new(om, im, RankSpec::Evbmf)
            .apply(&layer, ActShape::new(24, 1, 1))
            .is_err());
    }

    #[test]
    fn tt_conv_exact_and_block_is_layer() {
        let (n, c) = (7, 6);
        let tt = random_tt(&[c, 3, 3, n], &[1, 3, 4, 2, 1], 4);
        let kernel = TtConv::reconstruct(&tt).unwrap();
        for (i, spec) in specs().into_iter().enumerate() {
            let conv = layer_from(&kernel, spec, i as u64);
            let res = TtConv::new(RankSpec::Fixed(4))
                .apply(&as_layer(&conv), ActShape::new(c, 9, 8))
                .unwrap();
            assert!(res.report.weight_error.unwrap() < 1e-5);
            let fit = TtConv::decompose(&kernel, TtRank::Max(4)).unwrap();
            assert_block_is_conv(
                &res.block,
                &conv,
                &TtConv::reconstruct(&fit).unwrap(),
                (c, 9, 8),
            );
        }
        let conv = layer_from(&kernel, ConvSpec::new().with_padding(1), 0);
        let res = TtConv::new(RankSpec::Speedup(2.0))
            .apply(&as_layer(&conv), ActShape::new(c, 8, 8))
            .unwrap();
        assert!(res.report.mac_speedup() >= 2.0);
        assert!(TtConv::new(RankSpec::Fixed(0))
            .apply(&as_layer(&conv), ActShape::new(c, 8, 8))
            .is_err());
        assert!(TtConv::new(RankSpec::Fixed(100))
            .apply(&as_layer(&conv), ActShape::new(c, 8, 8))
            .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn never_panics(dims in proptest::collection::vec(1usize..5, 0..5), r in 0usize..30, eps in -0.5f64..1.5) {
            let x = SeededRng::new(5).normal_array_f64(IxDyn(&dims), 1.0);
            let ok = dims.len() >= 2;
            let bound = tt_bond_bounds(&dims).into_iter().max().unwrap_or(0);
            prop_assert_eq!(tt_svd(&x, TtRank::Max(r)).is_ok(), ok && r >= 1 && r <= bound);
            prop_assert_eq!(tt_svd(&x, TtRank::Accuracy(eps)).is_ok(), ok && (0.0..1.0).contains(&eps));
        }
    }
}

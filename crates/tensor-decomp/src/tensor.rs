//! N-way tensor helpers on `ArrayD<f64>` (Kolda & Bader, the review \[20\] the
//! survey recommends): mode unfolding and folding, the mode-`n` product, the
//! Khatri–Rao product, the MTTKRP and the CP reconstruction.
//!
//! Unfolding convention: the mode-`n` unfolding has rows indexed by axis `n`
//! and columns by the remaining axes in increasing order, the earliest varying
//! slowest (row-major), as `hasten_core::mode_unfold` does for 4-way kernels.
//! With this convention `X_(n) = A_n · diag(λ) · (⊙_{k≠n} A_k)ᵀ`, the
//! Khatri–Rao product taken in increasing mode order.

use hasten_core::error::{ensure_finite, ensure_nonempty, Error, Result};
use hasten_core::ndarray::{Array1, Array2, ArrayD, ArrayView2, Axis, IxDyn};

/// Checks that a tensor is non-empty, finite and of order ≥ 2.
pub fn check_tensor(what: &str, t: &ArrayD<f64>) -> Result<()> {
    if t.ndim() < 2 {
        return Err(Error::shape(
            format!("{what} order"),
            "at least 2 modes",
            t.ndim(),
        ));
    }
    ensure_nonempty(what, t.shape())?;
    ensure_finite(what, t.iter())
}

fn check_mode(t_ndim: usize, mode: usize) -> Result<()> {
    if mode >= t_ndim {
        return Err(Error::param("mode", mode, format!("0..{t_ndim}")));
    }
    Ok(())
}

/// `(Π_{k<mode} I_k, I_mode, Π_{k>mode} I_k)`.
fn split_dims(shape: &[usize], mode: usize) -> (usize, usize, usize) {
    let pre: usize = shape[..mode].iter().product();
    let post: usize = shape[mode + 1..].iter().product();
    (pre, shape[mode], post)
}

/// Mode-`mode` unfolding `X_(mode)`: `I_mode × Π_{k≠mode} I_k`.
///
/// Viewed as the 3-way `(pre, I_mode, post)` array, the unfolding is the
/// axis permutation `(I_mode, pre, post)`: one static-rank copy.
pub fn unfold(t: &ArrayD<f64>, mode: usize) -> Result<Array2<f64>> {
    check_mode(t.ndim(), mode)?;
    let (pre, rows, post) = split_dims(t.shape(), mode);
    let standard = t.as_standard_layout();
    let three = standard
        .view()
        .into_shape_with_order((pre, rows, post))
        .map_err(|e| Error::shape("unfolding", format!("{pre} × {rows} × {post}"), e))?;
    let moved = three
        .permuted_axes([1, 0, 2])
        .as_standard_layout()
        .into_owned();
    moved
        .into_shape_with_order((rows, pre * post))
        .map_err(|e| Error::shape("unfolding", format!("{rows} × {}", pre * post), e))
}

/// Inverse of [`unfold`]: folds a mode-`mode` unfolding back to `shape`.
pub fn fold(m: &Array2<f64>, mode: usize, shape: &[usize]) -> Result<ArrayD<f64>> {
    check_mode(shape.len(), mode)?;
    let total: usize = shape.iter().product();
    if m.len() != total || m.nrows() != shape[mode] {
        return Err(Error::shape(
            "matrix to fold",
            format!("{} rows, {total} entries (shape {shape:?})", shape[mode]),
            format!("{} × {}", m.nrows(), m.ncols()),
        ));
    }
    let (pre, rows, post) = split_dims(shape, mode);
    let standard = m.as_standard_layout();
    let three = standard
        .view()
        .into_shape_with_order((rows, pre, post))
        .map_err(|e| Error::shape("fold", format!("{rows} × {pre} × {post}"), e))?;
    let moved = three
        .permuted_axes([1, 0, 2])
        .as_standard_layout()
        .into_owned();
    moved
        .into_shape_with_order(IxDyn(shape))
        .map_err(|e| Error::shape("fold", format!("{shape:?}"), e))
}

/// The mode-`mode` product `X ×_mode M` with `M` of shape `J × I_mode`.
pub fn mode_product(t: &ArrayD<f64>, m: ArrayView2<f64>, mode: usize) -> Result<ArrayD<f64>> {
    check_mode(t.ndim(), mode)?;
    if m.ncols() != t.shape()[mode] {
        return Err(Error::shape(
            format!("mode-{mode} product matrix columns"),
            t.shape()[mode],
            m.ncols(),
        ));
    }
    let mut shape = t.shape().to_vec();
    shape[mode] = m.nrows();
    fold(&m.dot(&unfold(t, mode)?), mode, &shape)
}

/// Khatri–Rao (column-wise Kronecker) product of matrices with equal column
/// counts; row `(i_0, i_1, …)` has the first matrix's index varying slowest.
pub fn khatri_rao(mats: &[ArrayView2<f64>]) -> Result<Array2<f64>> {
    let first = mats
        .first()
        .ok_or_else(|| Error::param("Khatri–Rao operands", 0, "at least one matrix"))?;
    let r = first.ncols();
    if let Some(bad) = mats.iter().find(|m| m.ncols() != r) {
        return Err(Error::shape("Khatri–Rao column count", r, bad.ncols()));
    }
    let mut acc = first.to_owned();
    for m in &mats[1..] {
        let (p, q) = (acc.nrows(), m.nrows());
        let mut next = Array2::<f64>::zeros((p * q, r));
        for i in 0..p {
            let a = acc.row(i);
            for j in 0..q {
                let b = m.row(j);
                let mut row = next.row_mut(i * q + j);
                for k in 0..r {
                    row[k] = a[k] * b[k];
                }
            }
        }
        acc = next;
    }
    Ok(acc)
}

/// Reconstructs `Σ_r λ_r a_r^{(0)} ∘ a_r^{(1)} ∘ …` from CP factors
/// (`factors[n]` is `I_n × R`).
pub fn cp_to_tensor(weights: &Array1<f64>, factors: &[Array2<f64>]) -> Result<ArrayD<f64>> {
    if factors.len() < 2 {
        return Err(Error::param("CP factor count", factors.len(), ">= 2"));
    }
    let r = weights.len();
    if let Some(f) = factors.iter().find(|f| f.ncols() != r) {
        return Err(Error::shape("CP factor columns", r, f.ncols()));
    }
    let shape: Vec<usize> = factors.iter().map(|f| f.nrows()).collect();
    let rest: Vec<ArrayView2<f64>> = factors[1..].iter().map(|f| f.view()).collect();
    let kr = khatri_rao(&rest)?;
    let scaled = &factors[0] * &weights.view().insert_axis(Axis(0));
    fold(&scaled.dot(&kr.t()), 0, &shape)
}

/// Frobenius norm.
pub fn norm(t: &ArrayD<f64>) -> f64 {
    t.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `‖a − b‖_F / ‖a‖_F` (absolute when `a` is zero); shapes must agree.
pub fn relative_error(a: &ArrayD<f64>, b: &ArrayD<f64>) -> Result<f64> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "tensors compared",
            format!("{:?}", a.shape()),
            format!("{:?}", b.shape()),
        ));
    }
    let diff = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let n = norm(a);
    Ok(if n == 0.0 { diff } else { diff / n })
}

/// Matricised tensor times Khatri–Rao product for every mode, organised as a
/// two-level dimension tree so that the Khatri–Rao product of all other
/// factors is never formed.
///
/// The modes are split into a left group `0..split` and a right group
/// `split..N`. With `X` viewed as the `P_L × P_R` matrix `X_{(L)}`:
/// - for a left mode, `Y = X_{(L)} · (⊙_{right} A_k)` (`P_L × R`) is one GEMM
///   shared by all left modes, and the MTTKRP of mode `n` contracts `Y` with
///   the other left factors;
/// - for a right mode, `Z = X_{(L)}ᵀ · (⊙_{left} A_k)` likewise.
///
/// Each GEMM costs `|X| · R`, so a full ALS sweep costs `2 |X| R` plus small
/// partial contractions, instead of `N |X| R`.
#[derive(Debug, Clone)]
pub struct Mttkrp {
    shape: Vec<usize>,
    split: usize,
    matrix: Array2<f64>,
}

impl Mttkrp {
    /// Prepares the MTTKRP of `t` for rank `rank` (which only guides the
    /// choice of the split point).
    pub fn new(t: &ArrayD<f64>, rank: usize) -> Result<Self> {
        check_tensor("MTTKRP tensor", t)?;
        let shape = t.shape().to_vec();
        let n = shape.len();
        // Cost model: forming a Khatri–Rao product and contracting it in the
        // partial step both scale with the size of the group with > 1 mode.
        let cost = |s: usize| -> usize {
            let pl: usize = shape[..s].iter().product();
            let pr: usize = shape[s..].iter().product();
            let left = if s > 1 { pl * rank * (s + 1) } else { 0 };
            let right = if n - s > 1 {
                pr * rank * (n - s + 1)
            } else {
                0
            };
            left + right
        };
        let split = (1..n).min_by_key(|&s| cost(s)).unwrap_or(1);
        let pl: usize = shape[..split].iter().product();
        let matrix = t
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((pl, t.len() / pl))
            .map_err(|e| Error::shape("MTTKRP matrix", pl, e))?;
        Ok(Mttkrp {
            shape,
            split,
            matrix,
        })
    }

    /// Number of modes.
    pub fn order(&self) -> usize {
        self.shape.len()
    }

    /// Shape of the tensor.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The first mode of the right group.
    pub fn split(&self) -> usize {
        self.split
    }

    /// True when `mode` belongs to the left group.
    pub fn is_left(&self, mode: usize) -> bool {
        mode < self.split
    }

    /// The partial product shared by the modes of `mode`'s group:
    /// `X_{(L)} · (⊙_{right} A)` for a left mode, `X_{(L)}ᵀ · (⊙_{left} A)` for
    /// a right one.
    pub fn partial(&self, factors: &[Array2<f64>], mode: usize) -> Result<Array2<f64>> {
        check_mode(self.order(), mode)?;
        self.check_factors(factors)?;
        let (range, other) = if self.is_left(mode) {
            (self.split..self.order(), true)
        } else {
            (0..self.split, false)
        };
        let views: Vec<ArrayView2<f64>> = range.map(|k| factors[k].view()).collect();
        let kr = if views.len() == 1 {
            views[0].to_owned()
        } else {
            khatri_rao(&views)?
        };
        Ok(if other {
            self.matrix.dot(&kr)
        } else {
            self.matrix.t().dot(&kr)
        })
    }

    /// MTTKRP of `mode` from its group's partial product (see [`Self::partial`]).
    pub fn finish(
        &self,
        partial: &Array2<f64>,
        factors: &[Array2<f64>],
        mode: usize,
    ) -> Result<Array2<f64>> {
        check_mode(self.order(), mode)?;
        self.check_factors(factors)?;
        let group: Vec<usize> = if self.is_left(mode) {
            (0..self.split).collect()
        } else {
            (self.split..self.order()).collect()
        };
        let dims: Vec<usize> = group.iter().map(|&k| self.shape[k]).collect();
        let rows: usize = dims.iter().product();
        if partial.nrows() != rows || partial.ncols() != factors[0].ncols() {
            return Err(Error::shape(
                "MTTKRP partial product",
                format!("{rows} × {}", factors[0].ncols()),
                format!("{} × {}", partial.nrows(), partial.ncols()),
            ));
        }
        let local = group
            .iter()
            .position(|&k| k == mode)
            .expect("mode in group");
        let r = partial.ncols();
        if group.len() == 1 {
            return Ok(partial.clone());
        }
        let mut out = Array2::<f64>::zeros((self.shape[mode], r));
        let mut idx = vec![0usize; dims.len()];
        let mut tmp = vec![0.0f64; r];
        for p in 0..partial.nrows() {
            // `idx` is the multi-index of row `p` (row-major over `dims`).
            for (t, &v) in tmp.iter_mut().zip(partial.row(p)) {
                *t = v;
            }
            for (g, &k) in group.iter().enumerate() {
                if g == local {
                    continue;
                }
                let f = factors[k].row(idx[g]);
                for (t, &a) in tmp.iter_mut().zip(f.iter()) {
                    *t *= a;
                }
            }
            let mut o = out.row_mut(idx[local]);
            for (acc, &t) in o.iter_mut().zip(tmp.iter()) {
                *acc += t;
            }
            for g in (0..dims.len()).rev() {
                idx[g] += 1;
                if idx[g] < dims[g] {
                    break;
                }
                idx[g] = 0;
            }
        }
        Ok(out)
    }

    /// MTTKRP `X_(mode) · (⊙_{k≠mode} A_k)` in one call.
    pub fn compute(&self, factors: &[Array2<f64>], mode: usize) -> Result<Array2<f64>> {
        let p = self.partial(factors, mode)?;
        self.finish(&p, factors, mode)
    }

    fn check_factors(&self, factors: &[Array2<f64>]) -> Result<()> {
        if factors.len() != self.order() {
            return Err(Error::shape("factor count", self.order(), factors.len()));
        }
        let r = factors[0].ncols();
        for (k, f) in factors.iter().enumerate() {
            if f.nrows() != self.shape[k] || f.ncols() != r {
                return Err(Error::shape(
                    format!("factor {k}"),
                    format!("{} × {r}", self.shape[k]),
                    format!("{} × {}", f.nrows(), f.ncols()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::SeededRng;

    fn random(shape: &[usize], seed: u64) -> ArrayD<f64> {
        SeededRng::new(seed).normal_array_f64(IxDyn(shape), 1.0)
    }

    #[test]
    fn fold_inverts_unfold_and_matches_core() {
        let t = random(&[3, 4, 2, 5], 1);
        for mode in 0..4 {
            let u = unfold(&t, mode).unwrap();
            assert_eq!(fold(&u, mode, t.shape()).unwrap(), t);
            let t4 = t
                .clone()
                .into_dimensionality::<hasten_core::ndarray::Ix4>()
                .unwrap();
            assert_eq!(hasten_core::mode_unfold(&t4, mode).unwrap(), u);
        }
        assert!(unfold(&t, 4).is_err());
        assert!(fold(&Array2::zeros((3, 3)), 0, &[3, 4]).is_err());
    }

    #[test]
    fn unfolding_of_cp_tensor_is_factor_times_khatri_rao() {
        let mut rng = SeededRng::new(2);
        let f: Vec<Array2<f64>> = [3, 4, 5]
            .iter()
            .map(|&d| rng.normal_array_f64((d, 2), 1.0))
            .collect();
        let w = Array1::from(vec![1.5, -0.5]);
        let t = cp_to_tensor(&w, &f).unwrap();
        // Entry check by brute force.
        let mut e = 0.0;
        for r in 0..2 {
            e += w[r] * f[0][[1, r]] * f[1][[2, r]] * f[2][[3, r]];
        }
        assert!((t[[1, 2, 3]] - e).abs() < 1e-12);
        // X_(1) = A_1 diag(w) (A_0 ⊙ A_2)ᵀ.
        let kr = khatri_rao(&[f[0].view(), f[2].view()]).unwrap();
        let x1 = (&f[1] * &w.view().insert_axis(Axis(0))).dot(&kr.t());
        let d = &unfold(&t, 1).unwrap() - &x1;
        assert!(d.iter().all(|v| v.abs() < 1e-12));
    }

    #[test]
    fn mttkrp_equals_unfolding_times_khatri_rao() {
        for shape in [vec![6, 8, 7], vec![9, 7, 3, 3], vec![4, 3, 5, 2, 3]] {
            let t = random(&shape, 3);
            let mut rng = SeededRng::new(4);
            let f: Vec<Array2<f64>> = shape
                .iter()
                .map(|&d| rng.normal_array_f64((d, 3), 1.0))
                .collect();
            let plan = Mttkrp::new(&t, 3).unwrap();
            for mode in 0..shape.len() {
                let others: Vec<ArrayView2<f64>> = (0..shape.len())
                    .filter(|&k| k != mode)
                    .map(|k| f[k].view())
                    .collect();
                let direct = unfold(&t, mode).unwrap().dot(&khatri_rao(&others).unwrap());
                let fast = plan.compute(&f, mode).unwrap();
                let err = (&direct - &fast)
                    .iter()
                    .map(|v| v.abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-10, "shape {shape:?} mode {mode}: {err}");
            }
        }
    }

    #[test]
    fn mode_product_matches_definition() {
        let t = random(&[3, 4, 2], 5);
        let m = SeededRng::new(6).normal_array_f64((5, 4), 1.0);
        let p = mode_product(&t, m.view(), 1).unwrap();
        assert_eq!(p.shape(), &[3, 5, 2]);
        let mut e = 0.0;
        for j in 0..4 {
            e += m[[2, j]] * t[[1, j, 1]];
        }
        assert!((p[[1, 2, 1]] - e).abs() < 1e-12);
        assert!(mode_product(&t, m.t(), 1).is_err());
    }
}

//! Optimal Brain Damage, eq. (16) (LeCun et al. \[64\]): with the gradient zero
//! at convergence ("extremal approximation") and mixed second derivatives
//! neglected, deleting weight `w_k` raises the loss by `½ · ∂²C/∂w_k² · w_k²`.
//! (The survey prints `w_k`; the saliency of \[64\] is quadratic in the weight.)
//! A slice's score is the sum of its weights' saliencies.

use hasten_core::{Conv4d, Error, Result};
use ndarray::Array4;

use crate::slice::Slicing;

/// Per slice: `Σ_{k ∈ slice} ½ h_kk w_k²`, `hessian_diag` shaped like the kernel.
///
/// # Errors
/// [`Error::NonFinite`] for a NaN or infinite Hessian entry and
/// [`Error::ShapeMismatch`] when `hessian_diag` is not shaped like the kernel.
///
/// ```
/// use hasten_core::{ndarray::Array4, Conv4d};
/// use hasten_prune::criteria::obd;
/// use hasten_prune::Slicing;
///
/// // Filter 0 holds 3 and −4, filter 1 holds 0 and 1; every curvature is 2.
/// let w = Conv4d::new(Array4::from_shape_vec((2, 1, 1, 2), vec![3.0, -4.0, 0.0, 1.0])?)?;
/// let h = Array4::from_elem((2, 1, 1, 2), 2.0);
/// assert_eq!(obd(&w, &h, Slicing::Filter)?, [25.0, 1.0]); // ½·2·(9 + 16), ½·2·1
/// assert!(obd(&w, &Array4::from_elem((2, 1, 1, 1), 2.0), Slicing::Filter).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn obd(weight: &Conv4d, hessian_diag: &Array4<f32>, slicing: Slicing) -> Result<Vec<f64>> {
    hasten_core::error::ensure_finite("Hessian diagonal", hessian_diag.iter())?;
    if hessian_diag.shape() != weight.array().shape() {
        return Err(Error::shape(
            "Hessian diagonal (= kernel shape)",
            format!("{:?}", weight.dims()),
            format!("{:?}", hessian_diag.shape()),
        ));
    }
    slicing.aggregate2(weight.array(), hessian_diag, |w, h| 0.5 * h * w * w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{linalg, SeededRng};
    use ndarray::{Array2, Axis};

    /// Patch matrix of a valid, stride-1 convolution of one sample `x` (C×H×W)
    /// with a `k×k` kernel: rows are output positions, columns (c, i, j).
    fn patches(x: &ndarray::Array3<f64>, k: usize) -> Array2<f64> {
        let (c, h, w) = x.dim();
        let (oh, ow) = (h - k + 1, w - k + 1);
        Array2::from_shape_fn((oh * ow, c * k * k), |(p, q)| {
            let (y, xx) = (p / ow, p % ow);
            let (cc, i, j) = (q / (k * k), (q / k) % k, q % k);
            x[[cc, y + i, xx + j]]
        })
    }

    #[test]
    fn agrees_with_exact_loss_change_at_a_least_squares_minimum() {
        // Loss C(W) = ½ Σ_t ‖P w_t − z_t‖², minimised by least squares, so
        // ∂C/∂w = 0 and deleting one weight changes C by exactly ½ h_kk w_k².
        // The Hessian diagonal is estimated by second differences of C.
        let mut rng = SeededRng::new(23);
        let (t, c, k) = (2, 2, 2);
        let x = rng.normal_array_f64((c, 6, 6), 1.0);
        let p = patches(&x, k);
        let z = rng.normal_array_f64((p.nrows(), t), 1.0);
        let w_opt = linalg::lstsq(p.view(), z.view()).unwrap(); // [C·k·k, T]
        let w = Conv4d::new(
            w_opt
                .t()
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((t, c, k, k))
                .unwrap()
                .mapv(|v| v as f32),
        )
        .unwrap();
        let loss = |wa: &Array4<f64>| {
            let m = wa.to_owned().into_shape_with_order((t, c * k * k)).unwrap();
            let r = p.dot(&m.t()) - &z;
            0.5 * r.iter().map(|v| v * v).sum::<f64>()
        };
        let w64 = w.to_f64();
        let c0 = loss(&w64);
        let d = 1e-2;
        let mut h = Array4::<f32>::zeros((t, c, k, k));
        for (idx, hv) in h.indexed_iter_mut() {
            let (mut a, mut b) = (w64.clone(), w64.clone());
            a[idx] += d;
            b[idx] -= d;
            *hv = ((loss(&a) - 2.0 * c0 + loss(&b)) / (d * d)) as f32;
        }
        let sal = obd(&w, &h, Slicing::Weight).unwrap();
        for (n, (idx, &wv)) in w64.indexed_iter().enumerate() {
            let mut del = w64.clone();
            del[idx] = 0.0;
            let exact = loss(&del) - c0;
            assert!(
                (sal[n] - exact).abs() < 1e-4 * (1.0 + exact.abs()),
                "{idx:?} w={wv}: obd {} vs {exact}",
                sal[n]
            );
        }
        // Slice scores are sums of the weights' saliencies.
        let per_filter = obd(&w, &h, Slicing::Filter).unwrap();
        let half = sal.len() / 2;
        assert!((per_filter[0] - sal[..half].iter().sum::<f64>()).abs() < 1e-9);
        assert!(obd(
            &w,
            &h.index_axis(Axis(0), 0).to_owned().insert_axis(Axis(0)),
            Slicing::Filter
        )
        .is_err());
    }
}

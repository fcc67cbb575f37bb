//! Optimal Brain Damage, eq. (16) (LeCun et al. [64]): with the gradient zero
//! at convergence ("extremal approximation") and mixed second derivatives
//! neglected, deleting weight `w_k` raises the loss by `½ · ∂²C/∂w_k² · w_k²`.
//! (The survey prints `w_k`; the saliency of [64] is quadratic in the weight.)
//! A slice's score is the sum of its weights' saliencies.

use hasten_core::{Conv4d, Error, Result};
use ndarray::Array4;

use crate::slice::Slicing;

/// Per slice: `Σ_{k ∈ slice} ½ h_kk w_k²`, `hessian_diag` shaped like the kernel.
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

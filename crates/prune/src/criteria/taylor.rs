//! First-order Taylor criterion, eq. (17): `Θ(a) = |∂C/∂a · a|`
//! (Molchanov et al. [71], Figurnov et al. [68]). Removing channel `k` sets
//! its activations to zero, changing the loss by `−Σ_m ∂C/∂a_m · a_m` to
//! first order; the score is the magnitude of that change.

use hasten_core::Result;
use ndarray::{Array4, Axis};

use super::{check_acts, same_shape};

/// Per channel: `(1/N) Σ_n |Σ_{y,x} ∂C/∂a[n,k,y,x] · a[n,k,y,x]|`.
///
/// `acts` and `grads` are NCHW arrays of the same shape (the gradient of the
/// loss with respect to those activations).
pub fn taylor(acts: &Array4<f32>, grads: &Array4<f32>) -> Result<Vec<f64>> {
    check_acts("activations", acts)?;
    check_acts("activation gradients", grads)?;
    same_shape("activation gradients (= activations)", acts, grads)?;
    let n = acts.shape()[0];
    Ok((0..acts.shape()[1])
        .map(|k| {
            let (a, g) = (acts.index_axis(Axis(1), k), grads.index_axis(Axis(1), k));
            (0..n)
                .map(|s| {
                    let (a, g) = (a.index_axis(Axis(0), s), g.index_axis(Axis(0), s));
                    a.iter()
                        .zip(g.iter())
                        .map(|(&x, &d)| f64::from(x) * f64::from(d))
                        .sum::<f64>()
                        .abs()
                })
                .sum::<f64>()
                / n as f64
        })
        .collect())
}

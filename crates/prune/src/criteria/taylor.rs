//! First-order Taylor criterion, eq. (17): `Θ(a) = |∂C/∂a · a|`
//! (Molchanov et al. \[71\], Figurnov et al. \[68\]). Removing channel `k` sets
//! its activations to zero, changing the loss by `−Σ_m ∂C/∂a_m · a_m` to
//! first order; the score is the magnitude of that change.

use hasten_core::Result;
use ndarray::{Array4, Axis};

use super::{check_acts, same_shape};

/// Per channel: `(1/N) Σ_n |Σ_{y,x} ∂C/∂a[n,k,y,x] · a[n,k,y,x]|`.
///
/// `acts` and `grads` are NCHW arrays of the same shape (the gradient of the
/// loss with respect to those activations).
///
/// # Errors
/// [`Error::EmptyDimension`](hasten_core::Error::EmptyDimension) for an empty
/// batch and [`Error::NonFinite`](hasten_core::Error::NonFinite) for a NaN or
/// infinite activation or gradient, and
/// [`Error::ShapeMismatch`](hasten_core::Error::ShapeMismatch) when the two
/// shapes differ.
///
/// ```
/// use hasten_core::ndarray::Array4;
/// use hasten_prune::criteria::taylor;
///
/// // One sample, two channels of two positions each.
/// let a = Array4::from_shape_vec((1, 2, 1, 2), vec![1.0, 2.0, 3.0, -1.0])?;
/// let g = Array4::from_shape_vec((1, 2, 1, 2), vec![0.5, -1.0, 1.0, 3.0])?;
/// // |1·0.5 + 2·(−1)| = 1.5 and |3·1 + (−1)·3| = 0: channel 1's terms cancel.
/// assert_eq!(taylor(&a, &g)?, [1.5, 0.0]);
/// assert!(taylor(&a, &Array4::zeros((1, 2, 1, 3))).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::SeededRng;
    use ndarray::Array2;

    /// Loss of a small model on activations `a` (one sample, C×H×W):
    /// `C(a) = ½‖L·vec(a) − y‖² + Σ_k 0.1·(vec a)_k³`, with its gradient.
    fn loss_and_grad(a: &Array4<f32>, l: &Array2<f64>, y: &[f64]) -> (f64, Array4<f32>) {
        let v: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
        let r: Vec<f64> = (0..l.nrows())
            .map(|o| (0..v.len()).map(|i| l[[o, i]] * v[i]).sum::<f64>() - y[o])
            .collect();
        let loss = 0.5 * r.iter().map(|x| x * x).sum::<f64>()
            + v.iter().map(|x| 0.1 * x.powi(3)).sum::<f64>();
        let g: Vec<f32> = (0..v.len())
            .map(|i| {
                ((0..l.nrows()).map(|o| l[[o, i]] * r[o]).sum::<f64>() + 0.3 * v[i] * v[i]) as f32
            })
            .collect();
        (loss, Array4::from_shape_vec(a.raw_dim(), g).unwrap())
    }

    #[test]
    fn agrees_with_finite_difference_loss_change() {
        let mut rng = SeededRng::new(17);
        let a = rng.normal_array((1, 4, 3, 3), 1.0);
        let l = rng.normal_array_f64((5, 36), 0.3);
        let y: Vec<f64> = (0..5).map(|_| rng.normal()).collect();
        let (c0, g) = loss_and_grad(&a, &l, &y);
        let scores = taylor(&a, &g).unwrap();
        // Scaling channel k by (1 − ε) changes the loss by ε·Σ g·a + O(ε²).
        let eps = 1e-4f32;
        for k in 0..4 {
            let mut b = a.clone();
            b.index_axis_mut(Axis(1), k)
                .mapv_inplace(|v| v * (1.0 - eps));
            let (c1, _) = loss_and_grad(&b, &l, &y);
            let fd = ((c0 - c1) / f64::from(eps)).abs();
            assert!(
                (fd - scores[k]).abs() < 2e-3 * (1.0 + fd),
                "channel {k}: fd {fd} vs {}",
                scores[k]
            );
        }
        assert!(taylor(&a, &Array4::zeros((1, 4, 3, 2))).is_err());
    }
}

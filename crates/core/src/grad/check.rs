//! Central finite differences for gradient tests, in f64 — public, so that
//! every crate's backward (the graph ops here, `hasten-distill`'s losses) is
//! checked alike.

use ndarray::{Array, Dimension};

/// Relative step: truncation error `O(h²)` ≈ 1e-10 and rounding error
/// `O(ε/h)` ≈ 1e-11 relative to the function, both far below [`TOLERANCE`].
pub const STEP: f64 = 1e-5;

/// Tolerance on the norm-wise relative error of a gradient.
pub const TOLERANCE: f64 = 1e-5;

/// Central-difference gradient of `f` at `x`, with step `STEP·max(|xᵢ|, 1)`.
pub fn numeric_grad<D: Dimension>(
    x: &Array<f64, D>,
    mut f: impl FnMut(&Array<f64, D>) -> f64,
) -> Array<f64, D> {
    let mut g = Array::zeros(x.raw_dim());
    let mut xp = x.as_standard_layout().into_owned();
    for i in 0..g.len() {
        let orig = xp.as_slice().expect("standard layout")[i];
        let h = STEP * orig.abs().max(1.0);
        xp.as_slice_mut().expect("standard layout")[i] = orig + h;
        let fp = f(&xp);
        xp.as_slice_mut().expect("standard layout")[i] = orig - h;
        let fm = f(&xp);
        xp.as_slice_mut().expect("standard layout")[i] = orig;
        g.as_slice_mut().expect("standard layout")[i] = (fp - fm) / (2.0 * h);
    }
    g
}

/// Norm-wise relative error `‖a − b‖ / max(‖a‖, ‖b‖)` (the plain norm of
/// the difference when both vanish; infinite when the shapes differ).
pub fn relative_error<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
    if a.shape() != b.shape() {
        return f64::INFINITY;
    }
    let diff = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let na = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let nb = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    let scale = na.max(nb);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// The relative error between `analytic` and the central-difference
/// gradient of `f` at `x`, and the largest magnitude of the numeric
/// gradient (a caller checks it is not zero, or the test would be vacuous).
pub fn gradient_error<D: Dimension>(
    x: &Array<f64, D>,
    analytic: &Array<f64, D>,
    f: impl FnMut(&Array<f64, D>) -> f64,
) -> (f64, f64) {
    let numeric = numeric_grad(x, f);
    let peak = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    (relative_error(analytic, &numeric), peak)
}

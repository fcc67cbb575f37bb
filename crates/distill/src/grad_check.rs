//! Central finite differences for the gradient tests (f64).

use ndarray::{Array, Dimension};

/// Step for central differences: truncation error `O(h²)` ≈ 1e-12 and
/// rounding error `O(ε/h)` ≈ 1e-11 relative to the loss, both far below the
/// 1e-5 tolerance of the checks.
pub(crate) const STEP: f64 = 1e-5;

/// Tolerance on the norm-wise relative error `‖g − g_fd‖ / max(‖g‖, ‖g_fd‖)`.
pub(crate) const TOL: f64 = 1e-5;

/// Central-difference gradient of `f` at `x`.
pub(crate) fn numeric_grad<D: Dimension>(
    x: &Array<f64, D>,
    mut f: impl FnMut(&Array<f64, D>) -> f64,
) -> Array<f64, D> {
    let mut g = Array::zeros(x.raw_dim());
    let mut xp = x.as_standard_layout().into_owned();
    let n = g.len();
    for i in 0..n {
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

/// Norm-wise relative error between an analytic and a numeric gradient.
pub(crate) fn relative_error<D: Dimension>(
    analytic: &Array<f64, D>,
    numeric: &Array<f64, D>,
) -> f64 {
    let diff = analytic
        .iter()
        .zip(numeric.iter())
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let scale = analytic
        .iter()
        .map(|a| a * a)
        .sum::<f64>()
        .sqrt()
        .max(numeric.iter().map(|a| a * a).sum::<f64>().sqrt());
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// Asserts that `analytic` matches the central-difference gradient of `f`.
pub(crate) fn assert_grad<D: Dimension>(
    what: &str,
    x: &Array<f64, D>,
    analytic: &Array<f64, D>,
    f: impl FnMut(&Array<f64, D>) -> f64,
) {
    let numeric = numeric_grad(x, f);
    let err = relative_error(analytic, &numeric);
    assert!(
        err < TOL,
        "{what}: relative gradient error {err:e} ≥ {TOL:e}\nanalytic {analytic:?}\nnumeric {numeric:?}"
    );
    assert!(
        numeric.iter().any(|v| v.abs() > 1e-8),
        "{what}: gradient vanishes, the check would be vacuous"
    );
}

//! The gradient assertion of this crate's tests, on the central finite
//! differences of `hasten_core::grad::check` (f64).

use hasten_core::grad::check::{numeric_grad, relative_error, TOLERANCE};
use ndarray::{Array, Dimension};

/// Asserts that `analytic` matches the central-difference gradient of `f`
/// at `x` (norm-wise relative error below [`TOLERANCE`]) and that the
/// gradient does not vanish, which would make the check vacuous.
pub(crate) fn assert_grad<D: Dimension>(
    what: &str,
    x: &Array<f64, D>,
    analytic: &Array<f64, D>,
    f: impl FnMut(&Array<f64, D>) -> f64,
) {
    let numeric = numeric_grad(x, f);
    let err = relative_error(analytic, &numeric);
    assert!(
        err < TOLERANCE,
        "{what}: relative gradient error {err:e} ≥ {TOLERANCE:e}\nanalytic {analytic:?}\nnumeric {numeric:?}"
    );
    assert!(
        numeric.iter().any(|v| v.abs() > 1e-8),
        "{what}: gradient vanishes, the check would be vacuous"
    );
}

//! Input checks shared by the losses (typed errors, never panics).

use hasten_core::error::{ensure_finite, ensure_nonempty};
use hasten_core::{Error, Result};
use ndarray::{ArrayBase, Data, Dimension};

use crate::{LossGrad, Real};

/// Non-empty and finite.
pub(crate) fn tensor<F: Real, S: Data<Elem = F>, D: Dimension>(
    what: &str,
    a: &ArrayBase<S, D>,
) -> Result<()> {
    ensure_nonempty(what, a.shape())?;
    ensure_finite(what, a.iter())
}

/// Same shape.
pub(crate) fn same_shape(what: &str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected != got {
        return Err(Error::shape(
            what,
            format!("{expected:?}"),
            format!("{got:?}"),
        ));
    }
    Ok(())
}

/// A strictly positive, finite scalar.
pub(crate) fn positive<F: Real>(name: &str, value: F) -> Result<()> {
    if !(value.is_finite() && value > F::zero()) {
        return Err(Error::param(name, value, "a finite value > 0"));
    }
    Ok(())
}

/// A non-negative, finite scalar.
pub(crate) fn non_negative<F: Real>(name: &str, value: F) -> Result<()> {
    if !(value.is_finite() && value >= F::zero()) {
        return Err(Error::param(name, value, "a finite value >= 0"));
    }
    Ok(())
}

/// A loss whose value and gradient must be finite (guards against overflow
/// on valid but extreme input: reported, never silently clamped).
pub(crate) fn finite_output<F: Real, D: Dimension>(
    routine: &str,
    out: LossGrad<F, D>,
) -> Result<LossGrad<F, D>> {
    finite_array(routine, &out.grad)?;
    if !out.value.is_finite() {
        return Err(Error::numerical(
            routine,
            format!(
                "the loss evaluated to {} (overflow on extreme input)",
                out.value
            ),
        ));
    }
    Ok(out)
}

/// An intermediate or gradient array that must be finite.
pub(crate) fn finite_array<F: Real, S: Data<Elem = F>, D: Dimension>(
    routine: &str,
    a: &ArrayBase<S, D>,
) -> Result<()> {
    if let Some(v) = a.iter().find(|v| !v.is_finite()) {
        return Err(Error::numerical(
            routine,
            format!("a gradient entry evaluated to {v} (overflow on extreme input)"),
        ));
    }
    Ok(())
}

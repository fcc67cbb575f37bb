//! The scalar types the losses accept: `f32` and `f64`.

use std::fmt::{Debug, Display};

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::Float;

/// A floating-point scalar the losses are generic over (`f32`, `f64`).
///
/// Gradient checks run in `f64`; training loops usually call the `f32`
/// instantiation.
pub trait Real:
    Float + ScalarOperand + LinalgScalar + Debug + Display + Send + Sync + 'static
{
}

impl Real for f32 {}
impl Real for f64 {}

/// Converts an `f64` constant or a count to `F` (never panics: a value that
/// cannot be represented becomes NaN, which the callers' finiteness checks catch).
pub(crate) fn lit<F: Real>(x: f64) -> F {
    F::from(x).unwrap_or_else(F::nan)
}

/// Converts a count (batch size, number of classes, pairs) to `F`.
pub(crate) fn count<F: Real>(n: usize) -> F {
    F::from(n).unwrap_or_else(F::nan)
}

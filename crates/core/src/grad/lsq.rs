//! The learned step size of the activation fake quantizer (LSQ, Esser et
//! al. 2020), for the int8 activations of survey section 5 trained by the
//! straight-through estimator of eq. (5).
//!
//! The quantizer `x̂ = s·(clamp(round(x/s) + z, lo, hi) − z)` keeps its zero
//! point `z` and integer range fixed and learns the scale `s`. With
//! `v = x/s`, `Q_N = z − lo` and `Q_P = hi − z` (u8 after a ReLU: `z = 0`,
//! `Q_N = 0`, `Q_P = 255`), the straight-through derivative (`round` passed
//! as the identity) is
//!
//! ```text
//! ∂x̂/∂s = −Q_N              if v ≤ −Q_N
//!        = round(v) − v      if −Q_N < v < Q_P
//!        = Q_P               if v ≥ Q_P
//! ```
//!
//! — the derivative of the surrogate `s·clamp(v + c, −Q_N, Q_P)` whose
//! rounding offset `c = round(v) − v` is held constant. The scale's
//! gradient `∂L/∂s = g · Σ ∂L/∂x̂ · ∂x̂/∂s` sums over the batch and is scaled
//! by `g = 1/√(N·Q_P)`, `N` the elements of one sample, so that the step
//! size learns at the pace of the weights. A NaN input contributes nothing.

use crate::error::{Error, Result};
use crate::op::{Int8Conv, QuantParams};

/// The clamp bounds `(Q_N, Q_P)` of `p` in steps from its zero point.
fn bounds(p: &QuantParams) -> (f64, f64) {
    let (lo, hi) = p.dtype().range();
    let z = p.zero_point();
    (f64::from(z - lo), f64::from(hi - z))
}

/// `∂x̂/∂s` at `x` (see the [module docs](self)); 0 for a NaN.
pub fn lsq_step_derivative(p: &QuantParams, x: f64) -> f64 {
    let (qn, qp) = bounds(p);
    let v = x / f64::from(p.scale());
    if v.is_nan() {
        0.0
    } else if v <= -qn {
        -qn
    } else if v >= qp {
        qp
    } else {
        v.round() - v
    }
}

/// LSQ's gradient scale `g = 1/√(N·Q_P)` for samples of `per_sample`
/// elements (`Q_P` at least 1, for a zero point at the top of the range).
pub fn lsq_gradient_scale(p: &QuantParams, per_sample: usize) -> f64 {
    let (_, qp) = bounds(p);
    1.0 / ((per_sample.max(1) as f64) * qp.max(1.0)).sqrt()
}

/// `∂L/∂s = g · Σ dy · ∂x̂/∂s` over the `(x, dy)` pairs of a batch of
/// samples of `per_sample` elements, summed in order (so any caller gets
/// the same bits for the same values).
pub fn lsq_scale_gradient(
    p: &QuantParams,
    per_sample: usize,
    pairs: impl IntoIterator<Item = (f64, f64)>,
) -> f64 {
    let sum: f64 = pairs
        .into_iter()
        .map(|(x, dy)| dy * lsq_step_derivative(p, x))
        .sum();
    lsq_gradient_scale(p, per_sample) * sum
}

/// The input quantization a fake quantizer `op` applies with the values
/// of a training run: `op`'s own, or for a learned step size the given
/// `scale` (its parameter's value) where there is one.
///
/// # Errors
/// A learned scale that is not finite and positive (e.g. after an
/// optimizer step drove it below zero).
pub fn quantizer_params(op: &Int8Conv, scale: Option<f64>) -> Result<QuantParams> {
    let own = *op.input_params();
    match scale {
        Some(s) if op.learns_scale() => QuantParams::new(s as f32, own.zero_point(), own.dtype())
            .map_err(|e| Error::numerical("learned activation scale", e)),
        _ => Ok(own),
    }
}

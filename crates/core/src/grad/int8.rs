//! Reverse mode of `Int8Conv` (survey section 5, the 8-bit arithmetic of
//! Vanhoucke et al. \[49\]) by the straight-through estimator.
//!
//! The forward is the op's own exact integer arithmetic
//! (`Operator::reference_forward`, run on the f32 values of the batch). It
//! equals `y = Ŵ ∗ x̂ + b̂` with the dequantized weights `Ŵ[t] = s_w[t]·w[t]`,
//! bias `b̂[t] = s_in·s_w[t]·bias[t]` and inputs `x̂ = s_in·(q(x) − z)`, which
//! is piecewise constant in `x`. The backward differentiates the surrogate
//! `Ŵ ∗ clamp(x, lo, hi) + b̂` instead (`ste::passes_activation`):
//! `∂L/∂x = (Ŵᵀ ∗ ∂L/∂y) · 1[lo ≤ x ≤ hi]`. Requantized outputs are passed
//! straight through the same way. The op stores codes and fixed scales and
//! has no trainable values, so there are no parameter gradients; its
//! full-precision weights are trained before quantization by
//! quantization-aware training instead.

use ndarray::{Array2, Array4};

use super::{conv, linear, ste, OpGrad, OpParams};
use crate::error::Result;
use crate::op::{Int8Conv, Operator, WeightLayout};

/// The f64 forward: the op's integer reference on the batch's f32 values.
pub(super) fn forward(op: &Int8Conv, x: &Array4<f64>) -> Result<Array4<f64>> {
    let y = op.reference_forward(&x.mapv(|v| v as f32))?;
    Ok(y.mapv(f64::from))
}

/// The dequantized weight matrix `Ŵ [rows, row_len]`.
fn dequantized_weights(op: &Int8Conv) -> Array2<f64> {
    let w = op.weights();
    Array2::from_shape_fn(w.dim(), |(t, j)| {
        f64::from(w[[t, j]]) * f64::from(op.weight_scale(t))
    })
}

/// The straight-through backward: `∂L/∂x = (Ŵᵀ ∗ dy)` where `x` lies in
/// the input quantizer's range, 0 elsewhere; no parameter gradients.
pub(super) fn backward(op: &Int8Conv, x: &Array4<f64>, dy: &Array4<f64>) -> Result<OpGrad> {
    let w = dequantized_weights(op);
    let mut dx = match *op.layout() {
        WeightLayout::Conv { dims, spec } => {
            let w = w
                .view()
                .into_shape_with_order(dims)
                .expect("rows × row_len");
            conv::backward_with(&spec, w, false, x, dy).0
        }
        WeightLayout::Linear { .. } => linear::backward_with(w.view(), false, x, dy)?.0,
    };
    let input = op.input_params();
    dx.zip_mut_with(x, |g, &v| {
        if !ste::passes_activation(input, v) {
            *g = 0.0;
        }
    });
    Ok(OpGrad {
        input: dx,
        params: OpParams::new(),
    })
}

/// The surrogate the backward differentiates, `Ŵ ∗ clamp(x, lo, hi) + b̂`
/// in f64 (for tests: its finite differences check the backward).
#[cfg(test)]
pub(super) fn surrogate(op: &Int8Conv, x: &Array4<f64>, out: [usize; 4]) -> Result<Array4<f64>> {
    let (lo, hi) = ste::activation_range(op.input_params());
    let xc = x.mapv(|v| v.clamp(lo, hi));
    let w = dequantized_weights(op);
    let s_in = f64::from(op.input_params().scale());
    let b = op.bias().map(|b| {
        ndarray::Array1::from_shape_fn(b.len(), |t| {
            f64::from(b[t]) * s_in * f64::from(op.weight_scale(t))
        })
    });
    let b = b.as_ref().map(|b| b.view());
    Ok(match *op.layout() {
        WeightLayout::Conv { dims, spec } => {
            let w = w
                .view()
                .into_shape_with_order(dims)
                .expect("rows × row_len");
            conv::forward_with(&spec, w, b, &xc, out)
        }
        WeightLayout::Linear { .. } => linear::forward_with(w.view(), b, &xc, out)?,
    })
}

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
//! quantization-aware training instead. The one exception is the
//! activation fake quantizer with a learned step size, whose `scale` gets
//! LSQ's gradient (`lsq`).

use ndarray::{Array2, Array4};

use std::borrow::Cow;

use super::{conv, linear, lsq, param, ste, OpGrad, OpParams};
use crate::error::Result;
use crate::op::{Int8Conv, Operator, WeightLayout};

/// `op` as it runs with the values `p`: a learned fake quantizer takes its
/// `scale` from `p` (rounded to f32, as the op stores it).
fn with_values<'a>(op: &'a Int8Conv, p: &OpParams) -> Result<Cow<'a, Int8Conv>> {
    if !op.learns_scale() {
        return Ok(Cow::Borrowed(op));
    }
    let s = param(p, "learned int8 quantizer", "scale", &[1])?[[0]];
    let input = lsq::quantizer_params(op, Some(s))?;
    Ok(Cow::Owned(op.with_learned_scale(input.scale())?))
}

/// The f64 forward: the op's integer reference on the batch's f32 values.
pub(super) fn forward(op: &Int8Conv, x: &Array4<f64>, p: &OpParams) -> Result<Array4<f64>> {
    let op = with_values(op, p)?;
    let y = op.reference_forward(&x.mapv(|v| v as f32))?;
    Ok(y.mapv(f64::from))
}

/// The dequantized weight matrix `Ŵ [rows, row_len]` (`Int8Conv::dequantized`).
fn dequantized_weights(op: &Int8Conv) -> Array2<f64> {
    op.dequantized().mapv(f64::from)
}

/// The straight-through backward: `∂L/∂x = (Ŵᵀ ∗ dy)` where `x` lies in
/// the input quantizer's range, 0 elsewhere; no parameter gradients but a
/// learned fake quantizer's `scale` (LSQ, `lsq::lsq_scale_gradient`).
pub(super) fn backward(
    op: &Int8Conv,
    x: &Array4<f64>,
    dy: &Array4<f64>,
    p: &OpParams,
) -> Result<OpGrad> {
    let op = with_values(op, p)?;
    let op = op.as_ref();
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
    let mut params = OpParams::new();
    if op.learns_scale() {
        let per_sample = x.len() / x.shape()[0];
        let g =
            lsq::lsq_scale_gradient(input, per_sample, x.iter().copied().zip(dy.iter().copied()));
        params.insert("scale".into(), ndarray::arr1(&[g]).into_dyn());
    }
    Ok(OpGrad { input: dx, params })
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

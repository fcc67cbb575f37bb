//! Training helpers for quantized networks: the three-step loop of survey
//! eq. (5) (Anwar et al. \[53\]; BinaryConnect \[54\]) with a straight-through
//! estimator, the hard sigmoid of eq. (7) and weight clipping.
//!
//! The loop keeps full-precision weights `W` and, each step,
//! 1. quantizes them, `Ŵ = q(W)` (eq. (5));
//! 2. runs forward and backward with `Ŵ` (the caller's model supplies
//!    `∂L/∂Ŵ`);
//! 3. applies the gradient to `W` through the straight-through estimator
//!    `∂L/∂W ≈ ∂L/∂Ŵ · 1_{|W| ≤ clip}`, then clips `W` (BinaryConnect clips
//!    to `[−1, 1]`).
//!
//! The estimator itself ([`straight_through`], [`clip_weights`]) lives in
//! `hasten_core::grad::ste`, shared with the training crate's
//! quantization-aware training, and is re-exported here.

pub use hasten_core::grad::ste::{clip_weights, straight_through};
use hasten_core::{Error, Result};

/// The hard sigmoid of eq. (7), `clip((x + 1) / 2, 0, 1)`.
pub fn hard_sigmoid(x: f32) -> f32 {
    ((x + 1.0) / 2.0).clamp(0.0, 1.0)
}

/// One step of the eq. (5) loop on full-precision `weights`:
/// `Ŵ = quantize(W)`, `g = grad(Ŵ)`, `W ← clip(W − lr · STE(g))`.
/// Returns `Ŵ` (the weights the step's forward pass used).
pub fn quantization_aware_step(
    weights: &mut [f32],
    quantize: impl Fn(&[f32]) -> Result<Vec<f32>>,
    grad: impl Fn(&[f32]) -> Result<Vec<f32>>,
    lr: f32,
    clip: f32,
) -> Result<Vec<f32>> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::param("learning rate", lr, "finite and > 0"));
    }
    let quantized = quantize(weights)?;
    if quantized.len() != weights.len() {
        return Err(Error::shape(
            "quantized weights",
            weights.len(),
            quantized.len(),
        ));
    }
    let g = straight_through(weights, &grad(&quantized)?, clip)?;
    for (w, gi) in weights.iter_mut().zip(g) {
        *w -= lr * gi;
    }
    if clip.is_finite() {
        clip_weights(weights, clip)?;
    }
    Ok(quantized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hard_sigmoid_closed_form() {
        assert_eq!(hard_sigmoid(-3.0), 0.0);
        assert_eq!(hard_sigmoid(0.0), 0.5);
        assert_eq!(hard_sigmoid(0.5), 0.75);
        assert_eq!(hard_sigmoid(2.0), 1.0);
    }

    #[test]
    fn binary_connect_loop_fits_signs() {
        // Loss ½‖Ŵ − t‖² with t = ±1 and Ŵ = sign(W): the loop drives the
        // signs of W to those of t (gradient through Ŵ, applied to W).
        let target = [1.0f32, -1.0, 1.0, -1.0];
        let mut w = vec![-0.3f32, 0.2, -0.1, 0.4];
        let sign = |v: &[f32]| {
            Ok(v.iter()
                .map(|&x| if x >= 0.0 { 1.0 } else { -1.0 })
                .collect())
        };
        let grad = |q: &[f32]| Ok(q.iter().zip(&target).map(|(a, b)| a - b).collect());
        for _ in 0..5 {
            quantization_aware_step(&mut w, sign, grad, 0.1, 1.0).unwrap();
        }
        let q: Vec<f32> = sign(&w).unwrap();
        assert_eq!(q, target.to_vec());
        assert!(w.iter().all(|v| v.abs() <= 1.0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn no_panic_on_any_input(w in proptest::collection::vec(proptest::num::f32::ANY, 0..6), limit in proptest::num::f32::ANY) {
            let mut v = w.clone();
            let r = clip_weights(&mut v, limit);
            if r.is_ok() {
                prop_assert!(v.iter().all(|x| x.abs() <= limit));
            }
            let g = vec![1.0; w.len()];
            let _ = straight_through(&w, &g, limit);
        }
    }
}

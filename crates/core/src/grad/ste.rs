//! The straight-through estimator (STE) of quantization-aware training:
//! the backward half of the three-step loop of survey eq. (5) (Anwar et al.
//! \[53\]; BinaryConnect \[54\], eq. (6)–(7)).
//!
//! A quantized forward uses `Ŵ = q(W)`, whose derivative is zero almost
//! everywhere; the STE treats `q` as the identity in the backward, so
//! `∂L/∂W = ∂L/∂Ŵ`, restricted to the clip region `|W| ≤ limit` (the
//! saturating STE of Hubara et al. \[56\]). BinaryConnect also clips the
//! full-precision weights to `[−1, 1]` after each update ([`clip_weights`]).
//!
//! Activations quantized by an int8 layer (section 5, Vanhoucke et al.
//! \[49\]; the fake-quantized inputs of quantization-aware training) use the
//! same saturating estimator: `x̂ = s·(clamp(round(x/s) + z) − z)` is
//! differentiated as `clamp(x, lo, hi)` with `[lo, hi]` the representable
//! range of [`activation_range`] ([`passes_activation`]).

use crate::error::{ensure_finite, Error, Result};
use crate::op::QuantParams;

/// Clips every weight into `[−limit, limit]` (BinaryConnect uses `limit = 1`).
pub fn clip_weights(weights: &mut [f32], limit: f32) -> Result<()> {
    if !(limit.is_finite() && limit > 0.0) {
        return Err(Error::param("clip limit", limit, "finite and > 0"));
    }
    ensure_finite("weights to clip", weights.iter())?;
    for w in weights {
        *w = w.clamp(-limit, limit);
    }
    Ok(())
}

/// Straight-through gradient: `∂L/∂W = ∂L/∂Ŵ` where `|W| ≤ limit`, 0 elsewhere
/// (the saturating STE of Hubara et al. \[56\]); `limit = ∞` passes everything.
pub fn straight_through(weights: &[f32], grad_quantized: &[f32], limit: f32) -> Result<Vec<f32>> {
    if weights.len() != grad_quantized.len() {
        return Err(Error::shape(
            "straight-through gradient length",
            weights.len(),
            grad_quantized.len(),
        ));
    }
    if limit.is_nan() || limit <= 0.0 {
        return Err(Error::param("straight-through limit", limit, "> 0"));
    }
    ensure_finite("weights", weights.iter())?;
    ensure_finite("gradient", grad_quantized.iter())?;
    Ok(weights
        .iter()
        .zip(grad_quantized)
        .map(|(&w, &g)| if w.abs() <= limit { g } else { 0.0 })
        .collect())
}

/// The real range `[s·(q_min − z), s·(q_max − z)]` an activation quantizer
/// represents: its codes' range mapped back through scale `s` and zero
/// point `z`.
pub fn activation_range(params: &QuantParams) -> (f64, f64) {
    let (lo, hi) = params.dtype().range();
    let (s, z) = (f64::from(params.scale()), params.zero_point());
    (s * f64::from(lo - z), s * f64::from(hi - z))
}

/// Whether the straight-through gradient of the activation quantizer
/// `params` passes at `x`: inside [`activation_range`] (the derivative of
/// the surrogate `clamp(x, lo, hi)`); a NaN passes nothing.
pub fn passes_activation(params: &QuantParams, x: f64) -> bool {
    let (lo, hi) = activation_range(params);
    (lo..=hi).contains(&x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::IntType;

    #[test]
    fn activation_range_is_the_codes_range() {
        let p = QuantParams::new(0.5, 10, IntType::U8).unwrap();
        assert_eq!(activation_range(&p), (-5.0, 122.5));
        // The range's ends are the extreme codes' values.
        assert_eq!(f64::from(p.dequantize(0)), -5.0);
        assert_eq!(f64::from(p.dequantize(255)), 122.5);
        let s = QuantParams::new(0.25, 0, IntType::I8).unwrap();
        assert_eq!(activation_range(&s), (-32.0, 31.75));
        assert!(passes_activation(&p, -5.0) && passes_activation(&p, 122.5));
        assert!(!passes_activation(&p, -5.01) && !passes_activation(&p, 122.6));
        assert!(!passes_activation(&p, f64::NAN));
    }

    #[test]
    fn ste_masks_saturated_weights() {
        let g = straight_through(&[0.5, -1.5, 1.0], &[1.0, 2.0, 3.0], 1.0).unwrap();
        assert_eq!(g, vec![1.0, 0.0, 3.0]);
        let all = straight_through(&[0.5, -1.5], &[1.0, 2.0], f32::INFINITY).unwrap();
        assert_eq!(all, vec![1.0, 2.0]);
        assert!(straight_through(&[0.5], &[1.0, 2.0], 1.0).is_err());
        assert!(straight_through(&[0.5], &[1.0], f32::NAN).is_err());
        assert!(straight_through(&[f32::NAN], &[1.0], 1.0).is_err());
    }

    #[test]
    fn clip_saturates_and_rejects_bad_limits() {
        let mut w = vec![-2.0, 0.25, 3.0];
        clip_weights(&mut w, 1.0).unwrap();
        assert_eq!(w, vec![-1.0, 0.25, 1.0]);
        assert!(clip_weights(&mut w, 0.0).is_err());
        assert!(clip_weights(&mut w, f32::INFINITY).is_err());
        assert!(clip_weights(&mut [f32::NAN], 1.0).is_err());
    }
}

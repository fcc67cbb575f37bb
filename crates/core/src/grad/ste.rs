//! The straight-through estimator (STE) of quantization-aware training:
//! the backward half of the three-step loop of survey eq. (5) (Anwar et al.
//! \[53\]; BinaryConnect \[54\], eq. (6)–(7)).
//!
//! A quantized forward uses `Ŵ = q(W)`, whose derivative is zero almost
//! everywhere; the STE treats `q` as the identity in the backward, so
//! `∂L/∂W = ∂L/∂Ŵ`, restricted to the clip region `|W| ≤ limit` (the
//! saturating STE of Hubara et al. \[56\]). BinaryConnect also clips the
//! full-precision weights to `[−1, 1]` after each update ([`clip_weights`]).

use crate::error::{ensure_finite, Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Hard sigmoid (ONNX `HardSigmoid`), `max(0, min(1, α·x + β))`.

use super::elementwise::{clamp_nan, Elementwise};
use crate::error::{Error, Result};

/// Element-wise `max(0, min(1, α·x + β))`, computed in f32 as ONNX does;
/// NaN propagated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HardSigmoid {
    alpha: f32,
    beta: f32,
}

impl HardSigmoid {
    /// A hard sigmoid with slope `alpha` and offset `beta`, both finite.
    pub fn new(alpha: f32, beta: f32) -> Result<Self> {
        for (name, v) in [("hard-sigmoid alpha", alpha), ("hard-sigmoid beta", beta)] {
            if !v.is_finite() {
                return Err(Error::param(name, v, "finite"));
            }
        }
        Ok(HardSigmoid { alpha, beta })
    }

    /// Slope α.
    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// Offset β.
    pub fn beta(&self) -> f32 {
        self.beta
    }
}

impl Default for HardSigmoid {
    /// ONNX's defaults, α = 0.2 and β = 0.5.
    fn default() -> Self {
        HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        }
    }
}

impl Elementwise for HardSigmoid {
    #[inline]
    fn eval(&self, x: f32) -> f32 {
        clamp_nan(self.alpha * x + self.beta, 0.0, 1.0)
    }
}

elementwise_operator!(HardSigmoid, params: 2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::elementwise::tests::check_contract;

    #[test]
    fn onnx_defaults_closed_form() {
        let h = HardSigmoid::default();
        assert_eq!((h.alpha(), h.beta()), (0.2, 0.5));
        assert_eq!(h.eval(0.0), 0.5);
        assert_eq!(h.eval(-2.5), 0.0);
        assert_eq!(h.eval(2.5), 1.0);
        assert_eq!(h.eval(-10.0), 0.0);
        assert_eq!(h.eval(f32::INFINITY), 1.0);
        assert_eq!(h.eval(f32::NEG_INFINITY), 0.0);
        assert!((h.eval(1.0) - 0.7).abs() < 1e-7);
        check_contract(h, 2);
    }

    #[test]
    fn parameters_are_validated() {
        assert!(HardSigmoid::new(f32::NAN, 0.5).is_err());
        assert!(HardSigmoid::new(0.2, f32::INFINITY).is_err());
        let h = HardSigmoid::new(-1.0, 0.0).unwrap();
        assert_eq!(h.eval(-0.25), 0.25);
    }
}

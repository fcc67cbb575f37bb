//! Clip (ONNX `Clip`, PyTorch `clamp` / `hardtanh`): `min(max(x, lo), hi)`.

use super::elementwise::{clamp_nan, Elementwise};
use crate::error::{Error, Result};

/// Element-wise clamp to `min..=max`, NaN propagated; ReLU6 is `0..=6`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    min: f32,
    max: f32,
}

impl Clip {
    /// A clamp to `min..=max`: neither bound NaN (±∞ allowed, for one-sided
    /// clamps) and `min ≤ max`.
    pub fn new(min: f32, max: f32) -> Result<Self> {
        if min.is_nan() {
            return Err(Error::param("clip min", min, "not NaN"));
        }
        if max.is_nan() {
            return Err(Error::param("clip max", max, "not NaN"));
        }
        if min > max {
            return Err(Error::param(
                "clip bounds",
                format!("{min}..{max}"),
                "min <= max",
            ));
        }
        Ok(Clip { min, max })
    }

    /// ReLU6, `min(max(x, 0), 6)` (MobileNet).
    pub fn relu6() -> Self {
        Clip { min: 0.0, max: 6.0 }
    }

    /// The lower bound.
    pub fn min(&self) -> f32 {
        self.min
    }

    /// The upper bound.
    pub fn max(&self) -> f32 {
        self.max
    }
}

impl Elementwise for Clip {
    #[inline]
    fn eval(&self, x: f32) -> f32 {
        clamp_nan(x, self.min, self.max)
    }
}

elementwise_operator!(Clip, params: 2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::elementwise::tests::check_contract;
    use crate::Error;

    #[test]
    fn relu6_closed_form() {
        let c = Clip::relu6();
        assert_eq!((c.min(), c.max()), (0.0, 6.0));
        let xs = [-1.0, 0.0, 3.0, 6.0, 9.0, f32::INFINITY, f32::NEG_INFINITY];
        let want = [0.0, 0.0, 3.0, 6.0, 6.0, 6.0, 0.0];
        for (x, w) in xs.iter().zip(want) {
            assert_eq!(c.eval(*x), w, "relu6({x})");
        }
        check_contract(c, 2);
    }

    #[test]
    fn bounds_are_validated() {
        assert!(Clip::new(1.0, 1.0).is_ok());
        assert!(Clip::new(f32::NEG_INFINITY, f32::INFINITY).is_ok());
        for (lo, hi) in [
            (2.0, 1.0),
            (f32::NAN, 1.0),
            (0.0, f32::NAN),
            (f32::INFINITY, 0.0),
        ] {
            assert!(matches!(
                Clip::new(lo, hi),
                Err(Error::InvalidParameter { .. })
            ));
        }
        let one_sided = Clip::new(f32::NEG_INFINITY, 0.5).unwrap();
        assert_eq!(one_sided.eval(-1e30), -1e30);
        assert_eq!(one_sided.eval(1.0), 0.5);
    }
}

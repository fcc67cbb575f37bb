//! Rectified linear unit, `max(0, x)` with NaN propagated.

use super::elementwise::{clamp_nan, Elementwise};

/// Element-wise `max(0, x)`; NaN stays NaN (a plain `f32::max` would turn
/// it into 0 and hide it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relu;

impl Elementwise for Relu {
    #[inline]
    fn eval(&self, x: f32) -> f32 {
        clamp_nan(x, 0.0, f32::INFINITY)
    }
}

elementwise_operator!(Relu, params: 0);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::elementwise::tests::check_contract;

    #[test]
    fn closed_form_and_nan() {
        assert_eq!(Relu.eval(-3.5), 0.0);
        assert_eq!(Relu.eval(2.0), 2.0);
        assert_eq!(Relu.eval(f32::INFINITY), f32::INFINITY);
        assert_eq!(Relu.eval(f32::NEG_INFINITY), 0.0);
        assert!(Relu.eval(f32::NAN).is_nan());
        check_contract(Relu, 0);
    }
}

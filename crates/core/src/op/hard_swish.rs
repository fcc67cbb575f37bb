//! Hard swish (ONNX `HardSwish`, MobileNet-v3), `x·max(0, min(1, x/6 + 1/2))`.

use super::elementwise::{clamp_nan, Elementwise};

/// Element-wise `x·max(0, min(1, x/6 + 1/2))`: 0 for `x ≤ −3` (including
/// −∞, where the product form would give `−∞·0 = NaN`), `x` for `x ≥ 3`;
/// NaN propagated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardSwish;

impl Elementwise for HardSwish {
    #[inline]
    fn eval(&self, x: f32) -> f32 {
        let gate = clamp_nan(x / 6.0 + 0.5, 0.0, 1.0);
        if gate == 0.0 {
            0.0
        } else {
            x * gate
        }
    }
}

elementwise_operator!(HardSwish, params: 0);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::elementwise::tests::check_contract;

    #[test]
    fn closed_forms() {
        assert_eq!(HardSwish.eval(3.0), 3.0);
        assert_eq!(HardSwish.eval(10.0), 10.0);
        assert_eq!(HardSwish.eval(-3.0), 0.0);
        assert_eq!(HardSwish.eval(-5.0), 0.0);
        assert_eq!(HardSwish.eval(0.0), 0.0);
        // x(x + 3)/6 inside (−3, 3): 1.5 · 4.5 / 6 = 1.125.
        assert_eq!(HardSwish.eval(1.5), 1.125);
        assert_eq!(HardSwish.eval(f32::INFINITY), f32::INFINITY);
        assert_eq!(HardSwish.eval(f32::NEG_INFINITY), 0.0);
        check_contract(HardSwish, 0);
    }
}

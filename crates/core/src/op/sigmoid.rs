//! Logistic sigmoid, `σ(x) = 1 / (1 + e^(−x))`.

use super::elementwise::Elementwise;

/// `σ(x)` in f64 rounded once to f32, so it is correctly rounded but for
/// rare double-rounding cases; `σ(−∞) = 0`, `σ(+∞) = 1`, NaN propagated.
pub(crate) fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Element-wise logistic sigmoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sigmoid;

impl Elementwise for Sigmoid {
    #[inline]
    fn eval(&self, x: f32) -> f32 {
        sigmoid64(f64::from(x)) as f32
    }
}

elementwise_operator!(Sigmoid, params: 0);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::elementwise::tests::check_contract;

    #[test]
    fn closed_forms() {
        assert_eq!(Sigmoid.eval(0.0), 0.5);
        assert_eq!(Sigmoid.eval(f32::INFINITY), 1.0);
        assert_eq!(Sigmoid.eval(f32::NEG_INFINITY), 0.0);
        // σ(ln 3) = 3/4, and σ(x) + σ(−x) = 1.
        assert!((Sigmoid.eval(3f32.ln()) - 0.75).abs() < 1e-7);
        for x in [-7.5f32, -1.0, 0.3, 4.0] {
            assert!((Sigmoid.eval(x) + Sigmoid.eval(-x) - 1.0).abs() < 1e-7);
        }
        // Deep negative tail is e^x, not 0 from cancellation.
        let t = Sigmoid.eval(-80.0);
        assert!(((t as f64) / (-80f64).exp() - 1.0).abs() < 1e-6);
        check_contract(Sigmoid, 0);
    }
}

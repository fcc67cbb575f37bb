//! SiLU / swish, `x·σ(x)`.

use super::elementwise::Elementwise;
use super::sigmoid::sigmoid64;

/// Element-wise `x·σ(x)`, in f64 rounded once; `silu(+∞) = +∞` and
/// `silu(−∞) = −0` (the limit, where the product form would give
/// `−∞·0 = NaN`); NaN propagated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Silu;

impl Elementwise for Silu {
    #[inline]
    fn eval(&self, x: f32) -> f32 {
        if x == f32::NEG_INFINITY {
            return -0.0;
        }
        let x = f64::from(x);
        (x * sigmoid64(x)) as f32
    }
}

elementwise_operator!(Silu, params: 0);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::elementwise::tests::check_contract;

    #[test]
    fn closed_forms() {
        assert_eq!(Silu.eval(0.0), 0.0);
        // silu(ln 3) = ln 3 · 3/4.
        assert!((Silu.eval(3f32.ln()) - 0.75 * 3f32.ln()).abs() < 1e-7);
        // silu(x) − silu(−x) = x.
        for x in [-6.0f32, -0.5, 1.0, 3.25] {
            assert!((Silu.eval(x) - Silu.eval(-x) - x).abs() < 1e-6);
        }
        assert_eq!(Silu.eval(f32::INFINITY), f32::INFINITY);
        assert_eq!(Silu.eval(f32::NEG_INFINITY), 0.0);
        check_contract(Silu, 0);
    }
}

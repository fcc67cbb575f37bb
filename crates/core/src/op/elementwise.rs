//! Element-wise activations: one scalar function applied to every value,
//! shape unchanged.
//!
//! An op implements [`Elementwise`] and gets its [`Operator`](super::Operator)
//! impl from `elementwise_operator!`, so every element-wise op has the same
//! shape rule, cost and reference forward (`mapv(eval)`); fast kernels reach
//! the scalar function through [`Op::as_elementwise`](super::Op::as_elementwise).
//! Every function maps NaN to NaN.

/// A scalar activation `y = f(x)` applied independently to every value.
pub trait Elementwise {
    /// `f(x)`; NaN in gives NaN out.
    fn eval(&self, x: f32) -> f32;

    /// `dst[i] = f(src[i])` for the common prefix of both slices. The loop
    /// is compiled per implementing op, so a caller holding a
    /// `&dyn Elementwise` pays one virtual call per slice, not per value.
    fn eval_slice(&self, src: &[f32], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = self.eval(s);
        }
    }
}

/// `x` clamped to `lo..=hi` with NaN propagated: `lo` when `x < lo`, `hi`
/// when `x > hi`, else `x` (NaN fails both comparisons and passes through).
#[inline]
pub fn clamp_nan(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// Implements [`Operator`](crate::op::Operator) for an [`Elementwise`] op:
/// output shape = input shape, cost `Cost::f32_op(0, params, len, len)`
/// (`params` scalar hyper-parameters stored), reference forward
/// `input.mapv(eval)` on a non-empty batch.
macro_rules! elementwise_operator {
    ($op:ty, params: $params:expr $(,)?) => {
        impl $crate::op::Operator for $op {
            fn output_shape(
                &self,
                input: $crate::shape::ActShape,
            ) -> $crate::error::Result<$crate::shape::ActShape> {
                input.checked_len()?;
                Ok(input)
            }

            fn cost(
                &self,
                input: $crate::shape::ActShape,
            ) -> $crate::error::Result<$crate::cost::Cost> {
                $crate::cost::Cost::f32_op(0, $params, input.checked_len()?, input.checked_len()?)
            }

            fn reference_forward(
                &self,
                input: &::ndarray::Array4<f32>,
            ) -> $crate::error::Result<::ndarray::Array4<f32>> {
                $crate::op::input_shape_of(input)?;
                Ok(input.mapv(|v| $crate::op::Elementwise::eval(self, v)))
            }
        }
    };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::op::{Op, Operator};
    use crate::shape::ActShape;
    use ndarray::Array4;

    /// Checks the shared contract of an element-wise op: NaN propagation,
    /// shape, cost and that the reference forward is `eval` per value.
    pub(crate) fn check_contract<E: Elementwise + Operator + Clone + Into<Op>>(op: E, params: u64) {
        assert!(
            op.eval(f32::NAN).is_nan(),
            "{}: NaN must propagate",
            Into::<Op>::into(op.clone()).kind()
        );
        let s = ActShape::new(3, 2, 5);
        assert_eq!(op.output_shape(s).unwrap(), s);
        let cost = op.cost(s).unwrap();
        assert_eq!((cost.macs, cost.params), (0, params));
        assert_eq!(cost.activation_bytes, 8 * 30);
        let x = Array4::from_shape_fn((2, 3, 2, 5), |(n, c, h, w)| {
            (n * 30 + c * 10 + h * 5 + w) as f32 * 0.37 - 11.0
        });
        let y = op.reference_forward(&x).unwrap();
        for (a, b) in x.iter().zip(y.iter()) {
            assert_eq!(op.eval(*a).to_bits(), b.to_bits());
        }
        let mut nan = x.clone();
        nan[[1, 2, 1, 3]] = f32::NAN;
        let y = op.reference_forward(&nan).unwrap();
        assert!(y[[1, 2, 1, 3]].is_nan());
        assert_eq!(y.iter().filter(|v| v.is_nan()).count(), 1);
        assert!(op.reference_forward(&Array4::zeros((0, 3, 2, 5))).is_err());
        // The enum exposes the same scalar function.
        let as_op: Op = op.clone().into();
        let e = as_op.as_elementwise().expect("element-wise op");
        assert_eq!(e.eval(1.25).to_bits(), op.eval(1.25).to_bits());
        let mut out = [0.0f32; 3];
        e.eval_slice(&[-2.0, f32::NAN, 4.0], &mut out);
        assert_eq!(out[0].to_bits(), op.eval(-2.0).to_bits());
        assert!(out[1].is_nan());
    }

    #[test]
    fn clamp_nan_closed_form() {
        assert_eq!(clamp_nan(-1.0, 0.0, 6.0), 0.0);
        assert_eq!(clamp_nan(7.0, 0.0, 6.0), 6.0);
        assert_eq!(clamp_nan(2.5, 0.0, 6.0), 2.5);
        assert!(clamp_nan(f32::NAN, 0.0, 6.0).is_nan());
        assert_eq!(clamp_nan(f32::INFINITY, 0.0, f32::INFINITY), f32::INFINITY);
        assert_eq!(clamp_nan(f32::NEG_INFINITY, 0.0, 1.0), 0.0);
    }
}

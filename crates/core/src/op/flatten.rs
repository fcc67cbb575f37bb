//! Flatten (ONNX `Flatten` with `axis = 1`): each sample's `C×H×W` values,
//! row-major, as a flat `C·H·W` vector.

use ndarray::Array4;

use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;

/// `C×H×W → (C·H·W)×1×1`, values unchanged in row-major order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flatten;

impl Operator for Flatten {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        let len = input
            .channels
            .checked_mul(input.height)
            .and_then(|v| v.checked_mul(input.width))
            .ok_or_else(|| Error::param("flatten size", input, "C·H·W that fits in usize"))?;
        Ok(ActShape::flat(len))
    }

    /// A copy at most (a graph plan makes it free); no arithmetic.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        Cost::f32_op(0, 0, input.checked_len()?, out.checked_len()?)
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let shape = input_shape_of(input)?;
        let out = self.output_shape(shape)?;
        let flat = super::common::flatten_samples(input, shape);
        Ok(flat
            .into_shape_with_order(out.batched(input.shape()[0]))
            .expect("element count preserved"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_per_sample() {
        let x = Array4::from_shape_fn((2, 2, 2, 3), |(n, c, h, w)| {
            (n * 100 + c * 10 + h * 3 + w) as f32
        });
        let y = Flatten.reference_forward(&x).unwrap();
        assert_eq!(y.shape(), &[2, 12, 1, 1]);
        assert_eq!(y[[0, 7, 0, 0]], x[[0, 1, 0, 1]]);
        assert_eq!(y[[1, 5, 0, 0]], x[[1, 0, 1, 2]]);
        // A non-standard-layout input flattens the same.
        let t = x
            .clone()
            .permuted_axes([0, 1, 3, 2])
            .as_standard_layout()
            .into_owned()
            .permuted_axes([0, 1, 3, 2]);
        assert_eq!(Flatten.reference_forward(&t).unwrap(), y);
        let mut nan = x.clone();
        nan[[1, 1, 1, 1]] = f32::NAN;
        assert!(Flatten.reference_forward(&nan).unwrap()[[1, 10, 0, 0]].is_nan());
    }

    #[test]
    fn overflow_is_a_typed_error() {
        let huge = ActShape::new(usize::MAX / 2, 3, 1);
        assert!(matches!(
            Flatten.output_shape(huge),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(Flatten.cost(huge).is_err());
        let c = Flatten.cost(ActShape::new(4, 2, 2)).unwrap();
        assert_eq!((c.macs, c.params, c.activation_bytes), (0, 0, 4 * 32));
    }
}

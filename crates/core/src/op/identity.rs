//! Identity (ONNX `Identity`): the output is the input.

use ndarray::Array4;

use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::Result;
use crate::shape::ActShape;

/// `y = x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity;

impl Operator for Identity {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        input.checked_len()?;
        Ok(input)
    }

    /// A copy at most (a graph plan makes it free); no arithmetic.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        Cost::f32_op(0, 0, input.checked_len()?, input.checked_len()?)
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        input_shape_of(input)?;
        Ok(input.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_everything_including_nan() {
        let mut x = Array4::from_shape_fn((2, 3, 1, 2), |(n, c, _, w)| (n * 6 + c * 2 + w) as f32);
        x[[1, 2, 0, 1]] = f32::NAN;
        let y = Identity.reference_forward(&x).unwrap();
        assert!(x
            .iter()
            .zip(y.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(
            Identity.output_shape(ActShape::new(3, 1, 2)).unwrap(),
            ActShape::new(3, 1, 2)
        );
        assert_eq!(Identity.cost(ActShape::new(3, 1, 2)).unwrap().macs, 0);
        assert!(Identity
            .reference_forward(&Array4::zeros((0, 1, 1, 1)))
            .is_err());
    }
}

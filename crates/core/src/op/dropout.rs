//! Dropout (ONNX `Dropout`) at inference: the identity. The ratio is kept
//! for training-time semantics.

use ndarray::Array4;

use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;

/// Dropout with drop probability `ratio`; `y = x` at inference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    ratio: f32,
}

impl Dropout {
    /// Dropout with `0 ≤ ratio < 1`.
    pub fn new(ratio: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&ratio) {
            return Err(Error::param("dropout ratio", ratio, "in [0, 1)"));
        }
        Ok(Dropout { ratio })
    }

    /// The drop probability.
    pub fn ratio(&self) -> f32 {
        self.ratio
    }
}

impl Operator for Dropout {
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
    fn ratio_is_validated_and_inference_is_identity() {
        for bad in [-0.1, 1.0, 1.5, f32::NAN, f32::INFINITY] {
            assert!(
                matches!(Dropout::new(bad), Err(Error::InvalidParameter { .. })),
                "{bad}"
            );
        }
        let d = Dropout::new(0.5).unwrap();
        assert_eq!(d.ratio(), 0.5);
        assert_eq!(Dropout::new(0.0).unwrap().ratio(), 0.0);
        let mut x = Array4::from_shape_fn((1, 2, 2, 2), |(_, c, h, w)| {
            (c * 4 + h * 2 + w) as f32 - 3.0
        });
        x[[0, 1, 1, 0]] = f32::NAN;
        let y = d.reference_forward(&x).unwrap();
        assert!(x
            .iter()
            .zip(y.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(d.cost(ActShape::new(2, 2, 2)).unwrap().activation_bytes, 64);
    }
}

//! Rectified linear unit, `max(0, x)`.

use ndarray::Array4;

use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::Result;
use crate::shape::ActShape;

/// Element-wise `max(0, x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relu;

impl Operator for Relu {
    fn kind(&self) -> &'static str {
        "relu"
    }

    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        input.checked_len()?;
        Ok(input)
    }

    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        Cost::f32_op(0, 0, input.len(), out.len())
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        input_shape_of(input)?;
        Ok(input.mapv(|v| v.max(0.0)))
    }
}

//! The shared result type: a loss value and its gradient.

use ndarray::{Array, Dimension, Ix2};

use crate::Real;

/// A scalar loss and its gradient with respect to the (student) input it was
/// computed from; `grad` has exactly the input's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LossGrad<F: Real, D: Dimension = Ix2> {
    /// The loss value (batch-mean reduced).
    pub value: F,
    /// `∂ value / ∂ input`, same shape as the input.
    pub grad: Array<F, D>,
}

impl<F: Real, D: Dimension> LossGrad<F, D> {
    /// Bundles a value and its gradient.
    pub fn new(value: F, grad: Array<F, D>) -> Self {
        Self { value, grad }
    }

    /// Multiplies value and gradient by `weight` (a loss coefficient).
    pub fn scaled(mut self, weight: F) -> Self {
        self.value = self.value * weight;
        self.grad.mapv_inplace(|g| g * weight);
        self
    }
}

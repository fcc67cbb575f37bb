//! Validation and reshaping shared by the op files: the bias check of every
//! op with a per-output bias, and the flattening of a batch into feature rows
//! for the fully connected ops.

use ndarray::{Array1, Array2, Array4};

use crate::error::{ensure_finite, Error, Result};
use crate::shape::ActShape;

/// Checks that a bias (when given) has one finite entry per output, `outputs`.
pub(crate) fn check_bias(bias: Option<&Array1<f32>>, outputs: usize) -> Result<()> {
    if let Some(b) = bias {
        if b.len() != outputs {
            return Err(Error::shape("bias length", outputs, b.len()));
        }
        ensure_finite("bias", b.iter())?;
    }
    Ok(())
}

/// The NCHW batch `input` (per-sample shape `shape`) as a `[N, C·H·W]`
/// matrix, one row-major flattened sample per row: the input of a fully
/// connected layer.
pub(crate) fn flatten_samples(input: &Array4<f32>, shape: ActShape) -> Array2<f32> {
    let batch = input.shape()[0];
    input
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((batch, shape.len()))
        .expect("element count preserved")
}

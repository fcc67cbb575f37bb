//! The op dispatch: the one place that maps each [`Op`] to its fast kernel.
//!
//! Ops without a fast kernel (including ops added to the IR later — [`Op`] is
//! non-exhaustive) run their reference semantics.

use hasten_core::ndarray::Array4;
use hasten_core::op::input_shape_of;
use hasten_core::{Op, Operator, Result};

use crate::{conv, elementwise, linear, shift, shuffle};

/// Validates `input` against `op` and runs the op's kernel.
pub(crate) fn run_op(op: &Op, input: &Array4<f32>) -> Result<Array4<f32>> {
    op.output_shape(input_shape_of(input)?)?;
    match op {
        Op::Conv(layer) => conv::forward(layer, input),
        Op::Linear(layer) => linear::forward(layer, input),
        Op::Relu(_) => Ok(elementwise::relu(input)),
        Op::BatchNorm(bn) => Ok(elementwise::batch_norm(bn, input)),
        Op::ChannelShuffle(s) => Ok(shuffle::forward(s, input)),
        Op::Shift(s) => Ok(shift::forward(s, input)),
        _ => op.reference_forward(input),
    }
}

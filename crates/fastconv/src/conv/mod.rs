//! Convolution kernels (equation (1) of the survey).

mod geometry;
mod im2col;

pub(crate) use geometry::Geometry;

use hasten_core::ndarray::Array4;
use hasten_core::op::input_shape_of;
use hasten_core::{ConvLayer, Result};

/// Convolution of an NCHW batch by `layer`, validated first.
pub(crate) fn forward(layer: &ConvLayer, input: &Array4<f32>) -> Result<Array4<f32>> {
    let geo = Geometry::new(layer, input_shape_of(input)?)?;
    Ok(im2col::forward(layer, &geo, input))
}

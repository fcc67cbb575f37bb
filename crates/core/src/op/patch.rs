//! Patch geometry shared by the pruned convolution formats (group-wise,
//! sparse, perforated): reading one tap of a convolution patch (the im2col
//! element of eq. (13)), and the one-group spec and output-shape rules of the
//! formats that index taps over all input channels.

use ndarray::Array4;

use crate::error::{Error, Result};
use crate::shape::ActShape;
use crate::spec::ConvSpec;

/// Rejects a spec with more than one group: the tap-indexed formats
/// (`op` names the format in the error) address every input channel.
pub(crate) fn ensure_single_group(op: &str, spec: &ConvSpec) -> Result<()> {
    if spec.groups != 1 {
        return Err(Error::unsupported(
            op,
            format!("groups = {} (expected 1)", spec.groups),
        ));
    }
    Ok(())
}

/// Output shape of a one-group convolution with `in_channels` inputs, a
/// `kernel` (height, width) support, `out_channels` filters and `spec`;
/// `kind` names the op in the channel-mismatch error.
pub(crate) fn single_group_output_shape(
    kind: &str,
    in_channels: usize,
    kernel: (usize, usize),
    out_channels: usize,
    spec: &ConvSpec,
    input: ActShape,
) -> Result<ActShape> {
    super::expect_channels(kind, in_channels, input)?;
    let (oh, ow) = spec.output_hw(input.height, input.width, kernel.0, kernel.1)?;
    ActShape::checked(out_channels, oh, ow)
}

/// `U[n, c, y·σ_h + i·δ_h − p_top, x·σ_w + j·δ_w − p_left]` as f64, zero
/// where the index falls in the padding.
pub(crate) fn tap(
    input: &Array4<f32>,
    spec: &ConvSpec,
    n: usize,
    c: usize,
    (y, x): (usize, usize),
    (i, j): (usize, usize),
) -> f64 {
    let iy = (y * spec.stride.0 + i * spec.dilation.0) as isize - spec.padding.top as isize;
    let ix = (x * spec.stride.1 + j * spec.dilation.1) as isize - spec.padding.left as isize;
    let (h, w) = (input.shape()[2] as isize, input.shape()[3] as isize);
    if iy < 0 || iy >= h || ix < 0 || ix >= w {
        0.0
    } else {
        f64::from(input[[n, c, iy as usize, ix as usize]])
    }
}

//! Reading one tap of a convolution patch (the im2col element of eq. (13)),
//! shared by the reference forwards of the pruned convolution formats.

use ndarray::Array4;

use crate::spec::ConvSpec;

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

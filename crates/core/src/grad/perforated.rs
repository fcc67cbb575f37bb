//! Perforated convolution (survey section 6.1, Figurnov et al.) in f64: the
//! convolution of [`conv`](super::conv) evaluated everywhere, then output
//! `(y, x)` copies evaluated position `positions[nearest[y·ow + x]]`. The
//! backward routes the gradient of every output position to the evaluated
//! position it copies (summing over the positions that copy it), then runs
//! the convolution's backward: skipped positions reach the input and the
//! weights only through the position that fills them.

use ndarray::Array4;

use super::{conv, OpGrad, OpParams};
use crate::error::Result;
use crate::op::PerforatedConv;

/// For every output position `(y, x)` (row-major), the evaluated position it copies.
fn sources(op: &PerforatedConv) -> impl Iterator<Item = ((usize, usize), (usize, usize))> + '_ {
    let ow = op.out_hw().1;
    op.nearest()
        .iter()
        .enumerate()
        .map(move |(k, &near)| ((k / ow, k % ow), op.positions()[near as usize]))
}

pub(super) fn forward(
    op: &PerforatedConv,
    x: &Array4<f64>,
    p: &OpParams,
    out: [usize; 4],
) -> Result<Array4<f64>> {
    let full = conv::forward(op.conv(), x, p, out)?;
    let mut y = Array4::<f64>::zeros(out);
    for ((oy, ox), (sy, sx)) in sources(op) {
        for n in 0..out[0] {
            for t in 0..out[1] {
                y[[n, t, oy, ox]] = full[[n, t, sy, sx]];
            }
        }
    }
    Ok(y)
}

pub(super) fn backward(
    op: &PerforatedConv,
    x: &Array4<f64>,
    dy: &Array4<f64>,
    p: &OpParams,
) -> Result<OpGrad> {
    let mut d_full = Array4::<f64>::zeros(dy.raw_dim());
    for ((oy, ox), (sy, sx)) in sources(op) {
        for n in 0..dy.shape()[0] {
            for t in 0..dy.shape()[1] {
                d_full[[n, t, sy, sx]] += dy[[n, t, oy, ox]];
            }
        }
    }
    conv::backward(op.conv(), x, &d_full, p)
}

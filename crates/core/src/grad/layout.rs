//! Ops that move values without arithmetic — flatten, pad, identity,
//! channel shuffle and gather — and dropout, in f64. Their backward routes
//! each output gradient back to the input it came from (summing where a
//! gather reads a channel several times; padding takes none).

use ndarray::{s, Array4, Axis};

use super::Mode;
use crate::op::{Dropout, Op};
use crate::rng::SeededRng;

/// For each output channel, the input channel it copies (shuffle, gather).
fn channel_sources(op: &Op, channels: usize) -> Option<Vec<usize>> {
    match op {
        Op::ChannelShuffle(sh) => Some(
            (0..channels)
                .map(|o| sh.source_channel(o, channels))
                .collect(),
        ),
        Op::ChannelGather(g) => Some(g.indices().to_vec()),
        _ => None,
    }
}

/// Forward of a layout op (shapes already checked; `out` the output dims).
pub(super) fn forward(op: &Op, x: &Array4<f64>, out: [usize; 4]) -> Array4<f64> {
    match op {
        Op::Flatten(_) => x
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(out)
            .expect("same element count"),
        Op::Pad(p) => {
            let pad = p.padding();
            let (h, w) = (x.shape()[2], x.shape()[3]);
            let mut y = Array4::from_elem(out, f64::from(p.value()));
            y.slice_mut(s![.., .., pad.top..pad.top + h, pad.left..pad.left + w])
                .assign(x);
            y
        }
        _ => match channel_sources(op, x.shape()[1]) {
            Some(src) => x.select(Axis(1), &src),
            None => x.clone(),
        },
    }
}

/// Backward of a layout op.
pub(super) fn backward(op: &Op, x: &Array4<f64>, dy: &Array4<f64>) -> Array4<f64> {
    match op {
        Op::Flatten(_) => dy
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(x.raw_dim())
            .expect("same element count"),
        Op::Pad(p) => {
            let pad = p.padding();
            let (h, w) = (x.shape()[2], x.shape()[3]);
            dy.slice(s![.., .., pad.top..pad.top + h, pad.left..pad.left + w])
                .to_owned()
        }
        _ => match channel_sources(op, x.shape()[1]) {
            Some(src) => {
                let mut dx = Array4::zeros(x.raw_dim());
                for (o, &c) in src.iter().enumerate() {
                    let mut lane = dx.index_axis_mut(Axis(1), c);
                    lane += &dy.index_axis(Axis(1), o);
                }
                dx
            }
            None => dy.clone(),
        },
    }
}

/// The dropout keep-mask scaled by `1/(1 − p)`: element `k` (row-major) is
/// kept when the `k`-th uniform draw of `SeededRng::new(seed)` is `≥ p`.
pub fn dropout_mask(ratio: f64, seed: u64, dims: [usize; 4]) -> Array4<f64> {
    let mut rng = SeededRng::new(seed);
    let scale = 1.0 / (1.0 - ratio);
    Array4::from_shape_simple_fn(dims, || if rng.uniform() >= ratio { scale } else { 0.0 })
}

fn dims_of(a: &Array4<f64>) -> [usize; 4] {
    let s = a.shape();
    [s[0], s[1], s[2], s[3]]
}

pub(super) fn dropout_forward(d: &Dropout, x: &Array4<f64>, mode: Mode) -> Array4<f64> {
    match mode {
        Mode::Eval => x.clone(),
        Mode::Train { seed, .. } => x * &dropout_mask(f64::from(d.ratio()), seed, dims_of(x)),
    }
}

pub(super) fn dropout_backward(d: &Dropout, dy: &Array4<f64>, mode: Mode) -> Array4<f64> {
    match mode {
        Mode::Eval => dy.clone(),
        Mode::Train { seed, .. } => dy * &dropout_mask(f64::from(d.ratio()), seed, dims_of(dy)),
    }
}

/// ShiftNet's shift (survey section 3): `out[c, y, x] = in[c, y − dy, x − dx]`
/// (zero outside the image); with `back`, the adjoint, moving a gradient by
/// `(−dy, −dx)` to the input it came from.
pub(super) fn shift(op: &crate::op::Shift, x: &Array4<f64>, back: bool) -> Array4<f64> {
    let mut y = Array4::<f64>::zeros(x.raw_dim());
    let (h, w) = (x.shape()[2] as isize, x.shape()[3] as isize);
    let sign = if back { -1 } else { 1 };
    for n in 0..x.shape()[0] {
        for (c, &(dy, dx)) in op.offsets().iter().enumerate() {
            for yy in 0..h {
                for xx in 0..w {
                    let (sy, sx) = (yy - sign * dy, xx - sign * dx);
                    if sy >= 0 && sy < h && sx >= 0 && sx < w {
                        y[[n, c, yy as usize, xx as usize]] = x[[n, c, sy as usize, sx as usize]];
                    }
                }
            }
        }
    }
    y
}

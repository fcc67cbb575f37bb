//! Implicit GEMM over a zero-padded copy for convolutions with short rows
//! (equation (1) of the survey as a matrix product without im2col). With
//! the input zero-padded to `Hp × Wp` planes and, for stride `(sy, sx)`,
//! each plane split into its `sy·sx` phases (`phase[py, px][Y, X] =
//! padded[Y·sy + py, X·sx + px]`, `Hq × Wq` each), tap `(i, j)` of output
//! pixel `(y, x)` reads `phase[a % sy, b % sx][y + a / sy, x + b / sx]` with
//! `(a, b) = (i·dh, j·dw)`. So row `k = (c, i, j)` of the lowered matrix
//! over the `OH × Wq` "wide" output positions `p = y·Wq + x` is one
//! contiguous slice of the phase planes; the `Wq − OW` extra columns of
//! every output row are computed and dropped when the result is copied out.
//! Packing `B` is then a copy of contiguous rows instead of lazy im2col,
//! whose per-row segments dominate small feature maps (a 28-wide row costs a
//! division, two fills and a 27-float copy per tap).

use std::ops::Range;

use super::{ChannelView, ConvGeometry};
use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::gemm::BSource;

/// Longest output row (in pixels) for which a stride-1 convolution runs on
/// padded rows: beyond it lazy im2col's per-segment cost is amortised and
/// the padded copy's dropped columns and extra pass are not worth it.
const SHORT_ROW: usize = 32;

/// Most filters per group for which a convolution runs on padded rows:
/// with more, each packed column of `B` serves so many rows of filters
/// that lazy im2col costs less than the dropped columns (ResNet-18's
/// 512-filter 3×3 layers on 7×7 ran 5–10 % slower on padded rows, 9 columns
/// computed per 7 kept; ResNet-8's 16- to 64-filter layers twice as fast).
const MAX_FILTERS: usize = 64;

/// Whether a convolution of these sizes, read through `view`, runs on
/// padded rows: a kernel larger than `1×1` (those read the planes
/// themselves or are cheap to lower), at most [`MAX_FILTERS`] filters per
/// group, an identity view, output rows of at most [`SHORT_ROW`] pixels
/// and wide rows at most twice as long (`Wq ≤ 2·OW`: at most half the
/// GEMM's columns are dropped, and the wide result is at most twice the
/// output the plan's arena holds).
pub(crate) fn applies(geo: &ConvGeometry, view: &ChannelView) -> bool {
    geo.kernel != (1, 1)
        && geo.t_g <= MAX_FILTERS
        && view.is_identity()
        && geo.out_hw.1 <= SHORT_ROW
        && phase_hw(geo).1 <= 2 * geo.out_hw.1
}

/// Height and width of one phase plane: `⌈Hp / sy⌉ × ⌈Wp / sx⌉`.
fn phase_hw(geo: &ConvGeometry) -> (usize, usize) {
    let (hp, wp) = geo.padded_hw;
    (hp.div_ceil(geo.stride.0), wp.div_ceil(geo.stride.1))
}

/// Offset of the phase plane `(py, px)` of channel `c` in a sample.
fn plane(geo: &ConvGeometry, c: usize, py: usize, px: usize) -> usize {
    let (hq, wq) = phase_hw(geo);
    ((c * geo.stride.0 + py) * geo.stride.1 + px) * hq * wq
}

/// Floats of one zero-padded sample: `C·sy·sx` phase planes and the
/// `dw·(kw − 1)` floats the last tap's wide row may read past them.
pub(crate) fn sample_len(geo: &ConvGeometry) -> usize {
    plane(geo, geo.in_channels(), 0, 0) + geo.dilation.1 * (geo.kernel.1 - 1)
}

/// GEMM columns of one sample and group: `OH × Wq`.
pub(crate) fn columns(geo: &ConvGeometry) -> usize {
    geo.out_hw.0 * phase_hw(geo).1
}

/// The zero-padded copy of a batch, owned by a convolution: borders and
/// tails are zeroed when the buffer is sized and never written after, so
/// each run copies only the image rows.
#[derive(Debug, Default)]
pub(crate) struct PaddedInput {
    buf: AlignedVec,
    /// The batch the borders were zeroed for (0: none yet).
    batch: usize,
}

impl PaddedInput {
    /// Copies `batch` samples of `input` (`C × H × W` each) into their
    /// padded planes and returns all of them (`batch ×` [`sample_len`]).
    pub fn fill(&mut self, geo: &ConvGeometry, input: &[f32], batch: usize) -> &[f32] {
        let len = sample_len(geo);
        if self.batch != batch {
            self.buf.resize(batch * len);
            self.buf.as_mut_slice().fill(0.0);
            self.batch = batch;
        }
        let (h, w) = geo.in_hw;
        let (sy, sx) = geo.stride;
        let wq = phase_hw(geo).1;
        let (top, left) = geo.pad_top_left;
        let planes = input[..batch * geo.in_channels() * h * w].chunks_exact(h * w);
        let dst = self.buf.as_mut_slice();
        for (p, image) in planes.enumerate() {
            let (n, c) = (p / geo.in_channels(), p % geo.in_channels());
            for (y, row) in image.chunks_exact(w).enumerate() {
                let (py, yq) = ((y + top) % sy, (y + top) / sy);
                for px in 0..sx {
                    // Image columns x with (x + left) % sx == px, from xq on.
                    let x0 = (px + sx - left % sx) % sx;
                    if x0 >= w {
                        continue;
                    }
                    let xq = (x0 + left) / sx;
                    let at = n * len + plane(geo, c, py, px) + yq * wq + xq;
                    let d = &mut dst[at..][..(w - x0).div_ceil(sx)];
                    if sx == 1 {
                        d.copy_from_slice(row);
                    } else {
                        for (d, &v) in d.iter_mut().zip(row[x0..].iter().step_by(sx)) {
                            *d = v;
                        }
                    }
                }
            }
        }
        self.buf.as_slice()
    }
}

/// The lowered matrix of one padded sample and group over the wide output
/// positions, row `k` a slice of the padded planes.
pub(crate) struct PaddedSource<'a> {
    /// Sizes.
    pub geo: &'a ConvGeometry,
    /// The padded sample ([`sample_len`] floats).
    pub sample: &'a [f32],
    /// Group.
    pub group: usize,
}

impl BSource for PaddedSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, _tmp: &'b mut [f32]) -> &'b [f32] {
        let geo = self.geo;
        let taps = geo.kernel.0 * geo.kernel.1;
        let (s, i, j) = (k / taps, (k % taps) / geo.kernel.1, k % geo.kernel.1);
        let (a, b) = (i * geo.dilation.0, j * geo.dilation.1);
        let (sy, sx) = geo.stride;
        let c = self.group * geo.c_g + s;
        let start = plane(geo, c, a % sy, b % sx) + a / sy * phase_hw(geo).1 + b / sx;
        &self.sample[start + cols.start..start + cols.end]
    }
}

/// Copies the wide result `wide` (`batch × T × OH × Wq`) to `output`
/// (sample `n` at `n · stride`, `T × OH × OW`), dropping the extra columns;
/// with `residual = Some((r, clamp))` it adds `r` (`batch × T × OH × OW`)
/// and then clamps (the GEMM stored `wide` unclamped), as the fused
/// epilogue would.
pub(crate) fn scatter(
    geo: &ConvGeometry,
    wide: &[f32],
    output: &mut [f32],
    stride: usize,
    residual: Option<(&[f32], Clamp)>,
    batch: usize,
) {
    let (oh, ow) = geo.out_hw;
    let wp = phase_hw(geo).1;
    let t_all = geo.out_channels();
    let area = oh * ow;
    for n in 0..batch {
        let wide = &wide[n * t_all * oh * wp..][..t_all * oh * wp];
        let out = &mut output[n * stride..][..t_all * area];
        for (r, (d, s)) in out
            .chunks_exact_mut(ow)
            .zip(wide.chunks_exact(wp))
            .enumerate()
        {
            let s = &s[..ow];
            match residual {
                Some((res, clamp)) => {
                    let res = &res[n * t_all * area + r * ow..][..ow];
                    for ((d, &s), &r) in d.iter_mut().zip(s).zip(res) {
                        *d = clamp.apply(s + r);
                    }
                }
                None => d.copy_from_slice(s),
            }
        }
    }
}

//! Implicit GEMM over a zero-padded copy for convolutions with short rows
//! and strided convolutions (equation (1) of the survey as a matrix product without im2col). With
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
use crate::shares;
use rayon::prelude::*;

/// Longest output row (in pixels) for which a convolution runs on padded
/// rows whatever its stride: beyond it lazy im2col's per-segment cost is amortised and
/// the padded copy's dropped columns and extra pass are not worth it.
const SHORT_ROW: usize = 32;

/// Most filters per group for which a convolution runs on padded rows:
/// with more, each packed column of `B` serves so many rows of filters
/// that lazy im2col costs less than the dropped columns (ResNet-18's
/// 512-filter 3×3 layers on 7×7 ran 5–10 % slower on padded rows, 9 columns
/// computed per 7 kept; ResNet-8's 16- to 64-filter layers twice as fast).
const MAX_FILTERS: usize = 64;

/// Whether a convolution of these sizes, read through `view`, runs on
/// padded rows. Always with an identity view, wide rows at most twice as
/// long as the output's (`Wq ≤ 2·OW`: at most half the GEMM's columns are
/// dropped, and the wide result is at most twice the output the plan's
/// arena holds) and a kernel larger than `1×1` (a `1×1` layer reads the
/// planes themselves or is cheap to lower; `1×1/2` measured no faster on
/// padded rows), and then either
/// - a strided layer (any filter count and row length) whose wide rows are
///   at most [`STRIDED_WASTE`] longer than its output rows (3×3/2 with
///   padding 1 on 56², `Wq` = 29 for `OW` = 28, and on 28², 15 for 14; the
///   7×7/2 stem, 115 for 112; not on 14², 8 for 7, which measured slower):
///   lazy im2col de-interleaves every row segment of every tap, the phases
///   are split once; or
/// - at most [`MAX_FILTERS`] filters per group and output rows of at most
///   [`SHORT_ROW`] pixels.
pub(crate) fn applies(geo: &ConvGeometry, view: &ChannelView) -> bool {
    let (ow, wq) = (geo.out_hw.1, phase_hw(geo).1);
    let strided = geo.stride != (1, 1) && (wq - ow) * STRIDED_WASTE.1 <= ow * STRIDED_WASTE.0;
    let short = geo.t_g <= MAX_FILTERS && ow <= SHORT_ROW;
    geo.kernel != (1, 1) && view.is_identity() && wq <= 2 * ow && (strided || short)
}

/// Largest fraction `(a, b)`, `a / b`, of extra wide columns per output
/// column for which a strided layer runs on padded rows whatever its
/// filter count and row length.
const STRIDED_WASTE: (usize, usize) = (1, 12);

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
    /// padded planes and returns all of them (`batch ×` [`sample_len`]):
    /// channels grouped into tasks of at least 16 Ki floats, only the phases
    /// some tap reads.
    pub fn fill(&mut self, geo: &ConvGeometry, input: &[f32], batch: usize) -> &[f32] {
        let len = sample_len(geo);
        if self.batch != batch {
            self.buf.resize(batch * len);
            self.buf.as_mut_slice().fill(0.0);
            self.batch = batch;
        }
        let (h, w) = geo.in_hw;
        let c_all = geo.in_channels();
        // A channel's phase planes are contiguous: `sy·sx·Hq·Wq` floats.
        let block = plane(geo, 1, 0, 0);
        let read = read_phases(geo);
        let images = &input[..batch * c_all * h * w];
        // Tasks of at least `MIN_TASK_FLOATS` image floats: a sample of
        // ResNet-8 (16 planes of 28²) is copied on the calling thread.
        self.buf
            .as_mut_slice()
            .par_chunks_mut(len)
            .zip(images.par_chunks_exact(c_all * h * w))
            .with_min_len(shares::min_items(c_all * h * w))
            .for_each(|(dst, sample)| {
                dst[..c_all * block]
                    .par_chunks_exact_mut(block)
                    .zip(sample.par_chunks_exact(h * w))
                    .with_min_len(shares::min_items(h * w))
                    .for_each(|(phases, image)| fill_channel(geo, read, image, phases));
            });
        self.buf.as_slice()
    }
}

/// The phases `(py, px)` some tap reads, as bit masks of `py` and of `px`:
/// `py = (i·dh) mod sy` for a kernel row `i`, `px = (j·dw) mod sx` for a
/// kernel column `j` (one phase, `(0, 0)`, for a `1×1/2` layer).
fn read_phases(geo: &ConvGeometry) -> (u64, u64) {
    let mask = |k: usize, d: usize, s: usize| {
        (0..k.min(s)).fold(0u64, |m, i| m | 1 << ((i * d) % s).min(63))
    };
    (
        mask(geo.kernel.0, geo.dilation.0, geo.stride.0),
        mask(geo.kernel.1, geo.dilation.1, geo.stride.1),
    )
}

/// Copies one channel's `image` (`H × W`) into its phase planes `phases`
/// (zero borders already in place), the phases outside `read` skipped.
fn fill_channel(geo: &ConvGeometry, read: (u64, u64), image: &[f32], phases: &mut [f32]) {
    let w = geo.in_hw.1;
    let (sy, sx) = geo.stride;
    let wq = phase_hw(geo).1;
    let (top, left) = geo.pad_top_left;
    if (sy, sx) == (1, 1) {
        // One phase: row y at (y + top, left), no division per row.
        for (y, row) in image.chunks_exact(w).enumerate() {
            phases[(y + top) * wq + left..][..w].copy_from_slice(row);
        }
        return;
    }
    let bit = |mask: u64, p: usize| p >= 64 || mask & 1 << p != 0;
    for (y, row) in image.chunks_exact(w).enumerate() {
        let (py, yq) = ((y + top) % sy, (y + top) / sy);
        if !bit(read.0, py) {
            continue;
        }
        for px in (0..sx).filter(|&px| bit(read.1, px)) {
            // Image columns x with (x + left) % sx == px, from xq on.
            let x0 = (px + sx - left % sx) % sx;
            if x0 >= w {
                continue;
            }
            let xq = (x0 + left) / sx;
            let at = plane(geo, 0, py, px) + yq * wq + xq;
            let d = &mut phases[at..][..(w - x0).div_ceil(sx)];
            let src = &row[x0..];
            match sx {
                1 => d.copy_from_slice(src),
                2 => {
                    // A constant stride the compiler vectorises as a de-interleave.
                    let pairs = src.chunks_exact(2);
                    let tail = pairs.remainder().first().copied();
                    let n = pairs.len();
                    for (d, pair) in d.iter_mut().zip(pairs) {
                        *d = pair[0];
                    }
                    if let Some(v) = tail {
                        d[n] = v;
                    }
                }
                _ => {
                    for (d, &v) in d.iter_mut().zip(src.iter().step_by(sx)) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// Where row `k = (c, i, j)` of the lowered matrix of group 0 starts in a
/// padded sample (the phase plane of tap `(i, j)` of channel `c`, moved
/// down `a / sy` rows and right `b / sx` columns): computed once per
/// convolution, so packing a row is one look-up instead of the divisions
/// that split `k`. Group `g` adds [`group_start`].
pub(crate) fn row_starts(geo: &ConvGeometry) -> Vec<usize> {
    let (kh, kw) = geo.kernel;
    let (sy, sx) = geo.stride;
    let wq = phase_hw(geo).1;
    let mut starts = Vec::with_capacity(geo.depth());
    for c in 0..geo.c_g {
        for i in 0..kh {
            for j in 0..kw {
                let (a, b) = (i * geo.dilation.0, j * geo.dilation.1);
                starts.push(plane(geo, c, a % sy, b % sx) + a / sy * wq + b / sx);
            }
        }
    }
    starts
}

/// Offset of group `group`'s first phase plane in a padded sample.
pub(crate) fn group_start(geo: &ConvGeometry, group: usize) -> usize {
    plane(geo, group * geo.c_g, 0, 0)
}

/// The lowered matrix of one padded sample and group over the wide output
/// positions, row `k` a slice of the padded planes.
pub(crate) struct PaddedSource<'a> {
    /// The padded sample ([`sample_len`] floats).
    pub sample: &'a [f32],
    /// Where each row of group 0 starts ([`row_starts`]).
    pub starts: &'a [usize],
    /// The group's offset ([`group_start`]).
    pub group_start: usize,
}

impl BSource for PaddedSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, _tmp: &'b mut [f32]) -> &'b [f32] {
        let start = self.group_start + self.starts[k];
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

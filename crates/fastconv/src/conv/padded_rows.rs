//! Implicit GEMM over a zero-padded copy for stride-1 convolutions with
//! short rows (equation (1) of the survey as a matrix product without
//! im2col): with the input zero-padded to `Hp × Wp` planes, tap `(i, j)` of
//! every output pixel `(y, x)` reads `padded[c, (y + i·dh)·Wp + x + j·dw]`,
//! so row `k = (c, i, j)` of the lowered matrix over the `OH × Wp` "wide"
//! output positions `p = y·Wp + x` is the contiguous slice of the padded
//! planes starting at `c·Hp·Wp + i·dh·Wp + j·dw`. The `Wp − OW` extra
//! columns of every output row are computed and dropped when the result is
//! copied out. Packing `B` is then a copy of contiguous rows instead of
//! lazy im2col, whose per-row segments dominate small feature maps (a
//! 28-wide row costs a division, two fills and a 27-float copy per tap).

use std::ops::Range;

use super::{ChannelView, ConvGeometry};
use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::gemm::BSource;

/// Longest output row (in pixels) for which a stride-1 convolution runs on
/// padded rows: beyond it lazy im2col's per-segment cost is amortised and
/// the padded copy's dropped columns and extra pass are not worth it.
const SHORT_ROW: usize = 32;

/// Whether a convolution of these sizes, read through `view`, runs on
/// padded rows: stride 1, a kernel larger than `1×1` (those read the planes
/// themselves), an identity view and output rows of at most
/// [`SHORT_ROW`] pixels.
pub(crate) fn applies(geo: &ConvGeometry, view: &ChannelView) -> bool {
    geo.stride == (1, 1) && geo.kernel != (1, 1) && view.is_identity() && geo.out_hw.1 <= SHORT_ROW
}

/// Floats of one zero-padded sample: `C` planes of `Hp × Wp` and the
/// `dw·(kw − 1)` floats the last tap's wide row reads past them.
pub(crate) fn sample_len(geo: &ConvGeometry) -> usize {
    let (hp, wp) = geo.padded_hw;
    geo.in_channels() * hp * wp + geo.dilation.1 * (geo.kernel.1 - 1)
}

/// GEMM columns of one sample and group: `OH × Wp`.
pub(crate) fn columns(geo: &ConvGeometry) -> usize {
    geo.out_hw.0 * geo.padded_hw.1
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
        let (hp, wp) = geo.padded_hw;
        let (top, left) = geo.pad_top_left;
        let planes = input[..batch * geo.in_channels() * h * w].chunks_exact(h * w);
        let dst = self.buf.as_mut_slice();
        for (p, plane) in planes.enumerate() {
            let (n, c) = (p / geo.in_channels(), p % geo.in_channels());
            let base = n * len + c * hp * wp + top * wp + left;
            for (y, row) in plane.chunks_exact(w).enumerate() {
                dst[base + y * wp..][..w].copy_from_slice(row);
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
        let (hp, wp) = geo.padded_hw;
        let c = self.group * geo.c_g + s;
        let start = c * hp * wp + i * geo.dilation.0 * wp + j * geo.dilation.1;
        &self.sample[start + cols.start..start + cols.end]
    }
}

/// Copies the wide result `wide` (`batch × T × OH × Wp`) to `output`
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
    let wp = geo.padded_hw.1;
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

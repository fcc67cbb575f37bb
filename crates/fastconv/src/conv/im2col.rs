//! Lazy im2col (Chellapilla et al.; the lowering that makes equation (1) a
//! matrix product): row `k = (s, i, j)` of the `[C_g·kh·kw, OH·OW]` matrix of
//! group `g` is produced on demand from the image while `B` is packed, so the
//! lowered matrix is never stored whole (as in the best CPU runtimes).

use std::ops::Range;

use super::{ChannelView, ConvGeometry};
use crate::gemm::BSource;

/// The im2col matrix of one sample and group, read straight from the image.
pub(crate) struct ImageSource<'a> {
    /// Sizes.
    pub geo: &'a ConvGeometry,
    /// Channel view absorbed from a preceding shuffle / shift.
    pub view: &'a ChannelView,
    /// The sample, `C × H × W` row-major (image channels).
    pub sample: &'a [f32],
    /// Group.
    pub group: usize,
}

impl BSource for ImageSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, tmp: &'b mut [f32]) -> &'b [f32] {
        let geo = self.geo;
        let taps = geo.kernel.0 * geo.kernel.1;
        let (s, i, j) = (k / taps, (k % taps) / geo.kernel.1, k % geo.kernel.1);
        let (c, dy, dx) = self.view.channel(self.group * geo.c_g + s);
        let plane = &self.sample[c * geo.in_area()..][..geo.in_area()];
        let (y0, y1) = geo.valid_y(i, dy);
        let (x0, x1) = geo.valid_x(j, dx);
        let dst = &mut tmp[..cols.len()];
        let mut p = cols.start;
        while p < cols.end {
            let (oy, ox) = (p / geo.out_hw.1, p % geo.out_hw.1);
            let seg = (geo.out_hw.1 - ox).min(cols.end - p);
            let d = &mut dst[p - cols.start..][..seg];
            if oy < y0 || oy >= y1 {
                d.fill(0.0);
            } else {
                // Image row and column of output (oy, x): iy = oy·sh + i·dh − pt − dy.
                let iy = (oy * geo.stride.0 + i * geo.dilation.0) as isize
                    - geo.pad_top_left.0 as isize
                    - dy;
                let src = &plane[iy as usize * geo.in_hw.1..][..geo.in_hw.1];
                let base = (j * geo.dilation.1) as isize - geo.pad_top_left.1 as isize - dx;
                let (a, b) = (x0.clamp(ox, ox + seg), x1.clamp(ox, ox + seg));
                d[..a - ox].fill(0.0);
                d[b - ox..].fill(0.0);
                if a == b {
                    // Every column of this segment reads padding.
                } else if geo.stride.1 == 1 {
                    let start = (a as isize + base) as usize;
                    d[a - ox..b - ox].copy_from_slice(&src[start..start + (b - a)]);
                } else if geo.stride.1 == 2 {
                    // A constant stride the compiler vectorises as a de-interleave.
                    let start = ((a * 2) as isize + base) as usize;
                    let n = b - a;
                    let pairs = &src[start..start + 2 * (n - 1)];
                    let dst = &mut d[a - ox..b - ox];
                    for (v, pair) in dst.iter_mut().zip(pairs.chunks_exact(2)) {
                        *v = pair[0];
                    }
                    dst[n - 1] = src[start + 2 * (n - 1)];
                } else {
                    for (x, v) in (a..b).zip(d[a - ox..b - ox].iter_mut()) {
                        *v = src[((x * geo.stride.1) as isize + base) as usize];
                    }
                }
            }
            p += seg;
        }
        dst
    }
}

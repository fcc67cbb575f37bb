//! Lazy im2col (Chellapilla et al.; the lowering that makes equation (1) a
//! matrix product): row `k = (s, i, j)` of the `[C_g·kh·kw, OH·OW]` matrix of
//! group `g` is produced on demand from the image while `B` is packed,
//! straight into the packed `NR`-column panels, so the lowered matrix is
//! never stored whole nor copied twice (as in the best CPU runtimes).

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

/// One row `k = (s, i, j)` of the im2col matrix: the input plane its
/// channel reads and the output rows and columns whose tap reads inside it.
struct Tap<'a> {
    geo: &'a ConvGeometry,
    plane: &'a [f32],
    /// Kernel row.
    i: usize,
    /// Output rows `[y0, y1)` reading inside the image.
    y: (usize, usize),
    /// Output columns `[x0, x1)` reading inside the image.
    x: (usize, usize),
    /// Vertical view offset.
    dy: isize,
    /// Input column of output column 0: `j·dw − pl − dx`.
    base: isize,
}

impl<'a> ImageSource<'a> {
    /// Row `k` of the lowered matrix.
    fn tap(&self, k: usize) -> Tap<'a> {
        let geo = self.geo;
        let taps = geo.kernel.0 * geo.kernel.1;
        let (s, i, j) = (k / taps, (k % taps) / geo.kernel.1, k % geo.kernel.1);
        let (c, dy, dx) = self.view.channel(self.group * geo.c_g + s);
        Tap {
            geo,
            plane: &self.sample[c * geo.in_area()..][..geo.in_area()],
            i,
            y: geo.valid_y(i, dy),
            x: geo.valid_x(j, dx),
            dy,
            base: (j * geo.dilation.1) as isize - geo.pad_top_left.1 as isize - dx,
        }
    }
}

impl Tap<'_> {
    /// Writes output columns `ox..ox + d.len()` of output row `oy` (all in
    /// that row): the input value each reads, zero where it reads padding.
    #[inline]
    fn fill(&self, oy: usize, ox: usize, d: &mut [f32]) {
        let geo = self.geo;
        let seg = d.len();
        if oy < self.y.0 || oy >= self.y.1 {
            d.fill(0.0);
            return;
        }
        // Image row and column of output (oy, x): iy = oy·sh + i·dh − pt − dy.
        let iy = (oy * geo.stride.0 + self.i * geo.dilation.0) as isize
            - geo.pad_top_left.0 as isize
            - self.dy;
        let src = &self.plane[iy as usize * geo.in_hw.1..][..geo.in_hw.1];
        let (a, b) = (self.x.0.clamp(ox, ox + seg), self.x.1.clamp(ox, ox + seg));
        d[..a - ox].fill(0.0);
        d[b - ox..].fill(0.0);
        if a == b {
            // Every column of this segment reads padding.
        } else if geo.stride.1 == 1 {
            let start = (a as isize + self.base) as usize;
            d[a - ox..b - ox].copy_from_slice(&src[start..start + (b - a)]);
        } else if geo.stride.1 == 2 {
            // A constant stride the compiler vectorises as a de-interleave.
            let start = ((a * 2) as isize + self.base) as usize;
            let n = b - a;
            let pairs = &src[start..start + 2 * (n - 1)];
            let dst = &mut d[a - ox..b - ox];
            for (v, pair) in dst.iter_mut().zip(pairs.chunks_exact(2)) {
                *v = pair[0];
            }
            dst[n - 1] = src[start + 2 * (n - 1)];
        } else {
            for (x, v) in (a..b).zip(d[a - ox..b - ox].iter_mut()) {
                *v = src[((x * geo.stride.1) as isize + self.base) as usize];
            }
        }
    }
}

impl BSource for ImageSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, tmp: &'b mut [f32]) -> &'b [f32] {
        let tap = self.tap(k);
        let ow = self.geo.out_hw.1;
        let dst = &mut tmp[..cols.len()];
        let mut p = cols.start;
        while p < cols.end {
            let (oy, ox) = (p / ow, p % ow);
            let seg = (ow - ox).min(cols.end - p);
            tap.fill(oy, ox, &mut dst[p - cols.start..][..seg]);
            p += seg;
        }
        dst
    }

    /// Lowers each row straight into the panels: every run of columns that
    /// lies in one output row and one panel is written in place (no row
    /// buffer, no second copy), then the last panel's padding is zeroed.
    fn pack(
        &self,
        ks: Range<usize>,
        cols: Range<usize>,
        nr: usize,
        _row_tmp: &mut Vec<f32>,
        dst: &mut [f32],
    ) {
        let kc = ks.len();
        let ow = self.geo.out_hw.1;
        let nc = cols.len();
        let tail = nc.div_ceil(nr) * nr - nc;
        for (kk, k) in ks.enumerate() {
            let tap = self.tap(k);
            let (mut oy, mut ox) = (cols.start / ow, cols.start % ow);
            // Panel and lane of the next column.
            let (mut jp, mut lane) = (0, 0);
            let mut left = nc;
            while left > 0 {
                let len = (ow - ox).min(nr - lane).min(left);
                tap.fill(oy, ox, &mut dst[jp * kc * nr + kk * nr + lane..][..len]);
                left -= len;
                ox += len;
                lane += len;
                if ox == ow {
                    (oy, ox) = (oy + 1, 0);
                }
                if lane == nr {
                    (jp, lane) = (jp + 1, 0);
                }
            }
            if tail > 0 {
                dst[jp * kc * nr + kk * nr + lane..][..tail].fill(0.0);
            }
        }
    }
}

//! Depthwise convolution (`groups = C`, one input channel per filter: the
//! `d×d`, `d×1` and `1×d` layers of CP-decomposed and MobileNet blocks,
//! survey Fig. 1 and section 3) as a direct kernel. It is memory-bound
//! (`kh·kw` MACs per output value), so it streams each output row once,
//! accumulating every tap into it while it sits in L1; every tap is a
//! unit-stride `y += w·x` over a padded copy of the channel (long runs across
//! rows at stride 1, column-phase copies at larger strides) that the
//! compiler vectorises for the selected ISA.

use rayon::prelude::*;

use super::{ChannelView, Geometry};
use crate::pool::{Scratch, ScratchPool};
use crate::Isa;

/// A depthwise (channel-multiplier `T_g ≥ 1`) convolution, ready to run.
#[derive(Debug)]
pub(crate) struct DepthwiseConv {
    geo: Geometry,
    view: ChannelView,
    isa: Isa,
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
    relu: bool,
}

impl DepthwiseConv {
    /// Whether a convolution of these sizes is depthwise.
    pub fn applies(geo: &Geometry) -> bool {
        geo.c_g == 1 && geo.groups > 1
    }

    /// Takes the OIHW `weights` (`T × 1 × kh × kw`).
    pub fn new(
        isa: Isa,
        geo: Geometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
        view: ChannelView,
    ) -> Self {
        DepthwiseConv {
            geo,
            view,
            isa,
            weights: weights.to_vec(),
            bias: bias.map(<[f32]>::to_vec),
            relu,
        }
    }

    /// Runs on `batch` samples, one task per output plane.
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize, pool: &ScratchPool) {
        let geo = &self.geo;
        let (in_area, out_area, taps) = (geo.in_area(), geo.out_area(), geo.kh * geo.kw);
        let (c_all, t_all) = (geo.in_channels(), geo.out_channels());
        output[..batch * t_all * out_area]
            .par_chunks_mut(out_area)
            .enumerate()
            .for_each(|(plane, out)| {
                let (n, t) = (plane / t_all, plane % t_all);
                let (c, dy, dx) = self.view.channel(t / geo.t_g);
                let src = &input[(n * c_all + c) * in_area..][..in_area];
                pool.with(|scratch| {
                    let job = PlaneJob {
                        geo,
                        src,
                        w: &self.weights[t * taps..][..taps],
                        bias: self.bias.as_ref().map_or(0.0, |b| b[t]),
                        relu: self.relu,
                        dy,
                        dx,
                    };
                    match self.isa {
                        // SAFETY: plans only select supported ISAs
                        // (`Isa::ensure_supported`).
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => unsafe { plane_avx512(&job, out, scratch) },
                        // SAFETY: as above.
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => unsafe { plane_avx2(&job, out, scratch) },
                        _ => run_plane(&job, out, scratch),
                    }
                });
            });
    }
}

/// One output plane's inputs.
struct PlaneJob<'a> {
    geo: &'a Geometry,
    src: &'a [f32],
    w: &'a [f32],
    bias: f32,
    relu: bool,
    dy: isize,
    dx: isize,
}

/// [`run_plane`] compiled for AVX-512.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn plane_avx512(job: &PlaneJob<'_>, out: &mut [f32], scratch: &mut Scratch) {
    run_plane(job, out, scratch)
}

/// [`run_plane`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(job: &PlaneJob<'_>, out: &mut [f32], scratch: &mut Scratch) {
    run_plane(job, out, scratch)
}

/// Output values accumulated per chunk in the stride-1 path (16 KiB: the
/// chunk and the input rows it reads stay in L1).
const CHUNK: usize = 4096;

/// Computes one output plane. The channel (with its view offset and zero
/// padding) is first copied into a padded plane `P` holding exactly the
/// rows and columns the taps read, so no tap needs a bounds test. With unit
/// strides, output `(y, x)` and tap `(i, j)` read `P` at flat index
/// `y·Wp + x + (i·δh·Wp + j·δw)`: computing outputs at every padded column
/// (`Wp` per row, the surplus dropped afterwards) turns each tap into one
/// long vectorised `acc += w·P[q + offset]` over chunks of the plane. With
/// larger strides `P` is split into column phases
/// (`phase[p][y][m] = P[y][m·s + p]`) so every tap reads a unit-stride run
/// per output row.
#[inline(always)]
fn run_plane(job: &PlaneJob<'_>, out: &mut [f32], scratch: &mut Scratch) {
    let geo = job.geo;
    let (kh, kw, sh, sw) = (geo.kh, geo.kw, geo.sh, geo.sw);
    let hp = (geo.oh - 1) * sh + (kh - 1) * geo.dh + 1;
    let wp = (geo.ow - 1) * sw + (kw - 1) * geo.dw + 1;
    let padded = &mut scratch.floats;
    fill_padded(job, hp, wp, padded);
    if sh == 1 && sw == 1 {
        let acc = &mut scratch.floats2;
        acc.resize(CHUNK, 0.0);
        let total = (geo.oh - 1) * wp + geo.ow;
        let mut q0 = 0;
        while q0 < total {
            let len = CHUNK.min(total - q0);
            let acc = &mut acc[..len];
            acc.fill(job.bias);
            for i in 0..kh {
                for j in 0..kw {
                    let wv = job.w[i * kw + j];
                    let src = &padded[q0 + i * geo.dh * wp + j * geo.dw..][..len];
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += wv * v;
                    }
                }
            }
            // Keep the first `ow` columns of every padded row in the chunk.
            let mut q = q0;
            while q < q0 + len {
                let (oy, x) = (q / wp, q % wp);
                let end = (oy * wp + wp).min(q0 + len);
                if x < geo.ow {
                    let n = (geo.ow - x).min(end - q);
                    let dst = &mut out[oy * geo.ow + x..][..n];
                    let src = &acc[q - q0..][..n];
                    if job.relu {
                        dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s.max(0.0));
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
                q = end;
            }
            q0 += len;
        }
        return;
    }
    // Column phases of P.
    let phase_w = wp.div_ceil(sw);
    let phases = &mut scratch.floats2;
    phases.resize(sw * hp * phase_w, 0.0);
    for (y, row) in padded.chunks_exact(wp).enumerate() {
        for (m, chunk) in row.chunks(sw).enumerate() {
            for (p, &v) in chunk.iter().enumerate() {
                phases[(p * hp + y) * phase_w + m] = v;
            }
        }
    }
    for (oy, row) in out.chunks_exact_mut(geo.ow).enumerate() {
        row.fill(job.bias);
        for i in 0..kh {
            let yp = oy * sh + i * geo.dh;
            for j in 0..kw {
                let wv = job.w[i * kw + j];
                let (p, m0) = ((j * geo.dw) % sw, (j * geo.dw) / sw);
                let line = &phases[(p * hp + yp) * phase_w + m0..][..geo.ow];
                for (o, &v) in row.iter_mut().zip(line) {
                    *o += wv * v;
                }
            }
        }
        if job.relu {
            row.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

/// Writes the padded plane `P` (`hp × wp`): `P[yp, xp]` is the view's
/// logical value at `(yp − pt, xp − pl)` — image `(yp − pt − dy, xp − pl − dx)`
/// — or zero outside the image.
#[inline(always)]
fn fill_padded(job: &PlaneJob<'_>, hp: usize, wp: usize, padded: &mut Vec<f32>) {
    let geo = job.geo;
    padded.clear();
    padded.resize(hp * wp, 0.0);
    let (h, w) = (geo.h as isize, geo.w as isize);
    // Logical columns that are inside the image both before and after the
    // view's shift, and inside P.
    let lx0 = job.dx.max(0).max(-(geo.pl as isize));
    let lx1 = (w + job.dx.min(0)).min(wp as isize - geo.pl as isize);
    if lx0 >= lx1 {
        return;
    }
    for (yp, dst) in padded.chunks_exact_mut(wp).enumerate() {
        let ly = yp as isize - geo.pt as isize;
        let sy = ly - job.dy;
        if ly < 0 || ly >= h || sy < 0 || sy >= h {
            continue;
        }
        let src = &job.src[sy as usize * geo.w..][..geo.w];
        let n = (lx1 - lx0) as usize;
        let xp0 = (lx0 + geo.pl as isize) as usize;
        let sx0 = (lx0 - job.dx) as usize;
        dst[xp0..xp0 + n].copy_from_slice(&src[sx0..sx0 + n]);
    }
}

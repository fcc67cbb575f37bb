//! Depthwise convolution (`groups = C`, one input channel per filter: the
//! `d×d`, `d×1` and `1×d` layers of CP-decomposed and MobileNet blocks,
//! survey Fig. 1 and section 3) as a direct kernel. It is memory-bound
//! (`kh·kw` MACs per output value), so it streams each output row once,
//! accumulating every tap into it while it sits in L1; the inner loops are
//! unit-stride saxpys (strided layers read column-phase copies) that the
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

/// Computes one output plane. The valid output range of every tap is found
/// once per plane; with a horizontal stride `s > 1` the input plane is first
/// split into `s` column phases (`phase[p][y][m] = src[y][m·s + p]`) so that
/// every tap reads a unit-stride run. Each output row then starts at the
/// bias and receives each in-image tap as a vectorised `y += w·x`.
#[inline(always)]
fn run_plane(job: &PlaneJob<'_>, out: &mut [f32], scratch: &mut Scratch) {
    let geo = job.geo;
    let (kh, kw, sw) = (geo.kh, geo.kw, geo.sw);
    // Rows: (y0, y1, first image row read by output row 0).
    // Columns: (x0, x1, offset of tap j in its phase row: m = x + offset).
    let ranges = &mut scratch.ranges;
    ranges.clear();
    for i in 0..kh {
        let (y0, y1) = geo.valid_y(i, job.dy);
        ranges.push((y0, y1, (i * geo.dh) as isize - geo.pt as isize - job.dy));
    }
    for j in 0..kw {
        let (x0, x1) = geo.valid_x(j, job.dx);
        let c = (j * geo.dw) as isize - geo.pl as isize - job.dx;
        ranges.push((x0, x1, c));
    }
    let (rows, cols) = ranges.split_at(kh);
    // Column phases: phase p holds image columns p, p + s, p + 2s, …
    let phase_w = geo.w.div_ceil(sw);
    let src: &[f32] = if sw == 1 {
        job.src
    } else {
        let phases = &mut scratch.floats;
        phases.resize(sw * geo.h * phase_w, 0.0);
        for (y, row) in job.src.chunks_exact(geo.w).enumerate() {
            for (m, chunk) in row.chunks(sw).enumerate() {
                for (p, &v) in chunk.iter().enumerate() {
                    phases[(p * geo.h + y) * phase_w + m] = v;
                }
            }
        }
        phases
    };
    let row_len = if sw == 1 { geo.w } else { phase_w };
    for (oy, row) in out.chunks_exact_mut(geo.ow).enumerate() {
        row.fill(job.bias);
        for (i, &(y0, y1, ry)) in rows.iter().enumerate() {
            if oy < y0 || oy >= y1 {
                continue;
            }
            let iy = ((oy * geo.sh) as isize + ry) as usize;
            for (j, &(x0, x1, c)) in cols.iter().enumerate() {
                if x0 >= x1 {
                    continue;
                }
                let wv = job.w[i * kw + j];
                let p = c.rem_euclid(sw as isize) as usize;
                let start = (x0 as isize + (c - p as isize) / sw as isize) as usize;
                let line = &src[(p * geo.h + iy) * row_len..][..row_len];
                let dst = &mut row[x0..x1];
                for (o, &s) in dst.iter_mut().zip(&line[start..start + (x1 - x0)]) {
                    *o += wv * s;
                }
            }
        }
        if job.relu {
            row.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

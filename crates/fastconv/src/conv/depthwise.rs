//! Depthwise convolution (`groups = C`, one input channel per filter: the
//! `d×d`, `d×1` and `1×d` layers of CP-decomposed and MobileNet blocks,
//! survey Fig. 1 and section 3) as a direct kernel. It is memory-bound
//! (`kh·kw` MACs per output value), so it streams each output row once,
//! accumulating every tap into it while it sits in L1; the inner loops are
//! unit-stride saxpys that the compiler vectorises for the selected ISA.

use rayon::prelude::*;

use super::{ChannelView, Geometry};
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
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize) {
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
                    Isa::Avx512 => unsafe { plane_avx512(&job, out) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { plane_avx2(&job, out) },
                    _ => run_plane(&job, out),
                }
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
unsafe fn plane_avx512(job: &PlaneJob<'_>, out: &mut [f32]) {
    run_plane(job, out)
}

/// [`run_plane`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(job: &PlaneJob<'_>, out: &mut [f32]) {
    run_plane(job, out)
}

/// Computes one output plane: every row starts at the bias and receives each
/// tap that reads inside the image.
#[inline(always)]
fn run_plane(job: &PlaneJob<'_>, out: &mut [f32]) {
    let geo = job.geo;
    for (oy, row) in out.chunks_exact_mut(geo.ow).enumerate() {
        row.fill(job.bias);
        for i in 0..geo.kh {
            let (y0, y1) = geo.valid_y(i, job.dy);
            if oy < y0 || oy >= y1 {
                continue;
            }
            let iy = (oy * geo.sh + i * geo.dh) as isize - geo.pt as isize - job.dy;
            let src = &job.src[iy as usize * geo.w..][..geo.w];
            for j in 0..geo.kw {
                let (x0, x1) = geo.valid_x(j, job.dx);
                if x0 >= x1 {
                    continue;
                }
                let wv = job.w[i * geo.kw + j];
                let base =
                    ((x0 * geo.sw + j * geo.dw) as isize - geo.pl as isize - job.dx) as usize;
                let dst = &mut row[x0..x1];
                if geo.sw == 1 {
                    for (o, &s) in dst.iter_mut().zip(&src[base..base + (x1 - x0)]) {
                        *o += wv * s;
                    }
                } else {
                    for (o, &s) in dst.iter_mut().zip(src[base..].iter().step_by(geo.sw)) {
                        *o += wv * s;
                    }
                }
            }
        }
        if job.relu {
            row.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

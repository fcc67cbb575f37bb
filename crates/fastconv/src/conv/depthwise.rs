//! Depthwise convolution (`groups = C`, one input channel per filter: the
//! `d×d`, `d×1` and `1×d` layers of CP-decomposed and MobileNet blocks,
//! survey Fig. 1 and section 3) as a direct kernel. It is memory-bound
//! (`kh·kw` MACs per output value), so it writes each output row once,
//! summing every tap of a run of 16 output columns in registers, and gives
//! each task enough planes to amortise its scheduling. The AVX-512 path
//! ([`super::depthwise_avx512`]) reads each plane in place; the AVX2 and
//! portable paths read unit-stride runs of a padded copy of the channel
//! (column-phase copies at larger strides): AVX2 in blocks of 4 output rows
//! for the common shapes ([`super::depthwise_avx2`]), else one run of 16
//! columns at a time, whose fixed-width lane loop the compiler vectorises.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::depthwise_avx2;
#[cfg(target_arch = "x86_64")]
use super::depthwise_avx512::plane_avx512;
use super::{ChannelView, ConvGeometry};
use crate::elementwise::Clamp;
use crate::pool::{Scratch, ScratchPool};
use crate::Isa;

/// Output values per task at least (planes are grouped up to this size).
const MIN_TASK: usize = 8192;

/// A depthwise (channel-multiplier `T_g ≥ 1`) convolution, ready to run.
#[derive(Debug)]
pub(crate) struct DepthwiseConv {
    geo: ConvGeometry,
    view: ChannelView,
    isa: Isa,
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
    clamp: Clamp,
}

impl DepthwiseConv {
    /// Whether a convolution of these sizes is depthwise.
    pub fn applies(geo: &ConvGeometry) -> bool {
        geo.c_g == 1 && geo.groups > 1
    }

    /// Takes the OIHW `weights` (`T × 1 × kh × kw`).
    pub fn new(
        isa: Isa,
        geo: ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        clamp: Clamp,
        view: ChannelView,
    ) -> Self {
        DepthwiseConv {
            geo,
            view,
            isa,
            weights: weights.to_vec(),
            bias: bias.map(<[f32]>::to_vec),
            clamp,
        }
    }

    /// Runs on `batch` samples, consecutive output planes grouped into tasks.
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize, pool: &ScratchPool) {
        self.run_then(input, output, batch, pool, |_, _| {});
    }

    /// [`Self::run`], handing each output plane of filter `t` to
    /// `finish(t, plane)` as soon as it is written (while it is in cache).
    pub fn run_then(
        &self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        pool: &ScratchPool,
        finish: impl Fn(usize, &mut [f32]) + Sync,
    ) {
        let geo = &self.geo;
        let (in_area, out_area, taps) =
            (geo.in_area(), geo.out_area(), geo.kernel.0 * geo.kernel.1);
        let (c_all, t_all) = (geo.in_channels(), geo.out_channels());
        // Enough planes per task to amortise scheduling on small planes,
        // enough tasks to balance the threads.
        let planes = batch * t_all;
        let per_task = (MIN_TASK / out_area)
            .max(1)
            .min(planes.div_ceil(4 * rayon::current_num_threads()))
            .max(1);
        output[..planes * out_area]
            .par_chunks_mut(per_task * out_area)
            .enumerate()
            .for_each(|(task, outs)| {
                crate::profile::task(|| {
                    pool.with(|scratch| {
                        // The column tables in `scratch` depend on the plane
                        // only through the view's dx: built once per task and
                        // whenever dx changes.
                        let mut table_dx = None;
                        for (k, out) in outs.chunks_exact_mut(out_area).enumerate() {
                            let plane = task * per_task + k;
                            let (n, t) = (plane / t_all, plane % t_all);
                            let (c, dy, dx) = self.view.channel(t / geo.t_g);
                            let job = PlaneJob {
                                geo,
                                src: &input[(n * c_all + c) * in_area..][..in_area],
                                w: &self.weights[t * taps..][..taps],
                                bias: self.bias.as_ref().map_or(0.0, |b| b[t]),
                                clamp: self.clamp,
                                dy,
                                dx,
                                fresh: table_dx != Some(dx),
                            };
                            table_dx = Some(dx);
                            match self.isa {
                                // SAFETY: plans only select supported ISAs
                                // (`Isa::ensure_supported`).
                                #[cfg(target_arch = "x86_64")]
                                Isa::Avx512 if avx512_addresses(geo) => unsafe {
                                    plane_avx512(&job, out, scratch)
                                },
                                // SAFETY: as above.
                                #[cfg(target_arch = "x86_64")]
                                Isa::Avx2 => unsafe { plane_avx2(&job, out, scratch) },
                                // Strides the AVX-512 kernel cannot address
                                // take the portable path.
                                _ => run_plane(&job, out, scratch, lanes_portable),
                            }
                            finish(t, out);
                        }
                    });
                })
            });
    }
}

/// One output plane's inputs.
pub(super) struct PlaneJob<'a> {
    pub(super) geo: &'a ConvGeometry,
    pub(super) src: &'a [f32],
    pub(super) w: &'a [f32],
    pub(super) bias: f32,
    pub(super) clamp: Clamp,
    pub(super) dy: isize,
    pub(super) dx: isize,
    /// Whether the column table in the scratch must be (re)built.
    pub(super) fresh: bool,
}

/// Whether the AVX-512 plane kernel can address the geometry `geo`: it
/// reads the plane in place with isize row and column arithmetic, and its
/// gather takes the lane offsets `l·sw` as i32 indices. Sizes beyond
/// `i32::MAX` (valid only for one-row or one-column outputs) take the
/// portable path.
fn avx512_addresses(geo: &ConvGeometry) -> bool {
    let fits = |v: usize| v <= i32::MAX as usize;
    fits(geo.padded_hw.0)
        && fits(geo.padded_hw.1)
        && fits(geo.stride.0)
        && fits(geo.dilation.0)
        && fits(geo.dilation.1)
        && geo.stride.1.checked_mul(LANES - 1).is_some_and(fits)
}

/// One output plane on AVX2 + FMA: the row-blocked kernel of
/// [`super::depthwise_avx2`] where it has compile-time sizes, else
/// [`run_plane`] with 16-lane runs.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(job: &PlaneJob<'_>, out: &mut [f32], scratch: &mut Scratch) {
    if depthwise_avx2::applies(job.geo) {
        let padded = padded_plane(job, scratch);
        // SAFETY: this function only runs where AVX2 and FMA are supported.
        unsafe { depthwise_avx2::plane_avx2(job, &padded, out) };
        return;
    }
    // SAFETY: as above.
    run_plane(job, out, scratch, |run, dst| unsafe {
        lanes_avx2(run, dst)
    })
}

/// Output columns computed together: one vector register of accumulators
/// (16 lanes of AVX-512, two AVX2 registers, four SSE registers).
pub(super) const LANES: usize = 16;

/// The padded plane of one output plane's channel, as
/// [`padded_plane`] leaves it: the buffer, its row pitch (floats) and the
/// flat offset of every tap `(i, j)` (row-major) relative to output
/// `(oy, x)` = `buf[oy·sh·pitch + x]`.
pub(super) struct Padded<'a> {
    pub(super) buf: &'a [f32],
    pub(super) pitch: usize,
    pub(super) offsets: &'a [usize],
}

/// Copies the channel (with its view offset and zero padding) into a
/// padded plane `P` holding exactly the rows and columns the taps read
/// (plus `LANES` floats of slack), so no tap needs a bounds test; with a
/// horizontal stride `s > 1`, `P` is split into column phases
/// (`phase[p][y][m] = P[y][m·s + p]`) so every tap reads a unit-stride run.
#[inline(always)]
pub(super) fn padded_plane<'s>(job: &PlaneJob<'_>, scratch: &'s mut Scratch) -> Padded<'s> {
    let geo = job.geo;
    let (kh, kw, sh, sw) = (geo.kernel.0, geo.kernel.1, geo.stride.0, geo.stride.1);
    let hp = (geo.out_hw.0 - 1) * sh + (kh - 1) * geo.dilation.0 + 1;
    let wp = (geo.out_hw.1 - 1) * sw + (kw - 1) * geo.dilation.1 + 1;
    fill_padded(job, hp, wp, &mut scratch.floats);
    let pitch = if sw == 1 {
        wp
    } else {
        let pw = wp.div_ceil(sw);
        // Only phases below `wp` hold columns (and taps read only those):
        // a stride wider than the plane must not size the buffer.
        let used = sw.min(wp.max(2));
        let phases = &mut scratch.floats2;
        phases.clear();
        phases.resize(used * hp * pw + LANES, 0.0);
        let (ph0, rest) = phases.split_at_mut(hp * pw);
        for (y, row) in scratch.floats[..hp * wp].chunks_exact(wp).enumerate() {
            let d0 = &mut ph0[y * pw..][..pw];
            if sw == 2 {
                // The common case, vectorised as one de-interleave.
                let d1 = &mut rest[y * pw..][..pw];
                for ((a, b), pair) in d0.iter_mut().zip(d1.iter_mut()).zip(row.chunks_exact(2)) {
                    *a = pair[0];
                    *b = pair[1];
                }
                if wp % 2 == 1 {
                    d0[wp / 2] = row[wp - 1];
                }
            } else {
                for (m, &v) in row.iter().enumerate() {
                    let p = m % sw;
                    let dst = if p == 0 {
                        &mut *d0
                    } else {
                        &mut rest[((p - 1) * hp + y) * pw..][..pw]
                    };
                    dst[m / sw] = v;
                }
            }
        }
        pw
    };
    let offsets = &mut scratch.offsets;
    offsets.clear();
    for i in 0..kh {
        for j in 0..kw {
            let (p, m) = ((j * geo.dilation.1) % sw, (j * geo.dilation.1) / sw);
            offsets.push((p * hp + i * geo.dilation.0) * pitch + m);
        }
    }
    let buf = if sw == 1 {
        &scratch.floats[..]
    } else {
        &scratch.floats2[..]
    };
    Padded {
        buf,
        pitch,
        offsets: &scratch.offsets[..],
    }
}

/// Computes one output plane from its [`padded_plane`]: each run of
/// `LANES` output columns sums all `kh·kw` taps in registers and is stored
/// once.
#[inline(always)]
fn run_plane(
    job: &PlaneJob<'_>,
    out: &mut [f32],
    scratch: &mut Scratch,
    lanes: impl Fn(&Run<'_>, &mut [f32]),
) {
    let geo = job.geo;
    let sh = geo.stride.0;
    let Padded {
        buf,
        pitch,
        offsets,
    } = padded_plane(job, scratch);
    let w = &job.w[..offsets.len()];
    for (oy, row) in out.chunks_exact_mut(geo.out_hw.1).enumerate() {
        let base = oy * sh * pitch;
        let mut x0 = 0;
        while x0 < geo.out_hw.1 {
            let n = LANES.min(geo.out_hw.1 - x0);
            let run = Run {
                src: &buf[base + x0..],
                offsets,
                w,
                bias: job.bias,
                clamp: job.clamp,
            };
            lanes(&run, &mut row[x0..x0 + n]);
            x0 += n;
        }
    }
}

/// One run of up to `LANES` output columns: output lane `l` is
/// `clamp(bias + Σ_t w[t] · src[offsets[t] + l])` (NaN kept); `src` holds at least
/// `max(offsets) + LANES` floats.
struct Run<'a> {
    src: &'a [f32],
    offsets: &'a [usize],
    w: &'a [f32],
    bias: f32,
    clamp: Clamp,
}

/// [`Run`] in portable code.
fn lanes_portable(run: &Run<'_>, dst: &mut [f32]) {
    let mut acc = [run.bias; LANES];
    for (&wv, &off) in run.w.iter().zip(run.offsets) {
        let src = &run.src[off..][..LANES];
        for l in 0..LANES {
            acc[l] += wv * src[l];
        }
    }
    for (d, &a) in dst.iter_mut().zip(&acc) {
        *d = run.clamp.apply(a);
    }
}

/// [`Run`] in two ymm registers; partial runs go through a local buffer.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn lanes_avx2(run: &Run<'_>, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut lo = _mm256_set1_ps(run.bias);
    let mut hi = lo;
    for (&wv, &off) in run.w.iter().zip(run.offsets) {
        let src = &run.src[off..][..LANES];
        let wv = _mm256_set1_ps(wv);
        // SAFETY: `src` holds LANES = 16 floats.
        unsafe {
            lo = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src.as_ptr()), lo);
            hi = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src.as_ptr().add(8)), hi);
        }
    }
    let (lov, hiv) = (_mm256_set1_ps(run.clamp.lo), _mm256_set1_ps(run.clamp.hi));
    // max/min return their second operand when either is NaN: NaN is kept.
    let clamp = |v| _mm256_min_ps(hiv, _mm256_max_ps(lov, v));
    let mut tmp = [0.0f32; LANES];
    // SAFETY: `tmp` holds 16 floats.
    unsafe {
        _mm256_storeu_ps(tmp.as_mut_ptr(), clamp(lo));
        _mm256_storeu_ps(tmp.as_mut_ptr().add(8), clamp(hi));
    }
    let n = dst.len().min(LANES);
    dst[..n].copy_from_slice(&tmp[..n]);
}

/// Writes the padded plane `P` (`hp × wp`): `P[yp, xp]` is the view's
/// logical value at `(yp − pt, xp − pl)` — image `(yp − pt − dy, xp − pl − dx)`
/// — or zero outside the image.
#[inline(always)]
fn fill_padded(job: &PlaneJob<'_>, hp: usize, wp: usize, padded: &mut Vec<f32>) {
    let geo = job.geo;
    // Every element of the first hp·wp is written below (the slack after
    // them only feeds lanes that are never stored).
    padded.resize(hp * wp + LANES, 0.0);
    let (h, w) = (geo.in_hw.0 as isize, geo.in_hw.1 as isize);
    // Logical columns inside the image both before and after the view's
    // shift, and inside P.
    let lx0 = job.dx.max(0);
    let lx1 = (w + job.dx.min(0)).min(wp as isize - geo.pad_top_left.1 as isize);
    for (yp, dst) in padded[..hp * wp].chunks_exact_mut(wp).enumerate() {
        let ly = yp as isize - geo.pad_top_left.0 as isize;
        let sy = ly - job.dy;
        if lx0 >= lx1 || ly < 0 || ly >= h || sy < 0 || sy >= h {
            dst.fill(0.0);
            continue;
        }
        let src = &job.src[sy as usize * geo.in_hw.1..][..geo.in_hw.1];
        let n = (lx1 - lx0) as usize;
        let xp0 = (lx0 + geo.pad_top_left.1 as isize) as usize;
        let sx0 = (lx0 - job.dx) as usize;
        dst[..xp0].fill(0.0);
        dst[xp0..xp0 + n].copy_from_slice(&src[sx0..sx0 + n]);
        dst[xp0 + n..].fill(0.0);
    }
}

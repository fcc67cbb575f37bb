//! Depthwise convolution (`groups = C`, one input channel per filter: the
//! `d×d`, `d×1` and `1×d` layers of CP-decomposed and MobileNet blocks,
//! survey Fig. 1 and section 3) as a direct kernel. It is memory-bound
//! (`kh·kw` MACs per output value), so it reads each input plane in place
//! (no padded copy: zero padding is masked lanes), writes each output row
//! once, summing every tap of a run of 16 output columns in registers, and
//! gives each task enough planes to amortise its scheduling. On AVX-512,
//! blocks of 4 output rows share every input vector they read, and the
//! `3×3` stride-1 / stride-2 layers run with compile-time sizes.

use rayon::prelude::*;

use super::{ChannelView, Geometry};
use crate::pool::{Scratch, ScratchPool};
use crate::Isa;

/// Output values per task at least (planes are grouped up to this size).
const MIN_TASK: usize = 8192;

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

    /// Runs on `batch` samples, consecutive output planes grouped into tasks.
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize, pool: &ScratchPool) {
        let geo = &self.geo;
        let (in_area, out_area, taps) = (geo.in_area(), geo.out_area(), geo.kh * geo.kw);
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
                            relu: self.relu,
                            dy,
                            dx,
                            fresh: table_dx != Some(dx),
                        };
                        table_dx = Some(dx);
                        match self.isa {
                            // SAFETY: plans only select supported ISAs
                            // (`Isa::ensure_supported`).
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx512 => unsafe { plane_avx512(&job, out, scratch) },
                            // SAFETY: as above.
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx2 => unsafe { plane_avx2(&job, out, scratch) },
                            _ => run_plane(&job, out, scratch, lanes_portable),
                        }
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
    /// Whether the column table in the scratch must be (re)built.
    fresh: bool,
}

/// [`run_plane`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(job: &PlaneJob<'_>, out: &mut [f32], scratch: &mut Scratch) {
    run_plane(job, out, scratch, lanes_portable)
}

/// Output columns computed together: one vector register of accumulators
/// (16 lanes of AVX-512, two AVX2 registers, four SSE registers).
const LANES: usize = 16;

/// Computes one output plane straight from the input plane, without a
/// padded copy. For every output row the kernel rows that read inside the
/// image are listed once; every run of up to `LANES` output columns then
/// sums all their taps in registers and is stored once. Zero padding (and a
/// view's shift) costs nothing: each kernel column `j` adds only to the
/// output columns [`Geometry::valid_x`] allows. The portable and AVX2
/// paths; AVX-512 has its own ([`plane_avx512`]).
#[inline(always)]
fn run_plane(
    job: &PlaneJob<'_>,
    out: &mut [f32],
    scratch: &mut Scratch,
    lanes: impl Fn(&Row<'_>, usize, &mut [f32]),
) {
    let geo = job.geo;
    let (kh, kw) = (geo.kh, geo.kw);
    // Per kernel column j: [lo, hi) of valid output columns and the input
    // column offset `j·dw − pl − dx` (two's complement in a usize: the
    // column of output x is `offset + x·sw`, wrapping arithmetic, which is
    // a true index for every x in [lo, hi)).
    let taps = &mut scratch.offsets;
    if job.fresh {
        taps.clear();
        for j in 0..kw {
            let (lo, hi) = geo.valid_x(j, job.dx);
            let off = (j * geo.dw) as isize - geo.pl as isize - job.dx;
            taps.extend([lo, hi, off as usize]);
        }
    }
    let (h, w) = (geo.h as isize, geo.w as isize);
    let floor = if job.relu { 0.0 } else { f32::NEG_INFINITY };
    for (oy, row) in out.chunks_exact_mut(geo.ow).enumerate() {
        // The kernel rows inside the image: (input row start, kernel row).
        taps.truncate(3 * kw);
        for i in 0..kh {
            let ly = (oy * geo.sh + i * geo.dh) as isize - geo.pt as isize;
            let sy = ly - job.dy;
            if (0..h).contains(&ly) && (0..h).contains(&sy) {
                taps.extend([sy as usize * w as usize, i]);
            }
        }
        let (cols, rows) = taps.split_at(3 * kw);
        let run = Row {
            src: job.src,
            cols,
            rows,
            w: job.w,
            kw,
            sw: geo.sw,
            bias: job.bias,
            floor,
        };
        let mut x0 = 0;
        while x0 < geo.ow {
            let n = LANES.min(geo.ow - x0);
            lanes(&run, x0, &mut row[x0..x0 + n]);
            x0 += n;
        }
    }
}

/// The taps of one output row: output column `x` is
/// `max(floor, bias + Σ w[i·kw + j] · src[start_i + off_j + x·sw])` over the
/// listed kernel rows `(start_i, i)` and the kernel columns `j` with
/// `lo_j ≤ x < hi_j` (`cols[3j..3j + 3] = [lo_j, hi_j, off_j]`).
struct Row<'a> {
    src: &'a [f32],
    cols: &'a [usize],
    rows: &'a [usize],
    w: &'a [f32],
    kw: usize,
    sw: usize,
    bias: f32,
    floor: f32,
}

/// The output columns `[x0, x0 + dst.len())` of a [`Row`] in portable code
/// (compiled for AVX2 + FMA too): each tap adds to the lanes it covers.
#[inline(always)]
fn lanes_portable(row: &Row<'_>, x0: usize, dst: &mut [f32]) {
    let n = dst.len();
    let mut acc = [row.bias; LANES];
    for r in row.rows.chunks_exact(2) {
        let (start, i) = (r[0], r[1]);
        let w = &row.w[i * row.kw..][..row.kw];
        for (c, &wv) in row.cols.chunks_exact(3).zip(w) {
            let (lo, hi) = (c[0].max(x0), c[1].min(x0 + n));
            if lo >= hi {
                continue;
            }
            let first = start.wrapping_add(c[2]).wrapping_add(lo * row.sw);
            let acc = &mut acc[lo - x0..hi - x0];
            if row.sw == 1 {
                let src = &row.src[first..][..acc.len()];
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a += wv * s;
                }
            } else {
                let src = row.src[first..].iter().step_by(row.sw);
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a += wv * s;
                }
            }
        }
    }
    for (d, &a) in dst.iter_mut().zip(&acc) {
        *d = a.max(row.floor);
    }
}

/// Bits `[a, b)` of a 16-bit lane mask (`a ≤ b ≤ 16`).
#[inline(always)]
fn lane_mask(a: usize, b: usize) -> u16 {
    (((1u32 << b) - 1) & !((1u32 << a) - 1)) as u16
}

/// Spreads the low 8 bits of `m` to the even bits of a 16-bit mask (lane
/// `l` of a stride-2 run reads element `2l`).
#[inline(always)]
fn spread_even(m: u16) -> u16 {
    let mut x = m & 0xff;
    x = (x | (x << 4)) & 0x0f0f;
    x = (x | (x << 2)) & 0x3333;
    (x | (x << 1)) & 0x5555
}

/// Output rows computed together on AVX-512: independent accumulator
/// chains, so the FMA latency is hidden (one chain per run would wait on
/// every tap).
const ROWS: usize = 4;

/// One output plane on AVX-512, straight from the input plane. For every
/// run of up to 16 output columns and kernel column `j`, a lane mask of the
/// columns whose tap reads inside the image and the tap's column offset are
/// computed once per task ([`column_table`]); blocks of [`ROWS`] output
/// rows then sum every tap with one masked load (rows outside the image are
/// skipped) and one FMA per output row, and store each row once.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn plane_avx512(job: &PlaneJob<'_>, out: &mut [f32], scratch: &mut Scratch) {
    let geo = job.geo;
    if job.fresh {
        column_table(job, &mut scratch.offsets);
    }
    let cols = &scratch.offsets[..];
    // The common kernel shapes with compile-time sizes (loops unrolled,
    // weights in registers); 0 means "read from the geometry".
    // SAFETY (all calls): AVX-512F is supported (this function's contract).
    unsafe {
        match (geo.kh, geo.kw, geo.sh, geo.sw) {
            (3, 3, 1, 1) => blocks_avx512::<3, 3, 1>(job, cols, out),
            (3, 3, 2, 2) => blocks_avx512::<3, 3, 2>(job, cols, out),
            // The `3×1` and `1×3` layers of CP blocks.
            (3, 1, 1, 1) => blocks_avx512::<3, 1, 1>(job, cols, out),
            (1, 3, 1, 1) => blocks_avx512::<1, 3, 1>(job, cols, out),
            _ => blocks_avx512::<0, 0, 0>(job, cols, out),
        }
    }
}

/// Every output row of one plane, in blocks of [`ROWS`] (see
/// [`plane_avx512`]); `KH`, `KW`, `S` are the kernel size and the stride
/// (both directions) when known at compile time, else 0.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn blocks_avx512<const KH: usize, const KW: usize, const S: usize>(
    job: &PlaneJob<'_>,
    cols: &[usize],
    out: &mut [f32],
) {
    let oh = job.geo.oh;
    let mut oy = 0;
    // SAFETY (all calls): AVX-512F is supported (this function's contract).
    while oy + ROWS <= oh {
        unsafe { rows_avx512::<ROWS, KH, KW, S>(job, oy, cols, out) };
        oy += ROWS;
    }
    unsafe {
        match oh - oy {
            3 => rows_avx512::<3, KH, KW, S>(job, oy, cols, out),
            2 => rows_avx512::<2, KH, KW, S>(job, oy, cols, out),
            1 => rows_avx512::<1, KH, KW, S>(job, oy, cols, out),
            _ => {}
        }
    }
}

/// Fills `cols` with, per run of `LANES` output columns and kernel column
/// `j`: `[mask, stride-2 low mask, stride-2 high mask, offset]` — the lanes
/// whose tap reads inside the image, the same spread to the even elements
/// of two stride-2 loads, and the input column of lane 0 (two's
/// complement: it may be negative where that lane is masked off).
fn column_table(job: &PlaneJob<'_>, cols: &mut Vec<usize>) {
    let geo = job.geo;
    cols.clear();
    let mut x0 = 0;
    while x0 < geo.ow {
        let n = LANES.min(geo.ow - x0);
        for j in 0..geo.kw {
            let (lo, hi) = geo.valid_x(j, job.dx);
            let (lo, hi) = (lo.clamp(x0, x0 + n) - x0, hi.clamp(x0, x0 + n) - x0);
            let mask = if lo < hi { lane_mask(lo, hi) } else { 0 };
            let off = (j * geo.dw + x0 * geo.sw) as isize - geo.pl as isize - job.dx;
            cols.extend([
                usize::from(mask),
                usize::from(spread_even(mask)),
                usize::from(spread_even(mask >> 8)),
                off as usize,
            ]);
        }
        x0 += n;
    }
}

/// The input vector of one tap for one run: lane `l` is `p[l·sw]` where
/// `c` (a [`column_table`] entry) enables it, zero elsewhere.
///
/// # Safety
/// The CPU supports AVX-512F; every enabled lane's element is readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_tap(
    p: *const f32,
    c: &[usize],
    sw: usize,
    strided: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // SAFETY: only enabled lanes are accessed (the caller's contract).
    unsafe {
        match sw {
            1 => _mm512_maskz_loadu_ps(c[0] as u16, p),
            2 => {
                let a = _mm512_maskz_loadu_ps(c[1] as u16, p);
                let b = _mm512_maskz_loadu_ps(c[2] as u16, p.wrapping_add(16));
                _mm512_permutex2var_ps(a, even, b)
            }
            _ => _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), c[0] as u16, strided, p),
        }
    }
}

/// Output rows `oy .. oy + R` of one plane (see [`plane_avx512`]). With
/// unit vertical dilation and `sh ≤ kh` the loop runs over the
/// `(R − 1)·sh + kh` input rows the block reads, loading each tap vector
/// once and adding it to every output row that uses it; otherwise over
/// output rows and their kernel rows.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn rows_avx512<const R: usize, const KH: usize, const KW: usize, const S: usize>(
    job: &PlaneJob<'_>,
    oy: usize,
    cols: &[usize],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let geo = job.geo;
    let known = |k: usize, v: usize| if k == 0 { v } else { k };
    let (kh, kw, ow) = (known(KH, geo.kh), known(KW, geo.kw), geo.ow);
    let (sh, sw) = (known(S, geo.sh), known(S, geo.sw));
    let w = &job.w[..kh * kw];
    // With unit vertical dilation and a stride of at most the kernel
    // height, consecutive output rows share input rows: each input vector
    // is loaded once for all of them.
    let shared = geo.dh == 1 && sh <= kh;
    let h = geo.h as isize;
    let strided = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(sw as i32),
    );
    let floor = _mm512_set1_ps(if job.relu { 0.0 } else { f32::NEG_INFINITY });
    let base = job.src.as_ptr();
    // The start of input row `ly` (logical, before the view's shift), if
    // it lies inside the image.
    let row_start = |ly: isize| {
        let sy = ly - job.dy;
        ((0..h).contains(&ly) && (0..h).contains(&sy))
            .then(|| base.wrapping_add(sy as usize * geo.w))
    };
    let top = (oy * sh) as isize - geo.pt as isize;
    // The input rows the next block reads first (after this block's last
    // row), prefetched run by run: with the rows of a block read side by
    // side, the hardware prefetcher alone leaves large planes waiting on
    // memory.
    let ahead = top + ((R - 1) * sh + kh * geo.dh) as isize;
    for (run, x0) in cols.chunks_exact(4 * kw).zip((0..ow).step_by(LANES)) {
        for t in 0..R * sh {
            if let Some(start) = row_start(ahead + t as isize) {
                let p = start.wrapping_add(x0 * sw).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(p);
                if sw > 1 {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
                }
            }
        }
        let mut acc = [_mm512_set1_ps(job.bias); R];
        if shared {
            for t in 0..(R - 1) * sh + kh {
                let Some(start) = row_start(top + t as isize) else {
                    continue;
                };
                for (j, c) in run.chunks_exact(4).enumerate() {
                    // SAFETY: the enabled lanes read valid columns of an
                    // image row.
                    let v = unsafe { load_tap(start.wrapping_add(c[3]), c, sw, strided) };
                    for (r, a) in acc.iter_mut().enumerate() {
                        // Output row oy + r reads this input row at kernel
                        // row t − r·sh.
                        let i = t.wrapping_sub(r * sh);
                        if i < kh {
                            *a = _mm512_fmadd_ps(_mm512_set1_ps(w[i * kw + j]), v, *a);
                        }
                    }
                }
            }
        } else {
            for i in 0..kh {
                let wrow = &w[i * kw..][..kw];
                for (r, a) in acc.iter_mut().enumerate() {
                    let ly = top + (r * sh + i * geo.dh) as isize;
                    let Some(start) = row_start(ly) else {
                        continue;
                    };
                    for (c, &wv) in run.chunks_exact(4).zip(wrow) {
                        // SAFETY: as above.
                        let v = unsafe { load_tap(start.wrapping_add(c[3]), c, sw, strided) };
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(wv), v, *a);
                    }
                }
            }
        }
        let n = LANES.min(ow - x0);
        for (r, &a) in acc.iter().enumerate() {
            let dst = &mut out[(oy + r) * ow + x0..][..n];
            // SAFETY: the mask enables exactly the first n ≤ 16 lanes, all
            // inside `dst`.
            unsafe {
                _mm512_mask_storeu_ps(dst.as_mut_ptr(), lane_mask(0, n), _mm512_max_ps(a, floor))
            };
        }
    }
}

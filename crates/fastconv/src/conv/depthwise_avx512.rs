//! The AVX-512 depthwise kernel (see [`super::depthwise`]): each input
//! plane read in place, zero padding as masked lanes, blocks of 4 output
//! rows sharing every input vector they load, compile-time sizes for the
//! `3×3` (MobileNet, survey section 3) and `3×1` / `1×3` (CP blocks) layers,
//! and a prefetch of the rows the next block reads.

use super::depthwise::{PlaneJob, LANES};
use crate::pool::Scratch;

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
pub(super) unsafe fn plane_avx512(job: &PlaneJob<'_>, out: &mut [f32], scratch: &mut Scratch) {
    let geo = job.geo;
    if job.fresh {
        column_table(job, &mut scratch.offsets);
    }
    let cols = &scratch.offsets[..];
    // The common kernel shapes with compile-time sizes (loops unrolled,
    // weights in registers); 0 means "read from the geometry".
    // SAFETY (all calls): AVX-512F is supported (this function's contract).
    unsafe {
        match (geo.kernel.0, geo.kernel.1, geo.stride.0, geo.stride.1) {
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
    let oh = job.geo.out_hw.0;
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
    while x0 < geo.out_hw.1 {
        let n = LANES.min(geo.out_hw.1 - x0);
        for j in 0..geo.kernel.1 {
            let (lo, hi) = geo.valid_x(j, job.dx);
            let (lo, hi) = (lo.clamp(x0, x0 + n) - x0, hi.clamp(x0, x0 + n) - x0);
            let mask = if lo < hi { lane_mask(lo, hi) } else { 0 };
            let off = (j * geo.dilation.1 + x0 * geo.stride.1) as isize
                - geo.pad_top_left.1 as isize
                - job.dx;
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
    let (kh, kw, ow) = (
        known(KH, geo.kernel.0),
        known(KW, geo.kernel.1),
        geo.out_hw.1,
    );
    let (sh, sw) = (known(S, geo.stride.0), known(S, geo.stride.1));
    let w = &job.w[..kh * kw];
    // With unit vertical dilation and a stride of at most the kernel
    // height, consecutive output rows share input rows: each input vector
    // is loaded once for all of them.
    let shared = geo.dilation.0 == 1 && sh <= kh;
    let h = geo.in_hw.0 as isize;
    let strided = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(sw as i32),
    );
    let (lov, hiv) = (_mm512_set1_ps(job.clamp.lo), _mm512_set1_ps(job.clamp.hi));
    let base = job.src.as_ptr();
    // The start of input row `ly` (logical, before the view's shift), if
    // it lies inside the image.
    let row_start = |ly: isize| {
        let sy = ly - job.dy;
        ((0..h).contains(&ly) && (0..h).contains(&sy))
            .then(|| base.wrapping_add(sy as usize * geo.in_hw.1))
    };
    let top = (oy * sh) as isize - geo.pad_top_left.0 as isize;
    // The input rows the next block reads first (after this block's last
    // row), prefetched run by run: with the rows of a block read side by
    // side, the hardware prefetcher alone leaves large planes waiting on
    // memory.
    let ahead = top + ((R - 1) * sh + kh * geo.dilation.0) as isize;
    // Only those of its `R·sh` rows that lie inside the image (a stride far
    // above the image height must not make this loop long).
    let first = (-ahead).max(0) as usize;
    let ahead_rows = first..((h - ahead).max(0) as usize).min(R * sh).max(first);
    for (run, x0) in cols.chunks_exact(4 * kw).zip((0..ow).step_by(LANES)) {
        for t in ahead_rows.clone() {
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
                    let ly = top + (r * sh + i * geo.dilation.0) as isize;
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
            // inside `dst`. max/min return their second operand when either
            // is NaN, so the clamp keeps NaN.
            unsafe {
                _mm512_mask_storeu_ps(
                    dst.as_mut_ptr(),
                    lane_mask(0, n),
                    _mm512_min_ps(hiv, _mm512_max_ps(lov, a)),
                )
            };
        }
    }
}

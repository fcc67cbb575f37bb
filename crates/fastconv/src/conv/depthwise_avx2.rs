//! The AVX2 depthwise kernel for the common shapes (see
//! [`super::depthwise`]): the `3×3` stride-1 and stride-2 layers of
//! MobileNet (survey section 3) and the `3×1` / `1×3` layers of CP blocks,
//! read from the padded (phase-split) plane of
//! [`super::depthwise::padded_plane`]. Blocks of [`ROWS`] output rows keep
//! `2·ROWS` independent accumulator chains of 16 columns (so the FMA latency
//! is hidden, where one run alone waits on every tap), every input vector
//! loaded once per block and used by each output row whose taps read it,
//! with compile-time kernel sizes and strides so the tap loops unroll.

use super::depthwise::{Padded, PlaneJob, LANES};
use super::ConvGeometry;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output rows computed together.
const ROWS: usize = 4;

/// Whether [`plane_avx2`] has a compile-time kernel for `geo`.
pub(super) fn applies(geo: &ConvGeometry) -> bool {
    geo.dilation == (1, 1)
        && matches!(
            (geo.kernel.0, geo.kernel.1, geo.stride.0, geo.stride.1),
            (3, 3, 1, 1) | (3, 3, 2, 2) | (3, 1, 1, 1) | (1, 3, 1, 1)
        )
}

/// One output plane (`oh × ow`, row-major in `out`) from its padded plane;
/// the geometry must satisfy [`applies`] (others leave `out` untouched).
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn plane_avx2(job: &PlaneJob<'_>, padded: &Padded<'_>, out: &mut [f32]) {
    let geo = job.geo;
    // SAFETY (all calls): AVX2 and FMA are supported (this function's contract).
    unsafe {
        match (geo.kernel.0, geo.kernel.1, geo.stride.0) {
            (3, 3, 1) => blocks::<3, 3, 1>(job, padded, out),
            (3, 3, 2) => blocks::<3, 3, 2>(job, padded, out),
            (3, 1, 1) => blocks::<3, 1, 1>(job, padded, out),
            (1, 3, 1) => blocks::<1, 3, 1>(job, padded, out),
            _ => debug_assert!(!applies(geo)),
        }
    }
}

/// Every output row of one plane in blocks of [`ROWS`] rows (then the
/// remaining 1–3), for a `KH × KW` kernel at stride `S` in both directions.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn blocks<const KH: usize, const KW: usize, const S: usize>(
    job: &PlaneJob<'_>,
    padded: &Padded<'_>,
    out: &mut [f32],
) {
    let (oh, ow) = job.geo.out_hw;
    // With unit dilation, tap (i, j) reads row i of the padded plane (of
    // its column phase) at column offset `offsets[j]` (the offset of tap
    // (0, j)), so output row oy, tap (i, j) reads `(oy·S + i)·pitch + cols[j]`.
    let mut cols = [0usize; KW];
    cols.copy_from_slice(&padded.offsets[..KW]);
    let pitch = padded.pitch;
    // The furthest float any load reads: the last run of the last row.
    let max_col = cols.iter().copied().max().unwrap_or(0);
    let furthest = ((oh - 1) * S + KH - 1) * pitch + max_col + (ow - 1) / LANES * LANES + LANES;
    assert!(furthest <= padded.buf.len() && out.len() >= oh * ow);
    let mut w = [[_mm256_setzero_ps(); KW]; KH];
    for (i, row) in w.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = _mm256_set1_ps(job.w[i * KW + j]);
        }
    }
    let block = Block {
        src: padded.buf.as_ptr(),
        pitch,
        cols: &cols,
        w: &w,
        bias: job.bias,
        clamp: (job.clamp.lo, job.clamp.hi),
        ow,
    };
    let mut oy = 0;
    // SAFETY (all calls): AVX2/FMA per the contract; every row block lies
    // inside the plane (checked above for the furthest one) and inside `out`.
    unsafe {
        while oy + ROWS <= oh {
            rows::<ROWS, KH, KW, S>(&block, oy, out);
            oy += ROWS;
        }
        match oh - oy {
            3 => rows::<3, KH, KW, S>(&block, oy, out),
            2 => rows::<2, KH, KW, S>(&block, oy, out),
            1 => rows::<1, KH, KW, S>(&block, oy, out),
            _ => {}
        }
    }
}

/// The operands of one plane shared by its row blocks.
#[cfg(target_arch = "x86_64")]
struct Block<'a, const KH: usize, const KW: usize> {
    /// The padded plane.
    src: *const f32,
    /// Its row pitch.
    pitch: usize,
    /// Column offset of each kernel column.
    cols: &'a [usize; KW],
    /// Every tap's weight, broadcast.
    w: &'a [[__m256; KW]; KH],
    bias: f32,
    /// Activation clamp bounds `(lo, hi)`.
    clamp: (f32, f32),
    /// Output width.
    ow: usize,
}

/// Output rows `oy..oy + R`: for each run of 16 columns, every padded row
/// the block reads is loaded once per kernel column and multiplied into
/// each output row whose tap row it is; rows are clamped (NaN kept) and
/// stored once, a partial last run through a local buffer.
///
/// # Safety
/// The CPU supports AVX2 and FMA; rows `oy..oy + R` exist and every load
/// stays inside the padded plane (checked by [`blocks`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows<const R: usize, const KH: usize, const KW: usize, const S: usize>(
    b: &Block<'_, KH, KW>,
    oy: usize,
    out: &mut [f32],
) {
    let (lov, hiv) = (_mm256_set1_ps(b.clamp.0), _mm256_set1_ps(b.clamp.1));
    let mut x0 = 0;
    while x0 < b.ow {
        let mut acc = [[_mm256_set1_ps(b.bias); 2]; R];
        // SAFETY: inside the padded plane per the contract.
        let base = unsafe { b.src.add(oy * S * b.pitch + x0) };
        for y in 0..(R - 1) * S + KH {
            for j in 0..KW {
                // SAFETY: as above; 16 floats from here are readable.
                let (v0, v1) = unsafe {
                    let p = base.add(y * b.pitch + b.cols[j]);
                    (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                };
                for (r, a) in acc.iter_mut().enumerate() {
                    if y >= r * S && y - r * S < KH {
                        let wv = b.w[y - r * S][j];
                        a[0] = _mm256_fmadd_ps(wv, v0, a[0]);
                        a[1] = _mm256_fmadd_ps(wv, v1, a[1]);
                    }
                }
            }
        }
        let n = LANES.min(b.ow - x0);
        for (r, a) in acc.iter().enumerate() {
            // max/min return their second operand when either is NaN.
            let lo = _mm256_min_ps(hiv, _mm256_max_ps(lov, a[0]));
            let hi = _mm256_min_ps(hiv, _mm256_max_ps(lov, a[1]));
            let dst = &mut out[(oy + r) * b.ow + x0..][..n];
            if n == LANES {
                // SAFETY: `dst` holds 16 floats.
                unsafe {
                    _mm256_storeu_ps(dst.as_mut_ptr(), lo);
                    _mm256_storeu_ps(dst.as_mut_ptr().add(8), hi);
                }
            } else {
                let mut tmp = [0.0f32; LANES];
                // SAFETY: `tmp` holds 16 floats.
                unsafe {
                    _mm256_storeu_ps(tmp.as_mut_ptr(), lo);
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(8), hi);
                }
                dst.copy_from_slice(&tmp[..n]);
            }
        }
        x0 += n;
    }
}

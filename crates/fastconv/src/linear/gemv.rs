//! Skinny matrix products `Y = X · Wᵀ` for a handful of samples (batch
//! ≤ [`MAX_BATCH`]): every weight row is streamed from memory once and
//! multiplied with all the samples while it is in registers, so a fully
//! connected layer at small batch runs at memory bandwidth instead of
//! paying a GEMM's packing (survey section 5: a fully connected layer is
//! the matrix–vector product that equation (2) factorises).
//!
//! A block of `R` rows × `B` samples keeps `R·B` vector accumulators; `R`
//! per batch size is chosen per instruction set so that the accumulators,
//! the `R` weight vectors and one input vector fit the register file
//! (AVX-512: 32 zmm, AVX2: 16 ymm). Tails of the inner dimension use masked
//! loads (AVX-512, AVX2) — nothing is read past a row.

use std::ops::Range;

use rayon::prelude::*;

use crate::elementwise::Clamp;
use crate::tiling::SharedOut;
use crate::Isa;

/// Largest batch one pass of the skinny kernels takes; larger batches run
/// in passes of this many samples.
pub(crate) const MAX_BATCH: usize = 8;

/// Output rows per rayon task (a multiple of every `R`).
const ROWS_PER_TASK: usize = 32;

/// One skinny product: `y[b·ldy + o] = act(bias[o] + Σ_i w[o·ldw + i] ·
/// x[b·ldx + i])` for `o < rows`, `b < batch`, `i < k`.
#[derive(Clone, Copy)]
pub(crate) struct Gemv<'a> {
    /// Weights, row `o` at `o·ldw` (at least `k` values per row).
    pub w: &'a [f32],
    /// Row stride of `w`.
    pub ldw: usize,
    /// Samples, sample `b` at `b·ldx`.
    pub x: &'a [f32],
    /// Stride between samples of `x`.
    pub ldx: usize,
    /// Inner dimension.
    pub k: usize,
    /// Output rows.
    pub rows: usize,
    /// Samples.
    pub batch: usize,
    /// One bias per row, or none.
    pub bias: Option<&'a [f32]>,
    /// Activation clamp of the result.
    pub clamp: Clamp,
}

/// Runs `g` on the `isa` kernels, rows split over the rayon pool, writing
/// `y` (sample `b` at `b·ldy`, at least `rows` values each). Allocates
/// nothing.
///
/// # Panics
/// If a slice is shorter than the sizes in `g` say, or `isa` is not
/// supported by this CPU (both checked where plans are built).
pub(crate) fn gemv(isa: Isa, g: &Gemv<'_>, y: &mut [f32], ldy: usize) {
    let Gemv {
        w,
        ldw,
        x,
        ldx,
        k,
        rows,
        batch,
        bias,
        ..
    } = *g;
    if rows == 0 || batch == 0 {
        return;
    }
    assert!(ldw >= k && ldx >= k && ldy >= rows);
    assert!(w.len() >= (rows - 1) * ldw + k);
    assert!(x.len() >= (batch - 1) * ldx + k);
    assert!(y.len() >= (batch - 1) * ldy + rows);
    assert!(bias.is_none_or(|b| b.len() >= rows));
    assert!(isa.is_supported(), "{isa} kernels on a CPU without {isa}");
    let out = SharedOut(y.as_mut_ptr());
    let tasks = rows.div_ceil(ROWS_PER_TASK);
    (0..tasks).into_par_iter().for_each(|t| {
        crate::profile::task(|| {
            let range = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(rows);
            let mut b0 = 0;
            while b0 < batch {
                let nb = MAX_BATCH.min(batch - b0);
                let pass = Gemv {
                    x: &x[b0 * ldx..],
                    batch: nb,
                    ..*g
                };
                // Partial sums of this task's rows, `[row][sample]`.
                let mut sums = [[0.0f32; MAX_BATCH]; ROWS_PER_TASK];
                // Depth blocks whose slice of the samples stays in L1.
                let kb = (L1_FLOATS / nb).max(16) / 16 * 16;
                let mut k0 = 0;
                while k0 < k {
                    let kc = kb.min(k - k0);
                    // SAFETY: the asserts above bound every read of `pass` over
                    // depth k0..k0+kc; `isa` is supported.
                    unsafe { pass_rows(isa, &pass, range.clone(), k0..k0 + kc, &mut sums) };
                    k0 += kc;
                }
                for (r, row) in sums.iter().enumerate().take(range.len()) {
                    let o = range.start + r;
                    let bias = bias.map_or(0.0, |b| b[o]);
                    for (b, &s) in row.iter().enumerate().take(nb) {
                        let v = s + bias;
                        let v = g.clamp.apply(v);
                        // SAFETY: sample b0 + b < batch, row o < rows, inside `y`
                        // (asserted); rows of this task are written by it alone.
                        unsafe { *out.ptr().add((b0 + b) * ldy + o) = v };
                    }
                }
                b0 += nb;
            }
        })
    });
}

/// Floats of the samples one depth block may span (16 KiB, a third of L1).
const L1_FLOATS: usize = 4096;

/// A block kernel: `R` rows at `w` (stride `ldw`) times `B` samples at `x`
/// (stride `ldx`), inner length `k`; returns the `R × B` dot products.
type BlockFn<const R: usize, const B: usize> =
    unsafe fn(*const f32, usize, *const f32, usize, usize) -> [[f32; B]; R];

/// Adds rows `range` × depth `ks` of one pass of at most [`MAX_BATCH`]
/// samples to `sums` (row `range.start` first).
///
/// # Safety
/// As [`gemv`]'s asserts; `range.len() ≤ ROWS_PER_TASK`.
unsafe fn pass_rows(
    isa: Isa,
    g: &Gemv<'_>,
    range: Range<usize>,
    ks: Range<usize>,
    sums: &mut [[f32; MAX_BATCH]; ROWS_PER_TASK],
) {
    macro_rules! by_batch {
        ($m:ident, [$($b:literal => $r:literal),*]) => {
            match g.batch {
                // SAFETY: forwarded contract of this function.
                $($b => unsafe { drive::<$r, $b>(g, range, ks, sums, $m::block::<$r, $b>, $m::block::<1, $b>) },)*
                _ => unreachable!("a pass has 1..=MAX_BATCH samples"),
            }
        };
    }
    match isa {
        Isa::Avx512 => {
            by_batch!(avx512, [1 => 8, 2 => 4, 3 => 4, 4 => 4, 5 => 2, 6 => 2, 7 => 2, 8 => 2])
        }
        Isa::Avx2 => {
            by_batch!(avx2, [1 => 4, 2 => 4, 3 => 2, 4 => 2, 5 => 2, 6 => 2, 7 => 1, 8 => 1])
        }
        Isa::Scalar => {
            by_batch!(scalar, [1 => 1, 2 => 1, 3 => 1, 4 => 1, 5 => 1, 6 => 1, 7 => 1, 8 => 1])
        }
    }
}

/// Runs `wide` over whole blocks of `R` rows of `range` and `narrow` over
/// the rest, adding the dot products over depth `ks` to `sums`.
///
/// # Safety
/// As [`pass_rows`]; the block kernels' ISA is supported.
unsafe fn drive<const R: usize, const B: usize>(
    g: &Gemv<'_>,
    range: Range<usize>,
    ks: Range<usize>,
    sums: &mut [[f32; MAX_BATCH]; ROWS_PER_TASK],
    wide: BlockFn<R, B>,
    narrow: BlockFn<1, B>,
) {
    let x = g.x[ks.start..].as_ptr();
    let mut o = range.start;
    while o < range.end {
        let w = g.w[o * g.ldw + ks.start..].as_ptr();
        let r0 = o - range.start;
        // SAFETY: rows o..o+R (or o) lie inside `w`, `B` samples of depth
        // `ks` inside `x` (the caller's contract).
        if o + R <= range.end {
            let part = unsafe { wide(w, g.ldw, x, g.ldx, ks.len()) };
            add(&mut sums[r0..r0 + R], &part);
            o += R;
        } else {
            let part = unsafe { narrow(w, g.ldw, x, g.ldx, ks.len()) };
            add(&mut sums[r0..r0 + 1], &part);
            o += 1;
        }
    }
}

/// `sums[r][b] += part[r][b]`.
fn add<const B: usize>(sums: &mut [[f32; MAX_BATCH]], part: &[[f32; B]]) {
    for (s, p) in sums.iter_mut().zip(part) {
        for (a, v) in s.iter_mut().zip(p) {
            *a += v;
        }
    }
}

/// Portable block kernel: eight partial sums per dot product, so the
/// compiler can keep them in vector registers.
mod scalar {
    /// See [`super::BlockFn`].
    ///
    /// # Safety
    /// `R` rows of `k` floats at `w` (stride `ldw`), `B` samples of `k`
    /// floats at `x` (stride `ldx`).
    pub(super) unsafe fn block<const R: usize, const B: usize>(
        w: *const f32,
        ldw: usize,
        x: *const f32,
        ldx: usize,
        k: usize,
    ) -> [[f32; B]; R] {
        let mut out = [[0.0; B]; R];
        for (r, row) in out.iter_mut().enumerate() {
            // SAFETY: the extents of the contract.
            let wr = unsafe { std::slice::from_raw_parts(w.add(r * ldw), k) };
            for (b, v) in row.iter_mut().enumerate() {
                // SAFETY: the extents of the contract.
                let xb = unsafe { std::slice::from_raw_parts(x.add(b * ldx), k) };
                let mut acc = [0.0f32; 8];
                let (wc, xc) = (wr.chunks_exact(8), xb.chunks_exact(8));
                let tail: f32 = wc
                    .remainder()
                    .iter()
                    .zip(xc.remainder())
                    .map(|(a, c)| a * c)
                    .sum();
                for (a, c) in wc.zip(xc) {
                    for l in 0..8 {
                        acc[l] += a[l] * c[l];
                    }
                }
                *v = acc.iter().sum::<f32>() + tail;
            }
        }
        out
    }
}

/// AVX-512F block kernel: 16 lanes, masked tail.
mod avx512 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// See [`super::BlockFn`].
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `R` rows of `k` floats at `w` (stride
    /// `ldw`), `B` samples of `k` floats at `x` (stride `ldx`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block<const R: usize, const B: usize>(
        w: *const f32,
        ldw: usize,
        x: *const f32,
        ldx: usize,
        k: usize,
    ) -> [[f32; B]; R] {
        let mut acc = [[_mm512_setzero_ps(); B]; R];
        let mut wv = [_mm512_setzero_ps(); R];
        let mut i = 0;
        // SAFETY: every load reads lanes i..i+16 ≤ k (or the masked
        // lanes i..k) of a row or sample inside the contract's extents.
        unsafe {
            while i + 16 <= k {
                for (r, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(w.add(r * ldw + i));
                }
                for b in 0..B {
                    let xv = _mm512_loadu_ps(x.add(b * ldx + i));
                    for r in 0..R {
                        acc[r][b] = _mm512_fmadd_ps(wv[r], xv, acc[r][b]);
                    }
                }
                i += 16;
            }
            if i < k {
                let mask: __mmask16 = (1u16 << (k - i)) - 1;
                for (r, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask, w.add(r * ldw + i));
                }
                for b in 0..B {
                    let xv = _mm512_maskz_loadu_ps(mask, x.add(b * ldx + i));
                    for r in 0..R {
                        acc[r][b] = _mm512_fmadd_ps(wv[r], xv, acc[r][b]);
                    }
                }
            }
        }
        let mut out = [[0.0; B]; R];
        for r in 0..R {
            for b in 0..B {
                out[r][b] = _mm512_reduce_add_ps(acc[r][b]);
            }
        }
        out
    }

    /// Never called: [`crate::Isa::Avx512`] is unsupported off x86-64.
    ///
    /// # Safety
    /// Unreachable.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn block<const R: usize, const B: usize>(
        _w: *const f32,
        _ldw: usize,
        _x: *const f32,
        _ldx: usize,
        _k: usize,
    ) -> [[f32; B]; R] {
        unreachable!("AVX-512 kernel selected off x86-64")
    }
}

/// AVX2 + FMA block kernel: 8 lanes, masked tail.
mod avx2 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// See [`super::BlockFn`].
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `R` rows of `k` floats at `w` (stride
    /// `ldw`), `B` samples of `k` floats at `x` (stride `ldx`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block<const R: usize, const B: usize>(
        w: *const f32,
        ldw: usize,
        x: *const f32,
        ldx: usize,
        k: usize,
    ) -> [[f32; B]; R] {
        let mut acc = [[_mm256_setzero_ps(); B]; R];
        let mut wv = [_mm256_setzero_ps(); R];
        let mut i = 0;
        // SAFETY: every load reads lanes i..i+8 ≤ k (or the masked lanes
        // i..k) of a row or sample inside the contract's extents.
        unsafe {
            while i + 8 <= k {
                for (r, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(w.add(r * ldw + i));
                }
                for b in 0..B {
                    let xv = _mm256_loadu_ps(x.add(b * ldx + i));
                    for r in 0..R {
                        acc[r][b] = _mm256_fmadd_ps(wv[r], xv, acc[r][b]);
                    }
                }
                i += 8;
            }
            if i < k {
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((k - i) as i32), lanes);
                for (r, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_maskload_ps(w.add(r * ldw + i), mask);
                }
                for b in 0..B {
                    let xv = _mm256_maskload_ps(x.add(b * ldx + i), mask);
                    for r in 0..R {
                        acc[r][b] = _mm256_fmadd_ps(wv[r], xv, acc[r][b]);
                    }
                }
            }
        }
        let mut out = [[0.0; B]; R];
        for r in 0..R {
            for b in 0..B {
                let v = acc[r][b];
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                out[r][b] = _mm_cvtss_f32(s);
            }
        }
        out
    }

    /// Never called: [`crate::Isa::Avx2`] is unsupported off x86-64.
    ///
    /// # Safety
    /// Unreachable.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn block<const R: usize, const B: usize>(
        _w: *const f32,
        _ldw: usize,
        _x: *const f32,
        _ldx: usize,
        _k: usize,
    ) -> [[f32; B]; R] {
        unreachable!("AVX2 kernel selected off x86-64")
    }
}

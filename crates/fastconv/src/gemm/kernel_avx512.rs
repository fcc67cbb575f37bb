//! AVX-512F GEMM microkernel: an `MR×32` tile held in `2·MR` zmm
//! accumulators, two B vectors and one broadcast per k step — 12×32 (27 of
//! 32 registers) by default, 8×32 where that pads fewer rows than the
//! 12-row tile (`Kernel::for_rows`: 64 filters as 64, not 72; 6 as 8, not 12).

use super::Epilogue;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the default microtile.
pub(crate) const MR: usize = 12;
/// Rows of the narrow microtile.
pub(crate) const MR_NARROW: usize = 8;
/// Columns of the microtile.
pub(crate) const NR: usize = 32;

/// `C[MR×NR] (+)= A·B` then the epilogue; see [`super::KernelFn`].
///
/// # Safety
/// The CPU supports AVX-512F; `a` holds `kc·MR` floats, `b` holds
/// `kc·NR` floats, `c` addresses `MR` rows of `NR` writable floats `rsc`
/// apart; `epi.bias`, when non-null, holds `MR` floats; `epi.residual`,
/// when non-null, addresses `MR` rows of `NR` readable floats `rsc` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel<const MR: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: Epilogue,
) {
    // SAFETY: AVX-512F is enabled on this function and guaranteed by the
    // caller; every pointer offset stays inside the extents documented above.
    unsafe {
        let mut c0 = [_mm512_setzero_ps(); MR];
        let mut c1 = [_mm512_setzero_ps(); MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for i in 0..MR {
                let av = _mm512_set1_ps(*ap.add(i));
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
        // max/min return their second operand when either is NaN, so the
        // clamp keeps NaN; with the default ±∞ bounds it is the identity.
        let (lo, hi) = (_mm512_set1_ps(epi.clamp.lo), _mm512_set1_ps(epi.clamp.hi));
        for i in 0..MR {
            let row = c.add(i * rsc);
            let (mut v0, mut v1) = (c0[i], c1[i]);
            if !epi.bias.is_null() {
                let bv = _mm512_set1_ps(*epi.bias.add(i));
                v0 = _mm512_add_ps(v0, bv);
                v1 = _mm512_add_ps(v1, bv);
            }
            if epi.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(row));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(row.add(16)));
            }
            if !epi.residual.is_null() {
                let r = epi.residual.add(i * rsc);
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(r));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(r.add(16)));
            }
            if !epi.clamp.is_none() {
                v0 = _mm512_min_ps(hi, _mm512_max_ps(lo, v0));
                v1 = _mm512_min_ps(hi, _mm512_max_ps(lo, v1));
            }
            _mm512_storeu_ps(row, v0);
            _mm512_storeu_ps(row.add(16), v1);
        }
    }
}

/// Never called: [`crate::Isa::Avx512`] is unsupported off x86-64.
///
/// # Safety
/// Unreachable; present so the dispatch compiles on every target.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn kernel<const MR: usize>(
    _kc: usize,
    _a: *const f32,
    _b: *const f32,
    _c: *mut f32,
    _rsc: usize,
    _epi: Epilogue,
) {
    unreachable!("AVX-512 kernel selected off x86-64")
}

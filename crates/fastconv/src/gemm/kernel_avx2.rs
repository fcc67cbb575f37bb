//! AVX2 + FMA GEMM microkernel: a 6×16 tile held in 12 ymm accumulators,
//! two B vectors and one broadcast per k step (15 of 16 registers).

use super::Epilogue;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the microtile.
pub(crate) const MR: usize = 6;
/// Columns of the microtile.
pub(crate) const NR: usize = 16;

/// `C[MR×NR] (+)= A·B` then the epilogue; see [`super::KernelFn`].
///
/// # Safety
/// The CPU supports AVX2 and FMA; `a` holds `kc·MR` floats, `b` holds
/// `kc·NR` floats, `c` addresses `MR` rows of `NR` writable floats `rsc`
/// apart; `epi.bias`, when non-null, holds `MR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: Epilogue,
) {
    // SAFETY: AVX2/FMA are enabled on this function and guaranteed by the
    // caller; every pointer offset stays inside the extents documented above.
    unsafe {
        let mut c0 = [_mm256_setzero_ps(); MR];
        let mut c1 = [_mm256_setzero_ps(); MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for i in 0..MR {
                let av = _mm256_broadcast_ss(&*ap.add(i));
                c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
        // max/min return their second operand when either is NaN, so the
        // clamp keeps NaN; with the default ±∞ bounds it is the identity.
        let (lo, hi) = (_mm256_set1_ps(epi.clamp.lo), _mm256_set1_ps(epi.clamp.hi));
        for i in 0..MR {
            let row = c.add(i * rsc);
            let (mut v0, mut v1) = (c0[i], c1[i]);
            if !epi.bias.is_null() {
                let bv = _mm256_broadcast_ss(&*epi.bias.add(i));
                v0 = _mm256_add_ps(v0, bv);
                v1 = _mm256_add_ps(v1, bv);
            }
            if epi.accumulate {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
            }
            if !epi.clamp.is_none() {
                v0 = _mm256_min_ps(hi, _mm256_max_ps(lo, v0));
                v1 = _mm256_min_ps(hi, _mm256_max_ps(lo, v1));
            }
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row.add(8), v1);
        }
    }
}

/// Never called: [`crate::Isa::Avx2`] is unsupported off x86-64.
///
/// # Safety
/// Unreachable; present so the dispatch compiles on every target.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn kernel(
    _kc: usize,
    _a: *const f32,
    _b: *const f32,
    _c: *mut f32,
    _rsc: usize,
    _epi: Epilogue,
) {
    unreachable!("AVX2 kernel selected off x86-64")
}

//! AVX-512F GEMM microkernel for narrow outputs (few columns, e.g. the 7×7
//! = 49 positions of ResNet-18's last stage): a 48×`NR` tile (`NR` = 8 or 7)
//! whose vectors run down the rows — three zmm of A per k step, `NR`
//! broadcasts of B, `3·NR` accumulators — so 49 columns are seven whole
//! 7-column panels instead of 64 padded ones with the 32-column tile (56
//! with 8 columns). The tile is transposed through a local buffer when
//! stored.

use super::Epilogue;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the microtile (three zmm).
pub(crate) const MR: usize = 48;
/// Columns of the wider microtile.
pub(crate) const NR: usize = 8;
/// Columns of the narrower microtile (7, 14 and 28 columns in whole panels).
pub(crate) const NR_NARROW: usize = 7;

/// `C[MR×N] (+)= A·B` then the epilogue; see [`super::KernelFn`].
///
/// # Safety
/// `N ≤ NR`; the CPU supports AVX-512F; `a` holds `kc·MR` floats, `b` holds
/// `kc·N` floats, `c` addresses `MR` rows of `N` writable floats `rsc`
/// apart; `epi.bias`, when non-null, holds `MR` floats; `epi.residual`,
/// when non-null, addresses `MR` rows of `N` readable floats `rsc` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel<const N: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: Epilogue,
) {
    // SAFETY: AVX-512F is enabled and guaranteed by the caller; every
    // offset stays inside the extents documented on the KernelFn.
    const { assert!(N <= NR) };
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); N]; 3];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let a0 = _mm512_loadu_ps(ap);
            let a1 = _mm512_loadu_ps(ap.add(16));
            let a2 = _mm512_loadu_ps(ap.add(32));
            for j in 0..N {
                let bv = _mm512_set1_ps(*bp.add(j));
                acc[0][j] = _mm512_fmadd_ps(a0, bv, acc[0][j]);
                acc[1][j] = _mm512_fmadd_ps(a1, bv, acc[1][j]);
                acc[2][j] = _mm512_fmadd_ps(a2, bv, acc[2][j]);
            }
            ap = ap.add(MR);
            bp = bp.add(N);
        }
        // Column-major tile: t[j·MR + i] is C[i, j].
        let mut t = [0f32; MR * NR];
        for j in 0..N {
            for v in 0..3 {
                let mut x = acc[v][j];
                if !epi.bias.is_null() {
                    x = _mm512_add_ps(x, _mm512_loadu_ps(epi.bias.add(16 * v)));
                }
                _mm512_storeu_ps(t.as_mut_ptr().add(j * MR + 16 * v), x);
            }
        }
        for i in 0..MR {
            let row = c.add(i * rsc);
            let res = if epi.residual.is_null() {
                std::ptr::null()
            } else {
                epi.residual.add(i * rsc)
            };
            for j in 0..N {
                let mut x = t[j * MR + i];
                if epi.accumulate {
                    x += *row.add(j);
                }
                if !res.is_null() {
                    x += *res.add(j);
                }
                *row.add(j) = epi.clamp.apply(x);
            }
        }
    }
}

/// Never called: [`crate::Isa::Avx512`] is unsupported off x86-64.
///
/// # Safety
/// Unreachable; present so the dispatch compiles on every target.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn kernel<const N: usize>(
    _kc: usize,
    _a: *const f32,
    _b: *const f32,
    _c: *mut f32,
    _rsc: usize,
    _epi: Epilogue,
) {
    unreachable!("AVX-512 kernel selected off x86-64")
}

//! AVX2 + FMA GEMM microkernel for narrow outputs (few columns, e.g. the
//! 7×7 = 49 positions of ResNet-18's last stage): a 16×6 tile whose vectors
//! run down the rows — two ymm of A per k step, six broadcasts of B, 12
//! accumulators — so 49 columns pad to 54 instead of 64 with the 16-column
//! tile of [`super::kernel_avx2`]. The AVX2 counterpart of
//! [`super::kernel_avx512_tall`]; the tile is transposed through a local
//! buffer when stored.

use super::Epilogue;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the microtile (two ymm).
pub(crate) const MR: usize = 16;
/// Columns of the microtile.
pub(crate) const NR: usize = 6;

/// `C[MR×NR] (+)= A·B` then the epilogue; see [`super::KernelFn`].
///
/// # Safety
/// The CPU supports AVX2 and FMA; `a` holds `kc·MR` floats, `b` holds
/// `kc·NR` floats, `c` addresses `MR` rows of `NR` writable floats `rsc`
/// apart; `epi.bias`, when non-null, holds `MR` floats; `epi.residual`,
/// when non-null, addresses `MR` rows of `NR` readable floats `rsc` apart.
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
    // SAFETY: AVX2/FMA are enabled and guaranteed by the caller; every
    // offset stays inside the extents documented on the KernelFn.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NR]; 2];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let a0 = _mm256_loadu_ps(ap);
            let a1 = _mm256_loadu_ps(ap.add(8));
            for j in 0..NR {
                let bv = _mm256_broadcast_ss(&*bp.add(j));
                acc[0][j] = _mm256_fmadd_ps(a0, bv, acc[0][j]);
                acc[1][j] = _mm256_fmadd_ps(a1, bv, acc[1][j]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
        // Column-major tile: t[j·MR + i] is C[i, j].
        let mut t = [0f32; MR * NR];
        for j in 0..NR {
            for v in 0..2 {
                let mut x = acc[v][j];
                if !epi.bias.is_null() {
                    x = _mm256_add_ps(x, _mm256_loadu_ps(epi.bias.add(8 * v)));
                }
                _mm256_storeu_ps(t.as_mut_ptr().add(j * MR + 8 * v), x);
            }
        }
        for i in 0..MR {
            let row = c.add(i * rsc);
            let res = if epi.residual.is_null() {
                std::ptr::null()
            } else {
                epi.residual.add(i * rsc)
            };
            for j in 0..NR {
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

//! Portable GEMM microkernel (4×8), for CPUs without AVX2: plain Rust the
//! compiler may vectorise with the baseline instruction set.

use super::Epilogue;

/// Rows of the microtile.
pub(crate) const MR: usize = 4;
/// Columns of the microtile.
pub(crate) const NR: usize = 8;

/// `C[MR×NR] (+)= A·B` then the epilogue; see [`super::KernelFn`].
///
/// # Safety
/// `a` holds `kc·MR` floats, `b` holds `kc·NR` floats, and `c` addresses
/// `MR` rows of `NR` writable floats `rsc` apart; `epi.bias`, when non-null,
/// holds `MR` floats.
pub(crate) unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: Epilogue,
) {
    let mut acc = [[0.0f32; NR]; MR];
    // SAFETY: the caller guarantees the extents documented above; every
    // offset below stays inside them.
    unsafe {
        let a = std::slice::from_raw_parts(a, kc * MR);
        let b = std::slice::from_raw_parts(b, kc * NR);
        for k in 0..kc {
            let bk = &b[k * NR..k * NR + NR];
            for i in 0..MR {
                let av = a[k * MR + i];
                for j in 0..NR {
                    acc[i][j] += av * bk[j];
                }
            }
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let out = std::slice::from_raw_parts_mut(c.add(i * rsc), NR);
            let bias = if epi.bias.is_null() {
                0.0
            } else {
                *epi.bias.add(i)
            };
            for (o, &v) in out.iter_mut().zip(row.iter()) {
                let mut v = v + bias;
                if epi.accumulate {
                    v += *o;
                }
                *o = epi.clamp.apply(v);
            }
        }
    }
}

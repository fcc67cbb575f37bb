//! The rate of the GEMM microkernel alone: single-threaded products on
//! operands packed before the clock starts — no lowering, no packing, no
//! threads — the yardstick that tells the microkernel's speed apart from
//! the work around it in a convolution (im2col, packing, padded columns,
//! the split over threads).

use std::time::Instant;

use hasten_core::{Error, Result, SeededRng};

use super::{pack, BOperand, Kernel, Output, PackedA, RowMajor, Scratch};
use crate::aligned::AlignedVec;
use crate::Isa;

/// Most floats the operands of [`gemm_kernel_run`] may hold (1 GiB), so a
/// mistaken size is an error rather than an allocation failure.
const MAX_FLOATS: usize = 1 << 28;

/// One timed run of [`gemm_kernel_run`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelRun {
    /// Useful floating-point operations, `2·m·n·k` per product (the padding
    /// of edge tiles counts against the rate).
    pub flops: f64,
    /// Wall-clock seconds of the products.
    pub seconds: f64,
    /// The microkernel's tile, rows × columns.
    pub tile: (usize, usize),
}

impl KernelRun {
    /// GFLOP/s of this run.
    pub fn gflops(&self) -> f64 {
        self.flops / self.seconds / 1e9
    }
}

/// Runs `reps` products `C = A·B` (`A` random `m × k`, `B` random `k × n`)
/// on the calling thread through the GEMM driver with the microkernel and
/// blocking a convolution of `m` filters, `n` output positions and depth `k`
/// gets on `isa`, both operands packed beforehand (equation (1) of the
/// survey lowered to this product, without the lowering). Errors: `isa` unsupported here, a zero extent, or operands
/// of more than 2²⁸ floats in all.
pub fn gemm_kernel_run(isa: Isa, m: usize, n: usize, k: usize, reps: usize) -> Result<KernelRun> {
    isa.ensure_supported()?;
    for (name, v) in [("m", m), ("n", n), ("k", k), ("reps", reps)] {
        if v == 0 {
            return Err(Error::param(name, v, "at least 1"));
        }
    }
    let count = |a: usize, b: usize| {
        a.checked_mul(b)
            .ok_or_else(|| Error::overflow("gemm_kernel_run operand size"))
    };
    let (a_len, b_len, c_len) = (count(m, k)?, count(k, n)?, count(m, n)?);
    // Room for any tile's padding (at most 47 rows and 31 columns), so the
    // kernel choice and the packed sizes below cannot overflow either.
    let pad = |v: usize| {
        v.checked_add(64)
            .ok_or_else(|| Error::overflow("gemm_kernel_run operand size"))
    };
    count(count(pad(m)?, pad(n)?)?, pad(k)?)?;
    let floats = a_len + b_len + c_len;
    if floats > MAX_FLOATS {
        return Err(Error::param("m·k + k·n + m·n", floats, "at most 2^28"));
    }
    let kernel = Kernel::for_shape(isa, m, n, k);
    let (mr, nr) = (kernel.mr, kernel.nr);
    let width = n.div_ceil(nr);
    let packed_len = width * nr * k;
    let mut rng = SeededRng::new(3);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
    let a = PackedA::new(&kernel, &random(a_len), m, k);
    let b = random(b_len);
    let source = RowMajor { b: &b, n };
    // The layout of `BOperand::Packed`: K block `k0` at `k0 · width · NR`.
    let mut packed = AlignedVec::default();
    packed.resize(packed_len);
    let mut row = Vec::new();
    let mut k0 = 0;
    while k0 < k {
        let kc = kernel.kc.min(k - k0);
        let dst = &mut packed.as_mut_slice()[k0 * width * nr..][..kc * width * nr];
        pack::pack_b(&source, k0..k0 + kc, 0..n, nr, &mut row, dst);
        k0 += kc;
    }
    let mut c = vec![0f32; c_len];
    let mut scratch = Scratch::default();
    let mut product = |c: &mut [f32]| {
        let out = Output::plain(c.as_mut_ptr(), n);
        let b: BOperand<'_, RowMajor<'_>> = BOperand::Packed {
            tile: packed.as_slice(),
            width,
            first: 0,
        };
        // SAFETY: `c` is an m × n matrix with row stride n owned here; the
        // kernel is the one `a` was packed for and its ISA is supported
        // (checked above); `packed` holds every K block of the n columns.
        unsafe { super::gemm(&kernel, &a, 0..a.panels(), b, 0..n, out, &mut scratch) }
    };
    product(&mut c);
    let start = Instant::now();
    for _ in 0..reps {
        product(&mut c);
    }
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(&c);
    Ok(KernelRun {
        flops: 2.0 * m as f64 * n as f64 * k as f64 * reps as f64,
        seconds,
        tile: (mr, nr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_useful_flops_on_every_path_and_rejects_bad_sizes() {
        for isa in Isa::supported() {
            let run = gemm_kernel_run(isa, 20, 37, 300, 2).unwrap();
            assert_eq!(run.flops, 2.0 * 20.0 * 37.0 * 300.0 * 2.0);
            assert!(run.seconds > 0.0 && run.gflops().is_finite());
            assert_eq!(run.tile, {
                let k = Kernel::for_shape(isa, 20, 37, 300);
                (k.mr, k.nr)
            });
            assert!(gemm_kernel_run(isa, 0, 37, 300, 1).is_err());
            assert!(gemm_kernel_run(isa, 20, 37, 300, 0).is_err());
            assert!(gemm_kernel_run(isa, usize::MAX, 2, 2, 1).is_err());
            assert!(gemm_kernel_run(isa, 1 << 40, 1 << 40, 300, 1).is_err());
            assert!(gemm_kernel_run(isa, 1 << 20, 1 << 20, 1, 1).is_err());
        }
    }
}

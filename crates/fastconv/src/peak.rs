//! The physical f32 FMA peak of one core: independent FMA chains in
//! registers, enough of them to cover the FMA latency on every pipe, so the
//! count of floating-point operations per second is what the core can issue
//! — the yardstick of the kernels, independent of our own GEMM.

use std::time::Instant;

use crate::Isa;

/// Independent accumulators per lane group (covers 4-cycle latency × 2
/// pipes with room to spare).
const CHAINS: usize = 12;

/// One run of the FMA loop: the floating-point operations done (2 per FMA
/// lane), the seconds taken and a checksum of the accumulators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FmaRun {
    /// Floating-point operations executed (2 per lane of every FMA).
    pub flops: f64,
    /// Wall-clock seconds of the loop.
    pub seconds: f64,
    /// Sum over every accumulator lane; each starts at 0 and gains exactly
    /// 1 per iteration (`acc·1 + 1`), so it equals `lanes · chains · iters`
    /// while that stays below 2²⁴ per lane.
    pub checksum: f64,
}

impl FmaRun {
    /// GFLOP/s of this run.
    pub fn gflops(&self) -> f64 {
        self.flops / self.seconds / 1e9
    }
}

/// Runs `iters` iterations of 12 (`CHAINS`) independent vector FMAs of `isa`'s
/// widest register on the calling thread. `isa` must be supported by this
/// CPU ([`Isa::ensure_supported`]); the scalar path runs `f32::mul_add`
/// chains.
pub fn fma_run(isa: Isa, iters: usize) -> hasten_core::Result<FmaRun> {
    isa.ensure_supported()?;
    let lanes = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Scalar => 1,
    };
    let t = Instant::now();
    let sums = match isa {
        // SAFETY: the CPU supports the instruction set (checked above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { chains_avx512(iters) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { chains_avx2(iters) },
        _ => chains_scalar(iters),
    };
    let seconds = t.elapsed().as_secs_f64();
    Ok(FmaRun {
        flops: 2.0 * (lanes * CHAINS * iters) as f64,
        seconds,
        checksum: sums,
    })
}

/// Portable chains (`f32::mul_add`).
fn chains_scalar(iters: usize) -> f64 {
    let mut acc = [0f32; CHAINS];
    let one = std::hint::black_box(1f32);
    for _ in 0..iters {
        for a in &mut acc {
            *a = a.mul_add(one, one);
        }
    }
    acc.iter().map(|&v| v as f64).sum()
}

/// AVX-512 chains: `CHAINS` zmm accumulators.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let one = _mm512_set1_ps(std::hint::black_box(1.0));
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm512_fmadd_ps(*a, one, one);
        }
    }
    let mut lanes = [0f32; 16];
    let mut sum = 0f64;
    for a in acc {
        // SAFETY: `lanes` holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), a) };
        sum += lanes.iter().map(|&v| v as f64).sum::<f64>();
    }
    sum
}

/// AVX2 + FMA chains: `CHAINS` ymm accumulators.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(std::hint::black_box(1.0));
    let mut acc = [_mm256_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm256_fmadd_ps(*a, one, one);
        }
    }
    let mut lanes = [0f32; 8];
    let mut sum = 0f64;
    for a in acc {
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
        sum += lanes.iter().map(|&v| v as f64).sum::<f64>();
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_runs_exactly_the_counted_fmas() {
        for isa in Isa::supported() {
            let iters = 1000;
            let run = fma_run(isa, iters).unwrap();
            let lanes = run.flops / 2.0 / (CHAINS * iters) as f64;
            assert_eq!(run.checksum, run.flops / 2.0, "{isa}");
            assert!(lanes == 16.0 || lanes == 8.0 || lanes == 1.0, "{isa}");
            assert!(run.gflops() > 0.0);
        }
    }

    #[test]
    fn unsupported_isa_is_an_error() {
        for isa in [Isa::Avx512, Isa::Avx2] {
            assert_eq!(fma_run(isa, 1).is_err(), !isa.is_supported());
        }
    }
}

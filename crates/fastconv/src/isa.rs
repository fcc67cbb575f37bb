//! Instruction-set selection: which SIMD path the kernels take.
//!
//! [`Isa::detect`] picks the widest path this CPU supports at run time
//! (`is_x86_feature_detected!`); every path, including the portable scalar
//! one, computes the same function and is tested against the reference.

use std::fmt;

use hasten_core::{Error, Result};

/// A kernel family: AVX-512, AVX2 with FMA, or portable Rust.
///
/// Plans pick [`Isa::detect`] by default; [`Plan::with_isa`](crate::Plan::with_isa)
/// or [`PlanOptions::isa`](crate::PlanOptions::isa) force another path (to
/// measure AVX2 on an AVX-512 machine, say), which must be supported.
///
/// ```
/// use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, SeededRng};
/// use hasten_fastconv::{Isa, Plan};
///
/// assert_eq!(Isa::supported().last(), Some(&Isa::Scalar));
/// assert_eq!(Isa::detect(), Isa::supported()[0]);
/// let w = SeededRng::new(0).normal_array((4, 2, 3, 3), 0.1);
/// let block = Block::single(ConvLayer::from_array(w, ConvSpec::new())?);
/// let plan = Plan::with_isa(&block, ActShape::new(2, 6, 6), 1, Isa::Scalar)?;
/// assert_eq!(plan.isa(), Isa::Scalar);
/// for isa in [Isa::Avx512, Isa::Avx2] {
///     // Forcing a path the CPU lacks is a typed error, not a crash.
///     assert_eq!(isa.ensure_supported().is_ok(), isa.is_supported());
/// }
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F registers (32 × 512 bit): the 12×32 GEMM microkernel.
    Avx512,
    /// AVX2 + FMA registers (16 × 256 bit): the 6×16 GEMM microkernel.
    Avx2,
    /// Portable code with no instruction-set assumption: the 4×8 microkernel.
    Scalar,
}

impl Isa {
    /// The fastest path this CPU supports.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Scalar)
    }

    /// Every path this CPU can run, fastest first (always ends with `Scalar`).
    pub fn supported() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Scalar]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `Ok(self)` when supported, else an [`Error::Unsupported`] naming it.
    pub fn ensure_supported(self) -> Result<Isa> {
        if self.is_supported() {
            Ok(self)
        } else {
            Err(Error::unsupported(
                "fastconv kernel selection",
                format!("instruction set {self} on this CPU"),
            ))
        }
    }
}

impl Isa {
    /// Runs `f` inside a function compiled for this instruction set, so
    /// that code inlined into `f` (the `#[inline(always)]` loops of the
    /// memory-bound kernels) is vectorised for it; `Scalar` runs `f` as is.
    /// The instruction set must be supported (plans check it when built).
    pub(crate) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        assert!(
            self.is_supported(),
            "{self} kernels requested on a CPU without it"
        );
        match self {
            // SAFETY: the CPU supports the instruction set (asserted).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { run_avx512(f) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { run_avx2(f) },
            _ => f(),
        }
    }
}

/// `f()` compiled with AVX-512F.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()` compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Scalar => "scalar",
        })
    }
}

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
    /// Every level, from the widest to the portable one.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Scalar];

    /// The fastest path this CPU supports for the f32 kernels.
    pub fn detect() -> Isa {
        Isa::detect_for(Needs::Float)
    }

    /// The fastest level this CPU supports for kernels needing `needs`.
    pub fn detect_for(needs: Needs) -> Isa {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.supports(needs))
            .unwrap_or(Isa::Scalar)
    }

    /// Every f32 path this CPU can run, fastest first (always ends with
    /// `Scalar`).
    pub fn supported() -> Vec<Isa> {
        Isa::supported_for(Needs::Float)
    }

    /// Every level this CPU can run kernels needing `needs` on, fastest
    /// first (always ends with `Scalar`).
    pub fn supported_for(needs: Needs) -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.supports(needs))
            .collect()
    }

    /// Whether this CPU can run the f32 kernels of this level.
    pub fn is_supported(self) -> bool {
        self.supports(Needs::Float)
    }

    /// The crate's one feature table: whether this CPU has what a kernel
    /// family needing `needs` uses at this level.
    ///
    /// | level | [`Needs::Float`] | [`Needs::Int8Dot`] | [`Needs::Popcount`] |
    /// |---|---|---|---|
    /// | `Avx512` | `avx512f` | `avx512f`, `avx512bw`, `avx512vnni` | `avx512f`, `avx512vpopcntdq` |
    /// | `Avx2` | `avx2`, `fma` | `avx2` | `avx2` |
    /// | `Scalar` | — | — | — |
    pub fn supports(self, needs: Needs) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && (needs != Needs::Float || std::arch::is_x86_feature_detected!("fma"))
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && match needs {
                        Needs::Popcount => std::arch::is_x86_feature_detected!("avx512vpopcntdq"),
                        Needs::Int8Dot => {
                            std::arch::is_x86_feature_detected!("avx512bw")
                                && std::arch::is_x86_feature_detected!("avx512vnni")
                        }
                        Needs::Float => true,
                    }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest level no wider than this one that this CPU supports for
    /// `needs` (a plan forced to AVX2 runs its int8 steps on AVX2 too; an
    /// AVX-512 plan on a CPU without VNNI runs them on AVX2).
    pub fn capped(self, needs: Needs) -> Isa {
        let from = Isa::ALL.iter().position(|&l| l == self).unwrap_or(0);
        Isa::ALL[from..]
            .iter()
            .copied()
            .find(|&l| l.supports(needs))
            .unwrap_or(Isa::Scalar)
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

/// What a kernel family needs from the CPU at each [`Isa`] level, beyond
/// the level's registers: see [`Isa::supports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Needs {
    /// Floating-point FMAs and gathers (the f32 kernels; AVX2 needs FMA).
    Float,
    /// Integer u8 × i8 dot products (AVX-512: VNNI `vpdpbusd` and BW).
    Int8Dot,
    /// Binary / ternary popcounts (AVX-512: `VPOPCNTDQ`).
    Popcount,
}

/// `isa` when given and usable for `needs`, the widest usable level when
/// `None`, else [`Error::Unsupported`] naming `kernel` and the level.
pub(crate) fn check_isa(isa: Option<Isa>, needs: Needs, kernel: &str) -> Result<Isa> {
    match isa {
        None => Ok(Isa::detect_for(needs)),
        Some(isa) if isa.supports(needs) => Ok(isa),
        Some(isa) => Err(Error::unsupported(
            kernel,
            format!("{isa:?} on this CPU (missing extensions for {needs:?})"),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_NEEDS: [Needs; 3] = [Needs::Float, Needs::Int8Dot, Needs::Popcount];

    /// The feature table's derived views agree with it: the detected level
    /// is the first supported one, capping never widens a level and keeps a
    /// supported one, and forcing an unsupported level is a typed error.
    #[test]
    fn views_of_the_feature_table_agree() {
        assert_eq!(Isa::supported(), Isa::supported_for(Needs::Float));
        for needs in ALL_NEEDS {
            let levels = Isa::supported_for(needs);
            assert_eq!(levels.last(), Some(&Isa::Scalar));
            assert_eq!(Isa::detect_for(needs), levels[0]);
            for (i, isa) in Isa::ALL.into_iter().enumerate() {
                let capped = isa.capped(needs);
                assert!(capped.supports(needs));
                assert!(Isa::ALL.iter().position(|&l| l == capped).unwrap() >= i);
                if isa.supports(needs) {
                    assert_eq!(capped, isa);
                    assert_eq!(check_isa(Some(isa), needs, "k").unwrap(), isa);
                } else {
                    assert!(check_isa(Some(isa), needs, "k").is_err());
                }
            }
        }
    }
}

//! Our own f32 GEMM, `C = A·B` with a fused epilogue, BLIS-style (Van Zee &
//! van de Geijn): `A` (the filters, `M × K`) is packed once into `MR`-row
//! panels per `KC` block, `B` (the lowered image, `K × N`) is packed per task
//! into `NR`-column panels straight from its source — for a convolution the
//! image itself (lazy im2col) — and a register-blocked microkernel computes
//! each `MR × NR` tile. Bias and an activation clamp (ReLU, Clip) are applied as the tile is stored.
//!
//! This is the lowering of equation (1) of the survey to matrix
//! multiplication; the microkernels per instruction set live in
//! `kernel_avx512.rs`, `kernel_avx2.rs` and `kernel_scalar.rs`, with tall
//! tiles for narrow outputs in `kernel_avx512_tall.rs` and
//! `kernel_avx2_tall.rs`.

mod kernel_avx2;
mod kernel_avx2_tall;
mod kernel_avx512;
mod kernel_avx512_tall;
mod kernel_scalar;
pub(crate) mod pack;
pub(crate) mod rate;

use std::ops::Range;

use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::Isa;
pub(crate) use pack::{BSource, PackedA, RowMajor};

/// What the microkernel does when it stores its tile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue {
    /// Add the tile to what `C` holds (every `K` block after the first).
    pub accumulate: bool,
    /// `MR` per-row biases to add, or null.
    pub bias: *const f32,
    /// A residual tile to add after the last `K` block (row stride as `C`),
    /// or null; added before the clamp (NaN kept by both).
    pub residual: *const f32,
    /// Activation clamp after the last `K` block ([`Clamp::NONE`] before).
    pub clamp: Clamp,
}

/// A microkernel: `(kc, packed A panel, packed B panel, C, row stride of C,
/// epilogue)`; computes `C[MR×NR] (+)= A·B` and applies the epilogue.
pub(crate) type KernelFn = unsafe fn(usize, *const f32, *const f32, *mut f32, usize, Epilogue);

/// Largest `MR·NR` of any microkernel (the edge-tile buffer).
const MAX_TILE: usize = max(
    kernel_avx512::MR * kernel_avx512::NR,
    kernel_avx512_tall::MR * kernel_avx512_tall::NR,
);

/// `max` usable in a constant.
const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// How much more padded work (`⌈m/MR⌉·MR × ⌈n/NR⌉·NR`) the usual tile
/// must do than a tall one before the tall one is chosen.
const TALL_GAIN: f64 = 1.05;

/// Least depth `K` for a tall tile: its transposed store costs about one
/// scalar operation per tile element, negligible against `K` FMAs per
/// element only for deep products (a 3-channel stem's `K` = 27 is not).
const TALL_MIN_DEPTH: usize = 128;

/// The tall tiles of `isa` (vectors down the rows): `(MR, NR, kernel)`.
fn tall_tiles(isa: Isa) -> &'static [(usize, usize, KernelFn)] {
    match isa {
        Isa::Avx512 => &[
            (
                kernel_avx512_tall::MR,
                kernel_avx512_tall::NR,
                kernel_avx512_tall::kernel::<{ kernel_avx512_tall::NR }>,
            ),
            (
                kernel_avx512_tall::MR,
                kernel_avx512_tall::NR_NARROW,
                kernel_avx512_tall::kernel::<{ kernel_avx512_tall::NR_NARROW }>,
            ),
        ],
        Isa::Avx2 => &[(
            kernel_avx2_tall::MR,
            kernel_avx2_tall::NR,
            kernel_avx2_tall::kernel,
        )],
        Isa::Scalar => &[],
    }
}

/// A microkernel with its tile shape and blocking, for one [`Isa`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kernel {
    /// Tile rows.
    pub mr: usize,
    /// Tile columns.
    pub nr: usize,
    /// Depth of one packed block.
    pub kc: usize,
    /// Columns of `B` per task (a multiple of `nr`).
    pub nc: usize,
    func: KernelFn,
}

impl Kernel {
    /// The microkernel of `isa` best suited to an `m × n` output of depth
    /// `k`: the tall tile (48×8 or 48×7 on AVX-512, 16×6 on AVX2) that pads
    /// least, where `n` is narrow enough that the usual wide panels would
    /// pad [`TALL_GAIN`] times more (e.g. the 7×7 = 49 positions of
    /// ResNet-18's last stage: 7 whole 7-column panels on AVX-512, 54 padded
    /// columns on AVX2, instead of 64) and `k ≥` [`TALL_MIN_DEPTH`]; else
    /// [`Kernel::for_rows`].
    pub fn for_shape(isa: Isa, m: usize, n: usize, k: usize) -> Kernel {
        let usual = Kernel::for_rows(isa, m);
        if m == 0 || n == 0 || k < TALL_MIN_DEPTH {
            return usual;
        }
        let padded = |mr: usize, nr: usize| (m.div_ceil(mr) * mr * n.div_ceil(nr) * nr) as f64;
        let best = tall_tiles(isa)
            .iter()
            .min_by(|a, b| padded(a.0, a.1).total_cmp(&padded(b.0, b.1)));
        match best {
            Some(&(mr, nr, func)) if padded(usual.mr, usual.nr) > TALL_GAIN * padded(mr, nr) => {
                Kernel {
                    mr,
                    nr,
                    kc: 512,
                    nc: 256usize.div_ceil(nr) * nr,
                    func,
                }
            }
            _ => usual,
        }
    }

    /// The microkernel of `isa` best suited to `m` rows (AVX-512 has a
    /// narrow 8-row tile for row counts it pads less than the 12-row one:
    /// 64 rows as 64, not 72; LeNet-5's 6 filters as 8, not 12);
    /// `isa` must be supported by this CPU (checked by
    /// [`Isa::ensure_supported`] where plans are built).
    pub fn for_rows(isa: Isa, m: usize) -> Kernel {
        let padded = |mr: usize| m.div_ceil(mr) * mr;
        let narrow = padded(kernel_avx512::MR_NARROW) < padded(kernel_avx512::MR);
        let (mr, nr, func): (usize, usize, KernelFn) = match isa {
            Isa::Avx512 if narrow => (
                kernel_avx512::MR_NARROW,
                kernel_avx512::NR,
                kernel_avx512::kernel::<{ kernel_avx512::MR_NARROW }>,
            ),
            Isa::Avx512 => (
                kernel_avx512::MR,
                kernel_avx512::NR,
                kernel_avx512::kernel::<{ kernel_avx512::MR }>,
            ),
            Isa::Avx2 => (kernel_avx2::MR, kernel_avx2::NR, kernel_avx2::kernel),
            Isa::Scalar => (kernel_scalar::MR, kernel_scalar::NR, kernel_scalar::kernel),
        };
        assert!(
            isa.is_supported(),
            "kernel for {isa} requested on a CPU without it"
        );
        Kernel {
            mr,
            nr,
            kc: 256,
            nc: 256usize.div_ceil(nr) * nr,
            func,
        }
    }
}

/// Per-thread buffers of the GEMM: the packed `B` block, one lowered row and
/// the edge tile.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    packed_b: AlignedVec,
    pub(crate) row: Vec<f32>,
    tile: Vec<f32>,
}

/// The `B` operand of a task: a source packed on the fly, or (some panels
/// of) a column tile packed beforehand by [`pack::pack_b`] block by block.
pub(crate) enum BOperand<'a, S: BSource> {
    /// Pack from this source per `KC` block.
    Source(&'a S),
    /// Already packed: a tile of `width` panels whose `KC` block at depth
    /// `k0` starts at `k0 · width · NR`, its panel `p` `p · kc · NR` further;
    /// the task's columns start at panel `first`.
    Packed {
        /// The packed tile.
        tile: &'a [f32],
        /// Panels in the tile.
        width: usize,
        /// The tile panel of the task's first column.
        first: usize,
    },
}

/// Where one task writes: `C` with row stride `rsc` (floats), the bias of
/// every row (padded to whole panels) and the fused activation clamp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output<'a> {
    /// `C[0, 0]`.
    pub c: *mut f32,
    /// Row stride of `C`.
    pub rsc: usize,
    /// One bias per row of `A`, padded with zeros to whole `MR` panels.
    pub bias: Option<&'a [f32]>,
    /// `R[0, 0]` of a residual matrix of `C`'s shape and row stride, added
    /// to the result before the clamp; null for none.
    pub residual: *const f32,
    /// Fused activation clamp (ReLU, Clip).
    pub clamp: Clamp,
}

impl Output<'_> {
    /// `C` at `c` with row stride `rsc` and nothing fused: no bias, no
    /// residual, no clamp.
    pub(crate) fn plain(c: *mut f32, rsc: usize) -> Self {
        Output {
            c,
            rsc,
            bias: None,
            residual: std::ptr::null(),
            clamp: Clamp::NONE,
        }
    }
}

/// Computes rows `panels` (in `MR` units) × columns `cols` of `C = A·B`.
///
/// # Safety
/// `out.c` addresses a writable `a.rows() × (cols.end)` matrix with row stride
/// `out.rsc ≥ cols.end` that no other thread writes in these rows and
/// columns; `out.residual`, when non-null, addresses a readable matrix of the
/// same extent and row stride; `kernel` is the one `a` was packed for and its
/// ISA is supported.
pub(crate) unsafe fn gemm(
    kernel: &Kernel,
    a: &PackedA,
    panels: Range<usize>,
    b: BOperand<'_, impl BSource>,
    cols: Range<usize>,
    out: Output<'_>,
    scratch: &mut Scratch,
) {
    let (mr, nr) = (kernel.mr, kernel.nr);
    let m = a.rows();
    let k = a.depth();
    let nc = cols.len();
    let n_panels = nc.div_ceil(nr);
    scratch.tile.resize(MAX_TILE, 0.0);
    let mut k0 = 0;
    while k0 < k {
        let kc = kernel.kc.min(k - k0);
        let first = k0 == 0;
        let last = k0 + kc == k;
        let bp = match &b {
            BOperand::Source(src) => {
                scratch.packed_b.resize(kc * n_panels * nr);
                pack::pack_b(
                    *src,
                    k0..k0 + kc,
                    cols.clone(),
                    nr,
                    &mut scratch.row,
                    scratch.packed_b.as_mut_slice(),
                );
                scratch.packed_b.as_slice()
            }
            BOperand::Packed { tile, width, first } => {
                &tile[(k0 * width + first * kc) * nr..][..kc * n_panels * nr]
            }
        };
        for jp in 0..n_panels {
            let col = cols.start + jp * nr;
            let nv = nr.min(cols.end - col);
            let b_panel = bp[jp * kc * nr..].as_ptr();
            for ip in panels.clone() {
                let row = ip * mr;
                let mv = mr.min(m - row);
                let residual = if last && !out.residual.is_null() {
                    // SAFETY: inside the residual matrix per the contract.
                    unsafe { out.residual.add(row * out.rsc + col) }
                } else {
                    std::ptr::null()
                };
                let epi = Epilogue {
                    accumulate: !first,
                    bias: match out.bias {
                        Some(bias) if first => bias[row..row + mr].as_ptr(),
                        _ => std::ptr::null(),
                    },
                    residual,
                    clamp: if last { out.clamp } else { Clamp::NONE },
                };
                let a_panel = a.panel(k0, ip);
                // SAFETY: the packed panels hold kc·mr and kc·nr floats; the
                // destination is either the full tile inside C (rows
                // row..row+mr < m, columns col..col+nr ≤ cols.end, owned by
                // this task per the contract) or the local edge tile of
                // MAX_TILE ≥ mr·nr floats with row stride nr, whose valid
                // mv × nv part alone is copied out (residual and clamp applied
                // on the way, reading only the valid part of the residual).
                unsafe {
                    let c_tile = out.c.add(row * out.rsc + col);
                    if mv == mr && nv == nr {
                        (kernel.func)(kc, a_panel, b_panel, c_tile, out.rsc, epi);
                    } else {
                        let t = scratch.tile.as_mut_ptr();
                        if !first {
                            for i in 0..mv {
                                std::ptr::copy_nonoverlapping(
                                    c_tile.add(i * out.rsc),
                                    t.add(i * nr),
                                    nv,
                                );
                            }
                        }
                        let in_tile = Epilogue {
                            residual: std::ptr::null(),
                            clamp: if residual.is_null() {
                                epi.clamp
                            } else {
                                Clamp::NONE
                            },
                            ..epi
                        };
                        (kernel.func)(kc, a_panel, b_panel, t, nr, in_tile);
                        for i in 0..mv {
                            let (src, dst) = (t.add(i * nr), c_tile.add(i * out.rsc));
                            if residual.is_null() {
                                std::ptr::copy_nonoverlapping(src, dst, nv);
                            } else {
                                let r = residual.add(i * out.rsc);
                                for j in 0..nv {
                                    *dst.add(j) = epi.clamp.apply(*src.add(j) + *r.add(j));
                                }
                            }
                        }
                    }
                }
            }
        }
        k0 += kc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_tile_only_where_it_pads_less() {
        if Isa::Avx512.is_supported() {
            let rows = |m| Kernel::for_rows(Isa::Avx512, m).mr;
            // (rows, tile rows): 8 where ⌈m/8⌉·8 < ⌈m/12⌉·12, else 12.
            for (m, mr) in [
                (1, 8),
                (6, 8),
                (8, 8),
                (10, 12),
                (12, 12),
                (16, 8),
                (20, 12),
                (24, 12),
                (32, 8),
                (64, 8),
                (96, 12),
                (512, 8),
            ] {
                assert_eq!(rows(m), mr, "{m} rows");
            }
        }
    }

    #[test]
    fn tall_tile_only_where_it_pads_less() {
        if Isa::Avx512.is_supported() {
            // ResNet-18's last stage: 512 × 49 is 7 whole 7-column panels
            // (528 × 49), not 512 × 64 nor 528 × 56.
            let tall = Kernel::for_shape(Isa::Avx512, 512, 49, 4608);
            assert_eq!((tall.mr, tall.nr), (48, 7));
            assert_eq!(tall.nc % tall.nr, 0);
            // 6² = 36 columns: 40 with 8-column panels, 42 with 7.
            let eight = Kernel::for_shape(Isa::Avx512, 96, 36, 576);
            assert_eq!((eight.mr, eight.nr), (48, 8));
            // 56² columns are whole 32-column panels: the usual tile.
            let usual = Kernel::for_shape(Isa::Avx512, 64, 3136, 576);
            assert_eq!((usual.mr, usual.nr), (8, 32));
            // Too shallow for the transposed store to pay: the usual tile.
            let shallow = Kernel::for_shape(Isa::Avx512, 512, 49, 27);
            assert_eq!(
                (shallow.mr, shallow.nr),
                (kernel_avx512::MR_NARROW, kernel_avx512::NR)
            );
            // The test layers of forward_matches_reference that need it.
            for (m, n, k) in [(90, 49, 360), (96, 49, 1100), (144, 49, 576), (96, 36, 576)] {
                assert_eq!(Kernel::for_shape(Isa::Avx512, m, n, k).mr, 48, "{m} × {n}");
            }
        }
        if Isa::Avx2.is_supported() {
            // 512 × 49: 16 × 6 pads to 512 × 54 instead of 516 × 64.
            let tall = Kernel::for_shape(Isa::Avx2, 512, 49, 4608);
            assert_eq!((tall.mr, tall.nr), (16, 6));
            assert_eq!(tall.nc % tall.nr, 0);
            for (m, n, k) in [(90, 49, 360), (96, 49, 1100), (144, 49, 576)] {
                assert_eq!(Kernel::for_shape(Isa::Avx2, m, n, k).mr, 16, "{m} × {n}");
            }
            // 64 × 56²: 66 × 3136 against 64 × 3138, under the gain.
            let usual = Kernel::for_shape(Isa::Avx2, 64, 3136, 576);
            assert_eq!((usual.mr, usual.nr), (kernel_avx2::MR, kernel_avx2::NR));
        }
        // The portable path has one tile.
        let scalar = Kernel::for_shape(Isa::Scalar, 512, 49, 4608);
        assert_eq!(
            (scalar.mr, scalar.nr),
            (kernel_scalar::MR, kernel_scalar::NR)
        );
    }
}

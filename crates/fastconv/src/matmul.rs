//! [`matmul`]: one single-threaded `C = op(A)·op(B)` on the crate's
//! BLIS-style GEMM, for callers that split the work themselves — the
//! training kernels of `hasten-train` run one product per sample and group
//! for the im2col lowering of equation (1) of the survey (forward, data and
//! weight gradients) inside their own parallel loop over samples.

use std::cell::RefCell;
use std::ops::Range;

use hasten_core::{Error, Result};

use crate::gemm::{self, BOperand, BSource, Kernel, Output, PackedA, RowMajor, Scratch};
use crate::Isa;

/// A row-major matrix operand of [`matmul`], used as stored or transposed.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    data: &'a [f32],
    transposed: bool,
}

impl<'a> Operand<'a> {
    /// The matrix as stored: `op(X) = X`.
    pub fn new(data: &'a [f32]) -> Self {
        Operand {
            data,
            transposed: false,
        }
    }

    /// The transpose of the stored matrix: `op(X) = Xᵀ`.
    pub fn transposed(data: &'a [f32]) -> Self {
        Operand {
            data,
            transposed: true,
        }
    }
}

thread_local! {
    /// Per-thread GEMM buffers, the transposed copy of `A` and packed `A`,
    /// reused across calls (a call allocates only when its operands outgrow
    /// every earlier call's on this thread).
    static SCRATCH: RefCell<(Scratch, Vec<f32>, PackedA)> = RefCell::new(Default::default());
}

/// `op(B) = Bᵀ` (`k × n`), `B` stored row-major `n × k`.
struct Columns<'a> {
    b: &'a [f32],
    k: usize,
}

impl BSource for Columns<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, tmp: &'b mut [f32]) -> &'b [f32] {
        let len = cols.len();
        for (t, j) in tmp[..len].iter_mut().zip(cols) {
            *t = self.b[j * self.k + k];
        }
        &tmp[..len]
    }
}

/// `c[m×n] = op(a)[m×k] · op(b)[k×n]` on the calling thread with the
/// microkernel of `isa`; `c` is row-major and overwritten, `a` is stored
/// `m × k` (or `k × m` when transposed), `b` `k × n` (or `n × k`). The
/// result depends only on the operands and `isa`, never on other threads.
///
/// # Errors
/// [`Error::ShapeMismatch`] when a slice length is not the product of its
/// dimensions, and [`Error::Unsupported`] for an `isa` this CPU lacks.
///
/// ```
/// use hasten_fastconv::{matmul, Isa, Operand};
///
/// let a = [1.0, 2.0, 3.0, 4.0]; // 2 × 2
/// let b = [1.0, 0.0, 1.0, 1.0, 2.0, 0.0]; // stored 3 × 2, used transposed
/// let mut c = [0.0; 6];
/// matmul(Isa::detect(), 2, 2, 3, Operand::new(&a), Operand::transposed(&b), &mut c)?;
/// assert_eq!(c, [1.0, 3.0, 2.0, 3.0, 7.0, 6.0]);
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn matmul(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    c: &mut [f32],
) -> Result<()> {
    for (what, len, want) in [
        ("matmul A", a.data.len(), m * k),
        ("matmul B", b.data.len(), k * n),
        ("matmul C", c.len(), m * n),
    ] {
        if len != want {
            return Err(Error::shape(what, want, len));
        }
    }
    isa.ensure_supported()?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    let kernel = Kernel::for_shape(isa, m, n, k);
    SCRATCH.with(|cell| {
        let (scratch, at, packed) = &mut *cell.borrow_mut();
        if a.transposed {
            at.clear();
            at.extend((0..m).flat_map(|i| (0..k).map(move |j| a.data[j * m + i])));
            packed.repack(&kernel, at, m, k);
        } else {
            packed.repack(&kernel, a.data, m, k);
        }
        let packed = &*packed;
        let out = Output::plain(c.as_mut_ptr(), n);
        let mut col = 0;
        while col < n {
            let cols = col..(col + kernel.nc).min(n);
            // SAFETY: `c` holds m × n floats (checked) with row stride n ≥
            // cols.end and is borrowed mutably here alone; no residual;
            // `packed` was packed for `kernel`, whose ISA was checked above.
            unsafe {
                if b.transposed {
                    columns(
                        &kernel,
                        packed,
                        &Columns { b: b.data, k },
                        cols,
                        out,
                        scratch,
                    );
                } else {
                    columns(
                        &kernel,
                        packed,
                        &RowMajor { b: b.data, n },
                        cols,
                        out,
                        scratch,
                    );
                }
            }
            col += kernel.nc;
        }
        Ok(())
    })
}

/// One `gemm` call over the output columns `cols`, `B` packed from `src`.
///
/// # Safety
/// As [`gemm::gemm`]: `out` addresses `packed`'s rows × `cols` with no
/// other borrow, and `packed` was packed for `kernel`, whose ISA this CPU
/// has.
unsafe fn columns<S: BSource>(
    kernel: &Kernel,
    packed: &PackedA,
    src: &S,
    cols: Range<usize>,
    out: Output<'_>,
    scratch: &mut Scratch,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            kernel,
            packed,
            0..packed.panels(),
            BOperand::Source(src),
            cols,
            out,
            scratch,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::SeededRng;

    /// The product in f64 by the definition.
    fn naive(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f64> {
        let at = |i: usize, j: usize| f64::from(if ta { a[j * m + i] } else { a[i * k + j] });
        let bt = |i: usize, j: usize| f64::from(if tb { b[j * k + i] } else { b[i * n + j] });
        (0..m * n)
            .map(|idx| (0..k).map(|p| at(idx / n, p) * bt(p, idx % n)).sum())
            .collect()
    }

    #[test]
    fn matches_the_definition_on_every_isa_and_transposition() {
        let mut rng = SeededRng::new(5);
        let mut tall = Vec::new();
        // Shapes across tile edges, several K blocks (k > 512) and column
        // blocks (n > NC); 7×7 outputs of depth ≥ 128, where the tall
        // tiles (48×7 AVX-512, 16×6 AVX2) are chosen.
        for (m, k, n) in [
            (1, 1, 1),
            (7, 3, 5),
            (16, 144, 784),
            (13, 600, 37),
            (50, 9, 300),
            (96, 576, 49),
            (40, 256, 49),
        ] {
            for isa in Isa::supported() {
                let (chosen, usual) = (Kernel::for_shape(isa, m, n, k), Kernel::for_rows(isa, m));
                if (chosen.mr, chosen.nr) != (usual.mr, usual.nr) {
                    tall.push(isa);
                }
            }
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
            for isa in Isa::supported() {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let op = |d, t| {
                        if t {
                            Operand::transposed(d)
                        } else {
                            Operand::new(d)
                        }
                    };
                    let mut c = vec![f32::NAN; m * n];
                    matmul(isa, m, k, n, op(&a, ta), op(&b, tb), &mut c).unwrap();
                    let want = naive(m, k, n, &a, ta, &b, tb);
                    let worst = c
                        .iter()
                        .zip(&want)
                        .map(|(&x, &y)| (f64::from(x) - y).abs() / (1.0 + y.abs()))
                        .fold(0.0, f64::max);
                    assert!(
                        worst < 1e-5 * (k as f64).sqrt(),
                        "{isa:?} {m}×{k}×{n} {ta} {tb}: {worst}"
                    );
                }
            }
        }
        for isa in Isa::supported().into_iter().filter(|&i| i != Isa::Scalar) {
            assert!(tall.contains(&isa), "no shape took a tall tile on {isa:?}");
        }
    }

    #[test]
    fn bad_lengths_are_errors_and_empty_depth_gives_zeros() {
        let mut c = [1.0f32; 4];
        let a = [1.0f32; 6];
        assert!(matmul(
            Isa::Scalar,
            2,
            3,
            2,
            Operand::new(&a),
            Operand::new(&a[..5]),
            &mut c
        )
        .is_err());
        assert!(matmul(
            Isa::Scalar,
            2,
            3,
            2,
            Operand::new(&a[..4]),
            Operand::new(&a),
            &mut c
        )
        .is_err());
        assert!(matmul(
            Isa::Scalar,
            2,
            3,
            2,
            Operand::new(&a),
            Operand::new(&a),
            &mut c[..3]
        )
        .is_err());
        matmul(
            Isa::Scalar,
            2,
            0,
            2,
            Operand::new(&[]),
            Operand::new(&[]),
            &mut c,
        )
        .unwrap();
        assert_eq!(c, [0.0; 4]);
    }
}

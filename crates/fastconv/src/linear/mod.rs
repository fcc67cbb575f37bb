//! Fully connected layer `y = act(W x + b)` over flattened samples (section
//! 5 of the survey; equation (2) factorises its weight matrix), weights
//! packed when the plan is built:
//!
//! - batch ≤ [`gemv::MAX_BATCH`]: the skinny product of [`gemv`] — weight
//!   rows stored with a padded, cache-line-aligned stride and streamed once
//!   for all samples, rows split over the rayon pool;
//! - larger batches: the crate's GEMM, `C = W · Xᵀ` with `W` packed into
//!   `MR`-row panels and `Xᵀ` packed per task, tasks over row panels; each
//!   task transposes its rows of `C` into the output.
//!
//! Bias and a following ReLU are fused into the store on both paths.

pub(crate) mod gemv;

use std::ops::Range;
use std::sync::Mutex;

use hasten_core::LinearLayer;
use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::gemm::{self, BOperand, BSource, Kernel, Output, PackedA};
use crate::plan::OpKernel;
use crate::pool::ScratchPool;
use crate::tiling::SharedOut;
use crate::Isa;
use gemv::Gemv;

/// Row-panel tasks per thread on the GEMM path.
const TASKS_PER_THREAD: usize = 4;

/// A fully connected layer as a plan kernel.
#[derive(Debug)]
pub(crate) struct LinearKernel {
    isa: Isa,
    out_f: usize,
    in_f: usize,
    clamp: Clamp,
    path: Path,
}

/// The packed weights of one of the two paths.
#[derive(Debug)]
enum Path {
    /// Row-major weights, row stride `ld` (a multiple of 16 floats, zero
    /// padded), and the bias.
    Skinny {
        w: AlignedVec,
        ld: usize,
        bias: Option<Vec<f32>>,
    },
    /// Weights packed for the GEMM microkernel, bias padded to whole
    /// panels, and the `out × batch` product buffer.
    Gemm {
        kernel: Kernel,
        w: PackedA,
        bias: Option<Vec<f32>>,
        c: Mutex<Vec<f32>>,
    },
}

impl LinearKernel {
    /// Packs `layer` for batches of `batch` samples on `isa` (supported by
    /// this CPU), with a fused activation clamp.
    pub fn new(isa: Isa, layer: &LinearLayer, batch: usize, clamp: Clamp) -> Self {
        let (out_f, in_f) = (layer.out_features(), layer.in_features());
        let w = layer.weight().as_standard_layout();
        let ws = w.as_slice().expect("standard layout");
        let bias = layer.bias().map(|b| b.to_vec());
        let path = if batch <= gemv::MAX_BATCH {
            let ld = in_f.div_ceil(16) * 16;
            let mut packed = AlignedVec::zeros(out_f * ld);
            for (dst, src) in packed
                .as_mut_slice()
                .chunks_exact_mut(ld)
                .zip(ws.chunks_exact(in_f))
            {
                dst[..in_f].copy_from_slice(src);
            }
            Path::Skinny {
                w: packed,
                ld,
                bias,
            }
        } else {
            let kernel = Kernel::for_rows(isa, out_f);
            let packed = PackedA::new(&kernel, ws, out_f, in_f);
            let rows = packed.panels() * kernel.mr;
            let bias = bias.map(|mut b| {
                b.resize(rows, 0.0);
                b
            });
            Path::Gemm {
                kernel,
                w: packed,
                bias,
                c: Mutex::new(vec![0.0; rows * batch]),
            }
        };
        LinearKernel {
            isa,
            out_f,
            in_f,
            clamp,
            path,
        }
    }
}

impl OpKernel for LinearKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], batch: usize, pool: &ScratchPool) {
        let (out_f, in_f) = (self.out_f, self.in_f);
        match &self.path {
            Path::Skinny { w, ld, bias } => {
                let g = Gemv {
                    w: w.as_slice(),
                    ldw: *ld,
                    x: src,
                    ldx: in_f,
                    k: in_f,
                    rows: out_f,
                    batch,
                    bias: bias.as_deref(),
                    clamp: self.clamp,
                };
                gemv::gemv(self.isa, &g, dst, out_f);
            }
            Path::Gemm { kernel, w, bias, c } => {
                let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                assert!(c.len() >= w.panels() * kernel.mr * batch);
                assert!(src.len() >= batch * in_f && dst.len() >= batch * out_f);
                let m_panels = w.panels();
                let want = TASKS_PER_THREAD * rayon::current_num_threads();
                let per_task = m_panels.div_ceil(want.clamp(1, m_panels));
                let tasks = m_panels.div_ceil(per_task);
                let (c_out, y_out) = (SharedOut(c.as_mut_ptr()), SharedOut(dst.as_mut_ptr()));
                let xt = Transposed { x: src, in_f };
                (0..tasks).into_par_iter().for_each(|t| {
                    crate::profile::task(|| {
                        let panels = t * per_task..((t + 1) * per_task).min(m_panels);
                        let rows = panels.start * kernel.mr..(panels.end * kernel.mr).min(out_f);
                        let out = Output {
                            c: c_out.ptr(),
                            rsc: batch,
                            bias: bias.as_deref(),
                            residual: std::ptr::null(),
                            clamp: self.clamp,
                        };
                        pool.with(|scratch| {
                            // SAFETY: C holds ⌈out/MR⌉·MR × batch floats (asserted),
                            // this task alone writes its panels' rows; `kernel` is
                            // the one `w` was packed for, its ISA checked at build.
                            unsafe {
                                gemm::gemm(
                                    kernel,
                                    w,
                                    panels,
                                    BOperand::Source(&xt),
                                    0..batch,
                                    out,
                                    &mut scratch.gemm,
                                );
                            }
                        });
                        // SAFETY: rows `rows` of C were just written by this task;
                        // Y[n, rows] (n < batch) are this task's alone, inside
                        // `dst` (asserted).
                        unsafe { transpose_rows(c_out.ptr(), y_out.ptr(), rows, batch, out_f) };
                    })
                });
            }
        }
    }
}

/// `Y[n, o] = C[o, n]` for `o` in `rows`, `n < batch`.
///
/// # Safety
/// `c` addresses `rows.end × batch` and `y` `batch × out_f` floats.
unsafe fn transpose_rows(
    c: *const f32,
    y: *mut f32,
    rows: Range<usize>,
    batch: usize,
    out_f: usize,
) {
    for n in 0..batch {
        for o in rows.clone() {
            // SAFETY: the extents of the contract.
            unsafe { *y.add(n * out_f + o) = *c.add(o * batch + n) };
        }
    }
}

/// `Xᵀ` (`in × batch`) as the GEMM's `B` operand, read from `X` (`batch ×
/// in`, row-major).
struct Transposed<'a> {
    x: &'a [f32],
    in_f: usize,
}

impl BSource for Transposed<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, tmp: &'b mut [f32]) -> &'b [f32] {
        let len = cols.len();
        for (t, n) in tmp[..len].iter_mut().zip(cols) {
            *t = self.x[n * self.in_f + k];
        }
        &tmp[..len]
    }
}

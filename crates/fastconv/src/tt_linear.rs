//! Tensor-Train fully connected layer (survey section 2, Novikov et al.
//! \[26\]) contracted core by core with the crate's GEMM. Contracting core
//! `k` maps the state `S[p, (b, s), t]` to `S'[p, (a, m), t] = Σ_{b,s}
//! G_k[(a, m), (b, s)] · S[p, (b, s), t]` for every `p` (samples × leading
//! input modes) and `t` (trailing output modes): one GEMM per core with the
//! core, reshaped to `(r_{k−1}·m_k) × (n_k·r_k)`, packed once as `A` and
//! the columns `(p, t)` gathered from the state as `B`; the product is then
//! scattered into the next state's layout. Bias and a following ReLU are
//! applied to the output.

use std::ops::Range;
use std::sync::Mutex;

use hasten_core::TtLinear;
use rayon::prelude::*;

use crate::elementwise::Clamp;
use crate::gemm::{self, BOperand, BSource, Kernel, Output, PackedA};
use crate::plan::OpKernel;
use crate::pool::ScratchPool;
use crate::tiling::SharedOut;
use crate::Isa;

/// Tasks per thread to aim for, so uneven tiles still balance.
const TASKS_PER_THREAD: usize = 4;

/// One core in contraction order, with its sizes at the plan's batch.
#[derive(Debug)]
struct Core {
    kernel: Kernel,
    a: PackedA,
    /// `r_{k−1}`, `m_k`, `n_k`, `r_k`.
    dims: [usize; 4],
    /// `batch · Π_{j<k} n_j`.
    outer: usize,
    /// `Π_{j>k} m_j`.
    tail: usize,
}

/// A TT layer with packed cores and its state buffers, for one batch size.
#[derive(Debug)]
pub(crate) struct TtKernel {
    cores: Vec<Core>,
    bias: Option<Vec<f32>>,
    clamp: Clamp,
    out_f: usize,
    /// Two states and the GEMM product.
    buffers: Mutex<[Vec<f32>; 3]>,
}

impl TtKernel {
    /// Packs `op`'s cores for batches of `batch` on `isa` (supported by
    /// this CPU), with a fused activation clamp.
    pub fn new(isa: Isa, op: &TtLinear, batch: usize, clamp: Clamp) -> Self {
        let ns = op.in_modes();
        let mut lead: usize = ns.iter().product();
        let mut tail = 1;
        let (mut state_len, mut product_len) = (batch * lead, 0);
        let mut cores = Vec::new();
        for g in op.cores().iter().rev() {
            let (r0, m, n, r1) = g.dim();
            let g = g.as_standard_layout();
            let gs = g.as_slice().expect("standard layout");
            let kernel = Kernel::for_rows(isa, r0 * m);
            let a = PackedA::new(&kernel, gs, r0 * m, n * r1);
            lead /= n;
            let outer = batch * lead;
            product_len = product_len.max(r0 * m * outer * tail);
            state_len = state_len.max(outer * r0 * m * tail);
            cores.push(Core {
                kernel,
                a,
                dims: [r0, m, n, r1],
                outer,
                tail,
            });
            tail *= m;
        }
        TtKernel {
            cores,
            bias: op.bias().map(|b| b.to_vec()),
            clamp,
            out_f: op.out_features(),
            buffers: Mutex::new([
                vec![0.0; state_len],
                vec![0.0; state_len],
                vec![0.0; product_len],
            ]),
        }
    }
}

impl OpKernel for TtKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], batch: usize, pool: &ScratchPool) {
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let [s0, s1, product] = &mut *buffers;
        let (mut cur, mut next): (&mut Vec<f32>, &mut Vec<f32>) = (s0, s1);
        let last = self.cores.len() - 1;
        for (step, core) in self.cores.iter().enumerate() {
            let [r0, m, n, r1] = core.dims;
            let (rows, cols) = (r0 * m, core.outer * core.tail);
            let state: &[f32] = if step == 0 { src } else { cur };
            assert!(state.len() >= core.outer * n * r1 * core.tail && product.len() >= rows * cols);
            let source = StateSource {
                state,
                n,
                r1,
                tail: core.tail,
            };
            let nc = core.kernel.nc;
            let col_tiles = cols.div_ceil(nc);
            let m_panels = core.a.panels();
            let want = TASKS_PER_THREAD * rayon::current_num_threads();
            let per_tile = m_panels.div_ceil(want.div_ceil(col_tiles).clamp(1, m_panels));
            let row_tiles = m_panels.div_ceil(per_tile);
            let c = SharedOut(product.as_mut_ptr());
            (0..col_tiles * row_tiles).into_par_iter().for_each(|task| {
                crate::profile::task(|| {
                    let (rt, ct) = (task % row_tiles, task / row_tiles);
                    let panels = rt * per_tile..((rt + 1) * per_tile).min(m_panels);
                    let out = Output::plain(c.ptr(), cols);
                    pool.with(|scratch| {
                        // SAFETY: the product buffer holds rows × cols floats
                        // (asserted); tasks own disjoint (column tile, row tile)
                        // blocks; the kernel packed `a` and its ISA was checked
                        // when the plan was built.
                        unsafe {
                            gemm::gemm(
                                &core.kernel,
                                &core.a,
                                panels,
                                BOperand::Source(&source),
                                ct * nc..((ct + 1) * nc).min(cols),
                                out,
                                &mut scratch.gemm,
                            );
                        }
                    });
                })
            });
            // next[p, (a, m), t] = product[(a, m), (p, t)].
            let target: &mut [f32] = if step == last {
                &mut *dst
            } else {
                &mut next[..]
            };
            let (product, tail) = (&product[..rows * cols], core.tail);
            target[..core.outer * rows * tail]
                .par_chunks_mut(rows * tail)
                .enumerate()
                .for_each(|(p, block)| {
                    crate::profile::task(|| {
                        for (row, run) in block.chunks_exact_mut(tail).enumerate() {
                            run.copy_from_slice(&product[row * cols + p * tail..][..tail]);
                        }
                    })
                });
            std::mem::swap(&mut cur, &mut next);
        }
        let out_f = self.out_f;
        dst[..batch * out_f].par_chunks_mut(out_f).for_each(|y| {
            crate::profile::task(|| {
                if let Some(b) = &self.bias {
                    y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
                if !self.clamp.is_none() {
                    y.iter_mut().for_each(|v| *v = self.clamp.apply(*v));
                }
            })
        });
    }
}

/// The state `S[p, (b, s), t]` as the GEMM's `B`: row `(b, s)`, column
/// `(p, t)`.
struct StateSource<'a> {
    state: &'a [f32],
    n: usize,
    r1: usize,
    tail: usize,
}

impl BSource for StateSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, tmp: &'b mut [f32]) -> &'b [f32] {
        let (b, s) = (k / self.r1, k % self.r1);
        let len = cols.len();
        let mut i = 0;
        let mut col = cols.start;
        while col < cols.end {
            let (p, t) = (col / self.tail, col % self.tail);
            let run = (self.tail - t).min(cols.end - col);
            let from = ((p * self.n + b) * self.r1 + s) * self.tail + t;
            tmp[i..i + run].copy_from_slice(&self.state[from..from + run]);
            i += run;
            col += run;
        }
        &tmp[..len]
    }
}

//! Packing: `A` into `MR`-row panels per `KC` block (once, when a plan is
//! built) and a `KC × NC` block of `B` into `NR`-column panels (per task,
//! straight from the source, zero-padded at the edges).

use std::ops::Range;

use super::Kernel;
use crate::aligned::AlignedVec;

/// A row-major `M × K` matrix packed for one microkernel: for every `KC`
/// block, `⌈M/MR⌉` panels of `kc × MR` values, `k` outer, `MR` rows inner.
#[derive(Debug, Clone, Default)]
pub(crate) struct PackedA {
    data: AlignedVec,
    m: usize,
    k: usize,
    mr: usize,
    kc: usize,
}

impl PackedA {
    /// Packs the `m × k` matrix `a` (row stride `k`) for `kernel`.
    pub fn new(kernel: &Kernel, a: &[f32], m: usize, k: usize) -> Self {
        let mut packed = PackedA::default();
        packed.repack(kernel, a, m, k);
        packed
    }

    /// Packs `a` as [`PackedA::new`] does into this buffer, allocating only
    /// when it is larger than any matrix packed into it before.
    pub fn repack(&mut self, kernel: &Kernel, a: &[f32], m: usize, k: usize) {
        let (mr, kc) = (kernel.mr, kernel.kc);
        let m_pad = m.div_ceil(mr) * mr;
        self.data.resize(m_pad * k);
        let d = self.data.as_mut_slice();
        let mut k0 = 0;
        while k0 < k {
            let len = kc.min(k - k0);
            for ip in 0..m_pad / mr {
                let panel = &mut d[k0 * m_pad + ip * mr * len..][..mr * len];
                for kk in 0..len {
                    for i in 0..mr {
                        let row = ip * mr + i;
                        panel[kk * mr + i] = if row < m { a[row * k + k0 + kk] } else { 0.0 };
                    }
                }
            }
            k0 += len;
        }
        (self.m, self.k, self.mr, self.kc) = (m, k, mr, kc);
    }

    /// Rows `M`.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Depth `K`.
    pub fn depth(&self) -> usize {
        self.k
    }

    /// Number of `MR`-row panels.
    pub fn panels(&self) -> usize {
        self.m.div_ceil(self.mr)
    }

    /// The panel `ip` of the block starting at depth `k0` (a multiple of `KC`).
    pub fn panel(&self, k0: usize, ip: usize) -> *const f32 {
        debug_assert_eq!(k0 % self.kc, 0);
        let m_pad = self.panels() * self.mr;
        let len = self.kc.min(self.k - k0);
        self.data.as_slice()[k0 * m_pad + ip * self.mr * len..].as_ptr()
    }
}

/// A `K × N` matrix that can produce any row segment on demand.
pub(crate) trait BSource: Sync {
    /// `B[k, cols]`: either a slice of the source itself or `tmp`, filled.
    fn row<'a>(&'a self, k: usize, cols: Range<usize>, tmp: &'a mut [f32]) -> &'a [f32];
}

/// A `K × N` matrix stored row-major in `b`: every row segment is a slice
/// of it.
pub(crate) struct RowMajor<'a> {
    /// The `K·N` values.
    pub(crate) b: &'a [f32],
    /// Columns per row.
    pub(crate) n: usize,
}

impl BSource for RowMajor<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, _tmp: &'b mut [f32]) -> &'b [f32] {
        &self.b[k * self.n..][cols]
    }
}

/// Packs rows `ks` × columns `cols` of `b` into `nr`-column panels
/// (`dst[jp·kc·nr + kk·nr + q]`), zero-padding the last panel.
pub(crate) fn pack_b(
    b: &impl BSource,
    ks: Range<usize>,
    cols: Range<usize>,
    nr: usize,
    row_tmp: &mut Vec<f32>,
    dst: &mut [f32],
) {
    let kc = ks.len();
    let nc = cols.len();
    row_tmp.resize(nc, 0.0);
    for (kk, k) in ks.enumerate() {
        let row = b.row(k, cols.clone(), row_tmp);
        let dst = &mut dst[kk * nr..];
        match nr {
            32 => spread_row::<32>(row, kc, dst),
            16 => spread_row::<16>(row, kc, dst),
            8 => spread_row::<8>(row, kc, dst),
            _ => {
                for (jp, chunk) in row.chunks(nr).enumerate() {
                    let panel = &mut dst[jp * kc * nr..][..nr];
                    panel[..chunk.len()].copy_from_slice(chunk);
                    panel[chunk.len()..].fill(0.0);
                }
            }
        }
    }
}

/// Copies one row of `B` into its place in every `NR`-column panel
/// (`dst[jp·kc·NR..][..NR]`), zero-padding the last: whole panels are
/// fixed-size copies the compiler inlines as a few vector moves, where a
/// copy of run-time length calls `memmove` per panel (a tenth of ResNet-8's
/// time at batch 1).
fn spread_row<const NR: usize>(row: &[f32], kc: usize, dst: &mut [f32]) {
    let whole = row.chunks_exact(NR);
    let tail = whole.remainder();
    let n = whole.len();
    for (jp, chunk) in whole.enumerate() {
        let panel: &mut [f32; NR] = (&mut dst[jp * kc * NR..][..NR])
            .try_into()
            .expect("NR floats");
        *panel = chunk.try_into().expect("NR floats");
    }
    if !tail.is_empty() {
        let panel = &mut dst[n * kc * NR..][..NR];
        panel[..tail.len()].copy_from_slice(tail);
        panel[tail.len()..].fill(0.0);
    }
}

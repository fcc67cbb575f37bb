//! Dense and grouped convolution by GEMM: per sample and group,
//! `out[T_g, OH·OW] = W_g[T_g, C_g·kh·kw] · im2col(U_g)` (equation (1) of the
//! survey lowered to a matrix product). The filters are packed once; the
//! image is packed lazily per task ([`super::im2col`], or the planes
//! themselves for `1×1` layers, [`super::direct_1x1`]); bias and ReLU are
//! fused into the microkernel's store. Tasks cover batch × group × column
//! tiles × row tiles, so batch 1 keeps every core busy.

use rayon::prelude::*;

use super::direct_1x1::PlaneSource;
use super::im2col::ImageSource;
use super::{ChannelView, ConvGeometry};
use std::sync::Mutex;

use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::gemm::{self, BOperand, BSource, Kernel, Output, PackedA, Scratch};
use crate::pool::ScratchPool;
use crate::tiling::SharedOut;

/// Tasks per thread to aim for, so uneven tiles still balance.
const TASKS_PER_THREAD: usize = 4;

/// Largest shared packed-`B` workspace (floats, 64 MiB): beyond it, tasks
/// that split the rows of one column tile each pack their own copy.
const MAX_SHARED_B: usize = 16 << 20;

/// The output columns (`OH·OW` positions) of one sample and group cut into
/// column tiles of whole `nr`-column panels, at most `nc` columns each: as
/// few tiles as fit, rounded up to a multiple of the thread count when more
/// than one, with the panels dealt out evenly (tiles differ by at most one
/// panel) — so that, e.g., 56² = 98 panels of 32 become 14 tiles of 7 panels
/// on 2 threads instead of 12 tiles of 8 and one of 2 (13 tasks: one thread
/// would run 7 while the other runs 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ColumnSplit {
    /// Columns in all.
    area: usize,
    /// Columns per panel.
    nr: usize,
    /// Panels in all, `⌈area / nr⌉`.
    panels: usize,
    /// Column tiles.
    tiles: usize,
}

impl ColumnSplit {
    /// Splits `area` columns for `threads` threads into tiles of at most `nc`
    /// columns (`nc` a positive multiple of `nr`).
    fn new(area: usize, nr: usize, nc: usize, threads: usize) -> Self {
        let panels = area.div_ceil(nr);
        let fewest = area.div_ceil(nc);
        let tiles = if fewest > 1 {
            fewest.next_multiple_of(threads.max(1)).min(panels)
        } else {
            fewest
        };
        ColumnSplit {
            area,
            nr,
            panels,
            tiles,
        }
    }

    /// The columns of tile `t`.
    fn cols(&self, t: usize) -> std::ops::Range<usize> {
        let first = |t: usize| t * self.panels / self.tiles * self.nr;
        first(t).min(self.area)..first(t + 1).min(self.area)
    }
}

/// A convolution with pre-packed filters, ready to run.
#[derive(Debug)]
pub(crate) struct GemmConv {
    geo: ConvGeometry,
    view: ChannelView,
    kernel: Kernel,
    filters: Vec<PackedA>,
    bias: Option<Vec<Vec<f32>>>,
    clamp: Clamp,
    /// Packed `B` shared by the tasks of one column tile (explicit, packed
    /// im2col), used when the rows of a tile are split between tasks.
    shared_b: Mutex<AlignedVec>,
}

/// The per-group GEMM operands of a grouped convolution (equation (1) of the
/// survey as `W_g · im2col(U_g)`): each group's `T_g × C_g·kh·kw` filter rows
/// of the OIHW `weights` packed once for `kernel`, and each group's slice of
/// `bias` zero-padded to the packed row count (whole `mr` panels), so the
/// fused store can add it panel by panel.
pub(super) fn pack_groups(
    kernel: &Kernel,
    geo: &ConvGeometry,
    weights: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<PackedA>, Option<Vec<Vec<f32>>>) {
    let depth = geo.depth();
    let filters: Vec<PackedA> = (0..geo.groups)
        .map(|g| {
            PackedA::new(
                kernel,
                &weights[g * geo.t_g * depth..][..geo.t_g * depth],
                geo.t_g,
                depth,
            )
        })
        .collect();
    let padded = filters[0].panels() * kernel.mr;
    let bias = bias.map(|b| {
        (0..geo.groups)
            .map(|g| {
                let mut v = b[g * geo.t_g..(g + 1) * geo.t_g].to_vec();
                v.resize(padded, 0.0);
                v
            })
            .collect()
    });
    (filters, bias)
}

impl GemmConv {
    /// Packs the OIHW `weights` (`T × C_g·kh·kw` row-major) per group.
    pub fn new(
        kernel: Kernel,
        geo: ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        clamp: Clamp,
        view: ChannelView,
    ) -> Self {
        let (filters, bias) = pack_groups(&kernel, &geo, weights, bias);
        GemmConv {
            geo,
            view,
            kernel,
            filters,
            bias,
            clamp,
            shared_b: Mutex::new(AlignedVec::default()),
        }
    }

    /// Runs on `batch` samples: `input` is `batch × C × H × W` row-major;
    /// sample `n`'s `T × OH × OW` output starts at `output[n · out.stride]`
    /// (`out.stride ≥ T·OH·OW`, so a sample can be a channel slice of a
    /// wider tensor), plus `out.residual` (`batch × T × OH × OW`) when given.
    pub fn run(
        &self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        pool: &ScratchPool,
        out: super::ConvOut<'_>,
    ) {
        let geo = &self.geo;
        let area = geo.out_area();
        let in_len = geo.in_channels() * geo.in_area();
        let t_all = geo.out_channels();
        let out_len = t_all * area;
        assert!(batch >= 1 && input.len() >= batch * in_len && out.stride >= out_len);
        assert!(output.len() >= (batch - 1) * out.stride + out_len);
        assert!(out.residual.is_none_or(|r| r.len() >= batch * out_len));
        let residual = out.residual.map(|r| SharedOut(r.as_ptr().cast_mut()));
        let out_stride = out.stride;
        let threads = rayon::current_num_threads();
        let cols_split = ColumnSplit::new(area, self.kernel.nr, self.kernel.nc, threads);
        let col_tiles = cols_split.tiles;
        let m_panels = self.filters[0].panels();
        let base = batch * geo.groups * col_tiles;
        let want = TASKS_PER_THREAD * threads;
        let row_tiles = want.div_ceil(base).clamp(1, m_panels);
        let panels_per_tile = m_panels.div_ceil(row_tiles);
        let row_tiles = m_panels.div_ceil(panels_per_tile);
        let plain = PlaneSource::applies(geo, &self.view);
        let depth = geo.depth();
        let nr = self.kernel.nr;
        let tile_len = depth * self.kernel.nc;
        // Pack each column tile once (explicit im2col, packed) when several
        // tasks would otherwise pack the same tile for their share of rows.
        let shared = row_tiles > 1 && base * tile_len <= MAX_SHARED_B;
        let mut shared_b = self.shared_b.lock().unwrap_or_else(|e| e.into_inner());
        if shared {
            shared_b.resize(base * tile_len);
            let kc = self.kernel.kc;
            let k_blocks = depth.div_ceil(kc);
            let packed = SharedOut(shared_b.as_mut_slice().as_mut_ptr());
            (0..base * k_blocks).into_par_iter().for_each(|job| {
                crate::profile::task(|| {
                    let (tile, kb) = (job / k_blocks, job % k_blocks);
                    let (n, g, cols) = self.tile_of(tile, &cols_split);
                    let ks = kb * kc..((kb + 1) * kc).min(depth);
                    let n_panels = cols.len().div_ceil(nr);
                    let sample = &input[n * in_len..][..in_len];
                    // SAFETY: each job writes the disjoint range of K block kb of
                    // column tile `tile` inside the buffer sized base·tile_len.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            packed.ptr().add(tile * tile_len + ks.start * n_panels * nr),
                            ks.len() * n_panels * nr,
                        )
                    };
                    pool.with(|scratch| {
                        if plain {
                            let src = PlaneSource {
                                geo,
                                view: &self.view,
                                sample,
                                group: g,
                            };
                            gemm::pack::pack_b(&src, ks, cols, nr, &mut scratch.gemm.row, dst);
                        } else {
                            let src = ImageSource {
                                geo,
                                view: &self.view,
                                sample,
                                group: g,
                            };
                            gemm::pack::pack_b(&src, ks, cols, nr, &mut scratch.gemm.row, dst);
                        }
                    });
                })
            });
        }
        let shared_b = &*shared_b;
        let dst_ptr = SharedOut(output.as_mut_ptr());
        (0..base * row_tiles).into_par_iter().for_each(|task| {
            crate::profile::task(|| {
                let rt = task % row_tiles;
                let tile = task / row_tiles;
                let (n, g, cols) = self.tile_of(tile, &cols_split);
                let panels = rt * panels_per_tile..((rt + 1) * panels_per_tile).min(m_panels);
                let sample = &input[n * in_len..][..in_len];
                let dst = Output {
                    // SAFETY: the offset is the first element of the group's
                    // output rows of sample n, inside `output` (checked above).
                    c: unsafe { dst_ptr.ptr().add(n * out_stride + g * geo.t_g * area) },
                    rsc: area,
                    bias: self.bias.as_ref().map(|b| b[g].as_slice()),
                    // SAFETY: the same rows of the contiguous residual (checked
                    // above); only read.
                    residual: residual.map_or(std::ptr::null(), |r| unsafe {
                        r.ptr().add((n * t_all + g * geo.t_g) * area).cast_const()
                    }),
                    clamp: self.clamp,
                };
                pool.with(|scratch| {
                    if shared {
                        let packed = &shared_b.as_slice()[tile * tile_len..][..tile_len];
                        self.tile_gemm::<PlaneSource<'_>>(
                            g,
                            panels,
                            BOperand::Packed(packed),
                            cols,
                            dst,
                            &mut scratch.gemm,
                        );
                    } else if plain {
                        let src = PlaneSource {
                            geo,
                            view: &self.view,
                            sample,
                            group: g,
                        };
                        self.tile_gemm(
                            g,
                            panels,
                            BOperand::Source(&src),
                            cols,
                            dst,
                            &mut scratch.gemm,
                        );
                    } else {
                        let src = ImageSource {
                            geo,
                            view: &self.view,
                            sample,
                            group: g,
                        };
                        self.tile_gemm(
                            g,
                            panels,
                            BOperand::Source(&src),
                            cols,
                            dst,
                            &mut scratch.gemm,
                        );
                    }
                });
            })
        });
    }

    /// Sample, group and output columns of column tile `tile`.
    fn tile_of(&self, tile: usize, split: &ColumnSplit) -> (usize, usize, std::ops::Range<usize>) {
        let ct = tile % split.tiles;
        let g = (tile / split.tiles) % self.geo.groups;
        let n = tile / (split.tiles * self.geo.groups);
        (n, g, split.cols(ct))
    }

    /// One task's GEMM: rows `panels` of group `g` × columns `cols`.
    fn tile_gemm<S: BSource>(
        &self,
        g: usize,
        panels: std::ops::Range<usize>,
        b: BOperand<'_, S>,
        cols: std::ops::Range<usize>,
        dst: Output<'_>,
        scratch: &mut Scratch,
    ) {
        // SAFETY: `dst` is this sample's t_g × area block of group g (row
        // stride `area`); tasks own pairwise-disjoint (n, g, column tile, row
        // tile) blocks; the kernel is the one that packed the filters and its
        // ISA was checked when the plan was built.
        unsafe {
            gemm::gemm(
                &self.kernel,
                &self.filters[g],
                panels,
                b,
                cols,
                dst,
                scratch,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnSplit;

    #[test]
    fn column_tiles_cover_every_column_once_in_balanced_whole_panels() {
        for (area, nr, nc) in [
            (3136, 32, 256),
            (12544, 32, 256),
            (49, 32, 256),
            (784, 16, 256),
            (1, 16, 256),
            (257, 16, 256),
            (300, 6, 258),
        ] {
            for threads in 1..=5 {
                let s = ColumnSplit::new(area, nr, nc, threads);
                let min_tiles = area.div_ceil(nc);
                assert!(s.tiles >= min_tiles);
                if min_tiles > 1 && s.tiles < s.panels {
                    assert_eq!(s.tiles % threads, 0, "{area} {threads}");
                }
                let mut next = 0;
                let widths: Vec<usize> = (0..s.tiles)
                    .map(|t| {
                        let c = s.cols(t);
                        assert_eq!(c.start, next, "tiles are contiguous");
                        assert_eq!(c.start % nr, 0, "tiles start on a panel");
                        assert!(c.len() <= nc && !c.is_empty());
                        next = c.end;
                        c.len().div_ceil(nr)
                    })
                    .collect();
                assert_eq!(next, area, "tiles cover the columns");
                let (lo, hi) = (widths.iter().min().unwrap(), widths.iter().max().unwrap());
                assert!(hi - lo <= 1, "{area} {nr} {threads}: {widths:?}");
            }
        }
        let s = ColumnSplit::new(3136, 32, 256, 2);
        assert_eq!((s.tiles, s.cols(0)), (14, 0..224));
    }
}

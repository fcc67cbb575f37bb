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
use super::padded_rows::{self, PaddedInput, PaddedSource};
use super::{ChannelView, ConvGeometry};
use std::sync::Mutex;

use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::gemm::{self, BOperand, BSource, Kernel, Output, PackedA};
use crate::pool::ScratchPool;
use crate::shares;
use crate::tiling::SharedOut;
use std::ops::Range;

/// Column tiles per thread from which each task is one whole tile.
const TILES_PER_THREAD: usize = 4;

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

/// How a GEMM convolution's work is cut into tasks for `threads` threads.
/// The work is the `MR × NR` output tiles of every (sample, group) block in
/// the order (block, column tile, row panel, column panel). With many column
/// tiles each task is one whole tile, packing its own `B` lazily (tiles
/// differ by at most one panel); with few (batch 1, small outputs, e.g. the
/// 7×7 = 7 panels × 11 row panels of ResNet-18's last stage) there is one
/// task per thread, each an equal [`shares::share`] of the output tiles
/// (within one `MR × NR` tile of the others), and `B` is packed beforehand
/// in equal shares of `KC × NR` panels. One share per thread, not more:
/// small outputs make these layers weight-bound, and every further cut
/// inside a row panel streams that panel of filters once more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GemmSplit {
    /// Column tiles of one block.
    cols: ColumnSplit,
    /// (sample, group) blocks.
    blocks: usize,
    /// Row panels of the filters.
    m_panels: usize,
    /// Whether each task is one whole column tile.
    whole_tiles: bool,
    /// Tasks.
    tasks: usize,
}

impl GemmSplit {
    /// The split of `blocks` blocks of `m_panels` row panels × the column
    /// tiles `cols` for `threads` threads.
    fn new(blocks: usize, m_panels: usize, cols: ColumnSplit, threads: usize) -> Self {
        let threads = threads.max(1);
        let whole_tiles = blocks * cols.tiles >= TILES_PER_THREAD * threads;
        let tasks = if whole_tiles {
            blocks * cols.tiles
        } else {
            threads.min(m_panels * blocks * cols.panels)
        };
        GemmSplit {
            cols,
            blocks,
            m_panels,
            whole_tiles,
            tasks,
        }
    }

    /// Column tiles of all blocks.
    fn tiles(&self) -> usize {
        self.blocks * self.cols.tiles
    }

    /// Column panels of all blocks.
    fn panels(&self) -> usize {
        self.blocks * self.cols.panels
    }

    /// The first column panel (of all blocks) of tile `tile`.
    fn panel_start(&self, tile: usize) -> usize {
        let ct = self.cols.tiles;
        tile / ct * self.cols.panels + tile % ct * self.cols.panels / ct
    }

    /// The units of tile `tile` in a grid of `rows` rows per column panel.
    fn tile_units(&self, rows: usize, tile: usize) -> Range<usize> {
        rows * self.panel_start(tile)..rows * self.panel_start(tile + 1)
    }

    /// Calls `f(tile, rows, panels)` for every rectangle of units `range`
    /// of the grid of `rows` rows per column panel, ordered (tile, row,
    /// panel): `panels` counted from the tile's first.
    fn pieces(
        &self,
        rows: usize,
        range: Range<usize>,
        mut f: impl FnMut(usize, Range<usize>, Range<usize>),
    ) {
        // The last tile starting at or before the range.
        let (mut lo, mut hi) = (0, self.tiles());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if rows * self.panel_start(mid) <= range.start {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        for tile in lo..self.tiles() {
            let units = self.tile_units(rows, tile);
            if units.start >= range.end {
                break;
            }
            let local = range.start.max(units.start) - units.start
                ..range.end.min(units.end).saturating_sub(units.start);
            for (r, p) in shares::rectangles(local, units.len() / rows) {
                f(tile, r, p);
            }
        }
    }

    /// The columns of panels `ps` of a tile of columns `cols`.
    fn sub_cols(&self, cols: &Range<usize>, ps: &Range<usize>) -> Range<usize> {
        let nr = self.cols.nr;
        cols.start + ps.start * nr..(cols.start + ps.end * nr).min(cols.end)
    }
}

/// The `B` rows of one sample and group: its channel planes (`1×1`), slices
/// of its zero-padded copy ([`super::padded_rows`]) or their lazy im2col.
enum ConvSource<'a> {
    /// The planes themselves.
    Plane(PlaneSource<'a>),
    /// Rows of the zero-padded planes over the wide output positions.
    Padded(PaddedSource<'a>),
    /// Lazy im2col.
    Image(ImageSource<'a>),
}

impl<'a> ConvSource<'a> {
    /// The source of group `group` of `sample` read through `view`; a
    /// zero-padded sample whose rows start at `padded_starts` when given.
    fn new(
        geo: &'a ConvGeometry,
        view: &'a ChannelView,
        sample: &'a [f32],
        group: usize,
        padded_starts: Option<&'a [usize]>,
    ) -> Self {
        if let Some(starts) = padded_starts {
            ConvSource::Padded(PaddedSource {
                sample,
                starts,
                group_start: padded_rows::group_start(geo, group),
            })
        } else if PlaneSource::applies(geo, view) {
            ConvSource::Plane(PlaneSource {
                geo,
                view,
                sample,
                group,
            })
        } else {
            ConvSource::Image(ImageSource {
                geo,
                view,
                sample,
                group,
            })
        }
    }
}

impl BSource for ConvSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, tmp: &'b mut [f32]) -> &'b [f32] {
        match self {
            ConvSource::Plane(s) => s.row(k, cols, tmp),
            ConvSource::Padded(s) => s.row(k, cols, tmp),
            ConvSource::Image(s) => s.row(k, cols, tmp),
        }
    }
}

/// Where [`GemmConv::gemm_all`] writes: sample `n`'s `T × columns` rows
/// at `c + n · stride`, with the residual and clamp of its fused store.
struct Dst<'a> {
    c: SharedOut,
    stride: usize,
    residual: Option<&'a [f32]>,
    clamp: Clamp,
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
    /// The zero-padded input and the wide output of a convolution on padded
    /// rows ([`super::padded_rows`]); `None` for the others.
    padded: Option<Mutex<(PaddedInput, AlignedVec)>>,
    /// Where each row of `B` starts in a padded sample
    /// ([`padded_rows::row_starts`]); empty off padded rows.
    padded_starts: Vec<usize>,
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
        let padded = padded_rows::applies(&geo, &view).then(Mutex::default);
        let padded_starts = if padded.is_some() {
            padded_rows::row_starts(&geo)
        } else {
            Vec::new()
        };
        GemmConv {
            geo,
            view,
            kernel,
            filters,
            bias,
            clamp,
            shared_b: Mutex::new(AlignedVec::default()),
            padded,
            padded_starts,
        }
    }

    /// The GEMM's columns per sample and group for a convolution of `geo`
    /// read through `view`: `OH × Wp` on padded rows, else `OH × OW` — the
    /// `N` its kernel is chosen for.
    pub fn columns(geo: &ConvGeometry, view: &ChannelView) -> usize {
        if padded_rows::applies(geo, view) {
            padded_rows::columns(geo)
        } else {
            geo.out_area()
        }
    }

    /// Whether it runs on padded rows (named in plan descriptions).
    pub fn on_padded_rows(&self) -> bool {
        self.padded.is_some()
    }

    /// Runs on `batch` samples as [`GemmConv::run`] says: on padded rows
    /// (the input copied into its padded planes, the GEMM written to the
    /// wide output, then copied out with the residual and clamp; straight
    /// into `output` where the wide rows are the output rows), else
    /// straight into `output`.
    pub fn run(
        &self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        pool: &ScratchPool,
        out: super::ConvOut<'_>,
    ) {
        let geo = &self.geo;
        let out_len = geo.out_channels() * geo.out_area();
        assert!(batch >= 1 && input.len() >= batch * geo.in_channels() * geo.in_area());
        assert!(out.stride >= out_len && output.len() >= (batch - 1) * out.stride + out_len);
        assert!(out.residual.is_none_or(|r| r.len() >= batch * out_len));
        let Some(padded) = &self.padded else {
            let dst = Dst {
                c: SharedOut(output.as_mut_ptr()),
                stride: out.stride,
                residual: out.residual,
                clamp: self.clamp,
            };
            return self.gemm_all(input, geo.in_channels() * geo.in_area(), dst, batch, pool);
        };
        let mut guard = padded.lock().unwrap_or_else(|e| e.into_inner());
        let (pad, wide) = &mut *guard;
        let src = pad.fill(geo, input, batch);
        if padded_rows::columns(geo) == geo.out_area() {
            // No extra columns (e.g. a 2×2/2 kernel, no padding): the wide
            // rows are the output's, written with the fused epilogue.
            let dst = Dst {
                c: SharedOut(output.as_mut_ptr()),
                stride: out.stride,
                residual: out.residual,
                clamp: self.clamp,
            };
            return self.gemm_all(src, padded_rows::sample_len(geo), dst, batch, pool);
        }
        let wide_len = geo.out_channels() * padded_rows::columns(geo);
        wide.resize(batch * wide_len);
        let dst = Dst {
            c: SharedOut(wide.as_mut_slice().as_mut_ptr()),
            stride: wide_len,
            residual: None,
            clamp: if out.residual.is_some() {
                Clamp::NONE
            } else {
                self.clamp
            },
        };
        self.gemm_all(src, padded_rows::sample_len(geo), dst, batch, pool);
        let residual = out.residual.map(|r| (r, self.clamp));
        padded_rows::scatter(geo, wide.as_slice(), output, out.stride, residual, batch);
    }

    /// The GEMM of every sample and group: `input` holds `batch` samples
    /// `in_len` floats apart (images, or padded copies on padded rows);
    /// sample `n`'s `T × columns` result goes to `dst.c + n · dst.stride`.
    fn gemm_all(
        &self,
        input: &[f32],
        in_len: usize,
        dst: Dst<'_>,
        batch: usize,
        pool: &ScratchPool,
    ) {
        let geo = &self.geo;
        let padded_starts = self
            .padded
            .is_some()
            .then_some(self.padded_starts.as_slice());
        let area = Self::columns(geo, &self.view);
        let t_all = geo.out_channels();
        let residual = dst.residual.map(|r| SharedOut(r.as_ptr().cast_mut()));
        let out_stride = dst.stride;
        let threads = rayon::current_num_threads();
        let nr = self.kernel.nr;
        let split = GemmSplit::new(
            batch * geo.groups,
            self.filters[0].panels(),
            ColumnSplit::new(area, nr, self.kernel.nc, threads),
            threads,
        );
        let (depth, kc) = (geo.depth(), self.kernel.kc);
        let k_blocks = depth.div_ceil(kc);
        let tile_len = depth * self.kernel.nc;
        // Pack every column tile once (explicit im2col, packed) when tasks
        // share tiles, so no task packs columns another packs too.
        let shared = !split.whole_tiles && split.tiles() * tile_len <= MAX_SHARED_B;
        let source = |tile: usize| {
            let (n, g, cols) = self.tile_of(tile, &split.cols);
            let sample = &input[n * in_len..][..in_len];
            let src = ConvSource::new(geo, &self.view, sample, g, padded_starts);
            (n, g, cols, src)
        };
        let mut shared_b = self.shared_b.lock().unwrap_or_else(|e| e.into_inner());
        if shared {
            shared_b.resize(split.tiles() * tile_len);
            let packed = SharedOut(shared_b.as_mut_slice().as_mut_ptr());
            let units = k_blocks * split.panels();
            let jobs = split.tasks;
            (0..jobs).into_par_iter().for_each(|job| {
                crate::profile::task(|| {
                    split.pieces(
                        k_blocks,
                        shares::share(units, jobs, job),
                        |tile, kbs, ps| {
                            let (_, _, cols, src) = source(tile);
                            let width = cols.len().div_ceil(nr);
                            let cols = split.sub_cols(&cols, &ps);
                            for kb in kbs {
                                let ks = kb * kc..((kb + 1) * kc).min(depth);
                                let at =
                                    tile * tile_len + (ks.start * width + ps.start * ks.len()) * nr;
                                // SAFETY: panels `ps` of K block kb of column tile
                                // `tile`, inside the buffer of tiles·tile_len floats;
                                // the shares' pieces are pairwise disjoint.
                                let dst = unsafe {
                                    std::slice::from_raw_parts_mut(
                                        packed.ptr().add(at),
                                        ps.len() * ks.len() * nr,
                                    )
                                };
                                pool.with(|scratch| {
                                    gemm::pack::pack_b(
                                        &src,
                                        ks,
                                        cols.clone(),
                                        nr,
                                        &mut scratch.gemm.row,
                                        dst,
                                    )
                                });
                            }
                        },
                    );
                })
            });
        }
        let shared_b = &*shared_b;
        let dst_ptr = dst.c;
        let units = split.m_panels * split.panels();
        (0..split.tasks).into_par_iter().for_each(|task| {
            crate::profile::task(|| {
                let range = if split.whole_tiles {
                    split.tile_units(split.m_panels, task)
                } else {
                    shares::share(units, split.tasks, task)
                };
                split.pieces(split.m_panels, range, |tile, panels, ps| {
                    let (n, g, cols, src) = source(tile);
                    let width = cols.len().div_ceil(nr);
                    let sub = split.sub_cols(&cols, &ps);
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
                        clamp: dst.clamp,
                    };
                    let b = if shared {
                        BOperand::Packed {
                            tile: &shared_b.as_slice()[tile * tile_len..][..tile_len],
                            width,
                            first: ps.start,
                        }
                    } else {
                        BOperand::Source(&src)
                    };
                    pool.with(|scratch| {
                        // SAFETY: `dst` is this sample's t_g × area block of
                        // group g (row stride `area`); the shares' pieces are
                        // pairwise-disjoint (n, g, rows, columns) blocks; the
                        // kernel is the one that packed the filters and its ISA
                        // was checked when the plan was built.
                        unsafe {
                            gemm::gemm(
                                &self.kernel,
                                &self.filters[g],
                                panels,
                                b,
                                sub,
                                dst,
                                &mut scratch.gemm,
                            )
                        }
                    });
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
}

#[cfg(test)]
mod tests {
    use super::{ColumnSplit, GemmSplit};
    use crate::shares;

    /// `(T, OH·OW)` of the GEMM convolutions of ResNet-18 (any Winograd
    /// layer run by GEMM) and MobileNet-v1 at 224², batch 1.
    const SHAPES: [(usize, usize); 14] = [
        (64, 12544),
        (64, 3136),
        (128, 784),
        (256, 196),
        (512, 49),
        (32, 12544),
        (128, 3136),
        (256, 784),
        (512, 196),
        (1024, 49),
        (1000, 1),
        (10, 7),
        (96, 49),
        (144, 3136),
    ];

    #[test]
    fn gemm_split_covers_every_output_tile_once_in_balanced_shares() {
        // (MR, NR) of every microkernel: AVX-512 usual, narrow and the two
        // tall, AVX2 usual and tall, portable.
        for (mr, nr) in [
            (12, 32),
            (8, 32),
            (48, 8),
            (48, 7),
            (6, 16),
            (16, 6),
            (4, 8),
        ] {
            let nc = 256usize.div_ceil(nr) * nr;
            for (t, area) in SHAPES {
                for (blocks, threads) in [(1, 2), (1, 3), (1, 4), (2, 2), (8, 2)] {
                    let m_panels = t.div_ceil(mr);
                    let cols = ColumnSplit::new(area, nr, nc, threads);
                    let split = GemmSplit::new(blocks, m_panels, cols, threads);
                    let what =
                        format!("{t}×{area} MR {mr} NR {nr}, {blocks} blocks, {threads} threads");
                    let units = m_panels * split.panels();
                    // Every MR × NR output tile of every block once.
                    let mut seen = vec![0u8; units];
                    let mut sizes = Vec::new();
                    let mut cut_rows = 0;
                    for task in 0..split.tasks {
                        let range = if split.whole_tiles {
                            split.tile_units(m_panels, task)
                        } else {
                            shares::share(units, split.tasks, task)
                        };
                        let mut size = 0;
                        split.pieces(m_panels, range, |tile, rows, ps| {
                            let c = cols.cols(tile % cols.tiles);
                            let width = c.len().div_ceil(nr);
                            assert!(ps.end <= width && rows.end <= m_panels, "{what}");
                            let sub = split.sub_cols(&c, &ps);
                            cut_rows += usize::from(ps.len() < width);
                            assert!(sub.start >= c.start && sub.end <= c.end && !sub.is_empty());
                            for r in rows {
                                for p in ps.clone() {
                                    let block = tile / cols.tiles;
                                    let panel = block * cols.panels + (c.start / nr) + p;
                                    seen[panel * m_panels + r] += 1;
                                    size += 1;
                                }
                            }
                        });
                        sizes.push(size);
                    }
                    assert!(seen.iter().all(|&n| n == 1), "{what}: {seen:?}");
                    // Tasks dealt out in turn: each thread's share of output
                    // tiles within one column tile (whole tiles) or one MR × NR
                    // tile (shares, one per thread) of every other thread's.
                    let mut per_thread = vec![0; threads];
                    for (k, s) in sizes.iter().enumerate() {
                        per_thread[k % threads] += s;
                    }
                    let (lo, hi) = (
                        per_thread.iter().min().unwrap(),
                        per_thread.iter().max().unwrap(),
                    );
                    let (lo_t, hi_t) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    if split.whole_tiles {
                        assert_eq!(split.tasks, blocks * cols.tiles, "{what}");
                        assert!(hi_t - lo_t <= m_panels, "{what}: {sizes:?}");
                        assert!(hi - lo <= m_panels * nc / nr, "{what}: {per_thread:?}");
                    } else {
                        assert!(hi_t - lo_t <= 1, "{what}: {sizes:?}");
                        assert!(hi - lo <= 1, "{what}: {per_thread:?}");
                        assert_eq!(split.tasks, threads.min(units), "{what}");
                        // Only the rows at the shares' boundaries are cut:
                        // every other row panel of filters is streamed once.
                        assert!(cut_rows <= 2 * (split.tasks - 1), "{what}: {cut_rows}");
                    }
                    assert!(
                        split.tasks >= threads.min(units),
                        "{what}: {} tasks",
                        split.tasks
                    );
                }
            }
        }
        // ResNet-18's last stage on the tall tile: 11 row panels × 7 column
        // panels = 77 tiles, 2 tasks of 38 and 39 (was 6 tasks, five of 14 and one of 7).
        let cols = ColumnSplit::new(49, 8, 256, 2);
        let split = GemmSplit::new(1, 11, cols, 2);
        assert_eq!((split.whole_tiles, split.tasks), (false, 2));
        // 56²: 14 whole tiles of 7 panels.
        let split = GemmSplit::new(1, 8, ColumnSplit::new(3136, 32, 256, 2), 2);
        assert_eq!((split.whole_tiles, split.tasks), (true, 14));
    }

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

//! Perforated convolution (survey section 6.1, Figurnov et al. \[68\]): the
//! columns of the patch matrix `Û` of equation (13) that the perforation
//! mask removes are never formed. The kept output positions are lowered
//! (im2col restricted to those positions, packed straight from the image)
//! and multiplied by the pre-packed filters in one GEMM per sample and
//! group; every output position then copies its nearest evaluated one.
//! Bias and a following ReLU are fused into the GEMM's store (ReLU
//! commutes with the copy).

use std::ops::Range;
use std::sync::Mutex;

use hasten_core::{ActShape, PerforatedConv, Result};
use rayon::prelude::*;

use super::gemm_conv::pack_groups;
use super::ConvGeometry;
use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::gemm::{self, BOperand, BSource, Kernel, Output, PackedA};
use crate::plan::OpKernel;
use crate::pool::ScratchPool;
use crate::tiling::SharedOut;
use crate::Isa;

/// Tasks per thread to aim for, so uneven tiles still balance.
const TASKS_PER_THREAD: usize = 4;

/// Largest packed patch matrix (floats, 64 MiB) the plan keeps: within it
/// every column tile is lowered once and shared by the tasks that split its
/// rows; beyond it each task lowers its own copy.
const MAX_SHARED_B: usize = 16 << 20;

/// A perforated convolution with pre-packed filters, ready to run.
#[derive(Debug)]
pub(crate) struct PerforatedKernel {
    geo: ConvGeometry,
    kernel: Kernel,
    filters: Vec<PackedA>,
    /// Per group, padded to whole panels.
    bias: Option<Vec<Vec<f32>>>,
    clamp: Clamp,
    /// Offset of the top-left tap of each kept position in a padded plane
    /// (`y·sh·wp + x·sw`), row-major.
    origins: Vec<usize>,
    /// Padded plane height and width: every tap of every output lies inside.
    padded_hw: (usize, usize),
    /// The input with zero borders, `batch × C × hp × wp` (borders never
    /// written after construction).
    padded: Mutex<Vec<f32>>,
    /// For each output position, the kept position it copies.
    nearest: Vec<u32>,
    /// The evaluated outputs, `batch × T × P` (P = kept positions).
    evaluated: Mutex<Vec<f32>>,
    /// The packed patch matrices of every (sample, group, column tile),
    /// empty when larger than [`MAX_SHARED_B`].
    packed: Mutex<AlignedVec>,
}

impl PerforatedKernel {
    /// Packs `op`'s filters for inputs of shape `input` and batches of
    /// `batch` (validated by the plan), with a fused activation clamp.
    pub fn new(
        isa: Isa,
        op: &PerforatedConv,
        input: ActShape,
        batch: usize,
        clamp: Clamp,
    ) -> Result<Self> {
        let layer = op.conv();
        let geo = ConvGeometry::new(layer, input)?;
        let kernel = Kernel::for_rows(isa, geo.t_g);
        let weights: Vec<f32> = layer.weight().array().iter().copied().collect();
        let depth = geo.depth();
        let bias: Option<Vec<f32>> = layer.bias().map(|b| b.iter().copied().collect());
        let (filters, bias) = pack_groups(&kernel, &geo, &weights, bias.as_deref());
        let hp = (geo.pad_top_left.0 + geo.in_hw.0)
            .max((geo.out_hw.0 - 1) * geo.stride.0 + (geo.kernel.0 - 1) * geo.dilation.0 + 1);
        let wp = (geo.pad_top_left.1 + geo.in_hw.1)
            .max((geo.out_hw.1 - 1) * geo.stride.1 + (geo.kernel.1 - 1) * geo.dilation.1 + 1);
        let origins: Vec<usize> = op
            .positions()
            .iter()
            .map(|&(y, x)| y * geo.stride.0 * wp + x * geo.stride.1)
            .collect();
        let padded = vec![0.0; batch * geo.in_channels() * hp * wp];
        let evaluated = vec![0.0; batch * geo.out_channels() * origins.len()];
        let tiles = batch * geo.groups * origins.len().div_ceil(kernel.nc);
        let packed_b = tiles
            .checked_mul(depth * kernel.nc)
            .filter(|&len| len <= MAX_SHARED_B)
            .map_or_else(AlignedVec::default, AlignedVec::zeros);
        Ok(PerforatedKernel {
            geo,
            kernel,
            filters,
            bias,
            clamp,
            origins,
            padded_hw: (hp, wp),
            padded: Mutex::new(padded),
            nearest: op.nearest().to_vec(),
            evaluated: Mutex::new(evaluated),
            packed: Mutex::new(packed_b),
        })
    }
}

impl OpKernel for PerforatedKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], batch: usize, pool: &ScratchPool) {
        let geo = &self.geo;
        let kept = self.origins.len();
        let t_all = geo.out_channels();
        let in_len = geo.in_channels() * geo.in_area();
        let area = geo.out_area();
        let mut evaluated = self.evaluated.lock().unwrap_or_else(|e| e.into_inner());
        assert!(evaluated.len() >= batch * t_all * kept);
        assert!(src.len() >= batch * in_len && dst.len() >= batch * t_all * area);
        let nc = self.kernel.nc;
        let col_tiles = kept.div_ceil(nc);
        let m_panels = self.filters[0].panels();
        let base = batch * geo.groups * col_tiles;
        let want = TASKS_PER_THREAD * rayon::current_num_threads();
        let per_tile = m_panels.div_ceil(want.div_ceil(base).clamp(1, m_panels));
        let row_tiles = m_panels.div_ceil(per_tile);
        let (hp, wp) = self.padded_hw;
        let plane_p = hp * wp;
        let mut padded = self.padded.lock().unwrap_or_else(|e| e.into_inner());
        assert!(padded.len() >= batch * geo.in_channels() * plane_p);
        padded
            .par_chunks_mut(plane_p)
            .zip(src.par_chunks(geo.in_area()))
            .for_each(|(dst, plane)| {
                crate::profile::task(|| {
                    for (d, row) in dst[geo.pad_top_left.0 * wp..]
                        .chunks_mut(wp)
                        .zip(plane.chunks_exact(geo.in_hw.1))
                    {
                        d[geo.pad_top_left.1..geo.pad_top_left.1 + geo.in_hw.1]
                            .copy_from_slice(row);
                    }
                })
            });
        let padded = &*padded;
        let in_len = geo.in_channels() * plane_p;
        let depth = geo.depth();
        let (kc, nr) = (self.kernel.kc, self.kernel.nr);
        let tile_len = depth * nc;
        let source = |tile: usize| {
            let ct = tile % col_tiles;
            let g = (tile / col_tiles) % geo.groups;
            let n = tile / (col_tiles * geo.groups);
            let cols = ct * nc..((ct + 1) * nc).min(kept);
            let src = PositionSource {
                geo,
                origins: &self.origins,
                sample: &padded[n * in_len..][..in_len],
                padded_hw: (hp, wp),
                group: g,
            };
            (n, g, cols, src)
        };
        let mut packed = self.packed.lock().unwrap_or_else(|e| e.into_inner());
        let shared = packed.as_slice().len() >= base * tile_len;
        if shared {
            // Lower every column tile once, K blocks in parallel.
            let k_blocks = depth.div_ceil(kc);
            let dst_all = SharedOut(packed.as_mut_slice().as_mut_ptr());
            (0..base * k_blocks).into_par_iter().for_each(|job| {
                crate::profile::task(|| {
                    let (tile, kb) = (job / k_blocks, job % k_blocks);
                    let (_, _, cols, src) = source(tile);
                    let ks = kb * kc..((kb + 1) * kc).min(depth);
                    let n_panels = cols.len().div_ceil(nr);
                    // SAFETY: each job writes the disjoint range of K block kb of
                    // column tile `tile`, inside the buffer of base·tile_len.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            dst_all
                                .ptr()
                                .add(tile * tile_len + ks.start * n_panels * nr),
                            ks.len() * n_panels * nr,
                        )
                    };
                    pool.with(|scratch| {
                        gemm::pack::pack_b(&src, ks, cols, nr, &mut scratch.gemm.row, dst);
                    });
                })
            });
        }
        let packed = &*packed;
        let out = SharedOut(evaluated.as_mut_ptr());
        (0..base * row_tiles).into_par_iter().for_each(|task| {
            crate::profile::task(|| {
                let (rt, tile) = (task % row_tiles, task / row_tiles);
                let (n, g, cols, source) = source(tile);
                let panels = rt * per_tile..((rt + 1) * per_tile).min(m_panels);
                let c = Output {
                    // SAFETY: the first of group g's rows of sample n, inside
                    // `evaluated` (asserted above).
                    c: unsafe { out.ptr().add((n * t_all + g * geo.t_g) * kept) },
                    rsc: kept,
                    bias: self.bias.as_ref().map(|b| b[g].as_slice()),
                    residual: std::ptr::null(),
                    clamp: self.clamp,
                };
                let b = if shared {
                    BOperand::Packed {
                        tile: &packed.as_slice()[tile * tile_len..][..tile_len],
                        width: cols.len().div_ceil(nr),
                        first: 0,
                    }
                } else {
                    BOperand::Source(&source)
                };
                pool.with(|scratch| {
                    // SAFETY: `c` is this sample's t_g × kept block of group g
                    // (row stride kept); tasks own disjoint (n, g, column tile,
                    // row tile) blocks; the kernel packed the filters and its ISA
                    // was checked when the plan was built.
                    unsafe {
                        gemm::gemm(
                            &self.kernel,
                            &self.filters[g],
                            panels,
                            b,
                            cols,
                            c,
                            &mut scratch.gemm,
                        );
                    }
                });
            })
        });
        let evaluated = &*evaluated;
        dst[..batch * t_all * area]
            .par_chunks_mut(area)
            .zip(evaluated.par_chunks(kept))
            .for_each(|(plane, values)| {
                crate::profile::task(|| {
                    for (v, &k) in plane.iter_mut().zip(&self.nearest) {
                        *v = values[k as usize];
                    }
                })
            });
    }
}

/// The patch matrix of one sample and group restricted to the kept
/// positions: row `k = (s, i, j)`, column `p` = kept position `p`.
struct PositionSource<'a> {
    geo: &'a ConvGeometry,
    origins: &'a [usize],
    /// The sample with zero borders, `C × hp × wp`.
    sample: &'a [f32],
    padded_hw: (usize, usize),
    group: usize,
}

impl BSource for PositionSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, tmp: &'b mut [f32]) -> &'b [f32] {
        let geo = self.geo;
        let taps = geo.kernel.0 * geo.kernel.1;
        let (s, i, j) = (k / taps, (k % taps) / geo.kernel.1, k % geo.kernel.1);
        let (hp, wp) = self.padded_hw;
        let plane = &self.sample[(self.group * geo.c_g + s) * hp * wp..][..hp * wp];
        let plane = &plane[i * geo.dilation.0 * wp + j * geo.dilation.1..];
        let dst = &mut tmp[..cols.len()];
        for (v, &o) in dst.iter_mut().zip(&self.origins[cols]) {
            *v = plane[o];
        }
        dst
    }
}

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
use super::{ChannelView, Geometry};
use crate::gemm::{self, Kernel, Output, PackedA};
use crate::pool::ScratchPool;
use crate::tiling::SharedOut;

/// Tasks per thread to aim for, so uneven tiles still balance.
const TASKS_PER_THREAD: usize = 4;

/// A convolution with pre-packed filters, ready to run.
#[derive(Debug)]
pub(crate) struct GemmConv {
    geo: Geometry,
    view: ChannelView,
    kernel: Kernel,
    filters: Vec<PackedA>,
    bias: Option<Vec<Vec<f32>>>,
    relu: bool,
}

impl GemmConv {
    /// Packs the OIHW `weights` (`T × C_g·kh·kw` row-major) per group.
    pub fn new(
        kernel: Kernel,
        geo: Geometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
        view: ChannelView,
    ) -> Self {
        let depth = geo.depth();
        let filters: Vec<PackedA> = (0..geo.groups)
            .map(|g| {
                PackedA::new(
                    &kernel,
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
        GemmConv {
            geo,
            view,
            kernel,
            filters,
            bias,
            relu,
        }
    }

    /// Runs on `batch` samples: `input` is `batch × C × H × W`, `output`
    /// `batch × T × OH × OW`, both row-major.
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize, pool: &ScratchPool) {
        let geo = &self.geo;
        let area = geo.out_area();
        let in_len = geo.in_channels() * geo.in_area();
        let t_all = geo.out_channels();
        assert!(input.len() >= batch * in_len && output.len() >= batch * t_all * area);
        let col_tiles = area.div_ceil(self.kernel.nc);
        let m_panels = self.filters[0].panels();
        let base = batch * geo.groups * col_tiles;
        let want = TASKS_PER_THREAD * rayon::current_num_threads();
        let row_tiles = want.div_ceil(base).clamp(1, m_panels);
        let panels_per_tile = m_panels.div_ceil(row_tiles);
        let row_tiles = m_panels.div_ceil(panels_per_tile);
        let plain = PlaneSource::applies(geo, &self.view);
        let out = SharedOut(output.as_mut_ptr());
        (0..base * row_tiles).into_par_iter().for_each(|task| {
            let rt = task % row_tiles;
            let ct = (task / row_tiles) % col_tiles;
            let g = (task / (row_tiles * col_tiles)) % geo.groups;
            let n = task / (row_tiles * col_tiles * geo.groups);
            let panels = rt * panels_per_tile..((rt + 1) * panels_per_tile).min(m_panels);
            let cols = ct * self.kernel.nc..((ct + 1) * self.kernel.nc).min(area);
            let sample = &input[n * in_len..][..in_len];
            let dst = Output {
                // SAFETY: the offset is the first element of the group's
                // output rows of sample n, inside `output` (checked above).
                c: unsafe { out.ptr().add((n * t_all + g * geo.t_g) * area) },
                rsc: area,
                bias: self.bias.as_ref().map(|b| b[g].as_slice()),
                relu: self.relu,
            };
            pool.with(|scratch| {
                // SAFETY: C is this sample's t_g × area block of group g
                // (row stride `area`); tasks own pairwise-disjoint (n, g,
                // column tile, row tile) blocks; the kernel packed the filters.
                unsafe {
                    if plain {
                        let src = PlaneSource {
                            geo,
                            view: &self.view,
                            sample,
                            group: g,
                        };
                        gemm::gemm(
                            &self.kernel,
                            &self.filters[g],
                            panels,
                            &src,
                            cols,
                            dst,
                            scratch,
                        );
                    } else {
                        let src = ImageSource {
                            geo,
                            view: &self.view,
                            sample,
                            group: g,
                        };
                        gemm::gemm(
                            &self.kernel,
                            &self.filters[g],
                            panels,
                            &src,
                            cols,
                            dst,
                            scratch,
                        );
                    }
                }
            });
        });
    }
}

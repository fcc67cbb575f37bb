//! Winograd minimal filtering F(m×m, 3×3) (Lavin & Gray, 2016) for dense
//! stride-1, undilated 3×3 convolutions, with the tile ([`WinogradTile`]:
//! F(2×2) or F(4×4)) chosen per layer: each `m × m` output tile is
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for the `α × α` input tile `d`
//! (`α = m + 2`), so the channel sum of equation (1) becomes `α²`
//! independent matrix products `M[ξ] = U[ξ] · V[ξ]` (`U[ξ]`: `T × C`
//! transformed filters, packed once; `V[ξ]`: `C × tiles` transformed input)
//! through the packed GEMM of the plan's instruction set — 16
//! multiplications per 4 outputs for F(2×2) (2.25× fewer than direct), 36
//! per 16 for F(4×4) (4× fewer). The input and output transforms work on
//! 16 tiles at once, vectorised for the same instruction set; the output
//! transform adds the bias and applies the clamp as it writes. Outputs not
//! a multiple of `m` end in partial tiles that read zero padding and drop
//! their extra outputs.
//!
//! Numerical error, relative to the output's largest magnitude, against
//! the f64 reference (`forward_matches_reference::winograd_error_is_stated_bound`,
//! every ISA path): F(2×2)'s transforms only add, subtract and halve —
//! measured 2.3e-7 on unit-variance data and filters (48 → 32 channels)
//! and 4.3e-7 at ResNet-like magnitudes (128 → 128 channels, He-scaled
//! filters, post-ReLU inputs, 68² plane); stated bound `1e-5`. F(4×4)'s
//! `Bᵀ` and `Aᵀ` scale by up to 5 and 8 and its `G` by fractions down to
//! 1/24, so terms of different size meet in each sum and cancel: measured
//! 1.5e-6 and 2.6e-6 on the same two cases (6–7× F(2×2)'s), stated bound
//! `2e-5` — about 8× the measured error, room for wider channel sums
//! (the GEMM's accumulation error grows with `C`), and still 5× below the
//! `1e-4` every fast kernel is held to.
//!
//! Non-finite inputs: the input transform subtracts neighbouring values, so
//! an infinity becomes `Inf − Inf = NaN`, and a NaN or infinity spreads to
//! every output of its tiles, including outputs whose window never reads
//! it. Equation (1) — the reference — gives `±Inf` there. A sample holding
//! any NaN or infinity therefore runs on the GEMM path ([`GemmConv`], built
//! from the same filters), whose products and sums follow IEEE arithmetic
//! like the reference; finite samples keep the Winograd speed, and the
//! check is one pass over the input.

use std::sync::Mutex;

use rayon::prelude::*;

pub(crate) use super::winograd_tile::WinogradTile;
use super::winograd_tile::{Lanes, LANES};

use super::gemm_conv::GemmConv;
use super::{ChannelView, ConvGeometry};
use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::gemm::{self, BOperand, BSource, Kernel, Output, PackedA};
use crate::pool::ScratchPool;
use crate::tiling::SharedOut;
use crate::Isa;

/// Components of the largest tile (F(4×4): 6 × 6), the size of the
/// per-task lane buffers.
const MAX_XI: usize = 36;

/// Floats of transformed input (or output) per chunk of tiles: chunks keep
/// `V` and `M` in the last-level cache.
const CHUNK_FLOATS: usize = 1 << 20;

/// A Winograd F(m×m, 3×3) convolution with pre-transformed, packed filters.
#[derive(Debug)]
pub(crate) struct WinogradConv {
    geo: ConvGeometry,
    view: ChannelView,
    tile: WinogradTile,
    isa: Isa,
    kernel: Kernel,
    filters: Vec<PackedA>,
    bias: Option<Vec<f32>>,
    clamp: Clamp,
    /// `V` then `M` of the current chunk.
    work: Mutex<(AlignedVec, AlignedVec)>,
    /// The same convolution on the GEMM path, for samples holding a NaN or
    /// an infinity (see the module documentation).
    fallback: Box<GemmConv>,
}

/// Rows `V[ξ][c][tiles]` of one component as a GEMM `B` operand.
struct Component<'a> {
    v: &'a [f32],
    tiles: usize,
}

impl BSource for Component<'_> {
    fn row<'b>(&'b self, k: usize, cols: std::ops::Range<usize>, _tmp: &'b mut [f32]) -> &'b [f32] {
        &self.v[k * self.tiles..][cols]
    }
}

/// Output tiles `(rows, columns)` of a layer with tile side `m`.
fn tile_grid(geo: &ConvGeometry, m: usize) -> (usize, usize) {
    (geo.out_hw.0.div_ceil(m), geo.out_hw.1.div_ceil(m))
}

impl WinogradConv {
    /// Whether a convolution of these sizes (read through `view`) can run
    /// by Winograd: dense, 3×3, stride 1, undilated, no shifted view.
    pub fn supports(geo: &ConvGeometry, view: &ChannelView) -> bool {
        geo.kernel.0 == 3
            && geo.kernel.1 == 3
            && (geo.stride.0, geo.stride.1, geo.dilation.0, geo.dilation.1) == (1, 1, 1, 1)
            && geo.groups == 1
            && !view.has_shift()
    }

    /// The tile `Winograd::Auto` runs a supported layer with, or `None` for
    /// the GEMM path. Measured with `conv_vs_ort` (docs/performance.md,
    /// AMD EPYC Zen 4, batch 1, 2 threads, CPU-normalised ms, AVX-512 /
    /// forced AVX2; GEMM, F(2×2), F(4×4)):
    ///
    /// | layer | GEMM | F(2×2) | F(4×4) |
    /// |---|---:|---:|---:|
    /// | 64→64 @56 | 1.44 / 1.55 | 1.33 / 1.45 | 1.00 / 1.10 |
    /// | 128→128 @28 | 1.40 / 1.57 | 0.96 / 1.07 | 0.70 / 0.96 |
    /// | 256→256 @14 | 1.47 / 1.57 | 0.89 / 0.87 | 0.73 / 0.83 |
    /// | 512→512 @7 | 1.60 / 1.75 | 0.99 / 1.01 | 1.69 / 1.61 |
    /// | 64→64 @224 | 22.4 / 26.1 | 24.5 / 25.1 | 17.7 / 18.2 |
    /// | 3→64 @224 | 1.65 / 1.21 | 7.36 / 7.69 | 7.39 / 6.04 |
    ///
    /// F(4×4) wins on every measured layer with both channel counts ≥ 64
    /// and at least 16 tiles of 4×4 (measured from 14×14 outputs; the rule
    /// starts at 13×13, the same 16 tiles). On 7×7 outputs (4
    /// tiles of 4×4, mostly padding in the GEMM and the transforms) F(2×2)
    /// wins at 512 channels; smaller outputs take it from 256 channels
    /// (the 512-channel margin over GEMM, 1.6×, leaves room; 64 to 256 channels on
    /// such outputs were not measured and stay on the GEMM). With 3 input
    /// channels the transforms dominate and the GEMM wins.
    pub fn auto_tile(geo: &ConvGeometry) -> Option<WinogradTile> {
        let channels = geo.c_g.min(geo.t_g);
        if channels >= 64 && Self::tiles(geo, WinogradTile::F4) >= 16 {
            Some(WinogradTile::F4)
        } else if channels >= 256 {
            Some(WinogradTile::F2)
        } else {
            None
        }
    }

    /// Transforms the OIHW `weights` (`T × C × 3 × 3`): `U = G g Gᵀ`, packed
    /// for `kernel` (a GEMM microkernel of `isa`, which the transforms are
    /// compiled for too).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tile: WinogradTile,
        isa: Isa,
        kernel: Kernel,
        geo: ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        clamp: Clamp,
        view: ChannelView,
    ) -> Self {
        let (t_all, c_all) = (geo.t_g, geo.c_g);
        let xi_n = tile.components();
        let mut u = vec![0.0f32; xi_n * t_all * c_all];
        for t in 0..t_all {
            for c in 0..c_all {
                let g = &weights[(t * c_all + c) * 9..][..9];
                for (xi, v) in tile.filter_transform(g).into_iter().enumerate() {
                    u[(xi * t_all + t) * c_all + c] = v;
                }
            }
        }
        let filters = (0..xi_n)
            .map(|xi| {
                PackedA::new(
                    &kernel,
                    &u[xi * t_all * c_all..][..t_all * c_all],
                    t_all,
                    c_all,
                )
            })
            .collect();
        let fallback = Box::new(GemmConv::new(
            kernel,
            geo,
            weights,
            bias,
            clamp,
            view.clone(),
        ));
        WinogradConv {
            geo,
            view,
            tile,
            isa,
            kernel,
            filters,
            bias: bias.map(<[f32]>::to_vec),
            clamp,
            work: Mutex::new((AlignedVec::default(), AlignedVec::default())),
            fallback,
        }
    }

    /// Output tiles of one sample with `tile`: the GEMMs' column count.
    pub fn tiles(geo: &ConvGeometry, tile: WinogradTile) -> usize {
        let (th, tw) = tile_grid(geo, tile.m());
        th * tw
    }

    /// The tile this convolution runs with.
    pub fn tile(&self) -> WinogradTile {
        self.tile
    }

    /// Runs on `batch` samples (`input`, `output` row-major NCHW).
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize, pool: &ScratchPool) {
        let geo = &self.geo;
        let (c_all, t_all) = (geo.c_g, geo.t_g);
        let xi_n = self.tile.components();
        let (th, tw) = tile_grid(geo, self.tile.m());
        let tiles = th * tw;
        let in_len = c_all * geo.in_area();
        let out_len = t_all * geo.out_area();
        let per_chunk = (CHUNK_FLOATS / (xi_n * c_all.max(t_all))).max(self.kernel.nr);
        let per_chunk = per_chunk.div_ceil(self.kernel.nr) * self.kernel.nr;
        let mut work = self.work.lock().unwrap_or_else(|e| e.into_inner());
        let (v_buf, m_buf) = &mut *work;
        for n in 0..batch {
            let sample = &input[n * in_len..][..in_len];
            let out = &mut output[n * out_len..][..out_len];
            if !sample.iter().all(|v| v.is_finite()) {
                let whole = super::ConvOut {
                    stride: out_len,
                    residual: None,
                };
                self.fallback.run(sample, out, 1, pool, whole);
                continue;
            }
            let mut p0 = 0;
            while p0 < tiles {
                let len = per_chunk.min(tiles - p0);
                v_buf.resize(xi_n * c_all * len);
                m_buf.resize(xi_n * t_all * len);
                self.input_transform(sample, p0, len, tw, v_buf.as_mut_slice());
                self.multiply(v_buf.as_slice(), len, m_buf.as_mut_slice(), pool);
                self.output_transform(m_buf.as_slice(), p0, len, tw, out);
                p0 += len;
            }
        }
    }

    /// `V[ξ][c][p] = (Bᵀ d B)[ξ]` for tiles `p0..p0+len`, in parallel over channels.
    fn input_transform(&self, sample: &[f32], p0: usize, len: usize, tw: usize, v: &mut [f32]) {
        let c_all = self.geo.c_g;
        let area = self.geo.in_area();
        let vp = SharedOut(v.as_mut_ptr());
        (0..c_all).into_par_iter().for_each(|c| {
            crate::profile::task(|| {
                let (src_c, _, _) = self.view.channel(c);
                let plane = &sample[src_c * area..][..area];
                let task = InputTask {
                    conv: self,
                    plane,
                    c,
                    p0,
                    len,
                    tw,
                    vp,
                };
                dispatch(self.isa, self.tile, task);
            })
        });
    }

    /// The input transform of channel `c` (`plane`), [`LANES`] tiles at a time.
    #[inline(always)]
    fn input_channel<const M: usize>(
        &self,
        plane: &[f32],
        c: usize,
        p0: usize,
        len: usize,
        tw: usize,
        vp: SharedOut,
    ) {
        let geo = &self.geo;
        // Compile-time sizes and matrices: the loops unroll and the zero
        // coefficients fold away.
        let tile = WinogradTile::with_m(M);
        let (m, a) = (M, M + 2);
        let xi_n = a * a;
        let (ih, iw) = (geo.in_hw.0 as isize, geo.in_hw.1 as isize);
        let mut d = [[0.0f32; LANES]; MAX_XI];
        let mut tmp = [[0.0f32; LANES]; MAX_XI];
        let mut v = [[0.0f32; LANES]; MAX_XI];
        for q in (0..len).step_by(LANES) {
            let valid = LANES.min(len - q);
            for l in 0..LANES {
                if l >= valid {
                    d[..xi_n].iter_mut().for_each(|e| e[l] = 0.0);
                    continue;
                }
                let p = p0 + q + l;
                let (ty, tx) = (p / tw, p % tw);
                let y0 = (m * ty) as isize - geo.pad_top_left.0 as isize;
                let x0 = (m * tx) as isize - geo.pad_top_left.1 as isize;
                let inside = x0 >= 0 && x0 + a as isize <= iw;
                for i in 0..a {
                    let y = y0 + i as isize;
                    let row_d = &mut d[i * a..][..a];
                    if y < 0 || y >= ih {
                        row_d.iter_mut().for_each(|e| e[l] = 0.0);
                        continue;
                    }
                    let row = &plane[y as usize * iw as usize..][..iw as usize];
                    if inside {
                        let src = &row[x0 as usize..][..a];
                        for (e, &s) in row_d.iter_mut().zip(src) {
                            e[l] = s;
                        }
                    } else {
                        for (j, e) in row_d.iter_mut().enumerate() {
                            let x = x0 + j as isize;
                            e[l] = if x >= 0 && x < iw {
                                row[x as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
            tile.input_transform(&d[..xi_n], &mut tmp[..xi_n], &mut v[..xi_n]);
            for (xi, lanes) in v[..xi_n].iter().enumerate() {
                // SAFETY: (ξ·C + c)·len + q + valid ≤ α²·C·len = v.len();
                // each channel task writes only its own c.
                let dst = unsafe { vp.ptr().add((xi * self.geo.c_g + c) * len + q) };
                if valid == LANES {
                    // SAFETY: as above, LANES floats.
                    unsafe { dst.cast::<Lanes>().write_unaligned(*lanes) };
                } else {
                    // SAFETY: as above, `valid` floats.
                    unsafe { std::slice::from_raw_parts_mut(dst, valid) }
                        .copy_from_slice(&lanes[..valid]);
                }
            }
        }
    }

    /// `M[ξ] = U[ξ] · V[ξ]` for the `α²` components, in parallel over
    /// components and row tiles.
    fn multiply(&self, v: &[f32], len: usize, m: &mut [f32], pool: &ScratchPool) {
        let (c_all, t_all) = (self.geo.c_g, self.geo.t_g);
        let xi_n = self.tile.components();
        let m_panels = self.filters[0].panels();
        let row_tiles = (4 * rayon::current_num_threads())
            .div_ceil(xi_n)
            .clamp(1, m_panels);
        let per = m_panels.div_ceil(row_tiles);
        let row_tiles = m_panels.div_ceil(per);
        let mp = SharedOut(m.as_mut_ptr());
        (0..xi_n * row_tiles).into_par_iter().for_each(|task| {
            crate::profile::task(|| {
                let (xi, rt) = (task / row_tiles, task % row_tiles);
                let src = Component {
                    v: &v[xi * c_all * len..][..c_all * len],
                    tiles: len,
                };
                // SAFETY: component ξ's T × len block starts inside `m`.
                let dst = Output::plain(unsafe { mp.ptr().add(xi * t_all * len) }, len);
                pool.with(|scratch| {
                    // SAFETY: the destination is component ξ's T × len block of
                    // `m` (row stride len); tasks own disjoint (ξ, row tile)
                    // blocks; the kernel packed the filters and is supported.
                    unsafe {
                        gemm::gemm(
                            &self.kernel,
                            &self.filters[xi],
                            rt * per..((rt + 1) * per).min(m_panels),
                            BOperand::Source(&src),
                            0..len,
                            dst,
                            &mut scratch.gemm,
                        )
                    }
                });
            })
        });
    }

    /// `Y = Aᵀ M A` per tile, plus bias and clamp, written to the output
    /// plane (tiles overhanging the border drop their extra rows / columns),
    /// in parallel over output channels.
    fn output_transform(&self, m: &[f32], p0: usize, len: usize, tw: usize, out: &mut [f32]) {
        out.par_chunks_mut(self.geo.out_area())
            .enumerate()
            .for_each(|(t, plane)| {
                crate::profile::task(|| {
                    let task = OutputTask {
                        conv: self,
                        m,
                        t,
                        p0,
                        len,
                        tw,
                        plane,
                    };
                    dispatch(self.isa, self.tile, task)
                })
            });
    }

    /// The output transform of channel `t` into its `plane`, [`LANES`]
    /// tiles at a time.
    #[inline(always)]
    fn output_channel<const M: usize>(
        &self,
        m: &[f32],
        t: usize,
        p0: usize,
        len: usize,
        tw: usize,
        plane: &mut [f32],
    ) {
        let geo = &self.geo;
        let tile = WinogradTile::with_m(M);
        let (mm, xi_n) = (M, (M + 2) * (M + 2));
        let bias = self.bias.as_ref().map_or(0.0, |b| b[t]);
        let mut mt = [[0.0f32; LANES]; MAX_XI];
        let mut tmp = [[0.0f32; LANES]; MAX_XI];
        let mut y = [[0.0f32; LANES]; 16];
        for q in (0..len).step_by(LANES) {
            let valid = LANES.min(len - q);
            for (xi, lanes) in mt[..xi_n].iter_mut().enumerate() {
                let src = &m[(xi * geo.t_g + t) * len + q..];
                if valid == LANES {
                    *lanes = src[..LANES].try_into().expect("LANES floats");
                } else {
                    lanes[..valid].copy_from_slice(&src[..valid]);
                }
            }
            tile.output_transform(&mt[..xi_n], &mut tmp[..xi_n], &mut y[..mm * mm]);
            for lanes in &mut y[..mm * mm] {
                for e in lanes.iter_mut() {
                    *e = self.clamp.apply(*e + bias);
                }
            }
            for l in 0..valid {
                let p = p0 + q + l;
                let (ty, tx) = (p / tw, p % tw);
                let rows = mm.min(geo.out_hw.0 - mm * ty);
                let cols = mm.min(geo.out_hw.1 - mm * tx);
                for i in 0..rows {
                    let dst = &mut plane[(mm * ty + i) * geo.out_hw.1 + mm * tx..][..cols];
                    for (j, o) in dst.iter_mut().enumerate() {
                        *o = y[i * mm + j][l];
                    }
                }
            }
        }
    }
}

/// A per-channel transform, run with the tile side `M` as a constant.
trait ChannelTask {
    /// Runs the transform for tiles of side `M` (inlined into the caller,
    /// whose instruction set it is then compiled for).
    fn run<const M: usize>(self);
}

/// The input transform of one channel ([`WinogradConv::input_channel`]).
struct InputTask<'a> {
    conv: &'a WinogradConv,
    plane: &'a [f32],
    c: usize,
    p0: usize,
    len: usize,
    tw: usize,
    vp: SharedOut,
}

impl ChannelTask for InputTask<'_> {
    #[inline(always)]
    fn run<const M: usize>(self) {
        let InputTask {
            conv,
            plane,
            c,
            p0,
            len,
            tw,
            vp,
        } = self;
        conv.input_channel::<M>(plane, c, p0, len, tw, vp)
    }
}

/// The output transform of one channel ([`WinogradConv::output_channel`]).
struct OutputTask<'a> {
    conv: &'a WinogradConv,
    m: &'a [f32],
    t: usize,
    p0: usize,
    len: usize,
    tw: usize,
    plane: &'a mut [f32],
}

impl ChannelTask for OutputTask<'_> {
    #[inline(always)]
    fn run<const M: usize>(self) {
        let OutputTask {
            conv,
            m,
            t,
            p0,
            len,
            tw,
            plane,
        } = self;
        conv.output_channel::<M>(m, t, p0, len, tw, plane)
    }
}

/// Runs `task` with `tile`'s side as a constant (loops unrolled, zero
/// coefficients folded), compiled for `isa` (512-bit or 256-bit lanes).
fn dispatch<T: ChannelTask>(isa: Isa, tile: WinogradTile, task: T) {
    match tile {
        WinogradTile::F2 => for_isa::<T, 2>(isa, task),
        WinogradTile::F4 => for_isa::<T, 4>(isa, task),
    }
}

/// `task.run::<M>()` compiled for `isa`.
fn for_isa<T: ChannelTask, const M: usize>(isa: Isa, task: T) {
    match isa {
        // SAFETY: plans only build kernels of supported ISAs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { on_avx512::<T, M>(task) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { on_avx2::<T, M>(task) },
        _ => task.run::<M>(),
    }
}

/// `task.run::<M>()` compiled with AVX-512F.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn on_avx512<T: ChannelTask, const M: usize>(task: T) {
    task.run::<M>()
}

/// `task.run::<M>()` compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn on_avx2<T: ChannelTask, const M: usize>(task: T) {
    task.run::<M>()
}

//! Winograd minimal filtering F(2×2, 3×3) (Lavin & Gray, 2016) for dense
//! stride-1, undilated 3×3 convolutions: each 2×2 output tile is
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for the 4×4 input tile `d`, so the
//! channel sum of equation (1) becomes 16 independent matrix products
//! `M[ξ] = U[ξ] · V[ξ]` (`U[ξ]`: `T × C` transformed filters, packed once;
//! `V[ξ]`: `C × tiles` transformed input) — 16 multiplications per 4 outputs
//! instead of 36, a 2.25× cut that lets it exceed the GEMM peak in effective
//! GFLOP/s.
//!
//! Numerical error: the transforms only add, subtract and halve, so the
//! result differs from direct f32 convolution by a few ulps per tile on top
//! of the GEMM's accumulation error; the property tests bound the relative
//! error by `1e-4` against the f64 reference, and measure it below `1e-5` on
//! unit-variance data.
//!
//! Non-finite inputs: the input transform subtracts neighbouring values, so
//! an infinity becomes `Inf − Inf = NaN`, and a NaN or infinity spreads to
//! every output of its 2×2 tiles, including outputs whose window never
//! reads it. Equation (1) — the reference — gives `±Inf` there. A sample
//! holding any NaN or infinity therefore runs on the GEMM path
//! ([`GemmConv`], built from the same filters), whose products and sums
//! follow IEEE arithmetic like the reference; finite samples keep the
//! Winograd speed, and the check is one pass over the input.

use std::sync::Mutex;

use rayon::prelude::*;

use super::gemm_conv::GemmConv;
use super::{ChannelView, ConvGeometry};
use crate::aligned::AlignedVec;
use crate::elementwise::Clamp;
use crate::gemm::{self, BOperand, BSource, Kernel, Output, PackedA};
use crate::pool::ScratchPool;
use crate::tiling::SharedOut;

/// Transformed-domain components per tile (4 × 4).
const XI: usize = 16;

/// Floats of transformed input (or output) per chunk of tiles: chunks keep
/// `V` and `M` in the last-level cache.
const CHUNK_FLOATS: usize = 1 << 20;

/// A Winograd F(2×2, 3×3) convolution with pre-transformed, packed filters.
#[derive(Debug)]
pub(crate) struct WinogradConv {
    geo: ConvGeometry,
    view: ChannelView,
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

impl WinogradConv {
    /// Whether a convolution of these sizes (read through `view`) can run
    /// as F(2×2, 3×3): dense, 3×3, stride 1, undilated, no shifted view.
    pub fn supports(geo: &ConvGeometry, view: &ChannelView) -> bool {
        geo.kernel.0 == 3
            && geo.kernel.1 == 3
            && (geo.stride.0, geo.stride.1, geo.dilation.0, geo.dilation.1) == (1, 1, 1, 1)
            && geo.groups == 1
            && !view.has_shift()
    }

    /// Whether it is expected to beat the GEMM path, from the roofline
    /// measurements (docs/performance.md): the transforms cost `O(C + T)`
    /// per tile against the GEMM's `O(C·T)`, so both channel counts must be
    /// large (≥ 128); below ~32 tiles (7×7 outputs) the tiny GEMMs waste
    /// their tiles, and above ~400 tiles (large images) the transformed
    /// buffers leave the caches.
    pub fn profitable(geo: &ConvGeometry) -> bool {
        let tiles = geo.out_hw.0.div_ceil(2) * geo.out_hw.1.div_ceil(2);
        geo.c_g >= 128 && geo.t_g >= 128 && (32..=400).contains(&tiles)
    }

    /// Transforms the OIHW `weights` (`T × C × 3 × 3`): `U = G g Gᵀ`.
    pub fn new(
        kernel: Kernel,
        geo: ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        clamp: Clamp,
        view: ChannelView,
    ) -> Self {
        let (t_all, c_all) = (geo.t_g, geo.c_g);
        let mut u = vec![0.0f32; XI * t_all * c_all];
        for t in 0..t_all {
            for c in 0..c_all {
                let g = &weights[(t * c_all + c) * 9..][..9];
                let ug = filter_transform(g);
                for (xi, &v) in ug.iter().enumerate() {
                    u[(xi * t_all + t) * c_all + c] = v;
                }
            }
        }
        let filters = (0..XI)
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
            kernel,
            filters,
            bias: bias.map(<[f32]>::to_vec),
            clamp,
            work: Mutex::new((AlignedVec::default(), AlignedVec::default())),
            fallback,
        }
    }

    /// Runs on `batch` samples (`input`, `output` row-major NCHW).
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize, pool: &ScratchPool) {
        let geo = &self.geo;
        let (c_all, t_all) = (geo.c_g, geo.t_g);
        let (th, tw) = (geo.out_hw.0.div_ceil(2), geo.out_hw.1.div_ceil(2));
        let tiles = th * tw;
        let in_len = c_all * geo.in_area();
        let out_len = t_all * geo.out_area();
        let per_chunk = (CHUNK_FLOATS / (XI * c_all.max(t_all))).max(self.kernel.nr);
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
                v_buf.resize(XI * c_all * len);
                m_buf.resize(XI * t_all * len);
                self.input_transform(sample, p0, len, tw, v_buf.as_mut_slice());
                self.multiply(v_buf.as_slice(), len, m_buf.as_mut_slice(), pool);
                self.output_transform(m_buf.as_slice(), p0, len, tw, out);
                p0 += len;
            }
        }
    }

    /// `V[ξ][c][p] = (Bᵀ d B)[ξ]` for tiles `p0..p0+len`, in parallel over channels.
    fn input_transform(&self, sample: &[f32], p0: usize, len: usize, tw: usize, v: &mut [f32]) {
        let geo = &self.geo;
        let c_all = geo.c_g;
        let area = geo.in_area();
        let vp = SharedOut(v.as_mut_ptr());
        (0..c_all).into_par_iter().for_each(|c| {
            crate::profile::task(|| {
                let (src_c, _, _) = self.view.channel(c);
                let plane = &sample[src_c * area..][..area];
                for q in 0..len {
                    let p = p0 + q;
                    let (ty, tx) = (p / tw, p % tw);
                    let y0 = (2 * ty) as isize - geo.pad_top_left.0 as isize;
                    let x0 = (2 * tx) as isize - geo.pad_top_left.1 as isize;
                    let mut d = [0.0f32; 16];
                    for i in 0..4 {
                        let y = y0 + i as isize;
                        if y < 0 || y >= geo.in_hw.0 as isize {
                            continue;
                        }
                        let row = &plane[y as usize * geo.in_hw.1..][..geo.in_hw.1];
                        for j in 0..4 {
                            let x = x0 + j as isize;
                            if x >= 0 && x < geo.in_hw.1 as isize {
                                d[i * 4 + j] = row[x as usize];
                            }
                        }
                    }
                    let t = input_tile_transform(&d);
                    for (xi, &val) in t.iter().enumerate() {
                        // SAFETY: index (ξ·C + c)·len + q < 16·C·len = v.len();
                        // each channel task writes only its own c.
                        unsafe { *vp.ptr().add((xi * c_all + c) * len + q) = val };
                    }
                }
            })
        });
    }

    /// `M[ξ] = U[ξ] · V[ξ]` for the 16 components, in parallel over
    /// components and row tiles.
    fn multiply(&self, v: &[f32], len: usize, m: &mut [f32], pool: &ScratchPool) {
        let (c_all, t_all) = (self.geo.c_g, self.geo.t_g);
        let m_panels = self.filters[0].panels();
        let row_tiles = (4 * rayon::current_num_threads())
            .div_ceil(XI)
            .clamp(1, m_panels);
        let per = m_panels.div_ceil(row_tiles);
        let row_tiles = m_panels.div_ceil(per);
        let mp = SharedOut(m.as_mut_ptr());
        (0..XI * row_tiles).into_par_iter().for_each(|task| {
            crate::profile::task(|| {
                let (xi, rt) = (task / row_tiles, task % row_tiles);
                let src = Component {
                    v: &v[xi * c_all * len..][..c_all * len],
                    tiles: len,
                };
                let dst = Output {
                    // SAFETY: component ξ's T × len block starts inside `m`.
                    c: unsafe { mp.ptr().add(xi * t_all * len) },
                    rsc: len,
                    bias: None,
                    residual: std::ptr::null(),
                    clamp: Clamp::NONE,
                };
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

    /// `Y = Aᵀ M A` per tile, plus bias and ReLU, written to the output
    /// plane (tiles overhanging the border drop their extra row / column).
    fn output_transform(&self, m: &[f32], p0: usize, len: usize, tw: usize, out: &mut [f32]) {
        let geo = &self.geo;
        let t_all = geo.t_g;
        out.par_chunks_mut(geo.out_area())
            .enumerate()
            .for_each(|(t, plane)| {
                crate::profile::task(|| {
                    let bias = self.bias.as_ref().map_or(0.0, |b| b[t]);
                    for q in 0..len {
                        let mut mt = [0.0f32; 16];
                        for (xi, v) in mt.iter_mut().enumerate() {
                            *v = m[(xi * t_all + t) * len + q];
                        }
                        let y = output_tile_transform(&mt);
                        let p = p0 + q;
                        let (ty, tx) = (p / tw, p % tw);
                        for i in 0..2 {
                            let oy = 2 * ty + i;
                            if oy >= geo.out_hw.0 {
                                continue;
                            }
                            for j in 0..2 {
                                let ox = 2 * tx + j;
                                if ox < geo.out_hw.1 {
                                    let v = y[i * 2 + j] + bias;
                                    plane[oy * geo.out_hw.1 + ox] = self.clamp.apply(v);
                                }
                            }
                        }
                    }
                })
            });
    }
}

/// `G g Gᵀ` for a row-major 3×3 filter, `G = [[1,0,0],[½,½,½],[½,−½,½],[0,0,1]]`.
fn filter_transform(g: &[f32]) -> [f32; 16] {
    // Columns: t = G g (4×3), then U = t Gᵀ (4×4).
    let mut t = [[0.0f32; 3]; 4];
    for j in 0..3 {
        let (a, b, c) = (g[j], g[3 + j], g[6 + j]);
        t[0][j] = a;
        t[1][j] = 0.5 * (a + b + c);
        t[2][j] = 0.5 * (a - b + c);
        t[3][j] = c;
    }
    let mut u = [0.0f32; 16];
    for i in 0..4 {
        let (a, b, c) = (t[i][0], t[i][1], t[i][2]);
        u[i * 4] = a;
        u[i * 4 + 1] = 0.5 * (a + b + c);
        u[i * 4 + 2] = 0.5 * (a - b + c);
        u[i * 4 + 3] = c;
    }
    u
}

/// `Bᵀ d B` for a row-major 4×4 tile, `Bᵀ = [[1,0,−1,0],[0,1,1,0],[0,−1,1,0],[0,1,0,−1]]`.
fn input_tile_transform(d: &[f32; 16]) -> [f32; 16] {
    let mut t = [0.0f32; 16];
    for j in 0..4 {
        let (d0, d1, d2, d3) = (d[j], d[4 + j], d[8 + j], d[12 + j]);
        t[j] = d0 - d2;
        t[4 + j] = d1 + d2;
        t[8 + j] = d2 - d1;
        t[12 + j] = d1 - d3;
    }
    let mut v = [0.0f32; 16];
    for i in 0..4 {
        let (a, b, c, e) = (t[i * 4], t[i * 4 + 1], t[i * 4 + 2], t[i * 4 + 3]);
        v[i * 4] = a - c;
        v[i * 4 + 1] = b + c;
        v[i * 4 + 2] = c - b;
        v[i * 4 + 3] = b - e;
    }
    v
}

/// `Aᵀ m A` for a row-major 4×4 tile, `Aᵀ = [[1,1,1,0],[0,1,−1,−1]]`.
fn output_tile_transform(m: &[f32; 16]) -> [f32; 4] {
    let mut t = [0.0f32; 8];
    for j in 0..4 {
        let (m0, m1, m2, m3) = (m[j], m[4 + j], m[8 + j], m[12 + j]);
        t[j] = m0 + m1 + m2;
        t[4 + j] = m1 - m2 - m3;
    }
    let mut y = [0.0f32; 4];
    for i in 0..2 {
        let (a, b, c, e) = (t[i * 4], t[i * 4 + 1], t[i * 4 + 2], t[i * 4 + 3]);
        y[i * 2] = a + b + c;
        y[i * 2 + 1] = b - c - e;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile against direct correlation: 4×4 input, 3×3 filter → 2×2.
    #[test]
    fn transforms_compute_a_2x2_tile_exactly() {
        let d: [f32; 16] = std::array::from_fn(|k| (k as f32 * 0.37).sin());
        let g: [f32; 9] = std::array::from_fn(|k| (k as f32 * 0.91 + 0.2).cos());
        let (u, v) = (filter_transform(&g), input_tile_transform(&d));
        let prod: [f32; 16] = std::array::from_fn(|k| u[k] * v[k]);
        let y = output_tile_transform(&prod);
        for oy in 0..2 {
            for ox in 0..2 {
                let mut direct = 0.0f32;
                for i in 0..3 {
                    for j in 0..3 {
                        direct += g[i * 3 + j] * d[(oy + i) * 4 + ox + j];
                    }
                }
                assert!(
                    (y[oy * 2 + ox] - direct).abs() < 1e-5,
                    "{} vs {direct}",
                    y[oy * 2 + ox]
                );
            }
        }
    }
}

//! Int8 convolution: u8 activations × i8 weights → exact i32 accumulators,
//! with fused per-channel requantisation (the 8-bit arithmetic of Vanhoucke
//! et al. \[49\], survey Section 5).
//!
//! The input is quantised as `x ≈ s_x · (q − z_x)` (`q` u8, zero point `z_x`),
//! filter `t` as `w ≈ s_w[t] · v` (`v` i8). The kernel is an implicit GEMM on a
//! channel-minor (NHWC) u8 copy of the input whose padding pixels hold `z_x`
//! (the quantised real zero), so `acc = Σ v·q − z_x·Σ v` is exactly
//! `Σ_{valid taps} v·(q − z_x)`.
//!
//! Paths:
//! - **AVX-512 VNNI**: `vpdpbusd` multiplies 4 u8 × 4 i8 and adds them into an
//!   i32 lane; a register block is 4 output pixels × 64 filters (16 zmm).
//! - **AVX2**: `vpmaddubsw` adds *pairs* of u8 × i8 products into a saturating
//!   i16, which overflows for `255·127·2`. We use the **split** (not the 7-bit
//!   trick, which would change the quantiser): `q = (q ∧ 0x7f) + (q ∧ 0x80)`;
//!   each half's pair sums fit in i16 (`|127·128·2| ≤ 32512`,
//!   `|128·(−128)·2| = 32768` only for the negative bound, which i16 holds), and
//!   `vpmaddwd` by ones widens both to i32. Exact for every u8 input, at about
//!   half the throughput of the unsplit sequence.
//! - **Scalar**: i32 loops.
//!
//! All paths are bit-exact: the accumulators are exact integers and the
//! epilogue ([`Int8Gemm::requantize`]) is one scalar formula.

use hasten_core::{ConvSpec, Error, Result};
use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::layout::{nhwc_to_nchw, DisjointWriter};
use super::{check_isa, round_up, Isa, Needs};
use crate::conv::ConvGeometry;
use crate::pool::ScratchPool;

/// Filters are padded to a multiple of this (the AVX-512 block: 4 × 16 lanes).
const FILTER_BLOCK: usize = 64;

/// Affine u8 quantisation `x ≈ scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct U8Quant {
    /// Step size, finite and > 0.
    pub scale: f32,
    /// The code of real zero.
    pub zero_point: u8,
}

impl U8Quant {
    /// Validated parameters.
    pub fn new(scale: f32, zero_point: u8) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::param(
                "u8 quantisation scale",
                scale,
                "finite and > 0",
            ));
        }
        Ok(U8Quant { scale, zero_point })
    }

    /// `clamp(round_half_even(x / scale) + zero_point, 0, 255)`.
    pub fn quantize(&self, x: f32) -> u8 {
        // Beyond ±512 steps every zero point saturates, so clamping first is
        // exact; then adding and subtracting 1.5·2^23 rounds half to even
        // without a libm call (round-to-nearest-even is the FP default).
        const MAGIC: f32 = 12_582_912.0;
        let t = (x / self.scale).clamp(-512.0, 512.0);
        let r = (t + MAGIC) - MAGIC;
        (r + f32::from(self.zero_point)).clamp(0.0, 255.0) as u8
    }

    /// Quantises an NCHW batch.
    pub fn quantize_array(&self, x: ArrayView4<'_, f32>) -> Array4<u8> {
        x.mapv(|v| self.quantize(v))
    }
}

/// What the epilogue produces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Int8Output {
    /// Dequantised f32: `s_x · s_w[t] · acc + b[t]`.
    F32,
    /// Requantised u8 with these output parameters (optionally fused ReLU:
    /// clamp below at the zero point).
    U8 {
        /// Output quantisation.
        quant: U8Quant,
        /// Clamp negative outputs to zero.
        relu: bool,
    },
}

/// A quantised convolution ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Gemm {
    out_channels: usize,
    in_channels: usize,
    kernel: (usize, usize),
    spec: ConvSpec,
    c4: usize,
    t_pad: usize,
    /// `[tap][c4 / 4][t_pad][4]` i8.
    packed: Vec<i8>,
    /// `Σ_{c, taps} v[t]`, the zero-point correction.
    weight_sum: Vec<i32>,
    /// `s_x · s_w[t]`.
    multiplier: Vec<f32>,
    bias: Vec<f32>,
    input: U8Quant,
}

impl Int8Gemm {
    /// Builds the layer from OIHW i8 weights, per-filter scales, an optional
    /// bias and the input quantisation.
    pub fn new(
        weights: ArrayView4<'_, i8>,
        weight_scale: &[f32],
        bias: Option<&[f32]>,
        spec: ConvSpec,
        input: U8Quant,
    ) -> Result<Self> {
        let s = weights.shape();
        hasten_core::error::ensure_nonempty("Int8Gemm weights (OIHW)", s)?;
        spec.validate()?;
        if spec.groups != 1 {
            return Err(Error::unsupported(
                "Int8Gemm",
                format!("groups = {}", spec.groups),
            ));
        }
        U8Quant::new(input.scale, input.zero_point)?;
        let [t_n, c_n, kh, kw] = [s[0], s[1], s[2], s[3]];
        if weight_scale.len() != t_n {
            return Err(Error::shape(
                "Int8Gemm weight scales",
                t_n,
                weight_scale.len(),
            ));
        }
        if let Some(&bad) = weight_scale.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(Error::param("Int8Gemm weight scale", bad, "finite and > 0"));
        }
        let bias = match bias {
            Some(b) if b.len() != t_n => return Err(Error::shape("Int8Gemm bias", t_n, b.len())),
            Some(b) => {
                hasten_core::error::ensure_finite("Int8Gemm bias", b.iter())?;
                b.to_vec()
            }
            None => vec![0.0; t_n],
        };
        let c4 = round_up(c_n, 4);
        let t_pad = round_up(t_n, FILTER_BLOCK);
        let mut packed = vec![0i8; kh * kw * c4 * t_pad];
        let mut weight_sum = vec![0i32; t_n];
        for ((t, c, i, j), &v) in weights.indexed_iter() {
            let tap = i * kw + j;
            packed[((tap * (c4 / 4) + c / 4) * t_pad + t) * 4 + c % 4] = v;
            weight_sum[t] += i32::from(v);
        }
        Ok(Int8Gemm {
            out_channels: t_n,
            in_channels: c_n,
            kernel: (kh, kw),
            spec,
            c4,
            t_pad,
            packed,
            weight_sum,
            multiplier: weight_scale.iter().map(|s| s * input.scale).collect(),
            bias,
            input,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
    /// The input quantisation.
    pub fn input_quant(&self) -> U8Quant {
        self.input
    }

    /// The exact accumulators `Σ_{valid taps, c} v · (q − z_x)` (computed as
    /// `Σ v·q − z_x·Σ v` in wrapping i32, hence exact whenever the result fits
    /// in i32), NHWC
    /// `[n][y][x][t]`, with the output height and width.
    pub fn accumulators(
        &self,
        q: ArrayView4<'_, u8>,
        isa: Option<Isa>,
    ) -> Result<(Vec<i32>, (usize, usize))> {
        let isa = check_isa(isa, Needs::Int8Dot, "Int8Gemm")?;
        let s = q.shape();
        if s.len() == 4 && s[1] != self.in_channels {
            return Err(Error::shape(
                "Int8Gemm input channels",
                self.in_channels,
                s[1],
            ));
        }
        let g = ConvGeometry::batched(
            [s[0], s[1], s[2], s[3]],
            self.out_channels,
            self.kernel,
            &self.spec,
        )?;
        let q = q.as_standard_layout();
        let mut img = vec![0u8; self.image_len(&g)];
        self.padded_nhwc(q.as_slice().expect("standard layout"), &g, |v| v, &mut img);
        Ok((self.accumulate(&img, &g, isa), g.out_hw))
    }

    /// The accumulators of a padded NHWC image, NHWC `[n][y][x][t]`.
    fn accumulate(&self, img: &[u8], g: &ConvGeometry, isa: Isa) -> Vec<i32> {
        let (oh, ow) = g.out_hw;
        let row_len = ow * self.out_channels;
        let mut out = vec![0i32; g.batch * oh * row_len];
        let writer = DisjointWriter::new(&mut out);
        self.rows(img, g, isa, &ScratchPool::new(), |n, y, acc, _| {
            // SAFETY: row (n, y) is written by this task only.
            unsafe { writer.write_slice((n * oh + y) * row_len, acc) };
        });
        out
    }

    /// Computes the exact accumulators of every output row in parallel and
    /// hands each row to `f(n, y, acc, out)`, `acc` being `[x][t]` and
    /// `out` a scratch row of as many floats; the row buffers come from
    /// `pool` (no allocation once they have grown).
    fn rows<F>(&self, img: &[u8], g: &ConvGeometry, isa: Isa, pool: &ScratchPool, f: F)
    where
        F: Fn(usize, usize, &[i32], &mut [f32]) + Sync,
    {
        let (hp, wp) = g.padded_hw;
        let img_len = hp * wp * self.c4;
        let (oh, ow) = g.out_hw;
        let t_n = self.out_channels;
        let z = i32::from(self.input.zero_point);
        let (acc_len, out_len) = (ow * self.t_pad, ow * t_n);
        (0..g.batch * oh).into_par_iter().for_each(|row| {
            pool.with(|scratch| {
                if scratch.ints.len() < acc_len + out_len {
                    scratch.ints.resize(acc_len + out_len, 0);
                }
                let (acc, row_out) = scratch.ints.split_at_mut(acc_len);
                let row_out = &mut row_out[..out_len];
                if scratch.floats.len() < out_len {
                    scratch.floats.resize(out_len, 0.0);
                }
                let floats = &mut scratch.floats[..out_len];
                let (n, y) = (row / oh, row % oh);
                let img = &img[n * img_len..(n + 1) * img_len];
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: check_isa confirmed avx512f/bw/vnni; bounds per the kernel contract.
                    Isa::Avx512 => unsafe { x86::row_vnni(self, g, img, y, acc) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: check_isa confirmed avx2; same bounds.
                    Isa::Avx2 => unsafe { x86::row_avx2(self, g, img, y, acc) },
                    _ => self.row_scalar(g, img, y, acc),
                }
                for x in 0..ow {
                    for t in 0..t_n {
                        row_out[x * t_n + t] = acc[x * self.t_pad + t]
                            .wrapping_sub(z.wrapping_mul(self.weight_sum[t]));
                    }
                }
                f(n, y, row_out, floats);
            })
        });
    }

    /// The fused epilogue for filter `t`: `y = s_x·s_w[t]·acc + b[t]`, then
    /// (for u8 output) `clamp(round_half_even(y / s_y) + z_y)`.
    pub fn requantize(&self, acc: i32, t: usize, output: Int8Output) -> f32 {
        let y = self.multiplier[t] * acc as f32 + self.bias[t];
        match output {
            Int8Output::F32 => y,
            Int8Output::U8 { quant, relu } => {
                let q = f32::from(quant.quantize(y));
                if relu {
                    q.max(f32::from(quant.zero_point))
                } else {
                    q
                }
            }
        }
    }

    /// Runs on a quantised NCHW batch; returns NCHW values (u8 codes as f32
    /// for [`Int8Output::U8`]).
    pub fn forward_quantized(
        &self,
        q: ArrayView4<'_, u8>,
        output: Int8Output,
        isa: Option<Isa>,
    ) -> Result<Array4<f32>> {
        let (acc, out_hw) = self.accumulators(q, isa)?;
        Ok(self.epilogue(&acc, q.shape()[0], out_hw, output))
    }

    /// NHWC accumulators → NCHW outputs through [`Self::requantize`].
    fn epilogue(
        &self,
        acc: &[i32],
        batch: usize,
        (oh, ow): (usize, usize),
        output: Int8Output,
    ) -> Array4<f32> {
        let t_n = self.out_channels;
        let mut y = Array4::<f32>::zeros((batch, t_n, oh, ow));
        let out = y.as_slice_mut().expect("fresh array");
        nhwc_to_nchw(acc, batch, oh * ow, t_n, out, |a, _, t, _| {
            self.requantize(a, t, output)
        });
        y
    }

    /// Quantises an f32 NCHW batch with the layer's input parameters (fused
    /// into the NHWC copy) and runs it, returning dequantised f32.
    pub fn forward(&self, x: &Array4<f32>) -> Result<Array4<f32>> {
        hasten_core::error::ensure_finite("Int8Gemm input", x.iter())?;
        let s = x.shape();
        if s[1] != self.in_channels {
            return Err(Error::shape(
                "Int8Gemm input channels",
                self.in_channels,
                s[1],
            ));
        }
        let g = ConvGeometry::batched(
            [s[0], s[1], s[2], s[3]],
            self.out_channels,
            self.kernel,
            &self.spec,
        )?;
        let isa = check_isa(None, Needs::Int8Dot, "Int8Gemm")?;
        let x = x.as_standard_layout();
        let (oh, ow) = g.out_hw;
        let mut y = Array4::<f32>::zeros((g.batch, self.out_channels, oh, ow));
        let mut img = vec![0u8; self.image_len(&g)];
        self.forward_into(
            x.as_slice().expect("standard layout"),
            &g,
            |v| self.input.quantize(v),
            |acc, out| {
                for (t, (&a, o)) in acc.iter().zip(out).enumerate() {
                    *o = self.requantize(a, t, Int8Output::F32);
                }
            },
            y.as_slice_mut().expect("fresh array"),
            &mut img,
            &ScratchPool::new(),
            isa,
        );
        Ok(y)
    }

    /// Bytes of the padded NHWC u8 image of a batch of geometry `g`.
    pub(crate) fn image_len(&self, g: &ConvGeometry) -> usize {
        g.batch * g.padded_hw.0 * g.padded_hw.1 * self.c4
    }

    /// The validated geometry of this layer on `batch` inputs of `in_hw`.
    pub(crate) fn geometry(&self, batch: usize, in_hw: (usize, usize)) -> Result<ConvGeometry> {
        ConvGeometry::batched(
            [batch, self.in_channels, in_hw.0, in_hw.1],
            self.out_channels,
            self.kernel,
            &self.spec,
        )
    }

    /// The whole f32 step, allocation-free: `code` quantises each value of
    /// the NCHW batch `src` (geometry `g`) inside the parallel padded-NHWC
    /// copy into `img` (≥ [`Self::image_len`] bytes), the integer GEMM runs
    /// row-parallel, and `epilogue(acc, out)` maps one pixel's exact
    /// accumulators `Σ v·(q − z_x)` (`[t]`) to its outputs (`[t]`, a loop
    /// over contiguous filters that vectorises), written to their NCHW
    /// places in `dst` inside the same row task (no NHWC accumulator buffer,
    /// no second pass).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_into(
        &self,
        src: &[f32],
        g: &ConvGeometry,
        code: impl Fn(f32) -> u8 + Sync,
        epilogue: impl Fn(&[i32], &mut [f32]) + Sync,
        dst: &mut [f32],
        img: &mut [u8],
        pool: &ScratchPool,
        isa: Isa,
    ) {
        let (oh, ow) = g.out_hw;
        let (t_n, area) = (self.out_channels, oh * ow);
        assert_eq!(dst.len(), g.batch * t_n * area, "Int8Gemm output length");
        let img = &mut img[..self.image_len(g)];
        self.padded_nhwc(src, g, code, img);
        let writer = DisjointWriter::new(dst);
        self.rows(img, g, isa, pool, |n, yy, acc, out| {
            for (a, o) in acc.chunks_exact(t_n).zip(out.chunks_exact_mut(t_n)) {
                epilogue(a, o);
            }
            for t in 0..t_n {
                let base = (n * t_n + t) * area + yy * ow;
                for x in 0..ow {
                    // SAFETY: output row (n, ·, yy, ·) belongs to this task alone.
                    unsafe { writer.write(base + x, out[x * t_n + t]) };
                }
            }
        });
    }

    /// NCHW values → padded NHWC u8 codes in `img` (`code` maps each value)
    /// with `c4` channels; padding pixels hold the zero point. The channels
    /// `c_n..c4` are left as they are: their packed weights are zero.
    fn padded_nhwc<T: Copy + Sync>(
        &self,
        src: &[T],
        g: &ConvGeometry,
        code: impl Fn(T) -> u8 + Sync,
        img: &mut [u8],
    ) {
        let (hp, wp) = g.padded_hw;
        let (h, w) = g.in_hw;
        let (pt, pl) = g.pad_top_left;
        let (c_n, c4) = (self.in_channels, self.c4);
        let z = self.input.zero_point;
        img.par_chunks_mut(wp * c4)
            .enumerate()
            .for_each(|(row, dst)| {
                let (n, yp) = (row / hp, row % hp);
                let inside_row = yp >= pt && yp < pt + h;
                for xp in 0..wp {
                    if !inside_row || xp < pl || xp >= pl + w {
                        dst[xp * c4..xp * c4 + c_n].fill(z);
                    }
                }
                if inside_row {
                    let y = yp - pt;
                    let dst = &mut dst[pl * c4..(pl + w) * c4];
                    // Codes first into a small contiguous block (a loop that
                    // vectorises), then scattered to their pixels.
                    const BLOCK: usize = 64;
                    let mut codes = [0u8; BLOCK];
                    for c in 0..c_n {
                        let row_src = &src[((n * c_n + c) * h + y) * w..][..w];
                        for (k, chunk) in row_src.chunks(BLOCK).enumerate() {
                            for (q, &v) in codes.iter_mut().zip(chunk) {
                                *q = code(v);
                            }
                            let pixels = dst[k * BLOCK * c4..].chunks_exact_mut(c4);
                            for (px, &q) in pixels.zip(&codes[..chunk.len()]) {
                                px[c] = q;
                            }
                        }
                    }
                }
            });
    }

    fn row_scalar(&self, g: &ConvGeometry, img: &[u8], y: usize, acc: &mut [i32]) {
        let (kh, kw) = g.kernel;
        let wp = g.padded_hw.1;
        let (c4, tp) = (self.c4, self.t_pad);
        for x in 0..g.out_hw.1 {
            let dst = &mut acc[x * tp..x * tp + self.out_channels];
            dst.fill(0);
            for i in 0..kh {
                for j in 0..kw {
                    let pix = ((y * g.stride.0 + i * g.dilation.0) * wp
                        + x * g.stride.1
                        + j * g.dilation.1)
                        * c4;
                    for cq in 0..c4 / 4 {
                        let xs = &img[pix + cq * 4..pix + cq * 4 + 4];
                        let wbase = ((i * kw + j) * (c4 / 4) + cq) * tp * 4;
                        for (t, d) in dst.iter_mut().enumerate() {
                            let wv = &self.packed[wbase + t * 4..wbase + t * 4 + 4];
                            *d = (0..4).fold(*d, |a, l| {
                                a.wrapping_add(i32::from(xs[l]) * i32::from(wv[l]))
                            });
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ConvGeometry, Int8Gemm};
    use std::arch::x86_64::*;

    /// VNNI micro-kernel: 4 output pixels × 64 filters.
    ///
    /// # Safety
    /// AVX-512F/BW/VNNI available; `img` is one sample's padded NHWC image
    /// matching `g` and `f.c4`; `acc.len() ≥ ow · t_pad`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn row_vnni(
        f: &Int8Gemm,
        g: &ConvGeometry,
        img: &[u8],
        y: usize,
        acc: &mut [i32],
    ) {
        let (kh, kw) = g.kernel;
        let wp = g.padded_hw.1;
        let ow = g.out_hw.1;
        let (c4, tp) = (f.c4, f.t_pad);
        let cq_n = c4 / 4;
        let wptr = f.packed.as_ptr();
        let ip = img.as_ptr();
        let mut x0 = 0;
        while x0 < ow {
            let xs: [usize; 4] = std::array::from_fn(|q| (x0 + q).min(ow - 1));
            let mut tb = 0;
            while tb < tp {
                let mut a = [_mm512_setzero_si512(); 16];
                for i in 0..kh {
                    let row = (y * g.stride.0 + i * g.dilation.0) * wp;
                    for j in 0..kw {
                        let pix: [usize; 4] = std::array::from_fn(|q| {
                            (row + xs[q] * g.stride.1 + j * g.dilation.1) * c4
                        });
                        let tap = i * kw + j;
                        for cq in 0..cq_n {
                            let wo = ((tap * cq_n + cq) * tp + tb) * 4;
                            // SAFETY: wo + 256 ≤ packed.len() (tb + 64 ≤ t_pad).
                            let w = unsafe {
                                [0, 64, 128, 192]
                                    .map(|r| _mm512_loadu_si512(wptr.add(wo + r).cast()))
                            };
                            for q in 0..4 {
                                // SAFETY: pix[q] + cq·4 + 4 ≤ img.len() (window inside the padded plane).
                                let xv = _mm512_set1_epi32(unsafe {
                                    ip.add(pix[q] + cq * 4).cast::<i32>().read_unaligned()
                                });
                                for r in 0..4 {
                                    a[q * 4 + r] = _mm512_dpbusd_epi32(a[q * 4 + r], xv, w[r]);
                                }
                            }
                        }
                    }
                }
                for q in 0..4.min(ow - x0) {
                    for r in 0..4 {
                        // SAFETY: (x0+q)·t_pad + tb + r·16 + 16 ≤ ow·t_pad ≤ acc.len().
                        unsafe {
                            _mm512_storeu_si512(
                                acc.as_mut_ptr().add((x0 + q) * tp + tb + r * 16).cast(),
                                a[q * 4 + r],
                            )
                        };
                    }
                }
                tb += 64;
            }
            x0 += 4;
        }
    }

    /// AVX2 micro-kernel: 2 output pixels × 32 filters, split `vpmaddubsw`.
    ///
    /// # Safety
    /// AVX2 available; same contract as [`row_vnni`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_avx2(
        f: &Int8Gemm,
        g: &ConvGeometry,
        img: &[u8],
        y: usize,
        acc: &mut [i32],
    ) {
        let (kh, kw) = g.kernel;
        let wp = g.padded_hw.1;
        let ow = g.out_hw.1;
        let (c4, tp) = (f.c4, f.t_pad);
        let cq_n = c4 / 4;
        let wptr = f.packed.as_ptr();
        let ip = img.as_ptr();
        let ones = _mm256_set1_epi16(1);
        let low7 = _mm256_set1_epi8(0x7f);
        let high1 = _mm256_set1_epi8(0x80u8 as i8);
        let mut x0 = 0;
        while x0 < ow {
            let xs: [usize; 2] = std::array::from_fn(|q| (x0 + q).min(ow - 1));
            let mut tb = 0;
            while tb < tp {
                let mut a = [_mm256_setzero_si256(); 8];
                for i in 0..kh {
                    let row = (y * g.stride.0 + i * g.dilation.0) * wp;
                    for j in 0..kw {
                        let pix: [usize; 2] = std::array::from_fn(|q| {
                            (row + xs[q] * g.stride.1 + j * g.dilation.1) * c4
                        });
                        let tap = i * kw + j;
                        for cq in 0..cq_n {
                            let wo = ((tap * cq_n + cq) * tp + tb) * 4;
                            // SAFETY: wo + 128 ≤ packed.len() (tb + 32 ≤ t_pad).
                            let w = unsafe {
                                [0, 32, 64, 96].map(|r| _mm256_loadu_si256(wptr.add(wo + r).cast()))
                            };
                            for q in 0..2 {
                                // SAFETY: window inside the padded plane.
                                let xv = _mm256_set1_epi32(unsafe {
                                    ip.add(pix[q] + cq * 4).cast::<i32>().read_unaligned()
                                });
                                let lo = _mm256_and_si256(xv, low7);
                                let hi = _mm256_and_si256(xv, high1);
                                for r in 0..4 {
                                    let plo =
                                        _mm256_madd_epi16(_mm256_maddubs_epi16(lo, w[r]), ones);
                                    let phi =
                                        _mm256_madd_epi16(_mm256_maddubs_epi16(hi, w[r]), ones);
                                    a[q * 4 + r] =
                                        _mm256_add_epi32(a[q * 4 + r], _mm256_add_epi32(plo, phi));
                                }
                            }
                        }
                    }
                }
                for q in 0..2.min(ow - x0) {
                    for r in 0..4 {
                        // SAFETY: (x0+q)·t_pad + tb + r·8 + 8 ≤ acc.len().
                        unsafe {
                            _mm256_storeu_si256(
                                acc.as_mut_ptr().add((x0 + q) * tp + tb + r * 8).cast(),
                                a[q * 4 + r],
                            )
                        };
                    }
                }
                tb += 32;
            }
            x0 += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowbit::available_isas;
    use crate::lowbit::binary_gemm::tests::{conv_case, naive_int_conv};
    use hasten_core::SeededRng;
    use proptest::prelude::*;

    /// Naive i64 truth of `Σ_{valid taps} v · (q − z)`, NHWC.
    fn naive(w: &Array4<i8>, q: &Array4<u8>, z: u8, spec: &ConvSpec) -> Vec<i32> {
        naive_int_conv(w.shape(), q.shape(), spec, |n, t, c, i, j, iy, ix| {
            i64::from(w[[t, c, i, j]]) * (i64::from(q[[n, c, iy, ix]]) - i64::from(z))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn every_path_is_bit_exact((n, c, t, k, h, w, spec, seed) in conv_case(), z in any::<u8>(), extreme in any::<bool>()) {
            prop_assume!(spec.output_hw(h, w, k, k).is_ok());
            let mut rng = SeededRng::new(seed);
            // `extreme` saturates the codes (255 and −128) to exercise i16 overflow.
            let q = Array4::from_shape_fn((n, c, h, w), |_| if extreme { 255 } else { rng.below(256) as u8 });
            let wt = Array4::from_shape_fn((t, c, k, k), |_| if extreme { -128 } else { rng.below(256) as i32 as u8 as i8 });
            let scales: Vec<f32> = (0..t).map(|i| 0.01 + i as f32 * 1e-3).collect();
            let bias: Vec<f32> = (0..t).map(|i| i as f32 * 0.5).collect();
            let conv = Int8Gemm::new(wt.view(), &scales, Some(&bias), spec, U8Quant::new(0.02, z).unwrap()).unwrap();
            let truth = naive(&wt, &q, z, &spec);
            let out = Int8Output::U8 { quant: U8Quant::new(0.5, 7).unwrap(), relu: true };
            let (oh, ow) = spec.output_hw(h, w, k, k).unwrap();
            for isa in available_isas(Needs::Int8Dot) {
                let (acc, _) = conv.accumulators(q.view(), Some(isa)).unwrap();
                prop_assert_eq!(&acc, &truth, "{:?}", isa);
                let y = conv.forward_quantized(q.view(), out, Some(isa)).unwrap();
                for ((nn, tt, yy, xx), &v) in y.indexed_iter() {
                    let a = truth[((nn * oh + yy) * ow + xx) * t + tt];
                    let want = ((0.02f32 * scales[tt] * a as f32 + bias[tt]) / 0.5).round_ties_even() + 7.0;
                    prop_assert_eq!(v, want.clamp(7.0, 255.0));
                }
            }
        }

        #[test]
        fn invalid_parameters_are_errors(scale in -1.0f32..1.0, ns in 0usize..4, groups in 1usize..3) {
            let w = Array4::<i8>::ones((2, 4, 1, 1));
            let r = Int8Gemm::new(w.view(), &vec![0.1; ns], None, ConvSpec::new().with_groups(groups),
                U8Quant { scale, zero_point: 0 });
            prop_assert_eq!(r.is_ok(), scale > 0.0 && ns == 2 && groups == 1);
        }
    }

    proptest! {
        #[test]
        fn quantize_rounds_half_to_even(x in -2000.0f32..2000.0, half in any::<bool>(), z in any::<u8>(), scale in 0.01f32..4.0) {
            let q = U8Quant::new(scale, z).unwrap();
            let x = if half { (x.trunc() + 0.5) * scale } else { x };
            let want = ((x / scale).round_ties_even() + f32::from(z)).clamp(0.0, 255.0) as u8;
            prop_assert_eq!(q.quantize(x), want);
        }
    }

    #[test]
    fn forward_approximates_the_float_convolution() {
        // Dequantised output = the f32 conv of the dequantised tensors (up to f32 rounding).
        let mut rng = SeededRng::new(3);
        let spec = ConvSpec::new().with_padding(1);
        let q = Array4::from_shape_fn((1, 5, 4, 4), |_| rng.below(256) as u8);
        let wt = Array4::from_shape_fn((3, 5, 3, 3), |_| (rng.below(255) as i32 - 127) as i8);
        let conv = Int8Gemm::new(
            wt.view(),
            &[0.1, 0.2, 0.3],
            None,
            spec,
            U8Quant::new(0.05, 128).unwrap(),
        )
        .unwrap();
        let y = conv
            .forward_quantized(q.view(), Int8Output::F32, None)
            .unwrap();
        let truth = naive(&wt, &q, 128, &spec);
        for ((_, t, yy, xx), &v) in y.indexed_iter() {
            let want = 0.05 * [0.1, 0.2, 0.3][t] * f64::from(truth[(yy * 4 + xx) * 3 + t]);
            assert!((f64::from(v) - want).abs() < 1e-4 * (1.0 + want.abs()));
        }
        assert!(conv
            .accumulators(Array4::<u8>::zeros((1, 4, 4, 4)).view(), None)
            .is_err());
        // The fused f32 path = quantise, then the u8 path.
        let x = rng.normal_array((2, 5, 6, 5), 3.0);
        let fused = conv.forward(&x).unwrap();
        let q = conv.input_quant().quantize_array(x.view());
        assert_eq!(
            fused,
            conv.forward_quantized(q.view(), Int8Output::F32, None)
                .unwrap()
        );
        assert!(conv.forward(&Array4::zeros((1, 4, 6, 5))).is_err());
    }
}

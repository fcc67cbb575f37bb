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
//!   i32 lane; a register block is 4 output pixels × 64 filters (16 zmm),
//!   and the last 16, 32 or 48 filters run as a narrower block over more
//!   pixels, so filters are padded only to a multiple of 16 (a 38-filter
//!   Tucker factor computes 48, not 64).
//! - **AVX2**: `vpmaddwd` on the input widened to u16 and the weights to
//!   i16 (the oneDNN/MLAS `vpmaddubsw` → `vpmaddwd` sequence would saturate:
//!   a pair `255·(−128)·2 = −65280` overflows the i16 of `vpmaddubsw`, and
//!   oneDNN's 7-bit weights would change the quantiser). Each lane multiplies
//!   two u16 × i16 pairs and adds them into an i32: `|2·255·128| < 2^31`, so
//!   every product and pair sum is exact, with no saturation case at all,
//!   and one instruction does 16 MACs — what `vpmaddubsw` + `vpmaddwd`-by-ones
//!   gives per multiply-port slot, where the earlier overflow-free split of
//!   the u8 input (two `vpmaddubsw` and two `vpmaddwd` per 32 MACs) gave
//!   half. The padded image is built as u16 directly (the widening costs no
//!   pass) and the weights are packed per block of filters, contiguous in
//!   the order the kernel reads them; a register block is
//!   [`AVX2_PIXELS`] output pixels × `8 · `[`AVX2_REGS`] filters.
//! - **Scalar**: i32 loops.
//!
//! All paths are bit-exact: the accumulators are exact integers and the
//! epilogue ([`Int8Gemm::requantize`]) is one scalar formula.

use hasten_core::{ConvSpec, Error, Result};
use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::int8_quantize::code_each;
use super::layout::{nhwc_to_nchw, DisjointWriter};
use super::{check_isa, round_up, Isa, Needs};
use crate::conv::ConvGeometry;
use crate::pool::ScratchPool;

/// Filters are padded to a multiple of this (one register of i32 lanes on
/// AVX-512, the AVX2 block of [`AVX2_FILTERS`]).
const FILTER_BLOCK: usize = 16;
/// Values per run of the chained epilogue's codes and of the output rows' writes.
const CODE_BLOCK: usize = 64;
/// Values coded per parallel task of the quantizing copy.
const CODE_CHUNK: usize = 1 << 14;
/// Multiply-adds a row task of the integer GEMM must do at least: waking a
/// worker and joining it costs a few microseconds, about the time the VNNI
/// kernel takes for this many, so the rows of a small step (a 28×28
/// network's) run as fewer, larger tasks, or on the calling thread alone.
const MIN_TASK_MACS: usize = 1 << 20;
/// Output pixels of the AVX2 register block.
pub(crate) const AVX2_PIXELS: usize = 6;
/// Accumulator registers (8 filters each) per pixel of the AVX2 block.
pub(crate) const AVX2_REGS: usize = 2;
/// Filters of the AVX2 register block.
const AVX2_FILTERS: usize = 8 * AVX2_REGS;

/// The padded NHWC input images a layer reuses from run to run: u8 codes
/// for the VNNI and scalar kernels, the same codes as u16 for the AVX2 one.
#[derive(Debug, Default)]
pub(crate) struct Image {
    bytes: Vec<u8>,
    words: Vec<u16>,
    /// The input's codes in its own NCHW order, before the padded copy.
    codes: Vec<u8>,
}

/// `buf[..len]`, grown (zero-filled) first if shorter.
fn grown<P: Copy + Default>(buf: &mut Vec<P>, len: usize) -> &mut [P] {
    if buf.len() < len {
        buf.resize(len, P::default());
    }
    &mut buf[..len]
}

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
    /// The VNNI weights, per block of filters (64 each, then one block of
    /// the last `t_pad mod 64`) `[tap][c4 / 4][block width][4]` i8, each
    /// block contiguous in the order the kernel reads it (see
    /// [`Self::packed_index`]).
    packed: Vec<i8>,
    /// The AVX2 weights, `[t_pad / AVX2_FILTERS][tap][c4 / 2][AVX2_FILTERS][2]`
    /// i16; empty where the CPU has no AVX2.
    packed16: Vec<i16>,
    /// `z_x · Σ_{c, taps} v[t]` (wrapping), the zero-point correction.
    zero_correction: Vec<i32>,
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
        let at =
            |t: usize, tap: usize, c: usize| packed_index(t, tap, c, taps_of(kh, kw), c4, t_pad);
        let mut weight_sum = vec![0i32; t_n];
        let avx2 = Isa::Avx2.supports(Needs::Int8Dot);
        let mut packed16 = vec![0i16; if avx2 { packed.len() } else { 0 }];
        let taps = taps_of(kh, kw);
        for ((t, c, i, j), &v) in weights.indexed_iter() {
            let tap = i * kw + j;
            packed[at(t, tap, c)] = v;
            if avx2 {
                let (tb, tr) = (t / AVX2_FILTERS, t % AVX2_FILTERS);
                let block = ((tb * taps + tap) * (c4 / 2) + c / 2) * AVX2_FILTERS;
                packed16[(block + tr) * 2 + c % 2] = i16::from(v);
            }
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
            packed16,
            zero_correction: weight_sum
                .iter()
                .map(|&s| i32::from(input.zero_point).wrapping_mul(s))
                .collect(),
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
        let (oh, ow) = g.out_hw;
        let row_len = ow * self.out_channels;
        let mut out = vec![0i32; g.batch * oh * row_len];
        let writer = DisjointWriter::new(&mut out);
        let src = q.as_slice().expect("standard layout");
        let mut img = Image::default();
        // u8 codes hold no NaN, so the rows always run.
        self.run_rows(
            src,
            &g,
            |s: &[u8], d: &mut [u8]| {
                d.copy_from_slice(s);
                false
            },
            &mut img,
            &ScratchPool::new(),
            isa,
            |n, y, acc, _| {
                // SAFETY: row (n, y) is written by this task only.
                unsafe { writer.write_slice((n * oh + y) * row_len, acc) };
            },
        );
        Ok((out, g.out_hw))
    }

    /// Codes the NCHW batch `src` (geometry `g`) into the padded image of
    /// `isa`'s kernel (`code` codes a run of values and says whether it
    /// held a NaN; u8, widened to u16 for AVX2), then runs
    /// [`Self::run_image`] on it; `false` (no row run) when `src` holds a
    /// NaN.
    #[allow(clippy::too_many_arguments)]
    fn run_rows<T: Copy + Sync, F>(
        &self,
        src: &[T],
        g: &ConvGeometry,
        code: impl Fn(&[T], &mut [u8]) -> bool + Sync,
        img: &mut Image,
        pool: &ScratchPool,
        isa: Isa,
        f: F,
    ) -> bool
    where
        F: Fn(usize, usize, &[i32], &mut [f32]) + Sync,
    {
        if self.fill_image(src, g, code, img, isa) {
            return false;
        }
        self.run_image(img, g, pool, isa, f);
        true
    }

    /// Codes the NCHW batch `src` (geometry `g`) into the padded image of
    /// `isa`'s kernel in `img` (`code` codes a run of values and says
    /// whether it held a NaN; u8, widened to u16 for AVX2); returns whether
    /// `src` holds a NaN (found in the same pass).
    fn fill_image<T: Copy + Sync>(
        &self,
        src: &[T],
        g: &ConvGeometry,
        code: impl Fn(&[T], &mut [u8]) -> bool + Sync,
        img: &mut Image,
        isa: Isa,
    ) -> bool {
        // Coding first, in the input's own order: long contiguous runs for
        // the vector code, in parallel; the strided transpose then moves
        // bytes, a quarter of the f32 traffic.
        let codes = grown(&mut img.codes, src.len());
        let nan = src
            .par_chunks(CODE_CHUNK)
            .zip(codes.par_chunks_mut(CODE_CHUNK))
            .map(|(s, d)| code(s, d))
            .reduce(|| false, |a, b| a | b);
        if nan {
            return true;
        }
        let codes = &img.codes[..src.len()];
        let len = self.image_len(g);
        if isa == Isa::Avx2 {
            self.padded_nhwc(codes, g, grown(&mut img.words, len));
        } else {
            self.padded_nhwc(codes, g, grown(&mut img.bytes, len));
        }
        false
    }

    /// Runs [`Self::rows`] with `isa`'s kernel on the padded image `img`
    /// already holds for geometry `g` (u16 codes for AVX2, else u8).
    fn run_image<F>(&self, img: &Image, g: &ConvGeometry, pool: &ScratchPool, isa: Isa, f: F)
    where
        F: Fn(usize, usize, &[i32], &mut [f32]) + Sync,
    {
        let len = self.image_len(g);
        let one = len / g.batch;
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                let words = &img.words[..len];
                self.rows(g, pool, f, |n, y, acc| {
                    // SAFETY: check_isa confirmed avx2 (so `packed16` is
                    // filled); the image is sample n's, matching `g`.
                    unsafe {
                        x86::row_avx2::<AVX2_PIXELS, AVX2_REGS>(
                            self,
                            g,
                            &words[n * one..(n + 1) * one],
                            y,
                            acc,
                        )
                    }
                });
            }
            _ => {
                let bytes = &img.bytes[..len];
                self.rows(g, pool, f, |n, y, acc| {
                    let img = &bytes[n * one..(n + 1) * one];
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: check_isa confirmed avx512f/bw/vnni; the image matches `g`.
                        Isa::Avx512 => unsafe { x86::row_vnni(self, g, img, y, acc) },
                        _ => self.row_scalar(g, img, y, acc),
                    }
                });
            }
        }
    }

    /// Computes the exact accumulators of every output row in parallel
    /// (`kernel(n, y, acc)` fills row `y` of sample `n`, `acc` being
    /// `[x][t_pad]`) and hands each row to `f(n, y, acc, out)`, `acc` being
    /// `[x][t]` and `out` a scratch row of as many floats; the row buffers
    /// come from `pool` (no allocation once they have grown).
    fn rows<F, K>(&self, g: &ConvGeometry, pool: &ScratchPool, f: F, kernel: K)
    where
        F: Fn(usize, usize, &[i32], &mut [f32]) + Sync,
        K: Fn(usize, usize, &mut [i32]) + Sync,
    {
        let (oh, ow) = g.out_hw;
        let t_n = self.out_channels;
        let (acc_len, out_len) = (ow * self.t_pad, ow * t_n);
        let row_macs = ow * self.t_pad * self.c4 * g.kernel.0 * g.kernel.1;
        let min_rows = MIN_TASK_MACS.div_ceil(row_macs.max(1));
        (0..g.batch * oh)
            .into_par_iter()
            .with_min_len(min_rows)
            .for_each(|row| {
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
                    kernel(n, y, acc);
                    let pixels = row_out
                        .chunks_exact_mut(t_n)
                        .zip(acc.chunks_exact(self.t_pad));
                    for (out, acc) in pixels {
                        let per_filter = out.iter_mut().zip(&acc[..t_n]).zip(&self.zero_correction);
                        for ((o, &a), &c) in per_filter {
                            *o = a.wrapping_sub(c);
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
        let mut img = Image::default();
        // Finite input (checked above): the rows always run.
        self.forward_into(
            x.as_slice().expect("standard layout"),
            &g,
            |s, d| code_each(s, d, |v| self.input.quantize(v)),
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

    /// Codes in the padded NHWC image of a batch of geometry `g`.
    fn image_len(&self, g: &ConvGeometry) -> usize {
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

    /// The whole f32 step, allocation-free: `code` quantises runs of values
    /// of the NCHW batch `src` (geometry `g`) inside the parallel padded-NHWC
    /// copy into `img` (grown to [`Self::image_len`] codes), the integer GEMM runs
    /// row-parallel, and `epilogue(acc, out)` maps one pixel's exact
    /// accumulators `Σ v·(q − z_x)` (`[t]`) to its outputs (`[t]`, a loop
    /// over contiguous filters that vectorises), written to their NCHW
    /// places in `dst` inside the same row task (no NHWC accumulator buffer,
    /// no second pass). Returns `false`, with `dst` unwritten, when `src`
    /// holds a NaN (found by the copy itself, not by a scan of its own).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_into(
        &self,
        src: &[f32],
        g: &ConvGeometry,
        code: impl Fn(&[f32], &mut [u8]) -> bool + Sync,
        epilogue: impl Fn(&[i32], &mut [f32]) + Sync,
        dst: &mut [f32],
        img: &mut Image,
        pool: &ScratchPool,
        isa: Isa,
    ) -> bool {
        let (oh, ow) = g.out_hw;
        let (t_n, area) = (self.out_channels, oh * ow);
        assert_eq!(dst.len(), g.batch * t_n * area, "Int8Gemm output length");
        let writer = DisjointWriter::new(dst);
        self.run_rows(src, g, code, img, pool, isa, |n, yy, acc, out| {
            write_nchw(&writer, n, yy, acc, out, &epilogue, t_n, (oh, ow));
        })
    }

    /// The step of [`Self::forward_into`] whose outputs are the input
    /// codes of the next layer `next` (geometry `next_g`, whose input is
    /// this layer's output), from `src` (coded by `code` into `img`) or,
    /// when `None`, from the image `img` already holds (this layer being
    /// itself chained): `epilogue(acc, out)` maps one pixel's
    /// accumulators to its f32 outputs as there, `next_code` codes runs of
    /// them, and the codes go straight to their pixels of `next`'s padded
    /// image `next_img` for `isa` (its border set to `next`'s zero point;
    /// `img` is this layer's own image),
    /// so no f32 tensor is written and `next` skips its copy
    /// ([`Self::forward_image`]). Returns `false`, with `next_img` left
    /// as it was, when `src` holds a NaN.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_chained(
        &self,
        src: Option<&[f32]>,
        g: &ConvGeometry,
        code: impl Fn(&[f32], &mut [u8]) -> bool + Sync,
        epilogue: impl Fn(&[i32], &mut [f32]) + Sync,
        img: &mut Image,
        next: &Int8Gemm,
        next_g: &ConvGeometry,
        next_code: impl Fn(&[f32], &mut [u8]) -> bool + Sync,
        next_img: &mut Image,
        pool: &ScratchPool,
        isa: Isa,
    ) -> bool {
        assert!(
            next_g.in_hw == g.out_hw
                && next_g.batch == g.batch
                && next.in_channels == self.out_channels,
            "chained Int8Gemm geometry"
        );
        let len = next.image_len(next_g);
        let t_n = self.out_channels;
        let (hp, wp) = next_g.padded_hw;
        let (pt, pl) = next_g.pad_top_left;
        let pixel = move |n: usize, y: usize, x: usize| ((n * hp + y + pt) * wp + x + pl) * next.c4;
        if let Some(src) = src {
            if self.fill_image(src, g, code, img, isa) {
                return false;
            }
        }
        macro_rules! chained {
            ($buf:expr, $conv:expr) => {{
                let buf = grown($buf, len);
                next.fill_border(next_g, buf, $conv(next.input.zero_point));
                let writer = DisjointWriter::new(buf);
                self.run_image(img, g, pool, isa, |n, yy, acc, out| {
                    let mut codes = [0u8; CODE_BLOCK];
                    let mut converted = [$conv(0u8); CODE_BLOCK];
                    for (x, (a, o)) in acc.chunks_exact(t_n).zip(out.chunks_exact_mut(t_n)).enumerate() {
                        epilogue(a, o);
                        let base = pixel(n, yy, x);
                        for (k, run) in o.chunks(CODE_BLOCK).enumerate() {
                            let codes = &mut codes[..run.len()];
                            // Finite codes in, so the outputs hold no NaN
                            // the flag would need to report.
                            next_code(run, codes);
                            let converted = &mut converted[..run.len()];
                            for (d, &q) in converted.iter_mut().zip(codes.iter()) {
                                *d = $conv(q);
                            }
                            // SAFETY: pixel (n, yy, x) of the next image belongs to this row task alone.
                            unsafe { writer.write_slice(base + k * CODE_BLOCK, converted) };
                        }
                    }
                });
            }};
        }
        if isa == Isa::Avx2 {
            chained!(&mut next_img.words, u16::from);
        } else {
            chained!(&mut next_img.bytes, |v: u8| v);
        }
        true
    }

    /// [`Self::forward_into`] from the padded image `img` that
    /// [`Self::forward_chained`] of the previous layer filled for
    /// geometry `g` and `isa`.
    pub(crate) fn forward_image(
        &self,
        img: &Image,
        g: &ConvGeometry,
        epilogue: impl Fn(&[i32], &mut [f32]) + Sync,
        dst: &mut [f32],
        pool: &ScratchPool,
        isa: Isa,
    ) {
        let (oh, ow) = g.out_hw;
        let (t_n, area) = (self.out_channels, oh * ow);
        assert_eq!(dst.len(), g.batch * t_n * area, "Int8Gemm output length");
        let writer = DisjointWriter::new(dst);
        self.run_image(img, g, pool, isa, |n, yy, acc, out| {
            write_nchw(&writer, n, yy, acc, out, &epilogue, t_n, (oh, ow));
        });
    }

    /// Sets the padding pixels of the padded image `img` (geometry `g`) to
    /// `z`; the interior is left as it is.
    fn fill_border<P: Copy + Send + Sync>(&self, g: &ConvGeometry, img: &mut [P], z: P) {
        let (hp, wp) = g.padded_hw;
        let (h, w) = g.in_hw;
        let (pt, pl) = g.pad_top_left;
        let c4 = self.c4;
        img.par_chunks_mut(wp * c4)
            .with_min_len(crate::shares::min_items(wp * c4))
            .enumerate()
            .for_each(|(row, dst)| {
                let yp = row % hp;
                if yp < pt || yp >= pt + h {
                    dst.fill(z);
                } else {
                    dst[..pl * c4].fill(z);
                    dst[(pl + w) * c4..].fill(z);
                }
            });
    }

    /// NCHW codes → padded NHWC codes in `img` with `c4` channels;
    /// padding pixels hold the zero point. The channels `c_n..c4` are left
    /// as they are: their packed weights are zero.
    fn padded_nhwc<P: Copy + Send + Sync + From<u8>>(
        &self,
        codes: &[u8],
        g: &ConvGeometry,
        img: &mut [P],
    ) {
        let (hp, wp) = g.padded_hw;
        let (h, w) = g.in_hw;
        let (pt, pl) = g.pad_top_left;
        let (c_n, c4) = (self.in_channels, self.c4);
        let z = P::from(self.input.zero_point);
        img.par_chunks_mut(wp * c4)
            .with_min_len(crate::shares::min_items(wp * c4))
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
                    let row_codes = |c: usize| &codes[((n * c_n + c) * h + y) * w..][..w];
                    // Four channels per store; the last 1–3 one at a time.
                    let whole = c_n / 4 * 4;
                    for c in (0..whole).step_by(4) {
                        let rows = [
                            row_codes(c),
                            row_codes(c + 1),
                            row_codes(c + 2),
                            row_codes(c + 3),
                        ];
                        for (x, px) in dst.chunks_exact_mut(c4).enumerate() {
                            let quad: &mut [P; 4] =
                                (&mut px[c..c + 4]).try_into().expect("four channels");
                            *quad = rows.map(|r| P::from(r[x]));
                        }
                    }
                    for c in whole..c_n {
                        for (px, &q) in dst.chunks_exact_mut(c4).zip(row_codes(c)) {
                            px[c] = P::from(q);
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
                        for (t, d) in dst.iter_mut().enumerate() {
                            let wv = packed_index(t, i * kw + j, cq * 4, kh * kw, c4, tp);
                            let wv = &self.packed[wv..wv + 4];
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

/// Filters per block of the VNNI weights (the widest register block).
const VNNI_BLOCK: usize = 64;

/// Taps of a `kh × kw` kernel.
fn taps_of(kh: usize, kw: usize) -> usize {
    kh * kw
}

/// Where weight `(t, tap, c)` lies in [`Int8Gemm::packed`]: filters in
/// blocks of [`VNNI_BLOCK`] (the last one `t_pad mod 64` wide), each block
/// `[tap][c / 4][t in block][c mod 4]`, so the kernel walks a block's
/// weights front to back, one contiguous run per 4 channels of a tap.
fn packed_index(t: usize, tap: usize, c: usize, taps: usize, c4: usize, t_pad: usize) -> usize {
    let start = t / VNNI_BLOCK * VNNI_BLOCK;
    let width = VNNI_BLOCK.min(t_pad - start);
    start * taps * c4 + ((tap * (c4 / 4) + c / 4) * width + t - start) * 4 + c % 4
}

/// Output row `yy` of sample `n`: `epilogue(acc, out)` per pixel (`acc`
/// `[x][t]`, `out` as many floats), then the values to their NCHW places.
#[allow(clippy::too_many_arguments)]
fn write_nchw(
    writer: &DisjointWriter<'_, f32>,
    n: usize,
    yy: usize,
    acc: &[i32],
    out: &mut [f32],
    epilogue: &(impl Fn(&[i32], &mut [f32]) + Sync),
    t_n: usize,
    (oh, ow): (usize, usize),
) {
    for (a, o) in acc.chunks_exact(t_n).zip(out.chunks_exact_mut(t_n)) {
        epilogue(a, o);
    }
    let area = oh * ow;
    // Each plane's row gathered on the stack, then written in one copy.
    let mut line = [0f32; CODE_BLOCK];
    for t in 0..t_n {
        let base = (n * t_n + t) * area + yy * ow;
        for x0 in (0..ow).step_by(CODE_BLOCK) {
            let line = &mut line[..CODE_BLOCK.min(ow - x0)];
            for (k, v) in line.iter_mut().enumerate() {
                *v = out[(x0 + k) * t_n + t];
            }
            // SAFETY: output row (n, ·, yy, ·) belongs to this task alone.
            unsafe { writer.write_slice(base + x0, line) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ConvGeometry, Int8Gemm};
    use std::arch::x86_64::*;

    /// VNNI micro-kernel over every filter: blocks of 64 filters as 4
    /// output pixels × 4 zmm, then the remaining 16, 32 or 48 (`t_pad` is
    /// a multiple of 16) as one narrower block over more pixels.
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
        let (tp, full) = (f.t_pad, f.t_pad / 64 * 64);
        // SAFETY: the caller's contract; each call covers whole blocks of
        // filters inside `t_pad`.
        unsafe {
            tile_vnni::<4, 4>(f, g, img, y, acc, 0..full);
            match (tp - full) / 16 {
                1 => tile_vnni::<12, 1>(f, g, img, y, acc, full..tp),
                2 => tile_vnni::<8, 2>(f, g, img, y, acc, full..tp),
                3 => tile_vnni::<6, 3>(f, g, img, y, acc, full..tp),
                _ => {}
            }
        }
    }

    /// `P` output pixels × `16·R` filters of `filters` (whole blocks) at a
    /// time: `P·R` accumulators, `R` weight registers and one broadcast.
    ///
    /// # Safety
    /// As [`row_vnni`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_vnni<const P: usize, const R: usize>(
        f: &Int8Gemm,
        g: &ConvGeometry,
        img: &[u8],
        y: usize,
        acc: &mut [i32],
        filters: std::ops::Range<usize>,
    ) {
        let (kh, kw) = g.kernel;
        let wp = g.padded_hw.1;
        let ow = g.out_hw.1;
        let (c4, tp) = (f.c4, f.t_pad);
        let cq_n = c4 / 4;
        assert!(
            ow * tp <= acc.len()
                && filters.end <= tp
                && filters.len().is_multiple_of(16 * R)
                && filters.start.is_multiple_of(super::VNNI_BLOCK)
                && (16 * R == super::VNNI_BLOCK || filters.end == tp && filters.len() == 16 * R)
                && f.packed.len() == kh * kw * c4 * tp,
            "tile_vnni contract"
        );
        // Each block of 16·R filters is one block of `packed`, read front to back.
        let block_len = kh * kw * c4 * 16 * R;
        let wptr = f.packed.as_ptr();
        let ip = img.as_ptr();
        let mut x0 = 0;
        while x0 < ow {
            let mut xs = [0usize; P];
            for (q, x) in xs.iter_mut().enumerate() {
                *x = (x0 + q).min(ow - 1) * g.stride.1;
            }
            let mut tb = filters.start;
            while tb < filters.end {
                let mut a = [[_mm512_setzero_si512(); R]; P];
                // SAFETY: tb·kh·kw·c4 + block_len ≤ t_pad·kh·kw·c4 = packed.len().
                let mut wb = unsafe { wptr.add(tb * kh * kw * c4) };
                for i in 0..kh {
                    let row = (y * g.stride.0 + i * g.dilation.0) * wp;
                    for j in 0..kw {
                        let mut pix = [0usize; P];
                        for q in 0..P {
                            pix[q] = (row + xs[q] + j * g.dilation.1) * c4;
                            assert!(pix[q] + c4 <= img.len(), "tile_vnni window");
                        }
                        for cq in 0..cq_n {
                            let mut w = [_mm512_setzero_si512(); R];
                            for (r, wr) in w.iter_mut().enumerate() {
                                // SAFETY: the block's kh·kw·cq_n runs of 64·R
                                // bytes lie inside `packed` (block_len, above).
                                *wr = unsafe { _mm512_loadu_si512(wb.add(r * 64).cast()) };
                            }
                            // SAFETY: as above; ends at the block's end.
                            wb = unsafe { wb.add(64 * R) };
                            for q in 0..P {
                                // SAFETY: pix[q] + c4 ≤ img.len() (asserted).
                                let xv = _mm512_set1_epi32(unsafe {
                                    ip.add(pix[q] + cq * 4).cast::<i32>().read_unaligned()
                                });
                                for r in 0..R {
                                    a[q][r] = _mm512_dpbusd_epi32(a[q][r], xv, w[r]);
                                }
                            }
                        }
                    }
                }
                for (q, aq) in a.iter().enumerate().take(P.min(ow - x0)) {
                    for (r, ar) in aq.iter().enumerate() {
                        // SAFETY: (x0+q)·t_pad + tb + 16r + 16 ≤ ow·t_pad ≤ acc.len().
                        unsafe {
                            _mm512_storeu_si512(
                                acc.as_mut_ptr().add((x0 + q) * tp + tb + r * 16).cast(),
                                *ar,
                            )
                        };
                    }
                }
                debug_assert_eq!(
                    wb,
                    wptr.wrapping_add(tb * kh * kw * c4 + block_len),
                    "one block read"
                );
                tb += 16 * R;
            }
            x0 += P;
        }
    }

    /// AVX2 micro-kernel: `P` output pixels × `8·R` filters, `vpmaddwd` on
    /// u16 inputs × i16 weights (exact, see the module doc). Fills filters
    /// up to `out_channels` rounded up to `8·R`.
    ///
    /// # Safety
    /// AVX2 available and `f.packed16` filled for `8·R` =
    /// [`super::AVX2_FILTERS`]; `img` is one sample's padded NHWC u16 image
    /// matching `g` and `f.c4`; `acc.len() ≥ ow · t_pad`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_avx2<const P: usize, const R: usize>(
        f: &Int8Gemm,
        g: &ConvGeometry,
        img: &[u16],
        y: usize,
        acc: &mut [i32],
    ) {
        let (kh, kw) = g.kernel;
        let wp = g.padded_hw.1;
        let ow = g.out_hw.1;
        let (c4, tp) = (f.c4, f.t_pad);
        let cp_n = c4 / 2;
        let block = 8 * R;
        let t_end = f.out_channels.div_ceil(block) * block;
        assert!(
            ow * tp <= acc.len()
                && t_end <= tp
                && block == super::AVX2_FILTERS
                && f.packed16.len() == f.packed.len(),
            "row_avx2 contract"
        );
        let ip = img.as_ptr();
        let mut x0 = 0;
        while x0 < ow {
            let mut pix0 = [0usize; P];
            for (q, p) in pix0.iter_mut().enumerate() {
                *p = (x0 + q).min(ow - 1) * g.stride.1;
            }
            let mut tb = 0;
            while tb < t_end {
                let mut a = [[_mm256_setzero_si256(); R]; P];
                // Weights of this block: [tap][cp][8R][2], read in order.
                let mut wptr = f.packed16[tb * kh * kw * c4..].as_ptr();
                for i in 0..kh {
                    let row = (y * g.stride.0 + i * g.dilation.0) * wp;
                    for j in 0..kw {
                        let mut pix = [0usize; P];
                        for q in 0..P {
                            pix[q] = (row + pix0[q] + j * g.dilation.1) * c4;
                            assert!(pix[q] + c4 <= img.len(), "row_avx2 window");
                        }
                        for cp in 0..cp_n {
                            let mut w = [_mm256_setzero_si256(); R];
                            for (r, wr) in w.iter_mut().enumerate() {
                                // SAFETY: the block holds kh·kw·cp_n·8R pairs
                                // (tb + 8R ≤ t_end ≤ t_pad, asserted).
                                *wr = unsafe { _mm256_loadu_si256(wptr.add(r * 16).cast()) };
                            }
                            // SAFETY: as above.
                            wptr = unsafe { wptr.add(block * 2) };
                            for q in 0..P {
                                // SAFETY: pix[q] + c4 ≤ img.len() (window inside the padded plane).
                                let xv = _mm256_set1_epi32(unsafe {
                                    ip.add(pix[q] + cp * 2).cast::<i32>().read_unaligned()
                                });
                                for r in 0..R {
                                    a[q][r] =
                                        _mm256_add_epi32(a[q][r], _mm256_madd_epi16(xv, w[r]));
                                }
                            }
                        }
                    }
                }
                for (q, aq) in a.iter().enumerate().take(P.min(ow - x0)) {
                    for (r, ar) in aq.iter().enumerate() {
                        // SAFETY: (x0+q)·t_pad + tb + 8r + 8 ≤ ow·t_pad ≤ acc.len().
                        unsafe {
                            _mm256_storeu_si256(
                                acc.as_mut_ptr().add((x0 + q) * tp + tb + r * 8).cast(),
                                *ar,
                            )
                        };
                    }
                }
                tb += block;
            }
            x0 += P;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        fn every_path_is_bit_exact((n, c, t, k, h, w, spec, seed) in conv_case(), z in any::<u8>(), mode in 0u8..3) {
            prop_assume!(spec.output_hw(h, w, k, k).is_ok());
            let mut rng = SeededRng::new(seed);
            // Mode 1 saturates every code (255 × −128, the pair sum that
            // overflows `vpmaddubsw`'s i16); mode 2 draws each from the
            // extremes {0, 255} × {−128, 127}; mode 0 from the full ranges.
            let mut code = |lo: i32, hi: i32| match mode {
                0 => lo + rng.below(256) as i32,
                1 => if lo == 0 { hi } else { lo },
                _ => if rng.below(2) == 0 { lo } else { hi },
            };
            let q = Array4::from_shape_fn((n, c, h, w), |_| code(0, 255) as u8);
            let wt = Array4::from_shape_fn((t, c, k, k), |_| code(-128, 127) as i8);
            let scales: Vec<f32> = (0..t).map(|i| 0.01 + i as f32 * 1e-3).collect();
            let bias: Vec<f32> = (0..t).map(|i| i as f32 * 0.5).collect();
            let conv = Int8Gemm::new(wt.view(), &scales, Some(&bias), spec, U8Quant::new(0.02, z).unwrap()).unwrap();
            let truth = naive(&wt, &q, z, &spec);
            let out = Int8Output::U8 { quant: U8Quant::new(0.5, 7).unwrap(), relu: true };
            let (oh, ow) = spec.output_hw(h, w, k, k).unwrap();
            for isa in Isa::supported_for(Needs::Int8Dot) {
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

    /// Filter counts that end on each VNNI block (64s, then a 16-, 32- or
    /// 48-filter tail) and on each AVX2 block, against the naive truth on
    /// every path, with outputs narrower and wider than each pixel tile.
    #[test]
    fn every_filter_tile_is_bit_exact() {
        let mut rng = SeededRng::new(11);
        let spec = ConvSpec::new().with_padding(1);
        for (t, w) in [
            (16, 13),
            (38, 5),
            (48, 7),
            (64, 3),
            (80, 13),
            (100, 9),
            (112, 1),
            (155, 6),
        ] {
            let q = Array4::from_shape_fn((1, 9, 3, w), |_| rng.below(256) as u8);
            let wt = Array4::from_shape_fn((t, 9, 3, 3), |_| (rng.below(256) as i32 - 128) as i8);
            let conv = Int8Gemm::new(
                wt.view(),
                &vec![0.1; t],
                None,
                spec,
                U8Quant::new(0.1, 3).unwrap(),
            )
            .unwrap();
            let truth = naive(&wt, &q, 3, &spec);
            for isa in Isa::supported_for(Needs::Int8Dot) {
                let (acc, _) = conv.accumulators(q.view(), Some(isa)).unwrap();
                assert_eq!(acc, truth, "{t} filters, width {w}, {isa:?}");
            }
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

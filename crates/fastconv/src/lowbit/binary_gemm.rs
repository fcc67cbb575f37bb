//! XNOR–popcount convolution: binary weights and binary activations
//! (XNOR-Net, Rastegari et al. \[59\]; survey Section 5, equation (9):
//! `I ∗ W ≃ (sign(I) ∗ sign(W)) ⊙ Kα`, predicted there at 58× fewer
//! floating-point operations).
//!
//! With signs packed as bits (1 = −1), the dot product of two ±1 vectors of
//! length `n` is `n − 2·popcount(w ⊕ a)`, so one 512-bit `VPOPCNTQ` replaces
//! 512 multiply–adds. The convolution is an implicit GEMM over the
//! channel-packed input of [`crate::lowbit::bitpack`]: no im2col is built; the
//! micro-kernel broadcasts one input word per output pixel and XORs it with the
//! words of 32 filters (AVX-512: 4 pixels × 32 filters in 16 registers).
//!
//! **Zero padding.** A padded zero is neither +1 nor −1: its product with a
//! weight must be 0. The packed input stores padding as +1 bits, so a padded
//! tap contributes `Σ_c w[t, c, i, j]` to the raw sum; these per-(filter, tap)
//! sums are precomputed from the weights and subtracted for the (few) output
//! pixels whose window leaves the input — the dot products are then *exactly*
//! `Σ_{valid taps} w · sign(x)`, what a dense conv of the ±1 tensors with
//! zero padding gives.
//!
//! **Scaling.** The epilogue computes `y = α[t] · K[p] · dot + b[t]` with the
//! per-filter `α` of XNOR-Net / BinaryConnect and, optionally, XNOR-Net's
//! activation scale `K` (the window mean of the channel-mean `|x|`, zero
//! padded). [`XnorGemm::forward_packed`] emits the signs of `y` already
//! packed for a following binary layer.
//!
//! A ternary weight plane (see [`crate::lowbit::ternary`]) adds a non-zero mask:
//! `dot = popcount(m) − 2·popcount(m ∧ (s ⊕ a))`, one `VPTERNLOGQ` in the loop.

use hasten_core::{ConvSpec, Error, Padding, Result};
use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::bitpack::{pack_pixel, pack_signs, pack_signs_into, PackedSigns};
use super::dense::{checked_io_lens, conv_on_array};
use super::layout::DisjointWriter;
use super::post::Post;
use super::{check_isa, round_up, Isa, Needs};
use crate::conv::ConvGeometry;
use crate::pool::ScratchPool;

/// Filters are padded to a multiple of this (the AVX-512 block: 4 × 8 lanes).
const FILTER_BLOCK: usize = 32;

/// Bit-packed ±1 (or ternary) filters in the layout of the popcount kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedFilters {
    out_channels: usize,
    in_channels: usize,
    kernel: (usize, usize),
    words: usize,
    t_pad: usize,
    /// Sign plane `[(tap · words + word) · t_pad + t]`, bit 1 = negative.
    sign: Vec<u64>,
    /// Non-zero plane (ternary only), same layout.
    mask: Option<Vec<u64>>,
    /// `Σ_c w[t, c, tap]` per `[t · taps + tap]`: the padding correction.
    tap_sum: Vec<i32>,
    /// `Σ_{c, taps} |w|` per filter: the `n` of `n − 2·popcount`.
    total: Vec<i32>,
}

impl PackedFilters {
    /// Packs OIHW weights with values in {−1, 0, +1} (`ternary`) or any real
    /// (binary: bit = `w < 0`).
    pub(crate) fn pack(w: ArrayView4<'_, f32>, ternary: bool) -> Result<Self> {
        let [t_n, c_n, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        hasten_core::error::ensure_nonempty("packed filters (OIHW)", w.shape())?;
        hasten_core::error::ensure_finite("packed filters", w.iter())?;
        let words = c_n.div_ceil(64);
        let t_pad = round_up(t_n, FILTER_BLOCK);
        let taps = kh * kw;
        let mut sign = vec![0u64; taps * words * t_pad];
        let mut mask = ternary.then(|| vec![0u64; taps * words * t_pad]);
        let mut tap_sum = vec![0i32; t_n * taps];
        let mut total = vec![0i32; t_n];
        for ((t, c, i, j), &v) in w.indexed_iter() {
            let tap = i * kw + j;
            let at = (tap * words + c / 64) * t_pad + t;
            let bit = 1u64 << (c % 64);
            if ternary {
                if v != 0.0 && v != 1.0 && v != -1.0 {
                    return Err(Error::param(
                        format!("ternary weight [{t}, {c}, {i}, {j}]"),
                        v,
                        "one of -1, 0, +1",
                    ));
                }
                if v == 0.0 {
                    continue;
                }
                if let Some(m) = mask.as_mut() {
                    m[at] |= bit;
                }
            }
            let negative = v < 0.0;
            if negative {
                sign[at] |= bit;
            }
            tap_sum[t * taps + tap] += if negative { -1 } else { 1 };
            total[t] += 1;
        }
        Ok(PackedFilters {
            out_channels: t_n,
            in_channels: c_n,
            kernel: (kh, kw),
            words,
            t_pad,
            sign,
            mask,
            tap_sum,
            total,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
    /// Kernel height and width.
    pub fn kernel(&self) -> (usize, usize) {
        self.kernel
    }
    /// Bytes of packed weight storage (both planes).
    pub fn weight_bytes(&self) -> usize {
        8 * (self.sign.len() + self.mask.as_ref().map_or(0, Vec::len))
    }

    /// Checks `input` against these filters and `spec`; the geometry.
    pub(crate) fn geometry(&self, input: &PackedSigns, spec: &ConvSpec) -> Result<ConvGeometry> {
        if input.channels() != self.in_channels {
            return Err(Error::shape(
                "binary conv input channels",
                self.in_channels,
                input.channels(),
            ));
        }
        if input.padding() != spec.padding {
            return Err(Error::shape(
                "packed input padding",
                format!("{:?}", spec.padding),
                format!("{:?}", input.padding()),
            ));
        }
        let (h, w) = input.in_hw();
        ConvGeometry::batched(
            [input.batch(), self.in_channels, h, w],
            self.out_channels,
            self.kernel,
            spec,
        )
    }

    /// Computes the exact dot products of every output row in parallel and
    /// hands each row to `f(n, y, dots, floats)`, `dots` being `[x][t]` and
    /// `floats` a scratch buffer of the row task.
    /// The row buffers come from `pool`.
    pub(crate) fn rows<F>(
        &self,
        input: &PackedSigns,
        g: &ConvGeometry,
        isa: Isa,
        pool: &ScratchPool,
        f: F,
    ) where
        F: Fn(usize, usize, &[i32], &mut Vec<f32>) + Sync,
    {
        let (oh, ow) = g.out_hw;
        let (hp, wp) = g.padded_hw;
        let img_len = hp * wp * self.words;
        (0..g.batch * oh).into_par_iter().for_each(|row| {
            pool.with(|scratch| {
                let (acc, dots) = (&mut scratch.uints, &mut scratch.ints);
                let floats = &mut scratch.floats;
                acc.resize(ow * self.t_pad, 0);
                dots.resize(ow * self.out_channels, 0);
                let (n, y) = (row / oh, row % oh);
                let img = &input.bits()[n * img_len..(n + 1) * img_len];
                self.row_popcounts(isa, g, img, y, acc);
                self.finish_row(g, y, acc, dots);
                f(n, y, dots, floats);
            })
        });
    }

    /// Exact integer dot products `Σ_{valid taps, c} w · sign(x)` for every
    /// output pixel, NHWC-ordered: `[n][y][x][t]`.
    pub(crate) fn dot_products(
        &self,
        input: &PackedSigns,
        spec: &ConvSpec,
        isa: Isa,
    ) -> Result<(ConvGeometry, Vec<i32>)> {
        let g = self.geometry(input, spec)?;
        let (oh, ow) = g.out_hw;
        let row_len = ow * self.out_channels;
        let mut out = vec![0i32; g.batch * oh * row_len];
        let writer = DisjointWriter::new(&mut out);
        self.rows(input, &g, isa, &ScratchPool::new(), |n, y, dots, _| {
            // SAFETY: row (n, y) is written by this task only.
            unsafe { writer.write_slice((n * oh + y) * row_len, dots) };
        });
        Ok((g, out))
    }

    /// Raw popcounts (padding read as +1) of output row `y` into `acc[x][t_pad]`.
    fn row_popcounts(&self, isa: Isa, g: &ConvGeometry, img: &[u64], y: usize, acc: &mut [u32]) {
        match (isa, self.mask.is_some()) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: isa validated by check_isa (avx512f + vpopcntdq); all
            // indices are bounded by the geometry (see the kernel's contract).
            (Isa::Avx512, false) => unsafe { x86::row_avx512::<false>(self, g, img, y, acc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Isa::Avx512, true) => unsafe { x86::row_avx512::<true>(self, g, img, y, acc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: isa validated (avx2); same bounds.
            (Isa::Avx2, false) => unsafe { x86::row_avx2::<false>(self, g, img, y, acc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Isa::Avx2, true) => unsafe { x86::row_avx2::<true>(self, g, img, y, acc) },
            _ => self.row_scalar(g, img, y, acc),
        }
    }

    fn row_scalar(&self, g: &ConvGeometry, img: &[u64], y: usize, acc: &mut [u32]) {
        let (kh, kw) = g.kernel;
        let nw = self.words;
        let wp = g.padded_hw.1;
        for x in 0..g.out_hw.1 {
            let dst = &mut acc[x * self.t_pad..(x + 1) * self.t_pad];
            dst.fill(0);
            for i in 0..kh {
                for j in 0..kw {
                    let pix = ((y * g.stride.0 + i * g.dilation.0) * wp
                        + x * g.stride.1
                        + j * g.dilation.1)
                        * nw;
                    for wi in 0..nw {
                        let a = img[pix + wi];
                        let base = ((i * kw + j) * nw + wi) * self.t_pad;
                        let signs = &self.sign[base..base + self.out_channels];
                        match &self.mask {
                            Some(m) => {
                                let m = &m[base..base + self.out_channels];
                                for ((d, s), m) in dst.iter_mut().zip(signs).zip(m) {
                                    *d += ((s ^ a) & m).count_ones();
                                }
                            }
                            None => {
                                for (d, s) in dst.iter_mut().zip(signs) {
                                    *d += (s ^ a).count_ones();
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `dot = total − 2·popcount − Σ_{padded taps} tap_sum`, into `out[x][t]`.
    fn finish_row(&self, g: &ConvGeometry, y: usize, acc: &[u32], out: &mut [i32]) {
        let t_n = self.out_channels;
        let (kh, kw) = g.kernel;
        let taps = kh * kw;
        for x in 0..g.out_hw.1 {
            let dst = &mut out[x * t_n..(x + 1) * t_n];
            let raw = &acc[x * self.t_pad..x * self.t_pad + t_n];
            for ((d, &r), &tot) in dst.iter_mut().zip(raw).zip(&self.total) {
                *d = tot - 2 * r as i32;
            }
            if g.touches_padding(y, x) {
                for i in 0..kh {
                    for j in 0..kw {
                        if g.tap_is_padding(y, x, i, j) {
                            let tap = i * kw + j;
                            for (t, d) in dst.iter_mut().enumerate() {
                                *d -= self.tap_sum[t * taps + tap];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How XNOR-Net scales the binary dot product by the input's magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationScale {
    /// `y = α · dot + b` (BinaryNet-style, activations are plain ±1).
    #[default]
    None,
    /// XNOR-Net's `K`: the kernel-window mean of the channel-mean `|x|`
    /// (zero padded), `y = α · K · dot + b`.
    XnorK,
}

/// The per-run buffers of [`XnorGemm::forward_into`], kept by a plan step.
#[derive(Debug, Default)]
pub(crate) struct XnorBuffers {
    /// The input's packed signs.
    packed: PackedSigns,
    /// The channel-mean `|x|` of every input pixel (XNOR-Net's `A`).
    abs_mean: Vec<f32>,
    /// XNOR-Net's `K` of every output pixel.
    k: Vec<f32>,
}

impl XnorBuffers {
    /// The packed input signs.
    pub(crate) fn packed_mut(&mut self) -> &mut PackedSigns {
        &mut self.packed
    }
}

/// [`XnorBuffers`] behind a lock, for a plan step that runs from `&self`;
/// a clone starts with empty buffers.
#[derive(Debug, Default)]
pub(crate) struct XnorState(std::sync::Mutex<XnorBuffers>);

impl Clone for XnorState {
    fn clone(&self) -> Self {
        XnorState::default()
    }
}

impl XnorState {
    /// The buffers (a poisoned lock's too: they are overwritten per run).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, XnorBuffers> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A binary convolution with binary activations, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct XnorGemm {
    filters: PackedFilters,
    alpha: Vec<f32>,
    bias: Option<Vec<f32>>,
    spec: ConvSpec,
    scale: ActivationScale,
}

impl XnorGemm {
    /// Binarises OIHW `weights` (bit = `w < 0`) with per-filter scales `alpha`.
    pub fn new(
        weights: ArrayView4<'_, f32>,
        alpha: Vec<f32>,
        bias: Option<Vec<f32>>,
        spec: ConvSpec,
        scale: ActivationScale,
    ) -> Result<Self> {
        let filters = PackedFilters::pack(weights, false)?;
        Self::from_filters(filters, alpha, bias, spec, scale)
    }

    pub(crate) fn from_filters(
        filters: PackedFilters,
        alpha: Vec<f32>,
        bias: Option<Vec<f32>>,
        spec: ConvSpec,
        scale: ActivationScale,
    ) -> Result<Self> {
        spec.validate()?;
        if spec.groups != 1 {
            return Err(Error::unsupported(
                "XnorGemm",
                format!("groups = {}", spec.groups),
            ));
        }
        let t = filters.out_channels;
        if alpha.len() != t {
            return Err(Error::shape("XnorGemm alpha length", t, alpha.len()));
        }
        hasten_core::error::ensure_finite("XnorGemm alpha", alpha.iter())?;
        if let Some(b) = &bias {
            if b.len() != t {
                return Err(Error::shape("XnorGemm bias length", t, b.len()));
            }
            hasten_core::error::ensure_finite("XnorGemm bias", b.iter())?;
        }
        Ok(XnorGemm {
            filters,
            alpha,
            bias,
            spec,
            scale,
        })
    }

    /// The packed filters.
    pub fn filters(&self) -> &PackedFilters {
        &self.filters
    }
    /// The convolution's stride, padding and dilation.
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }
    /// How the dot products are scaled by the input's magnitude.
    pub fn scale(&self) -> ActivationScale {
        self.scale
    }

    /// Exact dot products `Σ w · sign(x)` (zero padding contributes 0), NHWC
    /// `[n][y][x][t]`, with the output height and width.
    pub fn dot_products(
        &self,
        input: &PackedSigns,
        isa: Option<Isa>,
    ) -> Result<(Vec<i32>, (usize, usize))> {
        let isa = check_isa(isa, Needs::Popcount, "XnorGemm")?;
        let (g, d) = self.filters.dot_products(input, &self.spec, isa)?;
        Ok((d, g.out_hw))
    }

    /// Packs the signs of `x` (NCHW) with this layer's padding.
    pub fn pack_input(&self, x: ArrayView4<'_, f32>, isa: Option<Isa>) -> Result<PackedSigns> {
        pack_signs(x, self.spec.padding, isa.map(float_isa))
    }

    /// `y = α[t] · K · Σ w·sign(x) + b[t]` on an NCHW batch (widest ISA).
    pub fn forward(&self, x: &Array4<f32>) -> Result<Array4<f32>> {
        self.forward_with(x, None)
    }

    /// [`Self::forward`] on a forced instruction set.
    pub fn forward_with(&self, x: &Array4<f32>, isa: Option<Isa>) -> Result<Array4<f32>> {
        let geometry = |dims: [usize; 4]| {
            ConvGeometry::batched(
                dims,
                self.filters.out_channels,
                self.filters.kernel,
                &self.spec,
            )
        };
        conv_on_array(x, self.filters.out_channels, geometry, |x, dims, y| {
            let mut buffers = XnorBuffers::default();
            self.forward_into(x, dims, isa, y, &mut buffers, &ScratchPool::new())
        })
    }

    /// As [`Self::forward_with`], from the row-major NCHW batch `x` of
    /// `dims` into the row-major output `y`, with the packed signs and `K`
    /// in `buffers` and the row buffers in `pool`: allocates nothing once
    /// they have grown to this layer's size.
    pub(crate) fn forward_into(
        &self,
        x: &[f32],
        dims: [usize; 4],
        isa: Option<Isa>,
        y: &mut [f32],
        buffers: &mut XnorBuffers,
        pool: &ScratchPool,
    ) -> Result<()> {
        let isa = check_isa(isa, Needs::Popcount, "XnorGemm")?;
        let g = self.load_input(Some(x), dims, isa, buffers, pool)?;
        self.write_values(buffers, &g, isa, &Post::NONE, y, pool)
    }

    /// Loads a run's input into `buffers` on `isa` (a checked popcount
    /// level): packs the signs of the row-major NCHW batch `x` of `dims`
    /// (and computes `K` when this layer uses it) or, for `x = None`,
    /// checks that `buffers` already hold the packed signs of a batch of
    /// `dims` with this layer's padding (left there by a chained producer;
    /// [`ActivationScale::XnorK`] is then an error: `K` needs real values).
    /// The geometry of the run.
    pub(crate) fn load_input(
        &self,
        x: Option<&[f32]>,
        dims: [usize; 4],
        isa: Isa,
        buffers: &mut XnorBuffers,
        pool: &ScratchPool,
    ) -> Result<ConvGeometry> {
        let XnorBuffers {
            packed,
            abs_mean,
            k,
        } = buffers;
        match x {
            Some(x) => pack_signs_into(x, dims, self.spec.padding, float_isa(isa), packed, pool)?,
            None if self.scale != ActivationScale::None => {
                return Err(Error::unsupported(
                    "XnorGemm on packed signs",
                    "ActivationScale::XnorK (needs real-valued input)",
                ))
            }
            None => {
                let (h, w) = packed.in_hw();
                let have = [packed.batch(), packed.channels(), h, w];
                if have != dims {
                    return Err(Error::shape(
                        "chained packed input (NCHW)",
                        format!("{dims:?}"),
                        format!("{have:?}"),
                    ));
                }
            }
        }
        let g = self.filters.geometry(packed, &self.spec)?;
        if let (Some(x), ActivationScale::XnorK) = (x, self.scale) {
            // `x` holds `dims` (checked by the packing).
            xnor_k(x, &g, abs_mean, k);
        }
        Ok(g)
    }

    /// The epilogue values of one output pixel of scale `kp` (1 without
    /// `K`) from its dot products `dots[t]`: `post(α[t]·K·dot + b[t])` into
    /// `out[t]`. The one expression of both outputs, so a chained step
    /// thresholds exactly the values its unchained twin writes.
    #[inline(always)]
    fn pixel_values(&self, kp: f32, dots: &[i32], post: &Post, out: &mut [f32]) {
        match &self.bias {
            Some(b) => {
                for (((o, &d), &a), &b) in out.iter_mut().zip(dots).zip(&self.alpha).zip(b) {
                    *o = a * kp * d as f32 + b;
                }
            }
            None => {
                for ((o, &d), &a) in out.iter_mut().zip(dots).zip(&self.alpha) {
                    *o = a * kp * d as f32 + 0.0;
                }
            }
        }
        post.apply(out, |t| t);
    }

    /// `K` of the loaded run, when this layer uses it.
    fn k_of<'b>(&self, buffers: &'b XnorBuffers) -> Option<&'b [f32]> {
        (self.scale == ActivationScale::XnorK).then_some(&buffers.k[..])
    }

    /// Runs the loaded input (see [`Self::load_input`]) and writes the
    /// epilogue values as the row-major NCHW f32 output `y`.
    pub(crate) fn write_values(
        &self,
        buffers: &XnorBuffers,
        g: &ConvGeometry,
        isa: Isa,
        post: &Post,
        y: &mut [f32],
        pool: &ScratchPool,
    ) -> Result<()> {
        let (oh, ow) = g.out_hw;
        let t_n = self.filters.out_channels;
        let area = oh * ow;
        let input_len = g.batch * g.in_channels() * g.in_hw.0 * g.in_hw.1;
        checked_io_lens("XnorGemm", g, t_n, input_len, y.len())?;
        let k = self.k_of(buffers);
        let writer = DisjointWriter::new(y);
        // The epilogue runs inside each row task: no NHWC buffer, no second pass.
        self.filters
            .rows(&buffers.packed, g, isa, pool, |n, yy, dots, values| {
                let kr = k.map(|k| &k[n * area + yy * ow..][..ow]);
                values.resize(ow * t_n, 0.0);
                for (x, pixel) in values.chunks_exact_mut(t_n).enumerate() {
                    let kp = kr.map_or(1.0, |k| k[x]);
                    self.pixel_values(kp, &dots[x * t_n..][..t_n], post, pixel);
                }
                for t in 0..t_n {
                    let base = (n * t_n + t) * area + yy * ow;
                    for x in 0..ow {
                        // SAFETY: output row (n, ·, yy, ·) belongs to this task
                        // alone; base + x < batch·t_n·area.
                        unsafe { writer.write(base + x, values[x * t_n + t]) };
                    }
                }
            });
        Ok(())
    }

    /// Runs the loaded input and writes the signs of the epilogue values
    /// into `next`, made the packing of the output with `next_padding`
    /// (the input of a following binary layer): bit 1 where the value is
    /// not `≥ 0` (by the packing of `pack_signs`, as it would pack the f32
    /// output). Allocates nothing once `next` has grown.
    pub(crate) fn write_signs(
        &self,
        buffers: &XnorBuffers,
        g: &ConvGeometry,
        isa: Isa,
        post: &Post,
        next: &mut PackedSigns,
        next_padding: Padding,
        pool: &ScratchPool,
    ) {
        let (oh, ow) = g.out_hw;
        let t_n = self.filters.out_channels;
        next.reset(g.batch, t_n, (oh, ow), next_padding);
        let (hp, wp) = next.padded_hw();
        let words = next.words_per_pixel();
        let k = self.k_of(buffers);
        let writer = DisjointWriter::new(next.bits_mut());
        let pack_isa = float_isa(isa);
        self.filters
            .rows(&buffers.packed, g, isa, pool, |n, yy, dots, values| {
                let kr = k.map(|k| &k[(n * oh + yy) * ow..][..ow]);
                let row = ((n * hp + yy + next_padding.top) * wp + next_padding.left) * words;
                values.resize(t_n, 0.0);
                for x in 0..ow {
                    let kp = kr.map_or(1.0, |k| k[x]);
                    self.pixel_values(kp, &dots[x * t_n..][..t_n], post, values);
                    for (wi, chunk) in values.chunks(64).enumerate() {
                        let mut word = [0u64];
                        pack_pixel(pack_isa, chunk, &mut word);
                        // SAFETY: the pixels of output row (n, yy) belong to
                        // this task alone; inside the reset buffer.
                        unsafe { writer.write(row + x * words + wi, word[0]) };
                    }
                }
            });
    }

    /// Runs on already-packed signs and returns the signs of
    /// `y = α · dot + b`, packed with `next_padding` for the next binary layer
    /// (no f32 tensor is materialised). Needs [`ActivationScale::None`]: `K > 0`
    /// never changes a sign, but needs real inputs, so it is rejected rather
    /// than ignored.
    pub fn forward_packed(
        &self,
        input: &PackedSigns,
        next_padding: Padding,
        isa: Option<Isa>,
    ) -> Result<PackedSigns> {
        let isa = check_isa(isa, Needs::Popcount, "XnorGemm")?;
        let (h, w) = input.in_hw();
        let dims = [input.batch(), input.channels(), h, w];
        let mut buffers = XnorBuffers {
            packed: input.clone(),
            ..XnorBuffers::default()
        };
        let pool = ScratchPool::new();
        let g = self.load_input(None, dims, isa, &mut buffers, &pool)?;
        let mut out = PackedSigns::default();
        self.write_signs(
            &buffers,
            &g,
            isa,
            &Post::NONE,
            &mut out,
            next_padding,
            &pool,
        );
        Ok(out)
    }
}

/// The gather ISA paired with a popcount ISA for packing the input.
pub(crate) fn float_isa(isa: Isa) -> Isa {
    if isa.supports(Needs::Float) {
        isa
    } else {
        Isa::Scalar
    }
}

/// XNOR-Net's `K[n, y, x]` into `k`: mean over the (zero-padded) window of
/// the channel-mean absolute input (the row-major NCHW batch `x`), with
/// that mean in `a`.
pub(crate) fn xnor_k(x: &[f32], g: &ConvGeometry, a: &mut Vec<f32>, k: &mut Vec<f32>) {
    let (h, w) = g.in_hw;
    let c = g.in_channels();
    a.clear();
    a.resize(g.batch * h * w, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let (n, p) = (i / (c * h * w), i % (h * w));
        a[n * h * w + p] += v.abs() / c as f32;
    }
    let (oh, ow) = g.out_hw;
    let (kh, kw) = g.kernel;
    k.clear();
    k.resize(g.batch * oh * ow, 0.0);
    for n in 0..g.batch {
        for y in 0..oh {
            for xx in 0..ow {
                let mut s = 0f32;
                for i in 0..kh {
                    for j in 0..kw {
                        if !g.tap_is_padding(y, xx, i, j) {
                            let iy = y * g.stride.0 + i * g.dilation.0 - g.pad_top_left.0;
                            let ix = xx * g.stride.1 + j * g.dilation.1 - g.pad_top_left.1;
                            s += a[(n * h + iy) * w + ix];
                        }
                    }
                }
                k[(n * oh + y) * ow + xx] = s / (kh * kw) as f32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ConvGeometry, PackedFilters};
    use crate::lowbit::popcount::x86::popcnt_epi8_avx2;
    use std::arch::x86_64::*;

    /// AVX-512 micro-kernel: 4 output pixels × 32 filters per register block.
    ///
    /// # Safety
    /// AVX-512F + VPOPCNTDQ available. `img` is one sample's padded packed
    /// input matching `g` (`padded_hw`, `f.words`), `acc.len() ≥ ow · t_pad`;
    /// every window of every output pixel lies inside the padded plane (true by
    /// construction of `g.out_hw`).
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub(super) unsafe fn row_avx512<const TERN: bool>(
        f: &PackedFilters,
        g: &ConvGeometry,
        img: &[u64],
        y: usize,
        acc: &mut [u32],
    ) {
        let (kh, kw) = g.kernel;
        let nw = f.words;
        let wp = g.padded_hw.1;
        let ow = g.out_hw.1;
        let tp = f.t_pad;
        let sp = f.sign.as_ptr();
        let mp = f.mask.as_ref().map_or(sp, |m| m.as_ptr());
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
                            (row + xs[q] * g.stride.1 + j * g.dilation.1) * nw
                        });
                        for wi in 0..nw {
                            let wo = ((i * kw + j) * nw + wi) * tp + tb;
                            // SAFETY: wo + 32 ≤ taps·nw·t_pad = sign.len() (= mask.len()).
                            let (s, m) = unsafe {
                                (
                                    [0, 8, 16, 24]
                                        .map(|r| _mm512_loadu_si512(sp.add(wo + r).cast())),
                                    [0, 8, 16, 24].map(|r| {
                                        if TERN {
                                            _mm512_loadu_si512(mp.add(wo + r).cast())
                                        } else {
                                            _mm512_setzero_si512()
                                        }
                                    }),
                                )
                            };
                            for q in 0..4 {
                                // SAFETY: pix[q] + wi < img.len() (window inside the padded plane).
                                let xv = _mm512_set1_epi64(unsafe { *ip.add(pix[q] + wi) } as i64);
                                for r in 0..4 {
                                    let d = if TERN {
                                        _mm512_ternarylogic_epi64::<0x28>(xv, s[r], m[r])
                                    } else {
                                        _mm512_xor_si512(xv, s[r])
                                    };
                                    a[q * 4 + r] =
                                        _mm512_add_epi64(a[q * 4 + r], _mm512_popcnt_epi64(d));
                                }
                            }
                        }
                    }
                }
                for q in 0..4.min(ow - x0) {
                    for r in 0..4 {
                        let at = (x0 + q) * tp + tb + r * 8;
                        // SAFETY: at + 8 ≤ ow·t_pad ≤ acc.len(); 8 u32 = 256 bits.
                        unsafe {
                            _mm256_storeu_si256(
                                acc.as_mut_ptr().add(at).cast(),
                                _mm512_cvtepi64_epi32(a[q * 4 + r]),
                            )
                        };
                    }
                }
                tb += 32;
            }
            x0 += 4;
        }
    }

    /// AVX2 micro-kernel: 2 output pixels × 16 filters, nibble-LUT popcount
    /// (Muła's `vpshufb` method) with the byte counts accumulated in 8-bit
    /// lanes and widened by `vpsadbw` only every [`BYTE_FLUSH`] words — one
    /// `vpaddb` instead of `vpsadbw` + `vpaddq` per word.
    ///
    /// # Safety
    /// AVX2 available; same contract as [`row_avx512`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_avx2<const TERN: bool>(
        f: &PackedFilters,
        g: &ConvGeometry,
        img: &[u64],
        y: usize,
        acc: &mut [u32],
    ) {
        let (kh, kw) = g.kernel;
        let nw = f.words;
        let wp = g.padded_hw.1;
        let ow = g.out_hw.1;
        let tp = f.t_pad;
        let sp = f.sign.as_ptr();
        let mp = f.mask.as_ref().map_or(sp, |m| m.as_ptr());
        let ip = img.as_ptr();
        let zero = _mm256_setzero_si256();
        let mut x0 = 0;
        while x0 < ow {
            let xs: [usize; 2] = std::array::from_fn(|q| (x0 + q).min(ow - 1));
            let mut tb = 0;
            while tb < tp {
                let mut a = [zero; 8];
                let mut bytes = [zero; 8];
                let mut pending = 0;
                for i in 0..kh {
                    let row = (y * g.stride.0 + i * g.dilation.0) * wp;
                    for j in 0..kw {
                        let pix: [usize; 2] = std::array::from_fn(|q| {
                            (row + xs[q] * g.stride.1 + j * g.dilation.1) * nw
                        });
                        for wi in 0..nw {
                            let wo = ((i * kw + j) * nw + wi) * tp + tb;
                            // SAFETY: wo + 16 ≤ sign.len() (t_pad is a multiple of 32).
                            let (s, m) = unsafe {
                                (
                                    [0, 4, 8, 12]
                                        .map(|r| _mm256_loadu_si256(sp.add(wo + r).cast())),
                                    [0, 4, 8, 12].map(|r| {
                                        if TERN {
                                            _mm256_loadu_si256(mp.add(wo + r).cast())
                                        } else {
                                            _mm256_setzero_si256()
                                        }
                                    }),
                                )
                            };
                            for q in 0..2 {
                                // SAFETY: window inside the padded plane.
                                let xv = _mm256_set1_epi64x(unsafe { *ip.add(pix[q] + wi) } as i64);
                                for r in 0..4 {
                                    let mut d = _mm256_xor_si256(xv, s[r]);
                                    if TERN {
                                        d = _mm256_and_si256(d, m[r]);
                                    }
                                    bytes[q * 4 + r] =
                                        _mm256_add_epi8(bytes[q * 4 + r], popcnt_epi8_avx2(d));
                                }
                            }
                            pending += 1;
                            if pending == BYTE_FLUSH {
                                for (w, b) in a.iter_mut().zip(bytes.iter_mut()) {
                                    *w = _mm256_add_epi64(*w, _mm256_sad_epu8(*b, zero));
                                    *b = zero;
                                }
                                pending = 0;
                            }
                        }
                    }
                }
                for (w, b) in a.iter_mut().zip(&bytes) {
                    *w = _mm256_add_epi64(*w, _mm256_sad_epu8(*b, zero));
                }
                for q in 0..2.min(ow - x0) {
                    for r in 0..4 {
                        let mut lanes = [0u64; 4];
                        // SAFETY: `lanes` holds 4 u64.
                        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), a[q * 4 + r]) };
                        let at = (x0 + q) * tp + tb + r * 4;
                        for (l, v) in lanes.iter().enumerate() {
                            acc[at + l] = *v as u32;
                        }
                    }
                }
                tb += 16;
            }
            x0 += 2;
        }
    }

    /// Words whose per-byte popcounts (≤ 8 each) fit a byte lane: 31 · 8 = 248.
    const BYTE_FLUSH: usize = 31;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hasten_core::SeededRng;
    use proptest::prelude::*;

    /// Brute-force direct convolution (survey equation (1)) over the valid,
    /// non-padding taps, in NHWC output order: for every sample `n`, output
    /// pixel and filter `t`, `Σ_{c, i, j} term(n, t, c, i, j, iy, ix)` in i64,
    /// wrapped to i32. `w_shape` is OIHW, `x_shape` NCHW. The integer truth
    /// shared by the low-bit kernels' tests.
    pub(crate) fn naive_int_conv(
        w_shape: &[usize],
        x_shape: &[usize],
        spec: &ConvSpec,
        term: impl Fn(usize, usize, usize, usize, usize, usize, usize) -> i64,
    ) -> Vec<i32> {
        let [t_n, c_n, kh, kw] = [w_shape[0], w_shape[1], w_shape[2], w_shape[3]];
        let [n_n, _, h, wd] = [x_shape[0], x_shape[1], x_shape[2], x_shape[3]];
        let (oh, ow) = spec.output_hw(h, wd, kh, kw).unwrap();
        let mut out = Vec::new();
        for n in 0..n_n {
            for y in 0..oh {
                for xx in 0..ow {
                    for t in 0..t_n {
                        let mut s = 0i64;
                        for c in 0..c_n {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (y * spec.stride.0 + i * spec.dilation.0) as isize
                                        - spec.padding.top as isize;
                                    let ix = (xx * spec.stride.1 + j * spec.dilation.1) as isize
                                        - spec.padding.left as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    s += term(n, t, c, i, j, iy as usize, ix as usize);
                                }
                            }
                        }
                        out.push(s as i32);
                    }
                }
            }
        }
        out
    }

    /// Naive integer truth: `Σ_{valid taps} w · sign(x)` with zero padding,
    /// weights in {−1, 0, +1} as f32, NHWC order.
    pub(crate) fn naive_dots(w: &Array4<f32>, x: &Array4<f32>, spec: &ConvSpec) -> Vec<i32> {
        naive_int_conv(w.shape(), x.shape(), spec, |n, t, c, i, j, iy, ix| {
            let a = if x[[n, c, iy, ix]] < 0.0 { -1 } else { 1 };
            i64::from(w[[t, c, i, j]] as i32 * a)
        })
    }

    pub(crate) fn sign_weights(
        rng: &mut SeededRng,
        shape: (usize, usize, usize, usize),
    ) -> Array4<f32> {
        rng.normal_array(shape, 1.0)
            .mapv(|v: f32| if v < 0.0 { -1.0 } else { 1.0 })
    }

    prop_compose! {
        pub(crate) fn conv_case()(
            n in 1usize..3, c in 1usize..150, t in 1usize..40, k in 1usize..4,
            h in 1usize..7, w in 1usize..7, s in 1usize..3, pad in 0usize..3,
            d in 1usize..3, seed in any::<u64>(),
        ) -> (usize, usize, usize, usize, usize, usize, ConvSpec, u64) {
            let spec = ConvSpec::new().with_stride_hw(s, 1 + (s % 2)).with_dilation(d)
                .with_padding_sides(Padding { top: pad, bottom: (pad + 1) % 3, left: pad, right: pad / 2 });
            (n, c, t, k, h, w, spec, seed)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn every_path_is_exact((n, c, t, k, h, w, spec, seed) in conv_case()) {
            let mut rng = SeededRng::new(seed);
            let x = rng.normal_array((n, c, h, w), 1.0);
            let wt = sign_weights(&mut rng, (t, c, k, k));
            let conv = XnorGemm::new(wt.view(), vec![1.0; t], None, spec, ActivationScale::None).unwrap();
            if spec.output_hw(h, w, k, k).is_err() {
                prop_assert!(conv.forward(&x).is_err());
                return Ok(());
            }
            let truth = naive_dots(&wt, &x, &spec);
            for isa in Isa::supported_for(Needs::Popcount) {
                let packed = conv.pack_input(x.view(), Some(isa)).unwrap();
                let (dots, _) = conv.dot_products(&packed, Some(isa)).unwrap();
                prop_assert_eq!(&dots, &truth, "{:?}", isa);
            }
        }

        #[test]
        fn epilogue_scales_and_packs((n, c, t, k, h, w, spec, seed) in conv_case()) {
            prop_assume!(spec.output_hw(h, w, k, k).is_ok());
            let mut rng = SeededRng::new(seed);
            let x = rng.normal_array((n, c, h, w), 1.0);
            let wt = sign_weights(&mut rng, (t, c, k, k));
            let alpha: Vec<f32> = (0..t).map(|i| 0.1 + i as f32 * 0.01).collect();
            let bias: Vec<f32> = (0..t).map(|i| i as f32 - 3.0).collect();
            let truth = naive_dots(&wt, &x, &spec);
            let (oh, ow) = spec.output_hw(h, w, k, k).unwrap();
            // Plain α·dot + b.
            let conv = XnorGemm::new(wt.view(), alpha.clone(), Some(bias.clone()), spec, ActivationScale::None).unwrap();
            let y = conv.forward(&x).unwrap();
            for ((nn, tt, yy, xx), &v) in y.indexed_iter() {
                let d = truth[((nn * oh + yy) * ow + xx) * t + tt];
                prop_assert_eq!(v, alpha[tt] * d as f32 + bias[tt]);
            }
            // Packed output = signs of y.
            let packed = conv.pack_input(x.view(), None).unwrap();
            let next = conv.forward_packed(&packed, Padding::same(1), None).unwrap();
            let signs = next.to_signs();
            for (s, v) in signs.iter().zip(y.iter()) {
                prop_assert_eq!(*s, if *v >= 0.0 { 1.0 } else { -1.0 });
            }
            // XNOR-Net K scaling against a direct f64 evaluation.
            let conv_k = XnorGemm::new(wt.view(), alpha.clone(), None, spec, ActivationScale::XnorK).unwrap();
            let yk = conv_k.forward(&x).unwrap();
            for ((nn, tt, yy, xx), &v) in yk.indexed_iter() {
                let mut kv = 0f64;
                for i in 0..k { for j in 0..k {
                    let iy = (yy * spec.stride.0 + i * spec.dilation.0) as isize - spec.padding.top as isize;
                    let ix = (xx * spec.stride.1 + j * spec.dilation.1) as isize - spec.padding.left as isize;
                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize { continue; }
                    let m: f64 = (0..c).map(|cc| f64::from(x[[nn, cc, iy as usize, ix as usize]].abs())).sum::<f64>() / c as f64;
                    kv += m;
                }}
                kv /= (k * k) as f64;
                let d = truth[((nn * oh + yy) * ow + xx) * t + tt];
                let want = f64::from(alpha[tt]) * kv * f64::from(d);
                prop_assert!((f64::from(v) - want).abs() <= 1e-4 * (1.0 + want.abs()), "{} vs {}", v, want);
            }
        }

        #[test]
        fn bad_parameters_are_errors(t in 1usize..5, a in 0usize..7, b in 0usize..7, groups in 1usize..3) {
            let w = Array4::<f32>::ones((t, 2, 1, 1));
            let r = XnorGemm::new(w.view(), vec![1.0; a], Some(vec![0.0; b]),
                ConvSpec::new().with_groups(groups), ActivationScale::None);
            prop_assert_eq!(r.is_ok(), a == t && b == t && groups == 1);
        }
    }

    #[test]
    fn byte_counters_flush_before_overflowing() {
        // 448 channels × 3×3 taps = 63 words per dot product: the AVX2
        // kernel widens its byte counters twice mid-loop. All-negative input
        // against all-positive filters makes every byte count 8 (the worst
        // case for overflow); the random case mixes signs.
        let mut rng = SeededRng::new(9);
        let spec = ConvSpec::new().with_padding(1);
        for adversarial in [true, false] {
            let (x, wt) = if adversarial {
                (
                    Array4::from_elem((1, 448, 4, 5), -1.0f32),
                    Array4::from_elem((20, 448, 3, 3), 1.0f32),
                )
            } else {
                (
                    rng.normal_array((1, 448, 4, 5), 1.0),
                    sign_weights(&mut rng, (20, 448, 3, 3)),
                )
            };
            let conv =
                XnorGemm::new(wt.view(), vec![1.0; 20], None, spec, ActivationScale::None).unwrap();
            let truth = naive_dots(&wt, &x, &spec);
            for isa in Isa::supported_for(Needs::Popcount) {
                let packed = conv.pack_input(x.view(), Some(isa)).unwrap();
                let (dots, _) = conv.dot_products(&packed, Some(isa)).unwrap();
                assert_eq!(dots, truth, "{isa:?}");
            }
        }
    }

    #[test]
    fn channel_mismatch_and_kernel_too_large_are_errors() {
        let w = Array4::<f32>::ones((2, 3, 3, 3));
        let conv = XnorGemm::new(
            w.view(),
            vec![1.0; 2],
            None,
            ConvSpec::new(),
            ActivationScale::None,
        )
        .unwrap();
        assert!(conv.forward(&Array4::zeros((1, 4, 5, 5))).is_err());
        assert!(conv.forward(&Array4::zeros((1, 3, 2, 2))).is_err());
        let mut bad = w.clone();
        bad[[0, 0, 0, 0]] = f32::NAN;
        assert!(XnorGemm::new(
            bad.view(),
            vec![1.0; 2],
            None,
            ConvSpec::new(),
            ActivationScale::None
        )
        .is_err());
    }
}

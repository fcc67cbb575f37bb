//! Codebook (scalar k-means, Gong et al. \[51\], survey Section 5, equation (4))
//! and product-quantized (Jégou et al. \[52\], applied to weights by \[51\])
//! fully connected layers.
//!
//! - [`CodebookLinear`]: every weight is `codebook[code[o, c]]`. With
//!   `k ≤ 16` the codes are 4 bits (8× fewer bytes than f32) and decode by one
//!   in-register permute of the 16-entry codebook per 16 weights (AVX-512
//!   `vpermps`; AVX2 two `vpermps` and a blend per 8). Otherwise, `k ≤ 256`
//!   8-bit codes. The kernel decodes 16 weights per `vpgatherdd` from the
//!   (L1-resident) codebook (AVX2) or 16 in-register permutes (AVX-512) straight into registers and FMAs them with the
//!   input: a batch-1 FC layer, memory-bound in f32, reads 1 byte per weight
//!   instead of 4. For batch > 1 each row is decoded once into an L1 tile and
//!   reused for every sample. (AVX-512 decodes with register permutes instead
//!   of gathers; see `decode_dot_avx512`.)
//! - [`PqLinear`]: each row is split into `S` sub-vectors of length `d`, each
//!   replaced by a code into a per-subspace codebook of `k ≤ 256` centroids.
//!   Lookup-table products: per sample, `T[s][k] = ⟨C_s[k], x_s⟩` costs
//!   `k · in` MACs (vectorised over the centroids), then
//!   `y[o] = Σ_s T[s][code[o, s]]` costs `S` gathered adds per output — `d`×
//!   fewer operations than the dense product when `out ≫ k` — summed in
//!   blocks of subspaces whose tables stay in L1, 16 outputs per gather.

use hasten_core::{Error, Result};
use rayon::prelude::*;

use super::{check_isa, Isa, Needs};
use crate::pool::ScratchPool;

/// Rows per parallel task of the batch-1 kernels.
const ROW_CHUNK: usize = 64;

fn check_input(what: &str, x: &[f32], batch: usize, in_features: usize) -> Result<()> {
    if batch == 0 || x.len() != batch * in_features {
        return Err(Error::shape(
            format!("{what} input [batch, in]"),
            format!(
                "[{batch} >= 1, {in_features}] = {} values",
                batch * in_features
            ),
            x.len(),
        ));
    }
    Ok(())
}

fn check_bias(what: &str, bias: &Option<Vec<f32>>, out: usize) -> Result<()> {
    if let Some(b) = bias {
        if b.len() != out {
            return Err(Error::shape(format!("{what} bias"), out, b.len()));
        }
        hasten_core::error::ensure_finite(what, b.iter())?;
    }
    Ok(())
}

/// A fully connected layer whose weights are 8-bit indices into one codebook.
#[derive(Debug, Clone, PartialEq)]
pub struct CodebookLinear {
    out_features: usize,
    in_features: usize,
    codebook: Vec<f32>,
    /// Row-major codes, `row_bytes` per row: one byte per weight, or (for
    /// `k ≤ 16`) two 4-bit codes per byte in the [`nibble_at`] layout.
    codes: Vec<u8>,
    row_bytes: usize,
    bias: Option<Vec<f32>>,
}

/// Weights per block of the 4-bit layout: byte `b < 16` of a block holds the
/// codes of weights `b` (low nibble) and `b + 16` (high nibble), so one
/// 16-byte load widened to 32-bit lanes gives 16 indices, and a shift the
/// other 16.
const NIBBLE_BLOCK: usize = 32;

/// The 4-bit code of weight `i` of a row in the [`NIBBLE_BLOCK`] layout.
fn nibble_at(row: &[u8], i: usize) -> u8 {
    let byte = row[i / NIBBLE_BLOCK * 16 + i % 16];
    (byte >> (4 * ((i % NIBBLE_BLOCK) / 16))) & 0x0f
}

/// Packs one row of codes `< 16` into the [`NIBBLE_BLOCK`] layout.
fn pack_nibbles(codes: &[u8], row: &mut [u8]) {
    for (i, &c) in codes.iter().enumerate() {
        row[i / NIBBLE_BLOCK * 16 + i % 16] |= c << (4 * ((i % NIBBLE_BLOCK) / 16));
    }
}

impl CodebookLinear {
    /// `codes` is row-major `[out, in]`; every code must index `codebook`
    /// (`1 ≤ k ≤ 256` finite centroids). With `k ≤ 16` the codes are stored
    /// as 4 bits (half a byte per weight) and decoded by in-register
    /// permutes of the codebook.
    pub fn new(
        out_features: usize,
        in_features: usize,
        codebook: Vec<f32>,
        codes: Vec<u8>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        hasten_core::error::ensure_nonempty(
            "CodebookLinear [out, in]",
            &[out_features, in_features],
        )?;
        if codebook.is_empty() || codebook.len() > 256 {
            return Err(Error::param(
                "codebook size",
                codebook.len(),
                "1..=256 centroids",
            ));
        }
        hasten_core::error::ensure_finite("codebook", codebook.iter())?;
        if codes.len() != out_features * in_features {
            return Err(Error::shape(
                "CodebookLinear codes",
                out_features * in_features,
                codes.len(),
            ));
        }
        if let Some(&bad) = codes.iter().find(|&&c| usize::from(c) >= codebook.len()) {
            return Err(Error::param(
                "code",
                bad,
                format!("< codebook size {}", codebook.len()),
            ));
        }
        check_bias("CodebookLinear", &bias, out_features)?;
        let (codes, row_bytes) = if codebook.len() <= 16 {
            let row_bytes = in_features.div_ceil(NIBBLE_BLOCK) * 16;
            let mut packed = vec![0u8; out_features * row_bytes];
            for (src, dst) in codes
                .chunks_exact(in_features)
                .zip(packed.chunks_exact_mut(row_bytes))
            {
                pack_nibbles(src, dst);
            }
            (packed, row_bytes)
        } else {
            (codes, in_features)
        };
        Ok(CodebookLinear {
            out_features,
            in_features,
            codebook,
            codes,
            row_bytes,
            bias,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// Input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// Whether the codes are stored as 4 bits (`k ≤ 16`).
    pub fn is_4bit(&self) -> bool {
        self.codebook.len() <= 16
    }
    /// Bytes read per forward: codes plus codebook.
    pub fn weight_bytes(&self) -> usize {
        self.codes.len() + 4 * self.codebook.len()
    }

    /// `y[b, o] = Σ_c codebook[code[o, c]] · x[b, c] + bias[o]` for a row-major
    /// `[batch, in]` input; returns `[batch, out]`.
    pub fn forward(&self, x: &[f32], batch: usize, isa: Option<Isa>) -> Result<Vec<f32>> {
        let isa = check_isa(isa, Needs::Float, "CodebookLinear")?;
        let mut y = vec![0f32; batch * self.out_features];
        self.forward_into(x, batch, isa, &mut y, &mut Vec::new(), &ScratchPool::new())?;
        Ok(y)
    }

    /// As [`CodebookLinear::forward`], into `y` (`[batch, out]`), with the
    /// transposed product in `yt` and decoded rows in `pool`'s buffers:
    /// allocates nothing once they have grown. `isa` must be checked.
    pub(crate) fn forward_into(
        &self,
        x: &[f32],
        batch: usize,
        isa: Isa,
        y: &mut [f32],
        yt: &mut Vec<f32>,
        pool: &ScratchPool,
    ) -> Result<()> {
        check_input("CodebookLinear", x, batch, self.in_features)?;
        let (o_n, i_n) = (self.out_features, self.in_features);
        if y.len() != batch * o_n {
            return Err(Error::shape(
                "CodebookLinear output [batch, out]",
                batch * o_n,
                y.len(),
            ));
        }
        // Output transposed to [out][batch] so that row chunks are contiguous
        // (at batch 1 the two layouts coincide).
        let t: &mut [f32] = if batch == 1 {
            y
        } else {
            yt.resize(o_n * batch, 0.0);
            &mut yt[..o_n * batch]
        };
        t.par_chunks_mut(ROW_CHUNK * batch)
            .enumerate()
            .for_each(|(chunk, dst)| {
                pool.with(|scratch| {
                    let tile = &mut scratch.floats;
                    if batch > 1 {
                        tile.resize(i_n, 0.0);
                    }
                    for (r, yo) in dst.chunks_mut(batch).enumerate() {
                        let o = chunk * ROW_CHUNK + r;
                        let codes = &self.codes[o * self.row_bytes..(o + 1) * self.row_bytes];
                        let b = self.bias.as_ref().map_or(0.0, |b| b[o]);
                        if batch == 1 {
                            yo[0] = if self.is_4bit() {
                                decode_dot_4bit(isa, &self.codebook, codes, x)
                            } else {
                                decode_dot(isa, &self.codebook, codes, x)
                            } + b;
                        } else {
                            self.decode_row(codes, &mut tile[..i_n]);
                            for (s, v) in yo.iter_mut().enumerate() {
                                *v = dot(isa, &tile[..i_n], &x[s * i_n..(s + 1) * i_n]) + b;
                            }
                        }
                    }
                })
            });
        if batch > 1 {
            for r in 0..o_n {
                for c in 0..batch {
                    y[c * o_n + r] = yt[r * batch + c];
                }
            }
        }
        Ok(())
    }
}

/// `Σ_c codebook[codes[c]] · x[c]`, decoding in registers.
fn decode_dot(isa: Isa, codebook: &[f32], codes: &[u8], x: &[f32]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx512f); codes < codebook.len(), equal lengths.
        Isa::Avx512 => unsafe { x86::decode_dot_avx512(codebook, codes, x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx2 + fma); same invariants.
        Isa::Avx2 => unsafe { x86::decode_dot_avx2(codebook, codes, x) },
        _ => codes
            .iter()
            .zip(x)
            .map(|(&c, &v)| codebook[usize::from(c)] * v)
            .sum(),
    }
}

impl CodebookLinear {
    /// Decodes one row of codes (either width) into `tile`.
    fn decode_row(&self, codes: &[u8], tile: &mut [f32]) {
        if self.is_4bit() {
            for (i, t) in tile.iter_mut().enumerate() {
                *t = self.codebook[usize::from(nibble_at(codes, i))];
            }
        } else {
            for (t, &c) in tile.iter_mut().zip(codes) {
                *t = self.codebook[usize::from(c)];
            }
        }
    }
}

/// `Σ_i codebook[code_i] · x[i]` for one row of 4-bit codes
/// (`codebook.len() ≤ 16`), decoding in registers.
fn decode_dot_4bit(isa: Isa, codebook: &[f32], codes: &[u8], x: &[f32]) -> f32 {
    let mut cb = [0f32; 16];
    cb[..codebook.len()].copy_from_slice(codebook);
    let full = x.len() / NIBBLE_BLOCK * NIBBLE_BLOCK;
    let head = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx512f); `codes` holds full/2 bytes of whole blocks.
        Isa::Avx512 => unsafe { x86::decode_dot_4bit_avx512(&cb, &codes[..full / 2], &x[..full]) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx2 + fma); same bounds.
        Isa::Avx2 => unsafe { x86::decode_dot_4bit_avx2(&cb, &codes[..full / 2], &x[..full]) },
        _ => (0..full)
            .map(|i| cb[usize::from(nibble_at(codes, i))] * x[i])
            .sum(),
    };
    head + (full..x.len())
        .map(|i| cb[usize::from(nibble_at(codes, i))] * x[i])
        .sum::<f32>()
}

/// f32 dot product on the given ISA.
pub(crate) fn dot(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx512f); slices of equal length.
        Isa::Avx512 => unsafe { x86::dot_avx512(a, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx2 + fma).
        Isa::Avx2 => unsafe { x86::dot_avx2(a, b) },
        _ => a.iter().zip(b).map(|(x, y)| x * y).sum(),
    }
}

/// A product-quantized fully connected layer.
#[derive(Debug, Clone, PartialEq)]
pub struct PqLinear {
    out_features: usize,
    in_features: usize,
    sub_dim: usize,
    centroids: usize,
    /// `[S][d][k]` centroids (transposed, so a table row is one axpy per
    /// coordinate).
    codebooks: Vec<f32>,
    /// Codes of rows `16g .. 16g + 16` at `[g][S][16]` (rows padded to a
    /// multiple of 16 with code 0): one 16-byte load per (group, subspace).
    codes: Vec<u8>,
    bias: Option<Vec<f32>>,
}

/// Output rows per code group (one AVX-512 gather).
const PQ_GROUP: usize = 16;
/// Row groups per parallel task of the table sums.
const PQ_GROUPS_PER_TASK: usize = 16;
/// Floats of lookup table one pass of the sums reads (16 KiB: L1-resident).
const PQ_LUT_BLOCK: usize = 4096;

impl PqLinear {
    /// `codebooks` is `[S][k][d]` with `S = in / d`; `codes` is row-major
    /// `[out][S]`. `d` must divide `in`; `1 ≤ k ≤ 256`.
    pub fn new(
        out_features: usize,
        in_features: usize,
        sub_dim: usize,
        codebooks: Vec<f32>,
        codes: Vec<u8>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        hasten_core::error::ensure_nonempty(
            "PqLinear [out, in, d]",
            &[out_features, in_features, sub_dim],
        )?;
        if !in_features.is_multiple_of(sub_dim) {
            return Err(Error::param(
                "PQ sub-vector length d",
                sub_dim,
                format!("a divisor of in = {in_features}"),
            ));
        }
        let s_n = in_features / sub_dim;
        let k = codebooks.len() / in_features;
        if k == 0 || k > 256 || codebooks.len() != k * in_features {
            return Err(Error::shape(
                "PQ codebooks [S, k, d]",
                format!("[{s_n}, 1..=256, {sub_dim}]"),
                format!("{} values", codebooks.len()),
            ));
        }
        hasten_core::error::ensure_finite("PQ codebooks", codebooks.iter())?;
        if codes.len() != out_features * s_n {
            return Err(Error::shape(
                "PQ codes [out, S]",
                out_features * s_n,
                codes.len(),
            ));
        }
        if let Some(&bad) = codes.iter().find(|&&c| usize::from(c) >= k) {
            return Err(Error::param("PQ code", bad, format!("< {k} centroids")));
        }
        check_bias("PqLinear", &bias, out_features)?;
        let groups = out_features.div_ceil(PQ_GROUP);
        let mut grouped = vec![0u8; groups * s_n * PQ_GROUP];
        for o in 0..out_features {
            for s in 0..s_n {
                grouped[((o / PQ_GROUP) * s_n + s) * PQ_GROUP + o % PQ_GROUP] = codes[o * s_n + s];
            }
        }
        let d = sub_dim;
        let mut transposed = vec![0f32; codebooks.len()];
        for s in 0..s_n {
            for c in 0..k {
                for e in 0..d {
                    transposed[(s * d + e) * k + c] = codebooks[(s * k + c) * d + e];
                }
            }
        }
        Ok(PqLinear {
            out_features,
            in_features,
            sub_dim,
            centroids: k,
            codebooks: transposed,
            codes: grouped,
            bias,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// Bytes of codes and codebooks.
    pub fn weight_bytes(&self) -> usize {
        self.out_features * (self.in_features / self.sub_dim) + 4 * self.codebooks.len()
    }

    /// `y[b, o] = Σ_s ⟨C_s[code[o, s]], x[b, s·d..(s+1)·d]⟩ + bias[o]` via
    /// lookup tables; `[batch, in]` → `[batch, out]`.
    pub fn forward(&self, x: &[f32], batch: usize, isa: Option<Isa>) -> Result<Vec<f32>> {
        let isa = check_isa(isa, Needs::Float, "PqLinear")?;
        let mut y = vec![0f32; batch * self.out_features];
        self.forward_into(x, batch, isa, &mut y, &mut Vec::new())?;
        Ok(y)
    }

    /// As [`PqLinear::forward`], into `y` (`[batch, out]`), with the lookup
    /// tables in `lut`: allocates nothing once it has grown. `isa` must be
    /// checked.
    ///
    /// Per sample, the tables `T[s][c] = ⟨C_s[c], x_s⟩` are computed once
    /// (`k · in` MACs, vectorised over the centroids); each output is then
    /// `Σ_s T[s][code[o, s]]`, summed over blocks of subspaces whose tables
    /// fit in L1 with 16 outputs per gather.
    pub(crate) fn forward_into(
        &self,
        x: &[f32],
        batch: usize,
        isa: Isa,
        y: &mut [f32],
        lut: &mut Vec<f32>,
    ) -> Result<()> {
        check_input("PqLinear", x, batch, self.in_features)?;
        let (o_n, d, k) = (self.out_features, self.sub_dim, self.centroids);
        if y.len() != batch * o_n {
            return Err(Error::shape(
                "PqLinear output [batch, out]",
                batch * o_n,
                y.len(),
            ));
        }
        let s_n = self.in_features / d;
        lut.resize(s_n * k, 0.0);
        let lut = &mut lut[..s_n * k];
        let sb = (PQ_LUT_BLOCK / k).max(1);
        for (b, yb) in y.chunks_mut(o_n).enumerate() {
            let xb = &x[b * self.in_features..(b + 1) * self.in_features];
            lut.par_chunks_mut(k * sb)
                .enumerate()
                .for_each(|(blk, ls)| {
                    for (si, l) in ls.chunks_exact_mut(k).enumerate() {
                        let s = blk * sb + si;
                        l.fill(0.0);
                        for e in 0..d {
                            let row = &self.codebooks[(s * d + e) * k..(s * d + e + 1) * k];
                            axpy(isa, xb[s * d + e], row, l);
                        }
                    }
                });
            let lut = &*lut;
            yb.par_chunks_mut(PQ_GROUPS_PER_TASK * PQ_GROUP)
                .enumerate()
                .for_each(|(task, dst)| {
                    let g0 = task * PQ_GROUPS_PER_TASK;
                    let groups = dst.len().div_ceil(PQ_GROUP);
                    let mut acc = [0f32; PQ_GROUPS_PER_TASK * PQ_GROUP];
                    let mut s0 = 0;
                    while s0 < s_n {
                        let s1 = (s0 + sb).min(s_n);
                        for g in 0..groups {
                            let codes = &self.codes[(g0 + g) * s_n * PQ_GROUP..][..s_n * PQ_GROUP];
                            let a: &mut [f32; PQ_GROUP] = (&mut acc
                                [g * PQ_GROUP..(g + 1) * PQ_GROUP])
                                .try_into()
                                .expect("a group of 16 accumulators");
                            pq_group_sum(isa, codes, lut, k, s0..s1, a);
                        }
                        s0 = s1;
                    }
                    for (r, v) in dst.iter_mut().enumerate() {
                        *v = acc[r]
                            + self
                                .bias
                                .as_ref()
                                .map_or(0.0, |bias| bias[g0 * PQ_GROUP + r]);
                    }
                });
        }
        Ok(())
    }
}

/// `acc[r] += Σ_{s ∈ ss} lut[s·k + codes[s·16 + r]]` for one group of 16
/// rows (`codes` is the group's `[S][16]` block, every code `< k`).
fn pq_group_sum(
    isa: Isa,
    codes: &[u8],
    lut: &[f32],
    k: usize,
    ss: std::ops::Range<usize>,
    acc: &mut [f32; PQ_GROUP],
) {
    assert!(ss.end * PQ_GROUP <= codes.len() && ss.end * k <= lut.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx512f); bounds asserted; codes < k, so every
        // gathered index lies in table s.
        Isa::Avx512 => unsafe { x86::pq_group_avx512(codes, lut, k, ss, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx2); same bounds.
        Isa::Avx2 => unsafe { x86::pq_group_avx2(codes, lut, k, ss, acc) },
        _ => {
            for s in ss {
                let (c, t) = (&codes[s * PQ_GROUP..][..PQ_GROUP], &lut[s * k..][..k]);
                for (a, &ci) in acc.iter_mut().zip(c) {
                    *a += t[usize::from(ci)];
                }
            }
        }
    }
}

/// `y += a · x` on the given ISA.
fn axpy(isa: Isa, a: f32, x: &[f32], y: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx512f).
        Isa::Avx512 => unsafe { x86::axpy_avx512(a, x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx2 + fma).
        Isa::Avx2 => unsafe { x86::axpy_avx2(a, x, y) },
        _ => {
            for (v, &u) in y.iter_mut().zip(x) {
                *v += a * u;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Decodes 16 codes per step *in registers*: the (zero-padded) 256-entry
    /// codebook lives in 16 zmm registers; eight `vpermt2ps` look up the low
    /// 5 bits in each 32-entry half-pair and three levels of masked blends
    /// select by bits 5–7. About 20 vector instructions per 16 weights and no
    /// memory traffic beyond the 1-byte codes and `x` — faster than
    /// `vgatherdps` on the machines we measured.
    ///
    /// # Safety
    /// AVX-512F; `codes.len() == x.len()`, every code < `codebook.len() ≤ 256`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn decode_dot_avx512(codebook: &[f32], codes: &[u8], x: &[f32]) -> f32 {
        let mut padded = [0f32; 256];
        padded[..codebook.len()].copy_from_slice(codebook);
        // SAFETY: `padded` holds 256 floats = 16 vectors.
        let t: [__m512; 16] =
            std::array::from_fn(|r| unsafe { _mm512_loadu_ps(padded.as_ptr().add(16 * r)) });
        let n = codes.len();
        let (cp, xp) = (codes.as_ptr(), x.as_ptr());
        let (b5, b6, b7) = (
            _mm512_set1_epi32(32),
            _mm512_set1_epi32(64),
            _mm512_set1_epi32(128),
        );
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n for both the 16 code bytes and the 16 floats.
            let (idx, xv) = unsafe {
                (
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(cp.add(i).cast())),
                    _mm512_loadu_ps(xp.add(i)),
                )
            };
            let r: [__m512; 8] =
                std::array::from_fn(|j| _mm512_permutex2var_ps(t[2 * j], idx, t[2 * j + 1]));
            let (m5, m6, m7) = (
                _mm512_test_epi32_mask(idx, b5),
                _mm512_test_epi32_mask(idx, b6),
                _mm512_test_epi32_mask(idx, b7),
            );
            let a: [__m512; 4] =
                std::array::from_fn(|j| _mm512_mask_blend_ps(m5, r[2 * j], r[2 * j + 1]));
            let b0 = _mm512_mask_blend_ps(m6, a[0], a[1]);
            let b1 = _mm512_mask_blend_ps(m6, a[2], a[3]);
            let w = _mm512_mask_blend_ps(m7, b0, b1);
            let u = (i / 16) & 1;
            acc[u] = _mm512_fmadd_ps(w, xv, acc[u]);
            i += 16;
        }
        let mut total = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
        for j in i..n {
            total += codebook[usize::from(codes[j])] * x[j];
        }
        total
    }

    /// 4-bit decode: 16 codes per 16-byte load widened to 32-bit lanes; one
    /// `vpermps` of the 16-entry codebook per 16 weights (the permute reads
    /// only the low 4 bits of each lane, so the high nibble needs just a shift).
    ///
    /// # Safety
    /// AVX-512F; `x.len()` a multiple of 32 and `codes.len() == x.len() / 2`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn decode_dot_4bit_avx512(cb: &[f32; 16], codes: &[u8], x: &[f32]) -> f32 {
        // SAFETY: 16 floats.
        let table = unsafe { _mm512_loadu_ps(cb.as_ptr()) };
        let (cp, xp) = (codes.as_ptr(), x.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= x.len() {
            // SAFETY: i + 32 ≤ x.len(); bytes i/2 .. i/2 + 16 ≤ codes.len().
            unsafe {
                let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(cp.add(i / 2).cast()));
                let lo = _mm512_permutexvar_ps(v, table);
                let hi = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(v), table);
                let u = (i / 32) & 1;
                acc[2 * u] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xp.add(i)), acc[2 * u]);
                acc[2 * u + 1] =
                    _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp.add(i + 16)), acc[2 * u + 1]);
            }
            i += 32;
        }
        _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ))
    }

    /// AVX2 4-bit decode: the 16-entry codebook as two 8-entry halves, two
    /// `vpermps` and a `vblendvps` on bit 3 per 8 weights.
    ///
    /// # Safety
    /// AVX2 + FMA; `x.len()` a multiple of 32 and `codes.len() == x.len() / 2`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn decode_dot_4bit_avx2(cb: &[f32; 16], codes: &[u8], x: &[f32]) -> f32 {
        // SAFETY: 16 floats.
        let (t0, t1) = unsafe {
            (
                _mm256_loadu_ps(cb.as_ptr()),
                _mm256_loadu_ps(cb.as_ptr().add(8)),
            )
        };
        let (cp, xp) = (codes.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= x.len() {
            // SAFETY: i + 32 ≤ x.len(); bytes i/2 .. i/2 + 16 ≤ codes.len().
            unsafe {
                // Bytes 0..8 hold weights 0..8 (low) and 16..24 (high);
                // bytes 8..16 weights 8..16 and 24..32.
                let v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(cp.add(i / 2).cast()));
                let v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(cp.add(i / 2 + 8).cast()));
                acc[0] = _mm256_fmadd_ps(
                    lookup16_avx2(t0, t1, v0),
                    _mm256_loadu_ps(xp.add(i)),
                    acc[0],
                );
                acc[1] = _mm256_fmadd_ps(
                    lookup16_avx2(t0, t1, v1),
                    _mm256_loadu_ps(xp.add(i + 8)),
                    acc[1],
                );
                acc[2] = _mm256_fmadd_ps(
                    lookup16_avx2(t0, t1, _mm256_srli_epi32::<4>(v0)),
                    _mm256_loadu_ps(xp.add(i + 16)),
                    acc[2],
                );
                acc[3] = _mm256_fmadd_ps(
                    lookup16_avx2(t0, t1, _mm256_srli_epi32::<4>(v1)),
                    _mm256_loadu_ps(xp.add(i + 24)),
                    acc[3],
                );
            }
            i += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        lanes.iter().sum()
    }

    /// Entry `idx & 15` of the 16-entry table `t0 ‖ t1`, per 32-bit lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lookup16_avx2(t0: __m256, t1: __m256, idx: __m256i) -> __m256 {
        _mm256_blendv_ps(
            _mm256_permutevar8x32_ps(t0, idx),
            _mm256_permutevar8x32_ps(t1, idx),
            _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)),
        )
    }

    /// # Safety
    /// AVX2 + FMA; same invariants as [`decode_dot_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn decode_dot_avx2(codebook: &[f32], codes: &[u8], x: &[f32]) -> f32 {
        let n = codes.len();
        let cb = codebook.as_ptr();
        let (cp, xp) = (codes.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + 32 ≤ n; 8 bytes loaded per step.
                unsafe {
                    let idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(cp.add(i + 8 * u).cast()));
                    let w = _mm256_i32gather_ps::<4>(cb, idx);
                    *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(i + 8 * u)), *a);
                }
            }
            i += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        let mut total: f32 = lanes.iter().sum();
        for j in i..n {
            total += codebook[usize::from(codes[j])] * x[j];
        }
        total
    }

    /// # Safety
    /// AVX-512F; equal lengths.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (u, s) in acc.iter_mut().enumerate() {
                // SAFETY: i + 64 ≤ n.
                unsafe {
                    *s = _mm512_fmadd_ps(
                        _mm512_loadu_ps(ap.add(i + 16 * u)),
                        _mm512_loadu_ps(bp.add(i + 16 * u)),
                        *s,
                    )
                };
            }
            i += 64;
        }
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n.
            unsafe {
                acc[0] = _mm512_fmadd_ps(
                    _mm512_loadu_ps(ap.add(i)),
                    _mm512_loadu_ps(bp.add(i)),
                    acc[0],
                )
            };
            i += 16;
        }
        let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let mut total = _mm512_reduce_add_ps(s);
        for j in i..n {
            total += a[j] * b[j];
        }
        total
    }

    /// # Safety
    /// AVX2 + FMA; equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (u, s) in acc.iter_mut().enumerate() {
                // SAFETY: i + 32 ≤ n.
                unsafe {
                    *s = _mm256_fmadd_ps(
                        _mm256_loadu_ps(ap.add(i + 8 * u)),
                        _mm256_loadu_ps(bp.add(i + 8 * u)),
                        *s,
                    )
                };
            }
            i += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        let mut total: f32 = lanes.iter().sum();
        for j in i..n {
            total += a[j] * b[j];
        }
        total
    }

    /// One group of 16 rows: one `vgatherdps` from table `s` per subspace,
    /// two accumulators.
    ///
    /// # Safety
    /// AVX-512F; `ss.end·16 ≤ codes.len()`, `ss.end·k ≤ lut.len()`, codes < k.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pq_group_avx512(
        codes: &[u8],
        lut: &[f32],
        k: usize,
        ss: std::ops::Range<usize>,
        acc: &mut [f32; 16],
    ) {
        let (cp, lp) = (codes.as_ptr(), lut.as_ptr());
        // SAFETY: 16 floats.
        let mut a = [
            unsafe { _mm512_loadu_ps(acc.as_ptr()) },
            _mm512_setzero_ps(),
        ];
        for s in ss {
            // SAFETY: 16 code bytes of subspace s; indices < k inside table s.
            unsafe {
                let idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(cp.add(s * 16).cast()));
                a[s & 1] = _mm512_add_ps(a[s & 1], _mm512_i32gather_ps::<4>(idx, lp.add(s * k)));
            }
        }
        // SAFETY: 16 floats.
        unsafe { _mm512_storeu_ps(acc.as_mut_ptr(), _mm512_add_ps(a[0], a[1])) };
    }

    /// AVX2 variant: two 8-lane gathers per subspace.
    ///
    /// # Safety
    /// AVX2; as [`pq_group_avx512`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pq_group_avx2(
        codes: &[u8],
        lut: &[f32],
        k: usize,
        ss: std::ops::Range<usize>,
        acc: &mut [f32; 16],
    ) {
        let (cp, lp) = (codes.as_ptr(), lut.as_ptr());
        // SAFETY: 16 floats.
        let (mut a0, mut a1) = unsafe {
            (
                _mm256_loadu_ps(acc.as_ptr()),
                _mm256_loadu_ps(acc.as_ptr().add(8)),
            )
        };
        for s in ss {
            // SAFETY: 16 code bytes of subspace s; indices < k inside table s.
            unsafe {
                let i0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(cp.add(s * 16).cast()));
                let i1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(cp.add(s * 16 + 8).cast()));
                let t = lp.add(s * k);
                a0 = _mm256_add_ps(a0, _mm256_i32gather_ps::<4>(t, i0));
                a1 = _mm256_add_ps(a1, _mm256_i32gather_ps::<4>(t, i1));
            }
        }
        // SAFETY: 16 floats.
        unsafe {
            _mm256_storeu_ps(acc.as_mut_ptr(), a0);
            _mm256_storeu_ps(acc.as_mut_ptr().add(8), a1);
        }
    }

    /// `y += a · x`.
    ///
    /// # Safety
    /// AVX-512F; `x.len() == y.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy_avx512(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let av = _mm512_set1_ps(a);
        let mut i = 0;
        while i < n {
            let m: __mmask16 = if n - i >= 16 {
                0xffff
            } else {
                (1 << (n - i)) - 1
            };
            // SAFETY: masked lanes < n.
            unsafe {
                let v = _mm512_fmadd_ps(
                    av,
                    _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)),
                    _mm512_maskz_loadu_ps(m, y.as_ptr().add(i)),
                );
                _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), m, v);
            }
            i += 16;
        }
    }

    /// `y += a · x`.
    ///
    /// # Safety
    /// AVX2 + FMA; `x.len() == y.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy_avx2(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n.
            unsafe {
                let v = _mm256_fmadd_ps(
                    av,
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(y.as_ptr().add(i)),
                );
                _mm256_storeu_ps(y.as_mut_ptr().add(i), v);
            }
            i += 8;
        }
        for j in i..n {
            y[j] += a * x[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::SeededRng;
    use proptest::prelude::*;

    fn close(a: f32, b: f64, scale: f64) -> bool {
        (f64::from(a) - b).abs() <= 1e-4 * scale + 1e-5
    }

    /// Every ISA path against the decoded dense product in f64.
    fn check_codebook(
        o: usize,
        i: usize,
        k: usize,
        batch: usize,
        seed: u64,
    ) -> Result<(), TestCaseError> {
        let mut rng = SeededRng::new(seed);
        let cb: Vec<f32> = (0..k).map(|_| rng.normal() as f32).collect();
        let codes: Vec<u8> = (0..o * i).map(|_| rng.below(k) as u8).collect();
        let x: Vec<f32> = (0..batch * i).map(|_| rng.normal() as f32).collect();
        let bias: Vec<f32> = (0..o).map(|v| v as f32).collect();
        let layer =
            CodebookLinear::new(o, i, cb.clone(), codes.clone(), Some(bias.clone())).unwrap();
        prop_assert_eq!(layer.is_4bit(), k <= 16);
        for isa in Isa::supported_for(Needs::Float) {
            let y = layer.forward(&x, batch, Some(isa)).unwrap();
            for b in 0..batch {
                for r in 0..o {
                    let (mut want, mut scale) = (f64::from(bias[r]), 1.0);
                    for c in 0..i {
                        let p = f64::from(cb[codes[r * i + c] as usize]) * f64::from(x[b * i + c]);
                        want += p;
                        scale += p.abs();
                    }
                    prop_assert!(
                        close(y[b * o + r], want, scale),
                        "{:?} {} vs {}",
                        isa,
                        y[b * o + r],
                        want
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn pq_sums_over_several_table_blocks_and_tasks() {
        // k = 256: 16 subspaces per L1 block, so S = 40 takes three blocks;
        // 300 rows = two tasks of 16 groups, the last group partial.
        let (o, s_n, d, k) = (300, 40, 3, 256);
        let mut rng = SeededRng::new(3);
        let i = s_n * d;
        let cbs: Vec<f32> = (0..s_n * k * d).map(|_| rng.normal() as f32).collect();
        let codes: Vec<u8> = (0..o * s_n).map(|_| rng.below(k) as u8).collect();
        let x: Vec<f32> = (0..i).map(|_| rng.normal() as f32).collect();
        let bias: Vec<f32> = (0..o).map(|v| v as f32 * 0.01).collect();
        let layer = PqLinear::new(o, i, d, cbs.clone(), codes.clone(), Some(bias.clone())).unwrap();
        for isa in Isa::supported_for(Needs::Float) {
            let y = layer.forward(&x, 1, Some(isa)).unwrap();
            for r in 0..o {
                let (mut want, mut scale) = (f64::from(bias[r]), 1.0);
                for s in 0..s_n {
                    let c = codes[r * s_n + s] as usize;
                    for e in 0..d {
                        let p = f64::from(cbs[(s * k + c) * d + e]) * f64::from(x[s * d + e]);
                        want += p;
                        scale += p.abs();
                    }
                }
                assert!(
                    close(y[r], want, scale),
                    "{isa:?} row {r}: {} vs {want}",
                    y[r]
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn codebook_matches_decoded_dense(o in 1usize..90, i in 1usize..200, k in 1usize..257, batch in 1usize..4, seed in any::<u64>()) {
            check_codebook(o, i, k, batch, seed)?;
        }

        /// `k ≤ 16`: the 4-bit layout, rows of 1..200 weights (whole 32-weight
        /// blocks and tails).
        #[test]
        fn codebook_4bit_matches_decoded_dense(o in 1usize..40, i in 1usize..200, k in 1usize..17, batch in 1usize..3, seed in any::<u64>()) {
            check_codebook(o, i, k, batch, seed)?;
        }

        #[test]
        fn pq_matches_decoded_dense(o in 1usize..90, s_n in 1usize..12, d in 1usize..9, k in 1usize..257, batch in 1usize..3, seed in any::<u64>()) {
            let mut rng = SeededRng::new(seed);
            let i = s_n * d;
            let cbs: Vec<f32> = (0..s_n * k * d).map(|_| rng.normal() as f32).collect();
            let codes: Vec<u8> = (0..o * s_n).map(|_| rng.below(k) as u8).collect();
            let x: Vec<f32> = (0..batch * i).map(|_| rng.normal() as f32).collect();
            let layer = PqLinear::new(o, i, d, cbs.clone(), codes.clone(), None).unwrap();
            for isa in Isa::supported_for(Needs::Float) {
                let y = layer.forward(&x, batch, Some(isa)).unwrap();
                for b in 0..batch { for r in 0..o {
                    let (mut want, mut scale) = (0f64, 1.0);
                    for s in 0..s_n {
                        let c = codes[r * s_n + s] as usize;
                        for e in 0..d {
                            let p = f64::from(cbs[(s * k + c) * d + e]) * f64::from(x[b * i + s * d + e]);
                            want += p; scale += p.abs();
                        }
                    }
                    prop_assert!(close(y[b * o + r], want, scale), "{:?} {} vs {}", isa, y[b * o + r], want);
                }}
            }
        }

        #[test]
        fn invalid_inputs_are_errors(k in 0usize..300, bad_code in any::<bool>(), xlen in 0usize..10) {
            let codes = vec![if bad_code { 255 } else { 0 }; 6];
            let r = CodebookLinear::new(2, 3, vec![0.5; k], codes, None);
            prop_assert_eq!(r.is_ok(), (1..=256).contains(&k) && (!bad_code || k == 256));
            if let Ok(l) = r {
                prop_assert_eq!(l.forward(&vec![1.0; xlen], 1, None).is_ok(), xlen == 3);
            }
            let pq = PqLinear::new(2, 4, 3, vec![0.0; 12], vec![0; 2], None);
            prop_assert!(pq.is_err());
        }
    }
}

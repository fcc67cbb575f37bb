//! Codebook (scalar k-means, Gong et al. \[51\], survey Section 5, equation (4))
//! and product-quantized (Jégou et al. \[52\], applied to weights by \[51\])
//! fully connected layers.
//!
//! - [`CodebookLinear`]: every weight is `codebook[code[o, c]]` with `k ≤ 256`
//!   8-bit codes. The kernel decodes 16 weights per `vpgatherdd` from the
//!   (L1-resident) codebook (AVX2) or 16 in-register permutes (AVX-512) straight into registers and FMAs them with the
//!   input: a batch-1 FC layer, memory-bound in f32, reads 1 byte per weight
//!   instead of 4. For batch > 1 each row is decoded once into an L1 tile and
//!   reused for every sample. (AVX-512 decodes with register permutes instead
//!   of gathers; see `decode_dot_avx512`.)
//! - [`PqLinear`]: each row is split into `S` sub-vectors of length `d`, each
//!   replaced by a code into a per-subspace codebook of `k ≤ 256` centroids.
//!   Lookup-table products: per sample, `T[s][k] = ⟨C_s[k], x_s⟩` costs
//!   `k · in` MACs, then `y[o] = Σ_s T[s][code[s, o]]` costs `S` gathered adds
//!   per output — `d`× fewer operations than the dense product when
//!   `out ≫ k`.

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
    /// Row-major `[out][in]` codes.
    codes: Vec<u8>,
    bias: Option<Vec<f32>>,
}

impl CodebookLinear {
    /// `codes` is row-major `[out, in]`; every code must index `codebook`
    /// (`1 ≤ k ≤ 256` finite centroids).
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
        Ok(CodebookLinear {
            out_features,
            in_features,
            codebook,
            codes,
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
                        let codes = &self.codes[o * i_n..(o + 1) * i_n];
                        let b = self.bias.as_ref().map_or(0.0, |b| b[o]);
                        if batch == 1 {
                            yo[0] = decode_dot(isa, &self.codebook, codes, x) + b;
                        } else {
                            decode_row(&self.codebook, codes, &mut tile[..i_n]);
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

/// Decodes one row of codes into `tile`.
fn decode_row(codebook: &[f32], codes: &[u8], tile: &mut [f32]) {
    for (t, &c) in tile.iter_mut().zip(codes) {
        *t = codebook[usize::from(c)];
    }
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
    /// `[S][k][d]` centroids.
    codebooks: Vec<f32>,
    /// `[S][out]` codes (subspace-major, so 16 rows load at once).
    codes: Vec<u8>,
    bias: Option<Vec<f32>>,
}

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
        let mut t = vec![0u8; codes.len()];
        for o in 0..out_features {
            for s in 0..s_n {
                t[s * out_features + o] = codes[o * s_n + s];
            }
        }
        Ok(PqLinear {
            out_features,
            in_features,
            sub_dim,
            centroids: k,
            codebooks,
            codes: t,
            bias,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// Bytes of codes and codebooks.
    pub fn weight_bytes(&self) -> usize {
        self.codes.len() + 4 * self.codebooks.len()
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
        for (b, yb) in y.chunks_mut(o_n).enumerate() {
            let xb = &x[b * self.in_features..(b + 1) * self.in_features];
            lut.par_chunks_mut(k).enumerate().for_each(|(s, ls)| {
                for (c, l) in ls.iter_mut().enumerate() {
                    *l = dot(
                        isa,
                        &self.codebooks[(s * k + c) * d..(s * k + c + 1) * d],
                        &xb[s * d..(s + 1) * d],
                    );
                }
            });
            yb.par_chunks_mut(ROW_CHUNK)
                .enumerate()
                .for_each(|(chunk, dst)| {
                    let o0 = chunk * ROW_CHUNK;
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: isa checked (avx512f); codes < k so every gathered
                        // index s·k + code < lut.len().
                        Isa::Avx512 => unsafe {
                            x86::pq_sum_avx512(&self.codes, lut, o_n, k, s_n, o0, dst)
                        },
                        _ => {
                            for (r, v) in dst.iter_mut().enumerate() {
                                *v = (0..s_n)
                                    .map(|s| lut[s * k + usize::from(self.codes[s * o_n + o0 + r])])
                                    .sum();
                            }
                        }
                    }
                    if let Some(bias) = &self.bias {
                        for (r, v) in dst.iter_mut().enumerate() {
                            *v += bias[o0 + r];
                        }
                    }
                });
        }
        Ok(())
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

    /// `dst[r] = Σ_s lut[s·k + codes[s·out + o0 + r]]` for the rows of `dst`.
    ///
    /// # Safety
    /// AVX-512F; `codes` is `[S][out]` with codes < k, `lut` is `[S][k]`,
    /// `o0 + dst.len() ≤ out`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pq_sum_avx512(
        codes: &[u8],
        lut: &[f32],
        out: usize,
        k: usize,
        s_n: usize,
        o0: usize,
        dst: &mut [f32],
    ) {
        let lp = lut.as_ptr();
        let mut r = 0;
        while r + 16 <= dst.len() {
            let mut acc = [_mm512_setzero_ps(); 2];
            for s in 0..s_n {
                // SAFETY: s·out + o0 + r + 16 ≤ codes.len(); gathered indices < lut.len().
                unsafe {
                    let idx = _mm512_add_epi32(
                        _mm512_cvtepu8_epi32(_mm_loadu_si128(
                            codes.as_ptr().add(s * out + o0 + r).cast(),
                        )),
                        _mm512_set1_epi32((s * k) as i32),
                    );
                    acc[s & 1] = _mm512_add_ps(acc[s & 1], _mm512_i32gather_ps::<4>(idx, lp));
                }
            }
            // SAFETY: r + 16 ≤ dst.len().
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(r), _mm512_add_ps(acc[0], acc[1])) };
            r += 16;
        }
        for (rr, v) in dst.iter_mut().enumerate().skip(r) {
            *v = (0..s_n)
                .map(|s| lut[s * k + usize::from(codes[s * out + o0 + rr])])
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowbit::available_isas;
    use hasten_core::SeededRng;
    use proptest::prelude::*;

    fn close(a: f32, b: f64, scale: f64) -> bool {
        (f64::from(a) - b).abs() <= 1e-4 * scale + 1e-5
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn codebook_matches_decoded_dense(o in 1usize..90, i in 1usize..200, k in 1usize..257, batch in 1usize..4, seed in any::<u64>()) {
            let mut rng = SeededRng::new(seed);
            let cb: Vec<f32> = (0..k).map(|_| rng.normal() as f32).collect();
            let codes: Vec<u8> = (0..o * i).map(|_| rng.below(k) as u8).collect();
            let x: Vec<f32> = (0..batch * i).map(|_| rng.normal() as f32).collect();
            let bias: Vec<f32> = (0..o).map(|v| v as f32).collect();
            let layer = CodebookLinear::new(o, i, cb.clone(), codes.clone(), Some(bias.clone())).unwrap();
            for isa in available_isas(Needs::Float) {
                let y = layer.forward(&x, batch, Some(isa)).unwrap();
                for b in 0..batch { for r in 0..o {
                    let (mut want, mut scale) = (f64::from(bias[r]), 1.0);
                    for c in 0..i {
                        let p = f64::from(cb[codes[r * i + c] as usize]) * f64::from(x[b * i + c]);
                        want += p; scale += p.abs();
                    }
                    prop_assert!(close(y[b * o + r], want, scale), "{:?} {} vs {}", isa, y[b * o + r], want);
                }}
            }
        }

        #[test]
        fn pq_matches_decoded_dense(o in 1usize..90, s_n in 1usize..12, d in 1usize..9, k in 1usize..257, batch in 1usize..3, seed in any::<u64>()) {
            let mut rng = SeededRng::new(seed);
            let i = s_n * d;
            let cbs: Vec<f32> = (0..s_n * k * d).map(|_| rng.normal() as f32).collect();
            let codes: Vec<u8> = (0..o * s_n).map(|_| rng.below(k) as u8).collect();
            let x: Vec<f32> = (0..batch * i).map(|_| rng.normal() as f32).collect();
            let layer = PqLinear::new(o, i, d, cbs.clone(), codes.clone(), None).unwrap();
            for isa in available_isas(Needs::Float) {
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

//! Sign bit-packing of activations along channels (the `sign(I)` of
//! XNOR-Net \[59\], survey Section 5, equation (9)): bit `c mod 64` of word
//! `c / 64` of a pixel is 1 when `x[c] ≥ 0` is false (value −1: negative, or NaN) and 0 when `x[c] ≥ 0`
//! (value +1) — the `binary_sign` convention of the core ops.
//!
//! The packed layout is pixel-major (`[n][y][x][word]`, "NHWC in bits") and
//! carries the convolution's zero padding: padded pixels and the unused high
//! bits of the last word are all zero. A padded pixel therefore *reads* as +1;
//! [`crate::lowbit::binary_gemm`] subtracts its contribution exactly.
//!
//! Sign extraction is vectorised: each image row is first transposed to
//! channel-minor order in a small buffer (one pass over `C` plane rows, not a
//! gather across `C` pages per pixel), then 16 (AVX-512) or 8 (AVX2)
//! contiguous channels are compared with zero in one instruction, the
//! comparison mask being the packed bits.

use hasten_core::{Error, Padding, Result};
use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::{check_isa, Isa, Needs};
use crate::pool::ScratchPool;

/// The binarisation rule: −1 unless `v ≥ 0` (so NaN reads as −1, −0.0 as +1).
pub fn reads_as_minus_one(v: f32) -> bool {
    matches!(v.partial_cmp(&0.0), None | Some(std::cmp::Ordering::Less))
}

/// Channel-packed signs of an NCHW batch, with zero padding built in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedSigns {
    batch: usize,
    channels: usize,
    in_hw: (usize, usize),
    padding: Padding,
    words: usize,
    bits: Vec<u64>,
}

impl PackedSigns {
    /// Makes this the all-`+1` (all-zero-bit) packing of the given shape,
    /// reusing its buffer (allocating only when it must grow).
    pub(crate) fn reset(
        &mut self,
        batch: usize,
        channels: usize,
        in_hw: (usize, usize),
        padding: Padding,
    ) {
        let words = channels.div_ceil(64);
        let (hp, wp) = (
            in_hw.0 + padding.top + padding.bottom,
            in_hw.1 + padding.left + padding.right,
        );
        (
            self.batch,
            self.channels,
            self.in_hw,
            self.padding,
            self.words,
        ) = (batch, channels, in_hw, padding, words);
        self.bits.clear();
        self.bits.resize(batch * hp * wp * words, 0);
    }

    /// Batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Channel count (bits per pixel that carry data).
    pub fn channels(&self) -> usize {
        self.channels
    }
    /// Unpadded height and width.
    pub fn in_hw(&self) -> (usize, usize) {
        self.in_hw
    }
    /// The zero padding stored around each plane.
    pub fn padding(&self) -> Padding {
        self.padding
    }
    /// 64-bit words per pixel, `⌈channels / 64⌉`.
    pub fn words_per_pixel(&self) -> usize {
        self.words
    }
    /// Padded height and width.
    pub fn padded_hw(&self) -> (usize, usize) {
        (
            self.in_hw.0 + self.padding.top + self.padding.bottom,
            self.in_hw.1 + self.padding.left + self.padding.right,
        )
    }
    /// The packed words, `[n][padded y][padded x][word]`.
    pub fn bits(&self) -> &[u64] {
        &self.bits
    }
    pub(crate) fn bits_mut(&mut self) -> &mut [u64] {
        &mut self.bits
    }

    /// The sign (−1 or +1) of channel `c` at unpadded pixel `(y, x)` of sample `n`.
    pub fn sign(&self, n: usize, c: usize, y: usize, x: usize) -> Result<i8> {
        let (h, w) = self.in_hw;
        if n >= self.batch || c >= self.channels || y >= h || x >= w {
            return Err(Error::shape(
                "PackedSigns index (n, c, y, x)",
                format!("< ({}, {}, {h}, {w})", self.batch, self.channels),
                format!("({n}, {c}, {y}, {x})"),
            ));
        }
        let (hp, wp) = self.padded_hw();
        let pix = (n * hp + y + self.padding.top) * wp + x + self.padding.left;
        let bit = (self.bits[pix * self.words + c / 64] >> (c % 64)) & 1;
        Ok(if bit == 1 { -1 } else { 1 })
    }

    /// Unpacks to an NCHW ±1 array (padding dropped).
    pub fn to_signs(&self) -> Array4<f32> {
        let (h, w) = self.in_hw;
        Array4::from_shape_fn((self.batch, self.channels, h, w), |(n, c, y, x)| {
            f32::from(self.sign(n, c, y, x).unwrap_or(1))
        })
    }
}

/// Packs the signs of `x` (NCHW) with `padding` zero pixels around each plane.
/// `isa = None` picks the widest path (AVX-512F or AVX2 gathers, else scalar).
pub fn pack_signs(
    x: ArrayView4<'_, f32>,
    padding: Padding,
    isa: Option<Isa>,
) -> Result<PackedSigns> {
    let isa = check_isa(isa, Needs::Float, "pack_signs")?;
    let dims = x.shape();
    let dims = [dims[0], dims[1], dims[2], dims[3]];
    let x = x.as_standard_layout();
    let mut packed = PackedSigns::default();
    pack_signs_into(
        x.as_slice().expect("standard layout"),
        dims,
        padding,
        isa,
        &mut packed,
        &ScratchPool::new(),
    )?;
    Ok(packed)
}

/// As [`pack_signs`], from the row-major NCHW batch `data` of `dims` into
/// `packed` on `isa` (a level the caller checked for float kernels), with
/// the transposed rows in `pool`'s buffers: allocates nothing once `packed`
/// and the pool have grown to this size.
pub(crate) fn pack_signs_into(
    data: &[f32],
    dims: [usize; 4],
    padding: Padding,
    isa: Isa,
    packed: &mut PackedSigns,
    pool: &ScratchPool,
) -> Result<()> {
    let [batch, channels, h, w] = dims;
    hasten_core::error::ensure_nonempty("pack_signs input (NCHW)", &dims)?;
    let sample = channels * h * w;
    if data.len() != batch * sample {
        return Err(Error::shape("pack_signs input", batch * sample, data.len()));
    }
    packed.reset(batch, channels, (h, w), padding);
    let (hp, wp) = packed.padded_hw();
    let words = packed.words;
    packed
        .bits
        .par_chunks_mut(wp * words)
        .enumerate()
        .for_each(|(row, out)| {
            let (n, yp) = (row / hp, row % hp);
            if yp < padding.top || yp >= padding.top + h {
                return;
            }
            let y = yp - padding.top;
            let plane = &data[n * sample..(n + 1) * sample];
            pool.with(|scratch| {
                let row_buf = &mut scratch.floats;
                row_buf.resize(w * channels, 0.0);
                for c in 0..channels {
                    let src = &plane[(c * h + y) * w..][..w];
                    for (x, &v) in src.iter().enumerate() {
                        row_buf[x * channels + c] = v;
                    }
                }
                for x in 0..w {
                    let dst = &mut out[(x + padding.left) * words..(x + padding.left + 1) * words];
                    pack_pixel(isa, &row_buf[x * channels..(x + 1) * channels], dst);
                }
            });
        });
    Ok(())
}

/// Packs the signs of one pixel's contiguous channel values into `dst`
/// (`⌈values.len() / 64⌉` words) on `isa`, a level checked for float
/// kernels.
pub(crate) fn pack_pixel(isa: Isa, values: &[f32], dst: &mut [u64]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` was validated by check_isa (avx512f);
        // dst.len() = ⌈values.len() / 64⌉.
        Isa::Avx512 => unsafe { x86::pack_pixel_avx512(values, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with avx2.
        Isa::Avx2 => unsafe { x86::pack_pixel_avx2(values, dst) },
        _ => pack_pixel_scalar(values, dst),
    }
}

fn pack_pixel_scalar(values: &[f32], dst: &mut [u64]) {
    for (word, chunk) in dst.iter_mut().zip(values.chunks(64)) {
        *word = chunk.iter().enumerate().fold(0u64, |bits, (b, &v)| {
            bits | (u64::from(reads_as_minus_one(v)) << b)
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F available; `dst.len() = ⌈values.len() / 64⌉`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_pixel_avx512(values: &[f32], dst: &mut [u64]) {
        let n = values.len();
        let zero = _mm512_setzero_ps();
        dst.fill(0);
        let mut c = 0;
        while c < n {
            let valid: __mmask16 = if n - c >= 16 {
                0xffff
            } else {
                (1u16 << (n - c)) - 1
            };
            // SAFETY: masked lanes ≥ n are not read.
            let v = unsafe { _mm512_maskz_loadu_ps(valid, values.as_ptr().add(c)) };
            let m = _mm512_mask_cmp_ps_mask::<_CMP_NGE_UQ>(valid, v, zero);
            dst[c / 64] |= u64::from(m) << (c % 64);
            c += 16;
        }
    }

    /// # Safety
    /// AVX2 available; `dst.len() = ⌈values.len() / 64⌉`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_pixel_avx2(values: &[f32], dst: &mut [u64]) {
        let n = values.len();
        let zero = _mm256_setzero_ps();
        dst.fill(0);
        let mut c = 0;
        while c + 8 <= n {
            // SAFETY: c + 8 ≤ n.
            let v = unsafe { _mm256_loadu_ps(values.as_ptr().add(c)) };
            let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NGE_UQ>(v, zero)) as u32;
            dst[c / 64] |= u64::from(m) << (c % 64);
            c += 8;
        }
        while c < n {
            dst[c / 64] |= u64::from(super::reads_as_minus_one(values[c])) << (c % 64);
            c += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::SeededRng;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn every_path_packs_the_signs(
            n in 1usize..3, c in 1usize..140, h in 1usize..5, w in 1usize..5,
            pad in 0usize..3, seed in any::<u64>(),
        ) {
            let mut rng = SeededRng::new(seed);
            let mut x = rng.normal_array((n, c, h, w), 1.0);
            // Exact zeros and negative zeros are +1 (x ≥ 0 is false only for x < 0).
            x[[0, 0, 0, 0]] = 0.0;
            x[[n - 1, c - 1, h - 1, w - 1]] = -0.0;
            if c > 2 { x[[0, 2, 0, 0]] = f32::NAN; }
            let padding = Padding::symmetric(pad, pad + 1);
            for isa in Isa::supported_for(Needs::Float) {
                let p = pack_signs(x.view(), padding, Some(isa)).unwrap();
                let signs = p.to_signs();
                for ((i, &v), &s) in x.indexed_iter().zip(signs.iter()) {
                    prop_assert_eq!(s, if v >= 0.0 { 1.0 } else { -1.0 }, "{:?} {:?}", isa, i);
                }
                // Padding and tail bits are zero.
                let (hp, wp) = p.padded_hw();
                for nn in 0..n { for y in 0..hp { for xx in 0..wp {
                    let base = ((nn * hp + y) * wp + xx) * p.words_per_pixel();
                    let inside = y >= pad && y < pad + h && xx > pad && xx < pad + 1 + w;
                    for wi in 0..p.words_per_pixel() {
                        let word = p.bits()[base + wi];
                        if !inside { prop_assert_eq!(word, 0); }
                        let used = (c - wi * 64).min(64);
                        if used < 64 { prop_assert_eq!(word >> used, 0); }
                    }
                }}}
            }
        }
    }

    #[test]
    fn empty_input_is_an_error() {
        let x = Array4::<f32>::zeros((1, 0, 2, 2));
        assert!(pack_signs(x.view(), Padding::default(), None).is_err());
    }
}

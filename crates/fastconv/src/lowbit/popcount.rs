//! Population count of 64-bit words, the inner operation of XNOR-Net's
//! binary dot product `a·b = n − 2·popcount(a ⊕ b)` (survey
//! Section 5, equation (9)).
//!
//! Three paths: AVX-512 `VPOPCNTDQ` (one instruction per 8 words), AVX2 with
//! the nibble lookup table (`vpshufb` on the low and high nibbles, then
//! `vpsadbw` to sum the bytes of each 64-bit lane — Muła's method) and the
//! portable `u64::count_ones`. [`crate::lowbit::binary_gemm`] inlines the
//! same register-level helpers.

use hasten_core::{Error, Result};

use super::{check_isa, Isa, Needs};

/// `Σ popcount(a[i] ⊕ b[i])`: the number of differing bits of two equally long
/// bit strings. `isa = None` picks the widest available path.
pub fn xor_popcount(a: &[u64], b: &[u64], isa: Option<Isa>) -> Result<u64> {
    if a.len() != b.len() {
        return Err(Error::shape("xor_popcount operands", a.len(), b.len()));
    }
    let isa = check_isa(isa, Needs::Popcount, "xor_popcount")?;
    Ok(match isa {
        Isa::Scalar => xor_popcount_scalar(a, b),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: check_isa confirmed avx512f + avx512vpopcntdq at run time.
        Isa::Avx512 => unsafe { x86::xor_popcount_avx512(a, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: check_isa confirmed avx2 at run time.
        Isa::Avx2 => unsafe { x86::xor_popcount_avx2(a, b) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => xor_popcount_scalar(a, b),
    })
}

/// Portable reference: `count_ones` word by word.
pub fn xor_popcount_scalar(a: &[u64], b: &[u64]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| u64::from((x ^ y).count_ones()))
        .sum()
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Per-byte population count of a 256-bit vector (nibble lookup table).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn popcnt_epi8_avx2(v: __m256i) -> __m256i {
        let lut = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
        );
        let low = _mm256_set1_epi8(0x0f);
        let lo = _mm256_and_si256(v, low);
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi))
    }

    /// Per-64-bit-lane population count of a 256-bit vector.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn popcnt_epi64_avx2(v: __m256i) -> __m256i {
        _mm256_sad_epu8(popcnt_epi8_avx2(v), _mm256_setzero_si256())
    }

    /// AVX2 `Σ popcount(a ⊕ b)`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `a` and `b` must have equal length.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn xor_popcount_avx2(a: &[u64], b: &[u64]) -> u64 {
        let n4 = a.len() / 4 * 4;
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i < n4 {
            // SAFETY: i + 4 ≤ n4 ≤ a.len() = b.len(); unaligned loads.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(b.as_ptr().add(i).cast()),
                )
            };
            acc = _mm256_add_epi64(acc, popcnt_epi64_avx2(_mm256_xor_si256(va, vb)));
            i += 4;
        }
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` is 32 bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
        lanes.iter().sum::<u64>() + super::xor_popcount_scalar(&a[n4..], &b[n4..])
    }

    /// AVX-512 `Σ popcount(a ⊕ b)` with `VPOPCNTQ`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and VPOPCNTDQ; equal lengths.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub(crate) unsafe fn xor_popcount_avx512(a: &[u64], b: &[u64]) -> u64 {
        let n8 = a.len() / 8 * 8;
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i < n8 {
            // SAFETY: i + 8 ≤ n8 ≤ a.len() = b.len(); unaligned loads.
            let (va, vb) = unsafe {
                (
                    _mm512_loadu_si512(a.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(b.as_ptr().add(i).cast()),
                )
            };
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(va, vb)));
            i += 8;
        }
        _mm512_reduce_add_epi64(acc) as u64 + super::xor_popcount_scalar(&a[n8..], &b[n8..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_path_matches_count_ones(words in proptest::collection::vec(any::<(u64, u64)>(), 0..70)) {
            let (a, b): (Vec<u64>, Vec<u64>) = words.into_iter().unzip();
            let truth: u64 = a.iter().zip(&b).map(|(x, y)| {
                (0..64).filter(|k| ((x >> k) & 1) != ((y >> k) & 1)).count() as u64
            }).sum();
            for isa in Isa::supported_for(Needs::Popcount) {
                prop_assert_eq!(xor_popcount(&a, &b, Some(isa)).unwrap(), truth);
            }
        }

        #[test]
        fn length_mismatch_is_an_error(n in 0usize..20, m in 0usize..20) {
            let r = xor_popcount(&vec![0; n], &vec![0; m], None);
            prop_assert_eq!(r.is_err(), n != m);
        }
    }
}

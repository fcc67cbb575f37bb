//! Bit packing of small integer codes into `u64` words, the storage of every
//! packed weight format of survey section 5 (binary eq. (3), ternary, k-means
//! indices eq. (4), product-quantization codes, fixed-point codes).
//!
//! # Layout
//! A [`PackedCodes`] is a `rows × cols` matrix of `bits`-bit unsigned codes.
//! Each row starts on a fresh word: row `r` owns the words
//! `words[r·words_per_row .. (r+1)·words_per_row]`, with
//! `words_per_row = ⌈cols·bits / 64⌉`. Inside a row the codes form one
//! little-endian bit stream: code `c` occupies bits `c·bits .. (c+1)·bits` of
//! the row, bit `b` of the stream being bit `b % 64` of word `b / 64`. A code
//! may straddle two words (when `bits` does not divide 64); unused high bits
//! of a row's last word are zero. For weights, a row is one output filter (or
//! one sub-block, for product quantization), so a kernel can stream a filter's
//! codes with whole-word loads.

use crate::error::{Error, Result};

/// A `rows × cols` matrix of `bits`-bit codes packed into `u64` words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedCodes {
    bits: u32,
    rows: usize,
    cols: usize,
    words_per_row: usize,
    words: Vec<u64>,
}

/// The number of bits needed to index `k` distinct values, `⌈log₂ k⌉`, at least 1.
pub fn bits_for(k: usize) -> u32 {
    if k <= 2 {
        1
    } else {
        usize::BITS - (k - 1).leading_zeros()
    }
}

impl PackedCodes {
    /// Packs row-major `codes` (`rows · cols` of them) with `bits ∈ 1..=16`
    /// bits each; every code must be below `2^bits`.
    pub fn pack(codes: &[u32], rows: usize, cols: usize, bits: u32) -> Result<Self> {
        if !(1..=16).contains(&bits) {
            return Err(Error::param("bits per code", bits, "1..=16"));
        }
        crate::error::ensure_nonempty("packed code matrix", &[rows, cols])?;
        if codes.len() != rows * cols {
            return Err(Error::shape(
                "code count",
                format!("{rows} × {cols} = {}", rows * cols),
                codes.len(),
            ));
        }
        let limit = 1u32 << bits;
        if let Some((i, &c)) = codes.iter().enumerate().find(|(_, &c)| c >= limit) {
            return Err(Error::param(
                format!("code at flat index {i}"),
                c,
                format!("< 2^{bits} = {limit}"),
            ));
        }
        let words_per_row = (cols * bits as usize).div_ceil(64);
        let mut words = vec![0u64; rows * words_per_row];
        for r in 0..rows {
            let row = &mut words[r * words_per_row..(r + 1) * words_per_row];
            for c in 0..cols {
                let pos = c * bits as usize;
                let (w, off) = (pos / 64, pos % 64);
                let code = u64::from(codes[r * cols + c]);
                row[w] |= code << off;
                if off + bits as usize > 64 {
                    row[w + 1] |= code >> (64 - off);
                }
            }
        }
        Ok(PackedCodes {
            bits,
            rows,
            cols,
            words_per_row,
            words,
        })
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Codes per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Words per row, `⌈cols·bits / 64⌉`.
    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    /// All words, row after row.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The words of row `r`, or `None` when `r ≥ rows`.
    pub fn row_words(&self, r: usize) -> Option<&[u64]> {
        (r < self.rows).then(|| &self.words[r * self.words_per_row..(r + 1) * self.words_per_row])
    }

    /// Bytes of storage: `8 · rows · words_per_row`.
    pub fn payload_bytes(&self) -> u64 {
        8 * self.words.len() as u64
    }

    /// The code at `(row, col)`, or `None` when out of range.
    pub fn get(&self, row: usize, col: usize) -> Option<u32> {
        if row >= self.rows || col >= self.cols {
            return None;
        }
        let bits = self.bits as usize;
        let base = row * self.words_per_row;
        let pos = col * bits;
        let (w, off) = (base + pos / 64, pos % 64);
        let mask = (1u64 << bits) - 1;
        let mut v = self.words[w] >> off;
        if off + bits > 64 {
            v |= self.words[w + 1] << (64 - off);
        }
        Some((v & mask) as u32)
    }

    /// The codes of row `r`, or `None` when `r ≥ rows`.
    pub fn unpack_row(&self, r: usize) -> Option<Vec<u32>> {
        (r < self.rows).then(|| {
            (0..self.cols)
                .map(|c| self.get(r, c).expect("in range"))
                .collect()
        })
    }

    /// All codes, row-major.
    pub fn unpack(&self) -> Vec<u32> {
        (0..self.rows)
            .flat_map(|r| (0..self.cols).map(move |c| (r, c)))
            .map(|(r, c)| self.get(r, c).expect("in range"))
            .collect()
    }

    /// Checks that the codes are [`bits_for`]`(k)` = `⌈log₂ k⌉` bits wide, the
    /// width of indices into `k` codebook entries (`what` names the codes).
    pub(crate) fn check_index_bits(&self, what: &str, k: usize) -> Result<()> {
        if self.bits != bits_for(k) {
            return Err(Error::param(
                format!("{what} bits"),
                self.bits,
                format!("⌈log₂ {k}⌉ = {}", bits_for(k)),
            ));
        }
        Ok(())
    }

    /// Checks that the matrix is `rows × cols` and every code is below `limit`.
    pub fn check(&self, what: &str, rows: usize, cols: usize, limit: u32) -> Result<()> {
        if self.rows != rows || self.cols != cols {
            return Err(Error::shape(
                what,
                format!("{rows} × {cols} codes"),
                format!("{} × {}", self.rows, self.cols),
            ));
        }
        if let Some((i, c)) = self
            .unpack()
            .into_iter()
            .enumerate()
            .find(|&(_, c)| c >= limit)
        {
            return Err(Error::param(
                format!("{what} code at flat index {i}"),
                c,
                format!("< {limit}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bits_for_small_k() {
        let want = [
            (1, 1),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (256, 8),
            (257, 9),
        ];
        for (k, b) in want {
            assert_eq!(bits_for(k), b, "k = {k}");
        }
    }

    #[test]
    fn layout_is_lsb_first_per_row() {
        // 2 rows of 3 two-bit codes: row 0 = [1, 2, 3] → 0b11_10_01.
        let p = PackedCodes::pack(&[1, 2, 3, 3, 0, 1], 2, 3, 2).unwrap();
        assert_eq!(p.words(), &[0b11_10_01, 0b01_00_11]);
        assert_eq!(p.payload_bytes(), 16);
    }

    #[test]
    fn straddling_codes_round_trip() {
        // 5-bit codes: code 12 straddles words 0 and 1.
        let codes: Vec<u32> = (0..30).map(|i| (i * 7 + 3) % 32).collect();
        let p = PackedCodes::pack(&codes, 1, 30, 5).unwrap();
        assert_eq!(p.words_per_row(), 3);
        assert_eq!(p.unpack(), codes);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(PackedCodes::pack(&[0], 1, 1, 0).is_err());
        assert!(PackedCodes::pack(&[0], 1, 1, 17).is_err());
        assert!(PackedCodes::pack(&[4], 1, 1, 2).is_err());
        assert!(PackedCodes::pack(&[0, 1], 1, 1, 2).is_err());
        assert!(PackedCodes::pack(&[], 0, 1, 2).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn round_trip(bits in 0u32..18, rows in 0usize..4, cols in 0usize..70, seed in 0u64..1000) {
            let n = rows * cols;
            let limit = if (1..=16).contains(&bits) { 1u64 << bits } else { 4 };
            let codes: Vec<u32> = (0..n as u64).map(|i| ((i * 2654435761 + seed) % limit) as u32).collect();
            let r = PackedCodes::pack(&codes, rows, cols, bits);
            if (1..=16).contains(&bits) && n > 0 {
                let p = r.unwrap();
                prop_assert_eq!(p.unpack(), codes);
                prop_assert_eq!(p.payload_bytes(), 8 * (rows * (cols * bits as usize).div_ceil(64)) as u64);
                prop_assert!(p.get(rows, 0).is_none());
            } else {
                prop_assert!(r.is_err());
            }
        }
    }
}

//! Codebook (scalar k-means) convolution / linear layer: survey eq. (4),
//! Gong et al. [51] — every weight is replaced by the index of its centroid.
//!
//! # Format
//! - `codes`: a [`PackedCodes`] of `rows × row_len` with `⌈log₂ k⌉` bits per
//!   code (at least 1), one row per output filter (see [`WeightLayout`]).
//! - `codebooks`: `[G, k]` f32, `G = 1` (one codebook for the layer) or
//!   `G = rows` (one per output channel).
//! - `bias`: optional f32 per output filter.
//!
//! The weight is `W[t, j] = codebooks[g(t), codes[t, j]]`, `g(t) = 0` or `t`.

use ndarray::{Array1, Array2};

use super::common::check_bias;
use super::weight_layout::{check_groups, WeightLayout};
use crate::bits::PackedCodes;
use crate::error::{ensure_finite, ensure_nonempty, Result};

/// Weights as `⌈log₂ k⌉`-bit indices into per-layer or per-channel codebooks.
#[derive(Debug, Clone, PartialEq)]
pub struct CodebookConv {
    layout: Box<WeightLayout>,
    codes: PackedCodes,
    codebooks: Array2<f32>,
    bias: Option<Array1<f32>>,
}

impl CodebookConv {
    /// Validates `[1 or rows, k]` finite codebooks, `⌈log₂ k⌉`-bit codes below
    /// `k` and the bias.
    pub fn new(
        layout: WeightLayout,
        codes: PackedCodes,
        codebooks: Array2<f32>,
        bias: Option<Array1<f32>>,
    ) -> Result<Self> {
        ensure_nonempty("codebooks", codebooks.shape())?;
        ensure_finite("codebooks", codebooks.iter())?;
        check_groups("codebook count", codebooks.nrows(), layout.rows())?;
        let k = codebooks.ncols();
        codes.check_index_bits("codebook code", k)?;
        codes.check(
            "codebook indices",
            layout.rows(),
            layout.row_len(),
            k as u32,
        )?;
        check_bias(bias.as_ref(), layout.rows())?;
        Ok(CodebookConv {
            layout: Box::new(layout),
            codes,
            codebooks: codebooks.as_standard_layout().into_owned(),
            bias,
        })
    }

    /// The geometry.
    pub fn layout(&self) -> &WeightLayout {
        &self.layout
    }

    /// The packed indices.
    pub fn codes(&self) -> &PackedCodes {
        &self.codes
    }

    /// Codebooks `[G, k]`.
    pub fn codebooks(&self) -> &Array2<f32> {
        &self.codebooks
    }

    /// Codebook size `k`.
    pub fn k(&self) -> usize {
        self.codebooks.ncols()
    }

    /// True when each output channel has its own codebook.
    pub fn per_channel(&self) -> bool {
        self.codebooks.nrows() > 1 || self.layout.rows() == 1
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// The dequantized weight matrix `[rows, row_len]`.
    pub fn dequantized(&self) -> Array2<f32> {
        let g = self.codebooks.nrows();
        Array2::from_shape_fn((self.layout.rows(), self.layout.row_len()), |(t, j)| {
            let code = self.codes.get(t, j).unwrap_or(0) as usize;
            self.codebooks[[if g == 1 { 0 } else { t }, code]]
        })
    }
}

dequantizing_operator!(
    CodebookConv,
    side_f32: |op| op.codebooks.len() as u64,
    payload: "Payload: packed index words + 4 bytes per codebook entry and bias entry.",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits::bits_for;
    use crate::{ActShape, ConvLayer, ConvSpec, Operator, SeededRng};
    use ndarray::Array4;

    #[test]
    fn per_channel_forward_equals_dense() {
        let mut rng = SeededRng::new(3);
        let l = WeightLayout::conv([2, 2, 3, 3], ConvSpec::new().with_stride(2)).unwrap();
        let books = Array2::from_shape_vec((2, 3), vec![-1.0, 0.0, 2.0, 0.5, 0.25, -3.0]).unwrap();
        let idx: Vec<u32> = (0..36).map(|_| rng.below(3) as u32).collect();
        let op = CodebookConv::new(
            l,
            PackedCodes::pack(&idx, 2, 18, 2).unwrap(),
            books.clone(),
            None,
        )
        .unwrap();
        let w = Array4::from_shape_fn((2, 2, 3, 3), |(t, s, i, j)| {
            books[[t, idx[t * 18 + s * 9 + i * 3 + j] as usize]]
        });
        let dense = ConvLayer::from_array(w, ConvSpec::new().with_stride(2)).unwrap();
        let x = rng.normal_array((1, 2, 7, 7), 1.0);
        let (a, b) = (
            op.reference_forward(&x).unwrap(),
            dense.reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-5);
        }
        assert_eq!(
            op.cost(ActShape::new(2, 7, 7)).unwrap().weight_bytes,
            2 * 8 + 6 * 4
        );
    }

    #[test]
    fn rejects_bad_parts() {
        let l = WeightLayout::linear(1, 2).unwrap();
        let books = Array2::from_shape_vec((1, 3), vec![0.0, 1.0, 2.0]).unwrap();
        let out_of_book = PackedCodes::pack(&[3, 0], 1, 2, 2).unwrap();
        assert!(CodebookConv::new(l, out_of_book, books.clone(), None).is_err());
        let wrong_bits = PackedCodes::pack(&[1, 0], 1, 2, 3).unwrap();
        assert!(CodebookConv::new(l, wrong_bits, books.clone(), None).is_err());
        let ok = PackedCodes::pack(&[1, 0], 1, 2, 2).unwrap();
        assert!(CodebookConv::new(l, ok.clone(), Array2::zeros((2, 3)), None).is_err());
        let nan = Array2::from_elem((1, 3), f32::NAN);
        assert!(CodebookConv::new(l, ok, nan, None).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn constructor_never_panics(
            rows in 1usize..4, cols in 1usize..20, k in 0usize..9, groups in 0usize..5,
            code in 0u32..9, bits in 1u32..5,
        ) {
            let layout = WeightLayout::linear(rows, cols).unwrap();
            let codes = PackedCodes::pack(&vec![code; rows * cols], rows, cols, bits);
            let valid = k >= 1 && (groups == 1 || groups == rows) && bits == bits_for(k)
                && (code as usize) < k && code < (1 << bits);
            let r = codes.and_then(|c| CodebookConv::new(layout, c, Array2::zeros((groups, k)), None));
            proptest::prop_assert_eq!(r.is_ok(), valid);
        }
    }
}

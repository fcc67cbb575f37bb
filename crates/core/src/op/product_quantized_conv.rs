//! Product-quantized convolution / linear layer: Jégou et al. [52] as applied
//! to network weights by Gong et al. [51] (survey section 5, "product
//! quantization").
//!
//! The weight matrix `W [rows, row_len]` (see [`WeightLayout`]) is split by
//! columns into `s` sub-matrices `[W_1 … W_s]` of `d = row_len / s` columns;
//! the `rows` rows of each `W_i` are clustered into `k` centroids.
//!
//! # Format
//! - `codes`: a [`PackedCodes`] of `s × rows`, `⌈log₂ k⌉` bits per code; row
//!   `i` holds the centroid index of every filter in sub-block `i`.
//! - `codebooks`: `[s, k, d]` f32; `codebooks[i, c, ·]` is centroid `c` of
//!   sub-block `i`.
//! - `bias`: optional f32 per output filter.
//!
//! The weight is `W[t, i·d + e] = codebooks[i, codes[i, t], e]`.

use ndarray::{Array1, Array2, Array3};

use super::common::check_bias;
use super::weight_layout::WeightLayout;
use crate::bits::PackedCodes;
use crate::error::{ensure_finite, ensure_nonempty, Error, Result};

/// Product-quantized weights: per sub-block codes into `k × d` codebooks.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductQuantizedConv {
    layout: Box<WeightLayout>,
    codes: PackedCodes,
    codebooks: Array3<f32>,
    bias: Option<Array1<f32>>,
}

impl ProductQuantizedConv {
    /// Validates `[s, k, d]` finite codebooks with `s · d = row_len`, `s × rows`
    /// codes of `⌈log₂ k⌉` bits below `k`, and the bias.
    pub fn new(
        layout: WeightLayout,
        codes: PackedCodes,
        codebooks: Array3<f32>,
        bias: Option<Array1<f32>>,
    ) -> Result<Self> {
        ensure_nonempty("product codebooks", codebooks.shape())?;
        ensure_finite("product codebooks", codebooks.iter())?;
        let (s, k, d) = codebooks.dim();
        if s * d != layout.row_len() {
            return Err(Error::shape(
                "product codebooks (sub-blocks × sub-dimension)",
                format!("s · d = {}", layout.row_len()),
                format!("{s} · {d} = {}", s * d),
            ));
        }
        codes.check_index_bits("product code", k)?;
        codes.check("product codes", s, layout.rows(), k as u32)?;
        check_bias(bias.as_ref(), layout.rows())?;
        Ok(ProductQuantizedConv {
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

    /// Codes `[s, rows]`.
    pub fn codes(&self) -> &PackedCodes {
        &self.codes
    }

    /// Codebooks `[s, k, d]`.
    pub fn codebooks(&self) -> &Array3<f32> {
        &self.codebooks
    }

    /// Number of sub-blocks `s`.
    pub fn subblocks(&self) -> usize {
        self.codebooks.dim().0
    }

    /// Centroids per sub-block `k`.
    pub fn k(&self) -> usize {
        self.codebooks.dim().1
    }

    /// Sub-block width `d`.
    pub fn subdim(&self) -> usize {
        self.codebooks.dim().2
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// The dequantized weight matrix `[rows, row_len]`.
    pub fn dequantized(&self) -> Array2<f32> {
        let d = self.subdim();
        Array2::from_shape_fn((self.layout.rows(), self.layout.row_len()), |(t, j)| {
            let (i, e) = (j / d, j % d);
            let c = self.codes.get(i, t).unwrap_or(0) as usize;
            self.codebooks[[i, c, e]]
        })
    }
}

dequantizing_operator!(
    ProductQuantizedConv,
    side_f32: |op| op.codebooks.len() as u64,
    payload: "Payload: packed code words + 4 bytes per codebook entry and bias entry.",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits::bits_for;
    use crate::{ActShape, LinearLayer, Operator, SeededRng};

    #[test]
    fn forward_equals_dense() {
        let mut rng = SeededRng::new(5);
        let l = WeightLayout::linear(5, 6).unwrap();
        let books: Array3<f32> = rng.normal_array((3, 4, 2), 1.0);
        let codes: Vec<u32> = (0..15).map(|_| rng.below(4) as u32).collect();
        let op = ProductQuantizedConv::new(
            l,
            PackedCodes::pack(&codes, 3, 5, 2).unwrap(),
            books.clone(),
            None,
        )
        .unwrap();
        let w = Array2::from_shape_fn((5, 6), |(t, j)| {
            books[[j / 2, codes[(j / 2) * 5 + t] as usize, j % 2]]
        });
        let dense = LinearLayer::new(w, None).unwrap();
        let x = rng.normal_array((2, 6, 1, 1), 1.0);
        let (a, b) = (
            op.reference_forward(&x).unwrap(),
            dense.reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-5);
        }
        assert_eq!(
            op.cost(ActShape::flat(6)).unwrap().weight_bytes,
            3 * 8 + 24 * 4
        );
        let bad: Array3<f32> = Array3::zeros((4, 4, 2));
        assert!(ProductQuantizedConv::new(
            l,
            PackedCodes::pack(&codes, 3, 5, 2).unwrap(),
            bad,
            None
        )
        .is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn constructor_never_panics(
            rows in 1usize..5, cols in 1usize..9, s in 0usize..5, k in 0usize..5, d in 0usize..5,
            code_rows in 1usize..5, bits in 1u32..4,
        ) {
            let layout = WeightLayout::linear(rows, cols).unwrap();
            let codes = PackedCodes::pack(&vec![0; code_rows * rows], code_rows, rows, bits);
            let valid = s * d == cols && s >= 1 && k >= 1 && d >= 1 && code_rows == s && bits == bits_for(k);
            let r = codes.and_then(|c| ProductQuantizedConv::new(layout, c, Array3::zeros((s, k, d)), None));
            proptest::prop_assert_eq!(r.is_ok(), valid);
        }
    }
}

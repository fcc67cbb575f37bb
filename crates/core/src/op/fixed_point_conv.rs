//! Fixed-point (linear k-bit) convolution / linear layer: the uniform
//! quantizers of Vanhoucke et al. [49] and Anwar et al. [53] (survey section 5,
//! the `q` of eq. (5)), and DoReFa-Net k-bit weights (Zhou et al. [61]).
//!
//! # Format
//! - `codes`: a [`PackedCodes`] of `rows × row_len` unsigned `bits`-bit codes
//!   (`bits ∈ 1..=16`), one row per output filter (see [`WeightLayout`]).
//! - `scales`, `offsets`: `G` f32 each, `G = 1` (per tensor) or `rows` (per
//!   output channel).
//! - `bias`: optional f32 per output filter.
//!
//! The weight is the affine map `W[t, j] = scales[g] · codes[t, j] + offsets[g]`.
//! A symmetric signed quantizer with integer `q ∈ [−2^(b−1), 2^(b−1)−1]`
//! stores `code = q + 2^(b−1)` and `offset = −scale · 2^(b−1)`; an affine
//! (asymmetric) quantizer with zero point `z` stores `offset = −scale · z`.

use ndarray::{Array1, Array2};

use super::common::check_bias;
use super::weight_layout::{check_groups, WeightLayout};
use crate::bits::PackedCodes;
use crate::error::{ensure_finite, Error, Result};

/// Uniformly quantized weights: `bits`-bit codes with affine dequantization.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedPointConv {
    layout: Box<WeightLayout>,
    codes: PackedCodes,
    scales: Array1<f32>,
    offsets: Array1<f32>,
    bias: Option<Array1<f32>>,
}

impl FixedPointConv {
    /// Validates `rows × row_len` codes, equal-length finite `scales` and
    /// `offsets` of length 1 or `rows`, and the bias.
    pub fn new(
        layout: WeightLayout,
        codes: PackedCodes,
        scales: Array1<f32>,
        offsets: Array1<f32>,
        bias: Option<Array1<f32>>,
    ) -> Result<Self> {
        codes.check(
            "fixed-point codes",
            layout.rows(),
            layout.row_len(),
            1 << codes.bits(),
        )?;
        check_groups("fixed-point scales", scales.len(), layout.rows())?;
        if offsets.len() != scales.len() {
            return Err(Error::shape(
                "fixed-point offsets length",
                scales.len(),
                offsets.len(),
            ));
        }
        ensure_finite("fixed-point scales", scales.iter())?;
        ensure_finite("fixed-point offsets", offsets.iter())?;
        check_bias(bias.as_ref(), layout.rows())?;
        Ok(FixedPointConv {
            layout: Box::new(layout),
            codes,
            scales,
            offsets,
            bias,
        })
    }

    /// The geometry.
    pub fn layout(&self) -> &WeightLayout {
        &self.layout
    }

    /// The packed codes.
    pub fn codes(&self) -> &PackedCodes {
        &self.codes
    }

    /// Bits per weight code.
    pub fn bits(&self) -> u32 {
        self.codes.bits()
    }

    /// Scales (length 1 or rows).
    pub fn scales(&self) -> &Array1<f32> {
        &self.scales
    }

    /// Offsets (length 1 or rows).
    pub fn offsets(&self) -> &Array1<f32> {
        &self.offsets
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// The dequantized weight matrix `[rows, row_len]`.
    pub fn dequantized(&self) -> Array2<f32> {
        let per = self.scales.len() > 1;
        Array2::from_shape_fn((self.layout.rows(), self.layout.row_len()), |(t, j)| {
            let g = if per { t } else { 0 };
            self.scales[g] * self.codes.get(t, j).unwrap_or(0) as f32 + self.offsets[g]
        })
    }
}

dequantizing_operator!(
    FixedPointConv,
    side_f32: |op| 2 * op.scales.len() as u64,
    payload: "Payload: packed code words + 4 bytes per scale, offset and bias entry.",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActShape, LinearLayer, Operator, SeededRng};

    #[test]
    fn forward_equals_dense_affine() {
        let mut rng = SeededRng::new(4);
        let l = WeightLayout::linear(2, 9).unwrap();
        let codes: Vec<u32> = (0..18).map(|_| rng.below(8) as u32).collect();
        let (s, o) = (Array1::from(vec![0.1, 0.3]), Array1::from(vec![-0.35, 0.2]));
        let op = FixedPointConv::new(
            l,
            PackedCodes::pack(&codes, 2, 9, 3).unwrap(),
            s.clone(),
            o.clone(),
            Some(Array1::from(vec![1.0, -1.0])),
        )
        .unwrap();
        let w = Array2::from_shape_fn((2, 9), |(t, j)| s[t] * codes[t * 9 + j] as f32 + o[t]);
        let dense = LinearLayer::new(w, Some(Array1::from(vec![1.0, -1.0]))).unwrap();
        let x = rng.normal_array((3, 1, 3, 3), 1.0);
        let (a, b) = (
            op.reference_forward(&x).unwrap(),
            dense.reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-5);
        }
        assert_eq!(
            op.cost(ActShape::flat(9)).unwrap().weight_bytes,
            2 * 8 + 4 * 6
        );
        assert!(FixedPointConv::new(
            l,
            PackedCodes::pack(&codes, 2, 9, 3).unwrap(),
            s,
            Array1::zeros(1),
            None
        )
        .is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn constructor_never_panics(
            rows in 1usize..4, cols in 1usize..20, bits in 0u32..18, s_len in 0usize..5,
            o_len in 0usize..5, inf in proptest::bool::ANY,
        ) {
            let layout = WeightLayout::linear(rows, cols).unwrap();
            let codes = PackedCodes::pack(&vec![0; rows * cols], rows, cols, bits);
            let mut s = Array1::<f32>::ones(s_len);
            if inf && s_len > 0 { s[0] = f32::INFINITY; }
            let valid = (1..=16).contains(&bits) && (s_len == 1 || s_len == rows) && o_len == s_len && !inf;
            let r = codes.and_then(|c| FixedPointConv::new(layout, c, s, Array1::zeros(o_len), None));
            proptest::prop_assert_eq!(r.is_ok(), valid);
        }
    }
}

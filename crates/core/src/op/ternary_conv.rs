//! 2-bit packed ternary convolution / linear layer: the ternary weights of
//! Lin et al. [55] (survey section 5, the stochastic variant of eq. (6)) and
//! of ternary weight networks (threshold `Δ`, scale `α`).
//!
//! # Format
//! - `codes`: a 2-bit [`PackedCodes`] of `rows × row_len` (one row per output
//!   filter, see [`WeightLayout`]): `0b00 = 0`, `0b01 = +1`, `0b10 = −1`
//!   (`0b11` is invalid and rejected).
//! - `scales`: one f32 per output filter.
//! - `bias`: optional f32 per output filter.
//!
//! The weight is `W[t, j] = scales[t] · ternary(codes[t, j])`.

use ndarray::{Array1, Array2};

use super::common::check_bias;
use super::weight_layout::{check_per_filter, WeightLayout};
use crate::bits::PackedCodes;
use crate::error::{Error, Result};

/// Code of a ternary `0`.
pub const TERNARY_ZERO: u32 = 0b00;
/// Code of a ternary `+1`.
pub const TERNARY_PLUS: u32 = 0b01;
/// Code of a ternary `−1`.
pub const TERNARY_MINUS: u32 = 0b10;

/// The value `{−1, 0, +1}` of a 2-bit ternary code (`0b11` reads as 0; the
/// constructor rejects it).
pub fn ternary_value(code: u32) -> f32 {
    match code {
        TERNARY_PLUS => 1.0,
        TERNARY_MINUS => -1.0,
        _ => 0.0,
    }
}

/// Ternary weights, 2 bits each, with a per-filter scale.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryConv {
    layout: Box<WeightLayout>,
    codes: PackedCodes,
    scales: Array1<f32>,
    bias: Option<Array1<f32>>,
}

impl TernaryConv {
    /// Validates 2-bit codes in `{0b00, 0b01, 0b10}`, one finite scale per filter, the bias.
    pub fn new(
        layout: WeightLayout,
        codes: PackedCodes,
        scales: Array1<f32>,
        bias: Option<Array1<f32>>,
    ) -> Result<Self> {
        if codes.bits() != 2 {
            return Err(Error::param("ternary code bits", codes.bits(), "2"));
        }
        codes.check("ternary codes", layout.rows(), layout.row_len(), 3)?;
        check_per_filter("ternary scales", &scales, layout.rows())?;
        check_bias(bias.as_ref(), layout.rows())?;
        Ok(TernaryConv {
            layout: Box::new(layout),
            codes,
            scales,
            bias,
        })
    }

    /// The geometry.
    pub fn layout(&self) -> &WeightLayout {
        &self.layout
    }

    /// The packed 2-bit codes.
    pub fn codes(&self) -> &PackedCodes {
        &self.codes
    }

    /// Per-filter scales.
    pub fn scales(&self) -> &Array1<f32> {
        &self.scales
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// The dequantized weight matrix `[rows, row_len]`.
    pub fn dequantized(&self) -> Array2<f32> {
        Array2::from_shape_fn((self.layout.rows(), self.layout.row_len()), |(t, j)| {
            self.scales[t] * ternary_value(self.codes.get(t, j).unwrap_or(0))
        })
    }
}

dequantizing_operator!(
    TernaryConv,
    side_f32: |op| op.scales.len() as u64,
    payload: "Payload: packed 2-bit words + 4 bytes per scale and bias entry.",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActShape, ConvSpec, LinearLayer, Operator, SeededRng};

    #[test]
    fn linear_forward_equals_dense() {
        let mut rng = SeededRng::new(2);
        let l = WeightLayout::linear(3, 70).unwrap();
        let vals: Vec<i32> = (0..210).map(|_| rng.below(3) as i32 - 1).collect();
        let codes: Vec<u32> = vals
            .iter()
            .map(|&v| match v {
                1 => TERNARY_PLUS,
                -1 => TERNARY_MINUS,
                _ => TERNARY_ZERO,
            })
            .collect();
        let scales = Array1::from(vec![0.5, 1.0, 3.0]);
        let op = TernaryConv::new(
            l,
            PackedCodes::pack(&codes, 3, 70, 2).unwrap(),
            scales.clone(),
            None,
        )
        .unwrap();
        let w = Array2::from_shape_fn((3, 70), |(t, j)| scales[t] * vals[t * 70 + j] as f32);
        let dense = LinearLayer::new(w, None).unwrap();
        let x = rng.normal_array((2, 70, 1, 1), 1.0);
        let (a, b) = (
            op.reference_forward(&x).unwrap(),
            dense.reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
        // 3 rows × ⌈140/64⌉ = 3 words each, + 3 scales.
        assert_eq!(
            op.cost(ActShape::flat(70)).unwrap().weight_bytes,
            3 * 3 * 8 + 12
        );
    }

    #[test]
    fn rejects_code_three() {
        let l = WeightLayout::conv([1, 1, 1, 2], ConvSpec::new()).unwrap();
        let bad = PackedCodes::pack(&[3, 0], 1, 2, 2).unwrap();
        assert!(TernaryConv::new(l, bad, Array1::ones(1), None).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn constructor_never_panics(
            rows in 1usize..4, cols in 1usize..20, code in 0u32..4, bits in 1u32..4,
            scales_len in 0usize..5, bias_len in proptest::option::of(0usize..5),
        ) {
            let layout = WeightLayout::linear(rows, cols).unwrap();
            let codes = PackedCodes::pack(&vec![code; rows * cols], rows, cols, bits);
            let bias = bias_len.map(Array1::<f32>::zeros);
            let valid = bits == 2 && code < 3 && scales_len == rows && bias_len.is_none_or(|b| b == rows);
            let r = codes.and_then(|c| TernaryConv::new(layout, c, Array1::ones(scales_len), bias));
            proptest::prop_assert_eq!(r.is_ok(), valid);
        }
    }
}

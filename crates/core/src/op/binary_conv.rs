//! Bit-packed binary convolution / linear layer: binarization (survey eq. (3)),
//! BinaryConnect (eq. (6)–(7)) and XNOR-Net (eq. (8)–(9), Rastegari et al. [59]).
//!
//! # Format
//! - `signs`: a 1-bit [`PackedCodes`] of `rows × row_len` (one row per output
//!   filter, see [`WeightLayout`]); bit 1 means `+1`, bit 0 means `−1`.
//! - `alpha`: one f32 scale per output filter (eq. (8); all ones for plain
//!   eq. (3) binarization).
//! - `bias`: optional f32 per output filter.
//!
//! The weight is `W[t, ·] = α_t · (2·bit − 1)`.
//!
//! # XNOR mode (eq. (9))
//! With `binarize_input`, the op also binarizes its input:
//! `V = (sign(I) ∗ B) ⊙ K · α_t + b_t`, where `sign(x) = +1` for `x ≥ 0` and
//! `−1` otherwise (zero padding stays zero), and the scaling map `K` is the
//! mean of `|I|` over the channels of the filter's group, convolved with a
//! `kh × kw` box filter of weight `1 / (kh·kw)` using the layer's stride,
//! padding and dilation — i.e. `K = A ∗ k` of the paper. For a linear layout
//! `K` is the mean of `|x|` over the flattened sample.
//!
//! In an XNOR-Net the block order is BN → binary activation (computes `K` and
//! `sign(I)`) → binary convolution → optional pooling; this op fuses the
//! binary activation and the binary convolution.
//!
//! # Sign mode (binarized networks without `K`)
//! [`BinaryInput::Sign`] binarizes the input without XNOR-Net's scaling map,
//! as the binarized networks of Courbariaux, Hubara et al. that the survey
//! cites alongside XNOR-Net: `V = (sign(I) ∗ B) · α_t + b_t`, with the same
//! `sign` and zero padding. The output of such a layer depends on its input
//! only through the input's signs, so consecutive layers of this kind can
//! pass each other packed sign bits (the fast kernels do).

use ndarray::{Array1, Array2, Array4};

use super::common::check_bias;
use super::weight_layout::{bias_len, check_per_filter, WeightLayout};
use super::{input_shape_of, Operator};
use crate::bits::PackedCodes;
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;

/// What a [`BinaryConv`] does with its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BinaryInput {
    /// Real-valued input, binary weights only (BinaryConnect, eq. (6)–(7)):
    /// `V = (α·B) ∗ I + b`.
    #[default]
    Real,
    /// XNOR-Net (eq. (9)): `V = (sign(I) ∗ B) ⊙ K · α + b`.
    XnorK,
    /// Binarized input without a scaling map (BNN):
    /// `V = (sign(I) ∗ B) · α + b`.
    Sign,
}

/// Binary weights (1 bit each) with per-filter scales; optionally binarized
/// inputs ([`BinaryInput`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryConv {
    layout: Box<WeightLayout>,
    signs: PackedCodes,
    alpha: Array1<f32>,
    bias: Option<Array1<f32>>,
    input: BinaryInput,
}

impl BinaryConv {
    /// Validates a 1-bit `rows × row_len` sign matrix, one finite `alpha` per
    /// filter and the bias; `binarize_input` selects [`BinaryInput::XnorK`]
    /// (else [`BinaryInput::Real`]; see [`Self::with_input`] for the others).
    pub fn new(
        layout: WeightLayout,
        signs: PackedCodes,
        alpha: Array1<f32>,
        bias: Option<Array1<f32>>,
        binarize_input: bool,
    ) -> Result<Self> {
        if signs.bits() != 1 {
            return Err(Error::param("binary sign bits", signs.bits(), "1"));
        }
        signs.check("binary signs", layout.rows(), layout.row_len(), 2)?;
        check_per_filter("binary alpha", &alpha, layout.rows())?;
        check_bias(bias.as_ref(), layout.rows())?;
        Ok(BinaryConv {
            layout: Box::new(layout),
            signs,
            alpha,
            bias,
            input: if binarize_input {
                BinaryInput::XnorK
            } else {
                BinaryInput::Real
            },
        })
    }

    /// The same op with its input treated as `input`.
    pub fn with_input(self, input: BinaryInput) -> Self {
        BinaryConv { input, ..self }
    }

    /// What the op does with its input.
    pub fn input(&self) -> BinaryInput {
        self.input
    }

    /// The geometry.
    pub fn layout(&self) -> &WeightLayout {
        &self.layout
    }

    /// The packed signs (bit 1 = +1).
    pub fn signs(&self) -> &PackedCodes {
        &self.signs
    }

    /// Per-filter scales α.
    pub fn alpha(&self) -> &Array1<f32> {
        &self.alpha
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// Whether inputs are binarized too (XNOR-Net, eq. (9), or sign mode).
    pub fn binarize_input(&self) -> bool {
        self.input != BinaryInput::Real
    }

    /// The `±1` sign matrix `B [rows, row_len]`.
    pub fn sign_matrix(&self) -> Array2<f32> {
        let (r, c) = (self.layout.rows(), self.layout.row_len());
        Array2::from_shape_fn((r, c), |(t, j)| {
            if self.signs.get(t, j) == Some(1) {
                1.0
            } else {
                -1.0
            }
        })
    }

    /// The dequantized weight matrix `α_t · B[t, ·]`.
    pub fn dequantized(&self) -> Array2<f32> {
        let mut b = self.sign_matrix();
        for (mut row, &a) in b.rows_mut().into_iter().zip(self.alpha.iter()) {
            row *= a;
        }
        b
    }

    /// The XNOR scaling map `K`, shaped `[N, groups, out_h, out_w]` (one map
    /// per convolution group; `[N, 1, 1, 1]` for a linear layout).
    pub fn scaling_map(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let shape = input_shape_of(input)?;
        self.layout.output_shape(shape)?;
        let (box_layout, rows) = match *self.layout {
            WeightLayout::Conv { dims, spec } => (
                WeightLayout::conv([spec.groups, dims[1], dims[2], dims[3]], spec)?,
                spec.groups,
            ),
            WeightLayout::Linear { inp, .. } => (WeightLayout::linear(1, inp)?, 1),
        };
        let w = 1.0 / box_layout.row_len() as f32;
        box_layout.dense_forward(
            Array2::from_elem((rows, box_layout.row_len()), w),
            None,
            &input.mapv(f32::abs),
        )
    }
}

/// `sign(x)` with `sign(0) = +1`, the binary activation of XNOR-Net.
pub fn binary_sign(x: f32) -> f32 {
    if x >= 0.0 {
        1.0
    } else {
        -1.0
    }
}

impl Operator for BinaryConv {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        self.layout.output_shape(input)
    }

    /// Payload: packed sign words + 4 bytes per α + 4 bytes per bias entry.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let side = self.alpha.len() as u64 + bias_len(self.bias.as_ref());
        self.layout.packed_cost(input, &self.signs, side)
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        if self.input == BinaryInput::Real {
            return self
                .layout
                .dense_forward(self.dequantized(), self.bias.clone(), input);
        }
        let mut y =
            self.layout
                .dense_forward(self.sign_matrix(), None, &input.mapv(binary_sign))?;
        let bias = |t: usize| self.bias.as_ref().map_or(0.0, |b| b[t]);
        if self.input == BinaryInput::Sign {
            for ((_, t, _, _), v) in y.indexed_iter_mut() {
                *v = *v * self.alpha[t] + bias(t);
            }
            return Ok(y);
        }
        let k = self.scaling_map(input)?;
        let per_group = self.layout.rows() / k.shape()[1];
        for ((n, t, yy, xx), v) in y.indexed_iter_mut() {
            *v = *v * k[[n, t / per_group, yy, xx]] * self.alpha[t] + bias(t);
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConvLayer, ConvSpec, Operator, SeededRng};

    fn layout() -> WeightLayout {
        WeightLayout::conv([4, 3, 3, 3], ConvSpec::new().with_padding(1)).unwrap()
    }

    #[test]
    fn forward_equals_dense_alpha_sign_conv() {
        let mut rng = SeededRng::new(1);
        let l = layout();
        let bits: Vec<u32> = (0..l.weight_count()).map(|_| rng.below(2) as u32).collect();
        let alpha = Array1::from(vec![0.5, 1.5, 2.0, 0.25]);
        let op = BinaryConv::new(
            l,
            PackedCodes::pack(&bits, 4, 27, 1).unwrap(),
            alpha.clone(),
            Some(Array1::from(vec![0.1, 0.2, 0.3, 0.4])),
            false,
        )
        .unwrap();
        // Independent dense kernel built from the unpacked-free bit list.
        let w = Array4::from_shape_fn((4, 3, 3, 3), |(t, s, i, j)| {
            let b = bits[t * 27 + s * 9 + i * 3 + j];
            alpha[t] * if b == 1 { 1.0 } else { -1.0 }
        });
        let dense = ConvLayer::new(
            crate::Conv4d::new(w).unwrap(),
            Some(Array1::from(vec![0.1, 0.2, 0.3, 0.4])),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let x = rng.normal_array((2, 3, 5, 5), 1.0);
        let (a, b) = (
            op.reference_forward(&x).unwrap(),
            dense.reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
        let cost = op.cost(ActShape::new(3, 5, 5)).unwrap();
        // 4 rows × 1 word + 4 alphas + 4 biases.
        assert_eq!(cost.weight_bytes, 4 * 8 + 16 + 16);
    }

    #[test]
    fn xnor_mode_matches_hand_formula_on_1x1() {
        // 1×1 conv, 2 input channels: K = mean(|x0|, |x1|) per pixel.
        let l = WeightLayout::conv([1, 2, 1, 1], ConvSpec::new()).unwrap();
        let op = BinaryConv::new(
            l,
            PackedCodes::pack(&[1, 0], 1, 2, 1).unwrap(),
            Array1::from(vec![2.0]),
            None,
            true,
        )
        .unwrap();
        let x = Array4::from_shape_vec((1, 2, 1, 2), vec![3.0, -1.0, -1.0, -4.0]).unwrap();
        // pixel 0: sign = (+1, −1) · (+1, −1) = 2, K = 2 → 2·2·2 = 8.
        // pixel 1: sign = (−1, −1) · (+1, −1) = 0 → 0.
        let y = op.reference_forward(&x).unwrap();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![8.0, 0.0]);
    }

    #[test]
    fn xnor_linear_uses_mean_abs_of_the_sample() {
        // Linear 1×3: K = mean |x|; out = (sign(x)·B) · K · α.
        let l = WeightLayout::linear(1, 3).unwrap();
        let op = BinaryConv::new(
            l,
            PackedCodes::pack(&[1, 1, 0], 1, 3, 1).unwrap(),
            Array1::from(vec![0.5]),
            Some(Array1::from(vec![1.0])),
            true,
        )
        .unwrap();
        let x = Array4::from_shape_vec((1, 3, 1, 1), vec![2.0, -1.0, -3.0]).unwrap();
        // signs (+1, −1, −1)·(+1, +1, −1) = 1; K = 2; 1·2·0.5 + 1 = 2.
        assert_eq!(op.reference_forward(&x).unwrap()[[0, 0, 0, 0]], 2.0);
        assert_eq!(op.kind(), "xnor_conv");
    }

    #[test]
    fn sign_mode_has_no_scaling_map() {
        // As xnor_mode_matches_hand_formula_on_1x1, without K: 2·2 = 4, 0.
        let l = WeightLayout::conv([1, 2, 1, 1], ConvSpec::new()).unwrap();
        let op = BinaryConv::new(
            l,
            PackedCodes::pack(&[1, 0], 1, 2, 1).unwrap(),
            Array1::from(vec![2.0]),
            Some(Array1::from(vec![0.5])),
            false,
        )
        .unwrap()
        .with_input(BinaryInput::Sign);
        assert!(op.binarize_input());
        assert_eq!(op.kind(), "bnn_conv");
        let x = Array4::from_shape_vec((1, 2, 1, 3), vec![3.0, -1.0, f32::NAN, -1.0, -4.0, 0.0])
            .unwrap();
        // pixel 2: sign(NaN) = −1, sign(0) = +1: (−1, +1)·(+1, −1) = −2.
        let y = op.reference_forward(&x).unwrap();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![4.5, 0.5, -3.5]);
    }

    #[test]
    fn rejects_bad_parts() {
        let l = layout();
        let ok = PackedCodes::pack(&vec![0; 108], 4, 27, 1).unwrap();
        assert!(BinaryConv::new(l, ok.clone(), Array1::ones(3), None, false).is_err());
        assert!(
            BinaryConv::new(l, ok.clone(), Array1::from(vec![f32::NAN; 4]), None, false).is_err()
        );
        let two = PackedCodes::pack(&vec![0; 108], 4, 27, 2).unwrap();
        assert!(BinaryConv::new(l, two, Array1::ones(4), None, false).is_err());
        let wrong = PackedCodes::pack(&[0; 27], 1, 27, 1).unwrap();
        assert!(BinaryConv::new(l, wrong, Array1::ones(4), None, false).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn constructor_and_forward_never_panic(
            rows in 1usize..4, cols in 1usize..20, code_rows in 0usize..4, bits in 0u32..3,
            alpha_len in 0usize..5, nan in proptest::bool::ANY, bias_len in proptest::option::of(0usize..5),
            xnor in proptest::bool::ANY, in_c in 1usize..25,
        ) {
            let layout = WeightLayout::linear(rows, cols).unwrap();
            let codes = PackedCodes::pack(&vec![1; code_rows * cols], code_rows, cols, bits);
            let mut alpha = Array1::<f32>::ones(alpha_len);
            if nan && alpha_len > 0 { alpha[0] = f32::NAN; }
            let bias = bias_len.map(Array1::<f32>::zeros);
            let valid = code_rows == rows && bits == 1 && alpha_len == rows && !nan
                && bias_len.is_none_or(|b| b == rows);
            let r = codes.and_then(|c| BinaryConv::new(layout, c, alpha, bias, xnor));
            proptest::prop_assert_eq!(r.is_ok(), valid);
            if let Ok(op) = r {
                let x = Array4::<f32>::ones((1, in_c, 1, 1));
                proptest::prop_assert_eq!(op.reference_forward(&x).is_ok(), in_c == cols);
            }
        }
    }
}

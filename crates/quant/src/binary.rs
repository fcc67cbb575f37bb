//! Binarization: the thresholding of survey eq. (3), BinaryConnect's
//! stochastic binarization (Courbariaux et al. \[54\], eq. (6)–(7)) and
//! XNOR-Net (Rastegari et al. \[59\], eq. (8)–(9)).
//!
//! All produce a [`BinaryConv`]: one bit per weight, packed per filter, with
//! a per-filter scale `α`.
//!
//! - [`Binarize::sign`]: eq. (3), `α = 1` (weights become exactly `±1`).
//! - [`Binarize::binary_weights`]: eq. (8), `B = sign(W)` and the closed-form
//!   optimum `α = ‖W_t‖₁ / n` per filter ([`xnor_alpha`]).
//! - [`Binarize::xnor_net`]: eq. (9), additionally binarizes the inputs with
//!   the scaling map `K`. The XNOR-Net block order is BN → binary activation
//!   (computes `K` and `sign(I)`) → binary convolution → pooling; the op
//!   fuses the middle two, so BN and pooling stay as separate ops around it.
//! - [`Binarize::bnn`]: binary weights with `α` and binarized inputs without
//!   `K` ([`BinaryInput::Sign`], the binarized networks of Courbariaux,
//!   Hubara et al.): consecutive such layers run on packed sign bits.
//! - [`StochasticBinarize`]: eq. (6) with the hard sigmoid of eq. (7) on
//!   `W / scale` (clipped to `[−1, 1]` as in BinaryConnect), `α = scale`, so
//!   `E[α·b] = W` inside the clip range.

use hasten_core::ndarray::Array1;
use hasten_core::{
    ActShape, BinaryConv, BinaryInput, Compressed, Error, Layer, PackedCodes, Result, SeededRng,
    Transform,
};

use crate::ste::hard_sigmoid;
use crate::weights::{LayerWeights, QuantizeLayer};

/// The optimal scale of eq. (8) for one filter: `α* = ‖w‖₁ / n` (the mean of
/// `|w|`), minimizing `‖w − α·sign(w)‖²`.
pub fn xnor_alpha(filter: &[f32]) -> f32 {
    if filter.is_empty() {
        return 0.0;
    }
    (filter.iter().map(|&v| f64::from(v.abs())).sum::<f64>() / filter.len() as f64) as f32
}

/// The bit of eq. (3): 1 (`+1`) for `w ≥ 0`, 0 (`−1`) otherwise.
pub fn sign_bit(w: f32) -> u32 {
    u32::from(w >= 0.0)
}

/// How a [`Binarize`] scales each filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryScale {
    /// `α = 1`: plain eq. (3).
    Unit,
    /// `α = mean |W_t|` per filter: eq. (8).
    MeanAbs,
}

/// Deterministic binarization (eq. (3), (8), (9)).
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::NonFinite`] for a NaN or infinite
/// weight and with the input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_quant::Binarize;
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let c = Binarize::xnor_net().apply(&layer, input)?;
/// assert_eq!(c.block.ops()[0].kind(), "xnor_conv");
/// assert!(c.report.compression_ratio() > 8.0);
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binarize {
    scale: BinaryScale,
    input: BinaryInput,
}

impl Binarize {
    /// Eq. (3): weights replaced by their signs, `α = 1`.
    pub fn sign() -> Self {
        Binarize {
            scale: BinaryScale::Unit,
            input: BinaryInput::Real,
        }
    }

    /// XNOR-Net binary-weight network, eq. (8): `α_t = mean |W_t|`.
    pub fn binary_weights() -> Self {
        Binarize {
            scale: BinaryScale::MeanAbs,
            input: BinaryInput::Real,
        }
    }

    /// XNOR-Net, eq. (9): binary weights with `α` and binary inputs with `K`.
    pub fn xnor_net() -> Self {
        Binarize {
            scale: BinaryScale::MeanAbs,
            input: BinaryInput::XnorK,
        }
    }

    /// Binary weights with `α` and binarized inputs without `K`
    /// ([`BinaryInput::Sign`]).
    pub fn bnn() -> Self {
        Binarize {
            scale: BinaryScale::MeanAbs,
            input: BinaryInput::Sign,
        }
    }

    /// The scaling rule.
    pub fn scale(&self) -> BinaryScale {
        self.scale
    }

    /// Whether inputs are binarized (with or without `K`).
    pub fn xnor_inputs(&self) -> bool {
        self.input != BinaryInput::Real
    }

    /// What the produced ops do with their inputs.
    pub fn input(&self) -> BinaryInput {
        self.input
    }

    /// Packs the signs of `matrix` and computes `α`; the op for `layer`.
    ///
    /// # Errors
    /// As listed on [`Binarize`].
    pub fn quantize(&self, weights: &LayerWeights) -> Result<BinaryConv> {
        let m = &weights.matrix();
        let bits: Vec<u32> = m.iter().map(|&w| sign_bit(w)).collect();
        let alpha: Array1<f32> = m
            .rows()
            .into_iter()
            .map(|r| match self.scale {
                BinaryScale::Unit => 1.0,
                BinaryScale::MeanAbs => xnor_alpha(&r.to_vec()),
            })
            .collect();
        BinaryConv::new(
            *weights.layout(),
            PackedCodes::pack(&bits, m.nrows(), m.ncols(), 1)?,
            alpha,
            weights.bias().cloned(),
            false,
        )
        .map(|op| op.with_input(self.input))
    }
}

impl Transform for Binarize {
    fn name(&self) -> &str {
        match (self.scale, self.input) {
            (BinaryScale::Unit, _) => "binarize (eq. 3)",
            (BinaryScale::MeanAbs, BinaryInput::Real) => "binary weights α·sign(W) (eq. 8)",
            (BinaryScale::MeanAbs, BinaryInput::XnorK) => "XNOR-Net (eq. 9)",
            (BinaryScale::MeanAbs, BinaryInput::Sign) => "binary weights and sign inputs (BNN)",
        }
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        self.quantize_layer(Self::quantize, BinaryConv::dequantized, layer, input)
    }
}

/// Draws `+1` with probability `hard_sigmoid(w)` (eq. (6)–(7)), `−1` otherwise,
/// for every weight; weights must be finite.
pub fn stochastic_binarize(weights: &[f32], rng: &mut SeededRng) -> Result<Vec<f32>> {
    hasten_core::error::ensure_finite("weights to binarize", weights.iter())?;
    Ok(weights
        .iter()
        .map(|&w| {
            if rng.uniform() < f64::from(hard_sigmoid(w)) {
                1.0
            } else {
                -1.0
            }
        })
        .collect())
}

/// BinaryConnect's stochastic binarization of a trained layer (eq. (6)–(7)).
///
/// Weights are divided by `scale` (by default `max |W|`, so they lie in
/// `[−1, 1]`), binarized stochastically with the hard sigmoid, and stored with
/// `α = scale`; then `E[α·b] = W`.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::NonFinite`] for a NaN or infinite
/// weight and with the input-shape errors of the layer; [`StochasticBinarize::with_scale`] refuses a scale that is not finite and positive.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_quant::StochasticBinarize;
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let c = StochasticBinarize::new(7).apply(&layer, input)?;
/// assert_eq!(c.block.ops()[0].kind(), "binary_conv");
/// assert!(StochasticBinarize::new(7).with_scale(0.0).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochasticBinarize {
    seed: u64,
    scale: Option<f32>,
}

impl StochasticBinarize {
    /// Stochastic binarization seeded by `seed`, scale `max |W|`.
    pub fn new(seed: u64) -> Self {
        StochasticBinarize { seed, scale: None }
    }

    /// Uses a fixed `scale > 0` (BinaryConnect's clipped weights: `scale = 1`).
    ///
    /// # Errors
    /// As listed on [`StochasticBinarize`].
    pub fn with_scale(mut self, scale: f32) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::param(
                "stochastic binarization scale",
                scale,
                "finite and > 0",
            ));
        }
        self.scale = Some(scale);
        Ok(self)
    }

    /// The op for a layer's weights.
    ///
    /// # Errors
    /// As listed on [`StochasticBinarize`].
    pub fn quantize(&self, weights: &LayerWeights) -> Result<BinaryConv> {
        let m = &weights.matrix();
        let scale = match self.scale {
            Some(s) => s,
            None => {
                let max = m.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                if max == 0.0 {
                    1.0
                } else {
                    max
                }
            }
        };
        let scaled: Vec<f32> = m.iter().map(|&v| v / scale).collect();
        let mut rng = SeededRng::new(self.seed);
        let signs = stochastic_binarize(&scaled, &mut rng)?;
        let bits: Vec<u32> = signs.iter().map(|&s| u32::from(s > 0.0)).collect();
        BinaryConv::new(
            *weights.layout(),
            PackedCodes::pack(&bits, m.nrows(), m.ncols(), 1)?,
            Array1::from_elem(m.nrows(), scale),
            weights.bias().cloned(),
            false,
        )
    }
}

impl Transform for StochasticBinarize {
    fn name(&self) -> &str {
        "BinaryConnect stochastic binarize (eq. 6–7)"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        self.quantize_layer(Self::quantize, BinaryConv::dequantized, layer, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::ndarray::{Array2, Array4};
    use hasten_core::{ConvLayer, ConvSpec, LinearLayer, Op, Operator, WeightLayout};
    use proptest::prelude::*;

    fn conv_layer(seed: u64) -> Layer {
        let mut rng = SeededRng::new(seed);
        ConvLayer::from_array(
            rng.normal_array((6, 4, 3, 3), 0.2),
            ConvSpec::new().with_padding(1),
        )
        .unwrap()
        .into()
    }

    fn only_op(c: &Compressed) -> &BinaryConv {
        match &c.block.ops()[0] {
            Op::BinaryConv(b) => b,
            other => panic!("unexpected op {}", other.kind()),
        }
    }

    #[test]
    fn alpha_is_brute_force_optimum_of_eq8() {
        let mut rng = SeededRng::new(11);
        let w: Vec<f32> = (0..27).map(|_| rng.normal() as f32).collect();
        let alpha = xnor_alpha(&w);
        let err = |a: f64| -> f64 {
            w.iter()
                .map(|&v| (f64::from(v) - a * if v >= 0.0 { 1.0 } else { -1.0 }).powi(2))
                .sum()
        };
        // Grid search over [0, 3] in steps of 1e-4.
        let best = (0..=30_000)
            .map(|i| i as f64 * 1e-4)
            .min_by(|a, b| err(*a).total_cmp(&err(*b)))
            .unwrap();
        assert!((f64::from(alpha) - best).abs() <= 1e-4, "{alpha} vs {best}");
        // And sign(W) is the optimal B for that α: flipping any bit hurts.
        for i in 0..w.len() {
            let mut flipped = 0.0;
            for (j, &v) in w.iter().enumerate() {
                let b = if v >= 0.0 { 1.0 } else { -1.0 } * if i == j { -1.0 } else { 1.0 };
                flipped += (f64::from(v) - f64::from(alpha) * b).powi(2);
            }
            assert!(flipped >= err(f64::from(alpha)));
        }
    }

    #[test]
    fn binary_weight_conv_is_alpha_times_sign_conv() {
        let layer = conv_layer(1);
        let input = ActShape::new(4, 7, 7);
        let c = Binarize::binary_weights().apply(&layer, input).unwrap();
        let op = only_op(&c);
        let Layer::Conv(conv) = &layer else {
            unreachable!()
        };
        let w = conv.weight().array();
        // α·(I ∗ sign(W)) computed with the dense reference, filter by filter.
        let mut rng = SeededRng::new(2);
        let x = rng.normal_array((2, 4, 7, 7), 1.0);
        let signs = w.mapv(|v| if v >= 0.0 { 1.0 } else { -1.0 });
        let sign_conv = ConvLayer::from_array(signs, *conv.spec())
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        let y = op.reference_forward(&x).unwrap();
        for ((n, t, a, b), v) in y.indexed_iter() {
            let f: Vec<f32> = w
                .slice(hasten_core::ndarray::s![t, .., .., ..])
                .iter()
                .copied()
                .collect();
            let want = xnor_alpha(&f) * sign_conv[[n, t, a, b]];
            assert!(
                (v - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{v} vs {want}"
            );
        }
        // Exactly one bit per weight plus one f32 α per filter.
        assert_eq!(c.report.after.weight_bytes, 6 * 8 + 6 * 4);
        assert!((c.report.bits_per_weight() - 8.0 * 72.0 / 216.0).abs() < 1e-12);
    }

    #[test]
    fn exact_32x_on_word_aligned_filters() {
        // 64 inputs per filter: exactly one word per filter, no α overhead with
        // many filters ⇒ weight payload is 1 bit / weight.
        let mut rng = SeededRng::new(3);
        let layer: Layer = LinearLayer::new(rng.normal_array((8, 128), 1.0), None)
            .unwrap()
            .into();
        let op = Binarize::sign()
            .quantize(&LayerWeights::of(&layer))
            .unwrap();
        assert_eq!(op.signs().payload_bytes() * 8, 8 * 128);
        // ±1 weights are represented exactly: weight error of a ±1 layer is 0.
        let pm: Layer = LinearLayer::new(
            rng.normal_array((8, 128), 1.0).mapv(|v: f32| v.signum()),
            None,
        )
        .unwrap()
        .into();
        let c = Binarize::sign().apply(&pm, ActShape::flat(128)).unwrap();
        assert_eq!(c.report.weight_error, Some(0.0));
    }

    #[test]
    fn xnor_net_matches_eq9_by_hand() {
        let layer = conv_layer(4);
        let c = Binarize::xnor_net()
            .apply(&layer, ActShape::new(4, 5, 5))
            .unwrap();
        let op = only_op(&c);
        assert!(op.binarize_input());
        let mut rng = SeededRng::new(5);
        let x: Array4<f32> = rng.normal_array((1, 4, 5, 5), 1.0);
        let y = op.reference_forward(&x).unwrap();
        // Hand evaluation of (sign(I) ∗ sign(W)) ⊙ K α at one interior pixel.
        let Layer::Conv(conv) = &layer else {
            unreachable!()
        };
        let w = conv.weight().array();
        let (t, py, px) = (2usize, 2usize, 3usize);
        let (mut dot, mut k) = (0.0f64, 0.0f64);
        for s in 0..4 {
            for i in 0..3 {
                for j in 0..3 {
                    let v = x[[0, s, py + i - 1, px + j - 1]];
                    dot +=
                        f64::from(if v >= 0.0 { 1.0f32 } else { -1.0 } * w[[t, s, i, j]].signum());
                    k += f64::from(v.abs()) / 36.0;
                }
            }
        }
        let f: Vec<f32> = w
            .slice(hasten_core::ndarray::s![t, .., .., ..])
            .iter()
            .copied()
            .collect();
        let want = dot * k * f64::from(xnor_alpha(&f));
        assert!(
            (f64::from(y[[0, t, py, px]]) - want).abs() < 1e-4,
            "{} vs {want}",
            y[[0, t, py, px]]
        );
    }

    #[test]
    fn stochastic_frequency_matches_hard_sigmoid() {
        // 40 000 draws per probability: the frequency is within 5σ ≤ 0.0125.
        let mut rng = SeededRng::new(42);
        for w in [-0.8f32, -0.3, 0.0, 0.25, 0.9] {
            let draws = stochastic_binarize(&vec![w; 40_000], &mut rng).unwrap();
            let freq = draws.iter().filter(|&&b| b > 0.0).count() as f64 / 40_000.0;
            let p = f64::from(hard_sigmoid(w));
            let sigma = (p * (1.0 - p) / 40_000.0).sqrt();
            assert!(
                (freq - p).abs() <= 5.0 * sigma + 1e-12,
                "w {w}: {freq} vs {p}"
            );
        }
        assert!(stochastic_binarize(&[f32::NAN], &mut rng).is_err());
    }

    #[test]
    fn stochastic_transform_is_unbiased_and_seeded() {
        let layer = conv_layer(6);
        let t = StochasticBinarize::new(9);
        let a = t.quantize(&LayerWeights::of(&layer)).unwrap();
        let b = t.quantize(&LayerWeights::of(&layer)).unwrap();
        assert_eq!(a, b);
        // Averaging many seeds approaches W.
        let w = LayerWeights::of(&layer).matrix().clone();
        let mut mean = Array2::<f32>::zeros(w.dim());
        for seed in 0..400 {
            mean = mean
                + StochasticBinarize::new(seed)
                    .quantize(&LayerWeights::of(&layer))
                    .unwrap()
                    .dequantized();
        }
        mean /= 400.0;
        // Each draw α·b has mean w and variance α² − w² (α = max |W|), so the
        // mean of 400 independent draws has the expected squared relative
        // error Σ(α² − w²) / (400 Σ w²). Over 216 weights the observed
        // error stays within a few per cent of its square root (one
        // standard deviation ≈ 5 %): ±25 % fails only on a real bias or a
        // wrong variance.
        let alpha = f64::from(w.iter().fold(0.0f32, |a, &v| a.max(v.abs())));
        let sum_w2: f64 = w.iter().map(|&v| f64::from(v).powi(2)).sum();
        let expected = (w
            .iter()
            .map(|&v| alpha * alpha - f64::from(v).powi(2))
            .sum::<f64>()
            / (400.0 * sum_w2))
            .sqrt();
        let got = hasten_core::relative_error(&w, &mean);
        assert!(
            (got - expected).abs() < 0.25 * expected,
            "relative error {got}, expected about {expected}"
        );
        assert!(StochasticBinarize::new(0).with_scale(0.0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn binarize_round_trips_signs(rows in 1usize..5, cols in 1usize..100, seed in 0u64..100) {
            let mut rng = SeededRng::new(seed);
            let w: Array2<f32> = rng.normal_array((rows, cols), 1.0);
            let layer: Layer = LinearLayer::new(w.clone(), None).unwrap().into();
            let op = Binarize::binary_weights().quantize(&LayerWeights::of(&layer)).unwrap();
            let signs = op.sign_matrix();
            for (s, v) in signs.iter().zip(w.iter()) {
                prop_assert_eq!(*s, if *v >= 0.0 { 1.0 } else { -1.0 });
            }
            prop_assert_eq!(op.signs().payload_bytes(), 8 * (rows * cols.div_ceil(64)) as u64);
            let _ = WeightLayout::linear(rows, cols).unwrap();
        }
    }
}

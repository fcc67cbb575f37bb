//! DoReFa-Net k-bit weights and activations (Zhou et al. \[61\], survey
//! section 5).
//!
//! Weights: `w_k = 2 · quantize_k( tanh(w) / (2 · max |tanh(W)|) + ½ ) − 1`,
//! with `quantize_k(r) = round((2^k − 1) · r) / (2^k − 1)`; the levels are
//! `2u / (2^k − 1) − 1`, `u ∈ 0..2^k`, a uniform k-bit code stored in a
//! [`FixedPointConv`] with `scale = 2γ / (2^k − 1)` and `offset = −γ`.
//! The paper uses `γ = 1` (training from scratch, [`DoReFa::paper`]); for a
//! trained layer [`DoReFa::new`] takes `γ = max |W|` so that the layer's
//! range is kept.
//!
//! Activations: `a_k = quantize_k(clip(a, 0, 1))` ([`dorefa_activation`]).
//!
//! Training (DoReFa's straight-through estimator): `quantize_k` passes its
//! gradient unchanged, so `∂L/∂W` is the derivative of the smooth part
//! `f(W) = γ · tanh(W) / max |tanh(W)|` ([`dorefa_weight_smooth`],
//! [`dorefa_weight_grad`]).

use hasten_core::error::ensure_finite;
use hasten_core::ndarray::Array1;
use hasten_core::{
    ActShape, Compressed, Error, FixedPointConv, Layer, PackedCodes, Result, Transform,
};

use crate::weights::{LayerWeights, QuantizeLayer};

fn check_bits(bits: u32) -> Result<()> {
    if !(1..=16).contains(&bits) {
        return Err(Error::param("DoReFa bits", bits, "1..=16"));
    }
    Ok(())
}

/// `quantize_k(clip(a, 0, 1))` for each activation.
pub fn dorefa_activation(values: &[f32], bits: u32) -> Result<Vec<f32>> {
    check_bits(bits)?;
    ensure_finite("activations", values.iter())?;
    let levels = ((1u32 << bits) - 1) as f32;
    Ok(values
        .iter()
        .map(|&a| (a.clamp(0.0, 1.0) * levels).round() / levels)
        .collect())
}

/// The DoReFa codes `u ∈ 0..2^bits` of `weights` (level `2u/(2^k−1) − 1`).
pub fn dorefa_weight_codes(weights: &[f32], bits: u32) -> Result<Vec<u32>> {
    check_bits(bits)?;
    ensure_finite("weights", weights.iter())?;
    let t: Vec<f64> = weights.iter().map(|&w| f64::from(w).tanh()).collect();
    let max = t.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
    let levels = f64::from((1u32 << bits) - 1);
    Ok(t.iter()
        .map(|&v| {
            let r = if max > 0.0 {
                v / (2.0 * max) + 0.5
            } else {
                0.5
            };
            (r * levels).round() as u32
        })
        .collect())
}

/// The smooth part of [`DoReFa::new`]'s weights (the rounding left out):
/// `f(W)_i = γ · tanh(w_i) / max_j |tanh(w_j)|` with `γ = max |W|`; all-zero
/// weights map to themselves.
pub fn dorefa_weight_smooth(weights: &[f64]) -> Vec<f64> {
    let gamma = weights.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
    let max = weights.iter().fold(0.0f64, |a, &v| a.max(v.tanh().abs()));
    if max == 0.0 {
        return weights.to_vec();
    }
    weights.iter().map(|&w| gamma * w.tanh() / max).collect()
}

/// DoReFa's straight-through gradient of [`DoReFa::new`]'s weights: with
/// `quantize_k` passing its gradient, `∂L/∂W = (∂f/∂W)ᵀ · ∂L/∂Ŵ` for the
/// smooth part `f` of [`dorefa_weight_smooth`]. With `t = tanh(W)`, `a` the
/// index of `max |W|` (the first at a tie), `A = |w_a|`, `M = |t_a|`:
/// `∂L/∂w_k = (A/M)(1 − t_k²) g_k + [k = a] sign(w_a)(1/M − A(1 − M²)/M²) Σ_i g_i t_i`.
/// All-zero weights pass `grad` unchanged (the limit of `A/M → 1`).
///
/// # Errors
/// Lengths that differ, non-finite weights or gradients.
pub fn dorefa_weight_grad(weights: &[f64], grad: &[f64]) -> Result<Vec<f64>> {
    if weights.len() != grad.len() {
        return Err(Error::shape(
            "DoReFa gradient length",
            weights.len(),
            grad.len(),
        ));
    }
    ensure_finite("weights", weights.iter())?;
    ensure_finite("gradient", grad.iter())?;
    let Some((a, big_a)) = weights.iter().map(|w| w.abs()).enumerate().fold(
        None,
        |best: Option<(usize, f64)>, (i, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        },
    ) else {
        return Ok(Vec::new());
    };
    if big_a == 0.0 {
        return Ok(grad.to_vec());
    }
    let t: Vec<f64> = weights.iter().map(|w| w.tanh()).collect();
    let m = t[a].abs();
    let r = big_a / m;
    let mut out: Vec<f64> = t
        .iter()
        .zip(grad)
        .map(|(&tk, &g)| r * (1.0 - tk * tk) * g)
        .collect();
    let gt: f64 = grad.iter().zip(&t).map(|(g, t)| g * t).sum();
    out[a] += weights[a].signum() * (1.0 / m - big_a * (1.0 - m * m) / (m * m)) * gt;
    Ok(out)
}

/// DoReFa k-bit weight quantization of a layer.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::NonFinite`] for a NaN or infinite
/// weight and with the input-shape errors of the layer; the constructors refuse bit widths outside `1..=16`.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_quant::DoReFa;
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let c = DoReFa::new(4)?.apply(&layer, input)?;
/// assert!(c.report.compression_ratio() > 4.0);
/// assert!(DoReFa::new(0).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoReFa {
    bits: u32,
    keep_range: bool,
}

impl DoReFa {
    /// `bits ∈ 1..=16`, levels scaled by `γ = max |W|`.
    ///
    /// # Errors
    /// As listed on [`DoReFa`].
    pub fn new(bits: u32) -> Result<Self> {
        check_bits(bits)?;
        Ok(DoReFa {
            bits,
            keep_range: true,
        })
    }

    /// `bits ∈ 1..=16`, levels in `[−1, 1]` as in the paper.
    ///
    /// # Errors
    /// As listed on [`DoReFa`].
    pub fn paper(bits: u32) -> Result<Self> {
        check_bits(bits)?;
        Ok(DoReFa {
            bits,
            keep_range: false,
        })
    }

    /// The op for a layer's weights.
    ///
    /// # Errors
    /// As listed on [`DoReFa`].
    pub fn quantize(&self, weights: &LayerWeights) -> Result<FixedPointConv> {
        let m = &weights.matrix();
        let flat = m.as_slice().expect("standard layout");
        let codes = dorefa_weight_codes(flat, self.bits)?;
        let gamma = if self.keep_range {
            let max = flat.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
            if max > 0.0 {
                max
            } else {
                1.0
            }
        } else {
            1.0
        };
        let levels = ((1u32 << self.bits) - 1) as f32;
        FixedPointConv::new(
            *weights.layout(),
            PackedCodes::pack(&codes, m.nrows(), m.ncols(), self.bits)?,
            Array1::from(vec![2.0 * gamma / levels]),
            Array1::from(vec![-gamma]),
            weights.bias().cloned(),
        )
    }
}

impl Transform for DoReFa {
    fn name(&self) -> &str {
        "DoReFa k-bit weights"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        self.quantize_layer(Self::quantize, FixedPointConv::dequantized, layer, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{LinearLayer, SeededRng};
    use proptest::prelude::*;

    #[test]
    fn weights_follow_the_paper_formula() {
        let mut rng = SeededRng::new(1);
        let w: Vec<f32> = (0..60).map(|_| rng.normal() as f32).collect();
        let layer: Layer = LinearLayer::from_slice(3, 20, &w, None).unwrap().into();
        for bits in [1, 2, 4] {
            let op = DoReFa::paper(bits)
                .unwrap()
                .quantize(&LayerWeights::of(&layer))
                .unwrap();
            let max = w.iter().map(|v| v.tanh().abs()).fold(0.0f32, f32::max);
            let n = ((1u32 << bits) - 1) as f32;
            for (q, &v) in op.dequantized().iter().zip(&w) {
                let want = 2.0 * ((v.tanh() / (2.0 * max) + 0.5) * n).round() / n - 1.0;
                assert!((q - want).abs() < 1e-5, "{q} vs {want}");
            }
        }
    }

    #[test]
    fn activation_levels() {
        let a = dorefa_activation(&[-1.0, 0.2, 0.5, 0.9, 3.0], 2).unwrap();
        assert_eq!(a, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0]);
        assert!(dorefa_activation(&[0.0], 0).is_err());
        assert!(dorefa_activation(&[f32::INFINITY], 2).is_err());
    }

    #[test]
    fn smooth_part_is_the_rounded_levels_before_rounding() {
        // 16 bits: the levels are 2γ/65535 apart, so the rounded weights are
        // the smooth part within half a step.
        let mut rng = SeededRng::new(4);
        let w: Vec<f32> = (0..40).map(|_| 0.7 * rng.normal() as f32).collect();
        let layer: Layer = LinearLayer::from_slice(4, 10, &w, None).unwrap().into();
        let op = DoReFa::new(16)
            .unwrap()
            .quantize(&LayerWeights::of(&layer))
            .unwrap();
        let smooth = dorefa_weight_smooth(&w.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        let gamma = w.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (q, f) in op.dequantized().iter().zip(&smooth) {
            assert!((f64::from(*q) - f).abs() <= f64::from(gamma) / 65535.0 + 1e-6);
        }
    }

    #[test]
    fn weight_grad_matches_central_differences() {
        // L = Σ c_i f_i(W): its gradient is dorefa_weight_grad(W, c).
        let mut rng = SeededRng::new(8);
        for n in [1usize, 2, 7, 30] {
            let w: Vec<f64> = (0..n).map(|_| 1.5 * rng.normal()).collect();
            let c: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            let loss = |w: &[f64]| -> f64 {
                dorefa_weight_smooth(w)
                    .iter()
                    .zip(&c)
                    .map(|(f, c)| f * c)
                    .sum()
            };
            let got = dorefa_weight_grad(&w, &c).unwrap();
            let h = 1e-6;
            for k in 0..n {
                let (mut p, mut m) = (w.clone(), w.clone());
                p[k] += h;
                m[k] -= h;
                let want = (loss(&p) - loss(&m)) / (2.0 * h);
                let rel = (got[k] - want).abs() / want.abs().max(1e-3);
                assert!(rel < 1e-5, "n {n} k {k}: {} vs {want}", got[k]);
            }
        }
        assert_eq!(
            dorefa_weight_grad(&[0.0, 0.0], &[1.0, 2.0]).unwrap(),
            vec![1.0, 2.0]
        );
        assert!(dorefa_weight_grad(&[1.0], &[1.0, 2.0]).is_err());
        assert!(dorefa_weight_grad(&[f64::NAN], &[1.0]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn codes_in_range_never_panics(bits in 0u32..20, vals in proptest::collection::vec(-1e6f32..1e6, 1..20)) {
            let r = dorefa_weight_codes(&vals, bits);
            prop_assert_eq!(r.is_ok(), (1..=16).contains(&bits));
            if let Ok(c) = r {
                prop_assert!(c.iter().all(|&u| u < (1u32 << bits)));
            }
        }
    }
}

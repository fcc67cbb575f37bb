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

//! Ternary weights `{−α, 0, +α}`, packed in 2 bits:
//!
//! - [`Ternarize::twn`]: the threshold rule of ternary weight networks —
//!   `Δ = 0.7 · mean |W|`, weights with `|w| > Δ` keep their sign, the rest
//!   become 0, and `α = mean { |w| : |w| > Δ }` (the least-squares scale for
//!   that support);
//! - [`Ternarize::stochastic`]: the stochastic procedure of Lin et al. \[55\]
//!   (survey section 5): with `w / scale ∈ [−1, 1]`, the interval is split
//!   into `[−1, 0]` and `[0, 1]` and eq. (6) is applied on the matching
//!   half: `w ≥ 0` becomes `+1` with probability `w`, else `0`; `w < 0`
//!   becomes `−1` with probability `−w`, else `0`. With `α = scale`,
//!   `E[α·q] = W`.

use hasten_core::ndarray::Array1;
use hasten_core::op::{TERNARY_MINUS, TERNARY_PLUS, TERNARY_ZERO};
use hasten_core::{
    ActShape, Compressed, Layer, PackedCodes, Result, SeededRng, TernaryConv, Transform,
};

use crate::weights::{Granularity, LayerWeights, QuantizeLayer};

/// The TWN threshold factor, `Δ = 0.7 · mean |W|`.
pub const TWN_THRESHOLD: f64 = 0.7;

/// How ternary values are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TernaryRule {
    /// Ternary weight networks: threshold `Δ = 0.7·mean|W|`, scale `α`.
    Threshold,
    /// Lin et al. \[55\]: stochastic rounding on `[−1, 0]` / `[0, 1]`, seeded.
    Stochastic {
        /// RNG seed.
        seed: u64,
    },
}

/// Ternarization of a conv or linear layer into a [`TernaryConv`].
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::NonFinite`](hasten_core::Error::NonFinite) for a NaN or infinite
/// weight and with the input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_quant::{Granularity, Ternarize};
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let c = Ternarize::twn(Granularity::PerChannel).apply(&layer, input)?;
/// assert_eq!(c.block.ops()[0].kind(), "ternary_conv");
/// assert!(c.report.compression_ratio() > 4.0);
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ternarize {
    rule: TernaryRule,
    granularity: Granularity,
}

fn code_of(v: i8) -> u32 {
    match v {
        1 => TERNARY_PLUS,
        -1 => TERNARY_MINUS,
        _ => TERNARY_ZERO,
    }
}

/// The TWN ternarization of `w`: `(values in {−1, 0, 1}, α)`.
pub fn twn_ternarize(w: &[f32]) -> (Vec<i8>, f32) {
    if w.is_empty() {
        return (Vec::new(), 0.0);
    }
    let delta = TWN_THRESHOLD * w.iter().map(|&v| f64::from(v.abs())).sum::<f64>() / w.len() as f64;
    let (mut sum, mut count) = (0.0f64, 0usize);
    let q = w
        .iter()
        .map(|&v| {
            if f64::from(v.abs()) > delta {
                sum += f64::from(v.abs());
                count += 1;
                if v > 0.0 {
                    1
                } else {
                    -1
                }
            } else {
                0
            }
        })
        .collect();
    (
        q,
        if count == 0 {
            0.0
        } else {
            (sum / count as f64) as f32
        },
    )
}

impl Ternarize {
    /// Ternary weight networks (threshold `0.7·mean|W|`), per layer or per filter.
    pub fn twn(granularity: Granularity) -> Self {
        Ternarize {
            rule: TernaryRule::Threshold,
            granularity,
        }
    }

    /// Lin et al.'s stochastic ternarization with `scale = max|W|` per layer or filter.
    pub fn stochastic(seed: u64, granularity: Granularity) -> Self {
        Ternarize {
            rule: TernaryRule::Stochastic { seed },
            granularity,
        }
    }

    /// The op for a layer's weights.
    ///
    /// # Errors
    /// As listed on [`Ternarize`].
    pub fn quantize(&self, weights: &LayerWeights) -> Result<TernaryConv> {
        let m = &weights.matrix();
        let (rows, cols) = m.dim();
        let mut values = vec![0i8; rows * cols];
        let mut scales = Array1::<f32>::zeros(rows);
        let flat = m.as_slice().expect("standard layout");
        let mut rng = match self.rule {
            TernaryRule::Stochastic { seed } => Some(SeededRng::new(seed)),
            TernaryRule::Threshold => None,
        };
        for group in self.granularity.groups(rows) {
            let range = group.start * cols..group.end * cols;
            let w = &flat[range.clone()];
            let (q, alpha) = match rng.as_mut() {
                None => twn_ternarize(w),
                Some(rng) => {
                    let max = w.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                    let scale = if max == 0.0 { 1.0 } else { max };
                    let q = w
                        .iter()
                        .map(|&v| {
                            let p = f64::from((v / scale).abs());
                            if rng.uniform() < p {
                                if v > 0.0 {
                                    1
                                } else {
                                    -1
                                }
                            } else {
                                0
                            }
                        })
                        .collect();
                    (q, scale)
                }
            };
            values[range].copy_from_slice(&q);
            for r in group {
                scales[r] = alpha;
            }
        }
        let codes: Vec<u32> = values.iter().map(|&v| code_of(v)).collect();
        TernaryConv::new(
            *weights.layout(),
            PackedCodes::pack(&codes, rows, cols, 2)?,
            scales,
            weights.bias().cloned(),
        )
    }
}

impl Transform for Ternarize {
    fn name(&self) -> &str {
        match self.rule {
            TernaryRule::Threshold => "ternary (TWN threshold)",
            TernaryRule::Stochastic { .. } => "ternary (stochastic, Lin et al.)",
        }
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        self.quantize_layer(Self::quantize, TernaryConv::dequantized, layer, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::ndarray::Array2;
    use hasten_core::{ConvLayer, ConvSpec, LinearLayer, Operator};
    use proptest::prelude::*;

    #[test]
    fn twn_hand_example() {
        // mean|w| = 1, Δ = 0.7: {2, -1.5} survive, α = 1.75.
        let (q, a) = twn_ternarize(&[2.0, -1.5, 0.3, -0.2]);
        assert_eq!(q, vec![1, -1, 0, 0]);
        assert_eq!(a, 1.75);
    }

    #[test]
    fn twn_alpha_is_least_squares_for_its_support() {
        let mut rng = SeededRng::new(1);
        let w: Vec<f32> = (0..50).map(|_| rng.normal() as f32).collect();
        let (q, a) = twn_ternarize(&w);
        let err = |s: f64| -> f64 {
            w.iter()
                .zip(&q)
                .map(|(&v, &t)| (f64::from(v) - s * f64::from(t)).powi(2))
                .sum()
        };
        for ds in [-1e-3, 1e-3] {
            assert!(err(f64::from(a) + ds) >= err(f64::from(a)));
        }
    }

    #[test]
    fn conv_forward_equals_dense_on_dequantized() {
        let mut rng = SeededRng::new(2);
        let layer: Layer = ConvLayer::from_array(
            rng.normal_array((4, 3, 3, 3), 0.3),
            ConvSpec::new().with_padding(1),
        )
        .unwrap()
        .into();
        for t in [
            Ternarize::twn(Granularity::PerChannel),
            Ternarize::stochastic(3, Granularity::PerTensor),
        ] {
            let c = t.apply(&layer, ActShape::new(3, 6, 6)).unwrap();
            let hasten_core::Op::TernaryConv(op) = &c.block.ops()[0] else {
                panic!()
            };
            let dense = op.layout().dense_layer(op.dequantized(), None).unwrap();
            let x = rng.normal_array((1, 3, 6, 6), 1.0);
            let (a, b) = (
                op.reference_forward(&x).unwrap(),
                dense.to_op().reference_forward(&x).unwrap(),
            );
            for (p, q) in a.iter().zip(b.iter()) {
                assert!((p - q).abs() < 1e-5);
            }
            // 27 weights · 2 bits = 1 word per filter, 4 scales.
            assert_eq!(c.report.after.weight_bytes, 4 * 8 + 4 * 4);
        }
    }

    #[test]
    fn stochastic_is_unbiased() {
        // w/scale = 0.5 ⇒ +1 with probability 0.5: frequency within 5σ.
        let w = Array2::from_shape_fn((1, 20_000), |(_, j)| if j == 0 { 1.0f32 } else { 0.5 });
        let layer: Layer = LinearLayer::new(w, None).unwrap().into();
        let op = Ternarize::stochastic(7, Granularity::PerTensor)
            .quantize(&LayerWeights::of(&layer))
            .unwrap();
        let ones = op
            .dequantized()
            .iter()
            .skip(1)
            .filter(|&&v| v == 1.0)
            .count() as f64
            / 19_999.0;
        assert!(
            (ones - 0.5).abs() < 5.0 * (0.25f64 / 19_999.0).sqrt(),
            "{ones}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn values_are_ternary(rows in 1usize..4, cols in 1usize..40, seed in 0u64..50, per in any::<bool>()) {
            let mut rng = SeededRng::new(seed);
            let layer: Layer = LinearLayer::new(rng.normal_array((rows, cols), 1.0), None).unwrap().into();
            let g = if per { Granularity::PerChannel } else { Granularity::PerTensor };
            let op = Ternarize::twn(g).quantize(&LayerWeights::of(&layer)).unwrap();
            let codes = op.codes().unpack();
            prop_assert!(codes.iter().all(|&c| c <= 2));
        }
    }
}

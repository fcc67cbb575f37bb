//! Perforation (survey section 6.1; Figurnov et al. \[68\]): the convolution is
//! evaluated at a subset of output positions — removing columns of the patch
//! matrix `Û` of eq. (13) — and the others are filled by nearest-neighbour
//! interpolation ([`hasten_core::PerforatedConv`]). Masks follow \[68\]: a
//! regular grid, uniformly random positions, or the positions of highest
//! estimated impact on the loss.

use hasten_core::{
    ActShape, Block, Compressed, Error, Layer, PerforatedConv, Result, SeededRng, Transform,
};
use ndarray::Array4;

use crate::select::{check_fraction, keep_count, top_k};

/// Evaluates every `stride.0`-th row and `stride.1`-th column (starting at 0).
pub fn grid_mask(out_hw: (usize, usize), stride: (usize, usize)) -> Result<Vec<bool>> {
    if stride.0 == 0 || stride.1 == 0 {
        return Err(Error::param(
            "perforation grid stride",
            format!("{stride:?}"),
            ">= 1 on both axes",
        ));
    }
    let (oh, ow) = out_hw;
    Ok((0..oh * ow)
        .map(|p| (p / ow) % stride.0 == 0 && (p % ow) % stride.1 == 0)
        .collect())
}

/// Skips `fraction ∈ [0, 1)` of the positions, chosen uniformly at random.
pub fn uniform_mask(
    out_hw: (usize, usize),
    fraction: f64,
    rng: &mut SeededRng,
) -> Result<Vec<bool>> {
    let n = out_hw.0 * out_hw.1;
    let keep = keep_count(n, fraction)?;
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let mut mask = vec![false; n];
    for &p in &order[..keep] {
        mask[p] = true;
    }
    Ok(mask)
}

/// Per output position: `(1/N) Σ_{n,t} |∂C/∂V · V|`, the first-order estimate
/// (eq. (17) applied per position) of the loss change if the value were lost.
/// `outputs` and `grads` are the layer's NCHW outputs and their gradients.
pub fn perforation_impacts(outputs: &Array4<f32>, grads: &Array4<f32>) -> Result<Vec<f64>> {
    crate::criteria::check_acts("layer outputs", outputs)?;
    crate::criteria::check_acts("output gradients", grads)?;
    crate::criteria::same_shape("output gradients (= outputs)", outputs, grads)?;
    let (n, t, h, w) = outputs.dim();
    let mut imp = vec![0.0; h * w];
    for s in 0..n {
        for c in 0..t {
            for y in 0..h {
                for x in 0..w {
                    imp[y * w + x] +=
                        (f64::from(outputs[[s, c, y, x]]) * f64::from(grads[[s, c, y, x]])).abs();
                }
            }
        }
    }
    Ok(imp.into_iter().map(|v| v / n as f64).collect())
}

/// Skips `fraction ∈ [0, 1)` of the positions, those of lowest impact.
pub fn impact_mask(impacts: &[f64], fraction: f64) -> Result<Vec<bool>> {
    let keep = top_k(impacts, keep_count(impacts.len(), fraction)?)?;
    let mut mask = vec![false; impacts.len()];
    for p in keep {
        mask[p] = true;
    }
    Ok(mask)
}

/// How the evaluated positions are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskKind {
    /// A regular grid with the given row and column strides.
    Grid((usize, usize)),
    /// A random `1 − fraction` of the positions, from `seed`.
    Uniform {
        /// Fraction of positions skipped, in `[0, 1)`.
        fraction: f64,
        /// Seed of the [`SeededRng`].
        seed: u64,
    },
    /// The highest-impact `1 − fraction` of the positions.
    Impact {
        /// Per-position impacts (row-major, `oh·ow`), e.g. [`perforation_impacts`].
        impacts: Vec<f64>,
        /// Fraction of positions skipped, in `[0, 1)`.
        fraction: f64,
    },
}

/// Transform: a convolution becomes a [`PerforatedConv`] for the given input size.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully connected layer, with
/// [`Error::InvalidParameter`] for a zero stride or a fraction outside
/// `[0, 1)`, [`Error::ShapeMismatch`] for impacts that do not cover the output
/// plane, and with the input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_prune::perforation::{MaskKind, Perforation};
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// // Every other row and column: a quarter of the positions computed.
/// let c = Perforation { mask: MaskKind::Grid((2, 2)) }.apply(&layer, input)?;
/// assert_eq!(c.block.ops()[0].kind(), "perforated_conv");
/// assert!(Perforation { mask: MaskKind::Grid((0, 2)) }.apply(&layer, input).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Perforation {
    /// The mask rule.
    pub mask: MaskKind,
}

impl Perforation {
    /// The mask over an `out_hw` output plane.
    pub fn mask_for(&self, out_hw: (usize, usize)) -> Result<Vec<bool>> {
        match &self.mask {
            MaskKind::Grid(stride) => grid_mask(out_hw, *stride),
            MaskKind::Uniform { fraction, seed } => uniform_mask(
                out_hw,
                check_fraction("perforation fraction", *fraction)?,
                &mut SeededRng::new(*seed),
            ),
            MaskKind::Impact { impacts, fraction } => {
                if impacts.len() != out_hw.0 * out_hw.1 {
                    return Err(Error::shape(
                        "perforation impacts (oh·ow)",
                        out_hw.0 * out_hw.1,
                        impacts.len(),
                    ));
                }
                impact_mask(impacts, *fraction)
            }
        }
    }
}

impl Transform for Perforation {
    fn name(&self) -> &str {
        "perforation"
    }

    /// The report's weight error is `None`: perforation keeps the weights and
    /// approximates the outputs instead.
    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let Layer::Conv(conv) = layer else {
            return Err(Error::unsupported(self.name(), layer.kind()));
        };
        let out = conv.output_shape(input)?;
        let hw = (out.height, out.width);
        let op = PerforatedConv::new(conv.clone(), hw, self.mask_for(hw)?)?;
        Compressed::new(self.name(), layer, Block::single(op), input, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvLayer, ConvSpec, Operator};
    use proptest::prelude::*;

    #[test]
    fn grid_perforation_costs_a_quarter_and_matches_dense_on_the_grid() {
        let mut rng = SeededRng::new(40);
        let conv = ConvLayer::from_array(
            rng.normal_array((4, 3, 3, 3), 1.0),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let input = ActShape::new(3, 8, 8);
        let c = Perforation {
            mask: MaskKind::Grid((2, 2)),
        }
        .apply(&Layer::Conv(conv.clone()), input)
        .unwrap();
        assert!((c.report.mac_speedup() - 4.0).abs() < 1e-12);
        let x = rng.normal_array((1, 3, 8, 8), 1.0);
        let (d, p) = (
            conv.reference_forward(&x).unwrap(),
            c.block.reference_forward(&x).unwrap(),
        );
        for y in (0..8).step_by(2) {
            for xx in (0..8).step_by(2) {
                for t in 0..4 {
                    assert!((d[[0, t, y, xx]] - p[[0, t, y, xx]]).abs() < 1e-5);
                    // Right and lower neighbours copy this grid point.
                    assert_eq!(p[[0, t, y, xx + 1]], p[[0, t, y, xx]]);
                    assert_eq!(p[[0, t, y + 1, xx]], p[[0, t, y, xx]]);
                }
            }
        }
    }

    #[test]
    fn impact_mask_keeps_the_highest_impacts() {
        let out = Array4::from_shape_fn((2, 2, 2, 3), |(_, _, y, x)| (y * 3 + x) as f32);
        let g = Array4::ones((2, 2, 2, 3));
        let imp = perforation_impacts(&out, &g).unwrap();
        assert_eq!(imp, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            impact_mask(&imp, 0.5).unwrap(),
            vec![false, false, false, true, true, true]
        );
        assert!(perforation_impacts(&out, &Array4::ones((2, 2, 2, 2))).is_err());
        let m = uniform_mask((4, 5), 0.5, &mut SeededRng::new(1)).unwrap();
        assert_eq!(m.iter().filter(|&&b| b).count(), 10);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn masks_never_panic(oh in 0usize..6, ow in 0usize..6, sy in 0usize..3, f in -0.5f64..1.5) {
            let _ = grid_mask((oh, ow), (sy, 1));
            let u = uniform_mask((oh, ow), f, &mut SeededRng::new(0));
            prop_assert_eq!(u.is_ok(), oh * ow > 0 && (0.0..1.0).contains(&f));
            let conv = ConvLayer::from_array(Array4::ones((1, 1, 1, 1)), ConvSpec::new()).unwrap();
            let p = Perforation { mask: MaskKind::Uniform { fraction: f, seed: 3 } };
            let _ = p.apply(&Layer::Conv(conv), ActShape::new(1, oh, ow));
        }
    }
}

//! Group-wise pruning (survey section 6.1; Lebedev & Lempitsky \[66\]): the
//! slices `W[:, c, i, j]` with the smallest L2 norm (eq. (14) per group) are
//! removed and the layer becomes a [`GroupwiseConv`] whose im2col omits them.

use hasten_core::{
    ActShape, Block, Compressed, ConvLayer, Error, GroupwiseConv, Layer, Result, Transform,
};

use crate::criteria::{magnitude, Norm};
use crate::select::{keep_count, top_k};
use crate::slice::Slicing;

/// Keeps the group-wise slices (`(c, i, j)` columns of the filter matrix)
/// with the highest `scores` (one per `C·kh·kw` column), `keep` of them.
pub fn groupwise_keep(layer: &ConvLayer, scores: &[f64], keep: usize) -> Result<GroupwiseConv> {
    let [_, c, kh, kw] = layer.weight().dims();
    if scores.len() != c * kh * kw {
        return Err(Error::shape(
            "group-wise scores (C·kh·kw)",
            c * kh * kw,
            scores.len(),
        ));
    }
    let taps = top_k(scores, keep)?
        .into_iter()
        .map(|k| (k / (kh * kw), (k / kw) % kh, k % kw))
        .collect();
    GroupwiseConv::from_conv(layer, taps)
}

/// Removes `fraction ∈ [0, 1)` of the group-wise slices by L2 magnitude.
pub fn groupwise_prune(layer: &ConvLayer, fraction: f64) -> Result<GroupwiseConv> {
    if layer.spec().groups != 1 {
        return Err(Error::unsupported(
            "group-wise pruning",
            format!("{} groups", layer.spec().groups),
        ));
    }
    let scores = magnitude(layer.weight(), Slicing::Groupwise, Norm::L2);
    groupwise_keep(layer, &scores, keep_count(scores.len(), fraction)?)
}

/// Transform: group-wise magnitude pruning of a fraction of the slices.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully
/// connected layer, [`Error::InvalidParameter`]
/// for a fraction outside `[0, 1)`, and with the input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_prune::removal::GroupwisePrune;
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// let c = GroupwisePrune { fraction: 0.5 }.apply(&layer, input)?;
/// assert_eq!(c.block.ops()[0].kind(), "groupwise_conv");
/// assert!(GroupwisePrune { fraction: -0.1 }.apply(&layer, input).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupwisePrune {
    /// Fraction of `(c, i, j)` slices removed, in `[0, 1)`.
    pub fraction: f64,
}

impl Transform for GroupwisePrune {
    fn name(&self) -> &str {
        "group-wise"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let Layer::Conv(conv) = layer else {
            return Err(Error::unsupported(self.name(), layer.kind()));
        };
        let gw = groupwise_prune(conv, self.fraction)?;
        let err = conv.weight().relative_error(gw.to_dense()?.weight())?;
        Compressed::new(self.name(), layer, Block::single(gw), input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvSpec, Operator, SeededRng};

    #[test]
    fn keeps_the_planted_taps_and_matches_zeroed_dense() {
        let mut rng = SeededRng::new(12);
        let mut w = rng.normal_array((6, 4, 3, 3), 0.001);
        // Plant 12 strong (c, i, j) slices.
        let strong: Vec<usize> = (0..36).filter(|k| k % 3 == 1).collect();
        for &k in &strong {
            let (c, i, j) = (k / 9, (k / 3) % 3, k % 3);
            for t in 0..6 {
                w[[t, c, i, j]] = 1.0 + t as f32;
            }
        }
        let layer = ConvLayer::from_array(w, ConvSpec::new().with_padding(1)).unwrap();
        let gw = groupwise_prune(&layer, 24.0 / 36.0).unwrap();
        let cols: Vec<usize> = (0..gw.taps().len()).map(|k| gw.column(k)).collect();
        assert_eq!(cols, strong);
        let dense = gw.to_dense().unwrap();
        let x = rng.normal_array((1, 4, 5, 5), 1.0);
        let (a, b) = (
            dense.reference_forward(&x).unwrap(),
            gw.reference_forward(&x).unwrap(),
        );
        assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-5));
        let rep = GroupwisePrune {
            fraction: 24.0 / 36.0,
        }
        .apply(&Layer::Conv(layer), ActShape::new(4, 5, 5))
        .unwrap()
        .report;
        assert!((rep.mac_speedup() - 3.0).abs() < 1e-9);
        assert!(GroupwisePrune { fraction: 1.0 }
            .apply(&Layer::Conv(dense), ActShape::new(4, 5, 5))
            .is_err());
    }
}

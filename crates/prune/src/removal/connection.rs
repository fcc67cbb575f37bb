//! Connection pruning → grouped convolution (survey section 6.1, slice
//! `W(:, :, s, t)` — here `W[t, c, :, :]`; grouped convolution \[7\]): when the
//! kept connections between outputs `t` and inputs `c` are block-diagonal
//! (`t / (T/g) == c / (C/g)`), the layer is exactly a `g`-group convolution
//! with `g`× fewer MACs.

use hasten_core::{
    ActShape, Block, Compressed, Conv4d, ConvLayer, Error, Layer, Result, Transform,
};
use ndarray::{s, Array4};

use crate::slice::Slicing;

fn check_groups(layer: &ConvLayer, groups: usize) -> Result<(usize, usize)> {
    if layer.spec().groups != 1 {
        return Err(Error::unsupported(
            "connection pruning",
            format!(
                "a convolution that already has {} groups",
                layer.spec().groups
            ),
        ));
    }
    let [t, c, _, _] = layer.weight().dims();
    if groups == 0 || t % groups != 0 || c % groups != 0 {
        return Err(Error::InvalidGroups {
            groups,
            in_channels: c,
            out_channels: t,
        });
    }
    Ok((t / groups, c / groups))
}

/// Connections `(t, c)` outside the `groups` diagonal blocks (Connection slice indices).
fn off_block(layer: &ConvLayer, groups: usize) -> Result<Vec<usize>> {
    let (tg, cg) = check_groups(layer, groups)?;
    let [t, c, _, _] = layer.weight().dims();
    Ok((0..t * c)
        .filter(|&k| (k / c) / tg != (k % c) / cg)
        .collect())
}

/// The grouped convolution holding the diagonal blocks of `layer` (off-block
/// weights are dropped); exact when they are zero.
fn grouped_of(layer: &ConvLayer, groups: usize) -> Result<ConvLayer> {
    let (tg, cg) = check_groups(layer, groups)?;
    let [t, _, kh, kw] = layer.weight().dims();
    let w = layer.weight().array();
    let mut g = Array4::<f32>::zeros((t, cg, kh, kw));
    for o in 0..t {
        let blk = o / tg;
        g.slice_mut(s![o, .., .., ..])
            .assign(&w.slice(s![o, blk * cg..(blk + 1) * cg, .., ..]));
    }
    ConvLayer::new(
        Conv4d::new(g)?,
        layer.bias().cloned(),
        layer.spec().with_groups(groups),
    )
}

/// Exact conversion: fails unless every off-block connection is zero.
pub fn connection_to_grouped(layer: &ConvLayer, groups: usize) -> Result<ConvLayer> {
    let energy = Slicing::Connection.aggregate(layer.weight().array(), |v| v * v);
    if let Some(&k) = off_block(layer, groups)?.iter().find(|&&k| energy[k] > 0.0) {
        let c = layer.in_channels();
        return Err(Error::param(
            "connection outside the diagonal blocks",
            format!("(t = {}, c = {}) is non-zero", k / c, k % c),
            format!("zero for a {groups}-group convolution"),
        ));
    }
    grouped_of(layer, groups)
}

/// The largest group count whose off-block connections are all zero.
pub fn detect_groups(layer: &ConvLayer) -> Result<usize> {
    let [t, c, _, _] = layer.weight().dims();
    Ok((1..=t.min(c))
        .rev()
        .find(|&g| t % g == 0 && c % g == 0 && connection_to_grouped(layer, g).is_ok())
        .unwrap_or(1))
}

/// Transform: prune every connection outside `groups` diagonal blocks and
/// emit the grouped convolution.
///
/// # Errors
/// [`Transform::apply`] fails with
/// [`Error::Unsupported`] for a fully connected layer, with the group errors of
/// [`ConvSpec`](hasten_core::ConvSpec) when `groups` does not divide both channel counts, and with the
/// input-shape errors of the layer.
///
/// ```
/// use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
/// use hasten_prune::removal::ConnectionGroups;
///
/// let w = SeededRng::new(0).normal_array((8, 4, 3, 3), 0.1);
/// let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
/// let input = ActShape::new(4, 6, 6);
/// // 2 groups: each filter keeps the 2 input channels of its diagonal block.
/// let c = ConnectionGroups { groups: 2 }.apply(&layer, input)?;
/// assert!((c.report.mac_speedup() - 2.0).abs() < 1e-9);
/// assert!(ConnectionGroups { groups: 3 }.apply(&layer, input).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionGroups {
    /// Number of groups of the result.
    pub groups: usize,
}

impl Transform for ConnectionGroups {
    fn name(&self) -> &str {
        "connection → grouped"
    }

    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let Layer::Conv(conv) = layer else {
            return Err(Error::unsupported(self.name(), layer.kind()));
        };
        let dropped = off_block(conv, self.groups)?;
        let zeroed = Slicing::Connection.zero_slices(conv.weight(), &dropped)?;
        let err = conv.weight().relative_error(&zeroed)?;
        let grouped = grouped_of(conv, self.groups)?;
        Compressed::new(self.name(), layer, Block::single(grouped), input, Some(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvSpec, Operator, SeededRng};

    #[test]
    fn planted_block_diagonal_gives_equal_grouped_conv() {
        let mut rng = SeededRng::new(6);
        let (t, c, g) = (8, 12, 4);
        let mut w = rng.normal_array((t, c, 3, 3), 1.0);
        for o in 0..t {
            for i in 0..c {
                if o / (t / g) != i / (c / g) {
                    w.slice_mut(s![o, i, .., ..]).fill(0.0);
                }
            }
        }
        let layer = ConvLayer::new(
            Conv4d::new(w).unwrap(),
            Some(rng.normal_array(t, 1.0)),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        assert_eq!(detect_groups(&layer).unwrap(), 4);
        let grouped = connection_to_grouped(&layer, 4).unwrap();
        assert_eq!(grouped.spec().groups, 4);
        let x = rng.normal_array((2, c, 6, 5), 1.0);
        let (a, b) = (
            layer.reference_forward(&x).unwrap(),
            grouped.reference_forward(&x).unwrap(),
        );
        assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-5));
        let rep = ConnectionGroups { groups: 4 }
            .apply(&Layer::Conv(layer.clone()), ActShape::new(c, 6, 5))
            .unwrap()
            .report;
        assert_eq!(rep.weight_error, Some(0.0));
        assert!((rep.mac_speedup() - 4.0).abs() < 1e-12);
        // Not block-diagonal for 3 or 8 groups of this layout.
        assert!(connection_to_grouped(&layer, 8).is_err() || t % 8 != 0);
        let dense =
            ConvLayer::from_array(rng.normal_array((4, 4, 1, 1), 1.0), ConvSpec::new()).unwrap();
        assert!(connection_to_grouped(&dense, 2).is_err());
        assert_eq!(detect_groups(&dense).unwrap(), 1);
        assert!(connection_to_grouped(&dense, 3).is_err());
        assert!(connection_to_grouped(&dense, 0).is_err());
    }

    #[test]
    fn three_groups_planted_and_forced() {
        // 12 filters × 6 channels, block-diagonal for 3 groups (4 filters ×
        // 2 channels each): 3 is the largest common divisor whose off-block
        // weights all vanish; 2 and 6 cut through the planted blocks.
        let mut rng = SeededRng::new(7);
        let (t, c) = (12, 6);
        let full = rng.normal_array((t, c, 3, 3), 1.0);
        let mut w = full.clone();
        for o in 0..t {
            for i in 0..c {
                if o / 4 != i / 2 {
                    w.slice_mut(s![o, i, .., ..]).fill(0.0);
                }
            }
        }
        let spec = ConvSpec::new().with_padding(1).with_stride(2);
        let layer = ConvLayer::new(
            Conv4d::new(w).unwrap(),
            Some(rng.normal_array(t, 1.0)),
            spec,
        )
        .unwrap();
        assert_eq!(detect_groups(&layer).unwrap(), 3);
        assert!(connection_to_grouped(&layer, 2).is_err());
        assert!(connection_to_grouped(&layer, 6).is_err());
        let grouped = connection_to_grouped(&layer, 3).unwrap();
        assert_eq!(grouped.spec().groups, 3);
        assert_eq!(grouped.weight().dims(), [12, 2, 3, 3]);
        let x = rng.normal_array((2, c, 7, 6), 1.0);
        let (a, b) = (
            layer.reference_forward(&x).unwrap(),
            grouped.reference_forward(&x).unwrap(),
        );
        // The zero products the grouped layer skips add exactly zero.
        assert_eq!(a, b);
        // Forcing 3 groups on the dense kernel drops the off-block weights:
        // the reported error is their share of the norm, computed here.
        let dense = ConvLayer::new(Conv4d::new(full.clone()).unwrap(), None, spec).unwrap();
        let c3 = ConnectionGroups { groups: 3 }
            .apply(&Layer::Conv(dense), ActShape::new(c, 7, 6))
            .unwrap();
        let (mut off, mut all) = (0.0f64, 0.0f64);
        for ((o, i, _, _), &v) in full.indexed_iter() {
            let v2 = f64::from(v).powi(2);
            all += v2;
            if o / 4 != i / 2 {
                off += v2;
            }
        }
        let want = (off / all).sqrt();
        let got = c3.report.weight_error.unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!((c3.report.mac_speedup() - 3.0).abs() < 1e-12);
    }
}

//! Channel gather: output channel `o` is a copy of input channel `index[o]`.
//!
//! A permutation, a selection or a replication of channels at no arithmetic
//! cost. The clustering approximations of Denton et al. \[17\] (survey
//! section 2, Table 1) use it to route each cluster's channels to the grouped
//! convolution that serves the cluster.

use ndarray::Array4;

use super::common::route_channels;
use super::{expect_channels, input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;

/// Gathers channels by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGather {
    indices: Vec<usize>,
    in_channels: usize,
}

impl ChannelGather {
    /// Output channel `o` reads input channel `indices[o] < in_channels`.
    pub fn new(indices: Vec<usize>, in_channels: usize) -> Result<Self> {
        if indices.is_empty() || in_channels == 0 {
            return Err(Error::EmptyDimension {
                what: "channel gather".into(),
                shape: format!("{} indices, {in_channels} input channels", indices.len()),
            });
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= in_channels) {
            return Err(Error::param(
                "gathered channel index",
                bad,
                format!("< {in_channels} (the input channels)"),
            ));
        }
        Ok(ChannelGather {
            indices,
            in_channels,
        })
    }

    /// The source channel of every output channel.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// Input channels expected.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
}

impl Operator for ChannelGather {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        expect_channels("channel gather", self.in_channels, input)?;
        input.checked_len()?;
        ActShape::checked(self.indices.len(), input.height, input.width)
    }

    /// No MACs; the indices are stored as `u32` (4 bytes each) and are not
    /// counted as parameters.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        Ok(Cost {
            macs: 0,
            params: 0,
            weight_bytes: 4 * self.indices.len() as u64,
            activation_bytes: crate::cost::activation_bytes(input.len(), out.len())?,
        })
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let out = self.output_shape(input_shape_of(input)?)?;
        let batch = input.shape()[0];
        crate::memory::check(
            &format!("the channel gather output of {batch} × {out}"),
            out.checked_batch_len(batch)?,
            4,
        )?;
        Ok(route_channels(input, &self.indices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn gathers_permutes_and_replicates() {
        let x = Array::from_shape_vec((1, 3, 1, 2), vec![0., 1., 10., 11., 20., 21.]).unwrap();
        let g = ChannelGather::new(vec![2, 0, 2, 1], 3).unwrap();
        let y = g.reference_forward(&x).unwrap();
        assert_eq!(y.shape(), &[1, 4, 1, 2]);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![20., 21., 0., 1., 20., 21., 10., 11.]
        );
        let c = g.cost(ActShape::new(3, 1, 2)).unwrap();
        assert_eq!((c.macs, c.params, c.weight_bytes), (0, 0, 16));
    }

    #[test]
    fn invalid_gathers_are_rejected() {
        assert!(ChannelGather::new(vec![], 3).is_err());
        assert!(ChannelGather::new(vec![0], 0).is_err());
        assert!(ChannelGather::new(vec![3], 3).is_err());
        let g = ChannelGather::new(vec![0], 2).unwrap();
        assert!(g.output_shape(ActShape::new(3, 1, 1)).is_err());
    }
}

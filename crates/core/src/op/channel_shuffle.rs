//! ShuffleNet channel shuffle (survey section 3, Zhang et al. [33]).
//!
//! Channels viewed as `groups × (C / groups)` are transposed: output channel
//! `j·groups + i` is input channel `i·(C/groups) + j`.

use ndarray::Array4;

use super::common::route_channels;
use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;

/// Channel shuffle with `groups` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelShuffle {
    groups: usize,
}

impl ChannelShuffle {
    /// A shuffle over `groups ≥ 1` groups.
    pub fn new(groups: usize) -> Result<Self> {
        if groups == 0 {
            return Err(Error::param("shuffle groups", groups, ">= 1"));
        }
        Ok(ChannelShuffle { groups })
    }

    /// The group count.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Input channel read by output channel `o` when there are `channels` channels.
    pub fn source_channel(&self, o: usize, channels: usize) -> usize {
        let per = channels / self.groups;
        let (j, i) = (o / self.groups, o % self.groups);
        i * per + j
    }
}

impl Operator for ChannelShuffle {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        if !input.channels.is_multiple_of(self.groups) {
            return Err(Error::InvalidGroups {
                groups: self.groups,
                in_channels: input.channels,
                out_channels: input.channels,
            });
        }
        input.checked_len()?;
        Ok(input)
    }

    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        Cost::f32_op(0, 0, input.len(), out.len())
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let shape = self.output_shape(input_shape_of(input)?)?;
        let sources: Vec<usize> = (0..shape.channels)
            .map(|o| self.source_channel(o, shape.channels))
            .collect();
        Ok(route_channels(input, &sources))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn shuffle_matches_reshape_transpose() {
        // 6 channels, 2 groups: [0 1 2 | 3 4 5] → [0 3 1 4 2 5].
        let x = Array::from_shape_vec((1, 6, 1, 1), (0..6).map(|v| v as f32).collect()).unwrap();
        let y = ChannelShuffle::new(2)
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![0., 3., 1., 4., 2., 5.]
        );
        assert!(ChannelShuffle::new(4)
            .unwrap()
            .reference_forward(&x)
            .is_err());
    }
}

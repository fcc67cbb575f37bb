//! Channel gather (survey section 2, Denton et al.'s clustering routes each
//! cluster's channels to its group): output channel `o` is a copy of input
//! channel `indices[o]` — one plane copy per output channel, in parallel.

use hasten_core::{ActShape, ChannelGather};
use rayon::prelude::*;

use crate::plan::OpKernel;
use crate::pool::ScratchPool;

/// A channel gather for inputs of a fixed shape.
#[derive(Debug)]
pub(crate) struct GatherKernel {
    indices: Vec<usize>,
    in_channels: usize,
    area: usize,
}

impl GatherKernel {
    /// Prepares `gather` for inputs of shape `input` (already validated).
    pub fn new(gather: &ChannelGather, input: ActShape) -> Self {
        GatherKernel {
            indices: gather.indices().to_vec(),
            in_channels: input.channels,
            area: input.area(),
        }
    }
}

impl OpKernel for GatherKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], _batch: usize, _pool: &ScratchPool) {
        let (out_c, area) = (self.indices.len(), self.area);
        dst.par_chunks_mut(area).enumerate().for_each(|(k, plane)| {
            crate::profile::task(|| {
                let (n, o) = (k / out_c, k % out_c);
                plane.copy_from_slice(
                    &src[(n * self.in_channels + self.indices[o]) * area..][..area],
                );
            })
        });
    }
}

//! `1×1`, stride-1, unpadded convolution as a plain GEMM (survey section 2:
//! a pointwise layer is the matrix product `W[T, C] · U[C, H·W]`): row `s` of
//! `B` is channel plane `s` itself, so nothing is lowered or copied before
//! packing.

use std::ops::Range;

use super::{ChannelView, ConvGeometry};
use crate::gemm::BSource;

/// The channel planes of one sample and group as the `B` operand.
pub(crate) struct PlaneSource<'a> {
    /// Sizes.
    pub geo: &'a ConvGeometry,
    /// Channel permutation absorbed from a preceding shuffle (no shift).
    pub view: &'a ChannelView,
    /// The sample, `C × H × W` row-major.
    pub sample: &'a [f32],
    /// Group.
    pub group: usize,
}

impl PlaneSource<'_> {
    /// Whether a convolution of these sizes and view is a plain GEMM.
    pub fn applies(geo: &ConvGeometry, view: &ChannelView) -> bool {
        geo.kernel.0 == 1
            && geo.kernel.1 == 1
            && geo.stride.0 == 1
            && geo.stride.1 == 1
            && geo.pad_top_left.0 == 0
            && geo.pad_top_left.1 == 0
            && geo.out_hw.0 == geo.in_hw.0
            && geo.out_hw.1 == geo.in_hw.1
            && !view.has_shift()
    }
}

impl BSource for PlaneSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, _tmp: &'b mut [f32]) -> &'b [f32] {
        let (c, _, _) = self.view.channel(self.group * self.geo.c_g + k);
        &self.sample[c * self.geo.in_area()..][cols]
    }
}

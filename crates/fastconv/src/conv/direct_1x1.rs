//! `1×1`, stride-1, unpadded convolution as a plain GEMM (survey section 2:
//! a pointwise layer is the matrix product `W[T, C] · U[C, H·W]`): row `s` of
//! `B` is channel plane `s` itself, so nothing is lowered or copied before
//! packing.

use std::ops::Range;

use super::{ChannelView, Geometry};
use crate::gemm::BSource;

/// The channel planes of one sample and group as the `B` operand.
pub(crate) struct PlaneSource<'a> {
    /// Sizes.
    pub geo: &'a Geometry,
    /// Channel permutation absorbed from a preceding shuffle (no shift).
    pub view: &'a ChannelView,
    /// The sample, `C × H × W` row-major.
    pub sample: &'a [f32],
    /// Group.
    pub group: usize,
}

impl PlaneSource<'_> {
    /// Whether a convolution of these sizes and view is a plain GEMM.
    pub fn applies(geo: &Geometry, view: &ChannelView) -> bool {
        geo.kh == 1
            && geo.kw == 1
            && geo.sh == 1
            && geo.sw == 1
            && geo.pt == 0
            && geo.pl == 0
            && geo.oh == geo.h
            && geo.ow == geo.w
            && !view.has_shift()
    }
}

impl BSource for PlaneSource<'_> {
    fn row<'b>(&'b self, k: usize, cols: Range<usize>, _tmp: &'b mut [f32]) -> &'b [f32] {
        let (c, _, _) = self.view.channel(self.group * self.geo.c_g + k);
        &self.sample[c * self.geo.in_area()..][cols]
    }
}

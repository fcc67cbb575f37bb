//! Constant padding: each output plane is its input plane copied into a
//! border of the fill value.

use hasten_core::{ActShape, Pad, Padding};
use rayon::prelude::*;

use crate::plan::OpKernel;
use crate::pool::ScratchPool;
use crate::Isa;

/// A [`Pad`] prepared for one input shape.
#[derive(Debug)]
pub(crate) struct PadKernel {
    isa: Isa,
    input: ActShape,
    output: ActShape,
    padding: Padding,
    value: f32,
}

impl PadKernel {
    /// The kernel of `op` on `input` (whose padded shape the plan checked).
    pub fn new(isa: Isa, op: &Pad, input: ActShape, output: ActShape) -> Self {
        PadKernel {
            isa,
            input,
            output,
            padding: op.padding(),
            value: op.value(),
        }
    }

    #[inline(always)]
    fn plane(&self, src: &[f32], dst: &mut [f32]) {
        let (w, ow) = (self.input.width, self.output.width);
        let (top, left) = (self.padding.top, self.padding.left);
        let body = top * ow..(top + self.input.height) * ow;
        dst[..body.start].fill(self.value);
        dst[body.end..].fill(self.value);
        for (out, row) in dst[body].chunks_exact_mut(ow).zip(src.chunks_exact(w)) {
            out[..left].fill(self.value);
            out[left..left + w].copy_from_slice(row);
            out[left + w..].fill(self.value);
        }
    }
}

impl OpKernel for PadKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], _batch: usize, _pool: &ScratchPool) {
        dst.par_chunks_mut(self.output.area())
            .zip(src.par_chunks(self.input.area()))
            .for_each(|(d, s)| crate::profile::task(|| self.isa.run(|| self.plane(s, d))));
    }
}

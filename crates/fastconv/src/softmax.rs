//! Softmax over channels: for each sample, the running maximum, the
//! exponentials and their f64 sums are computed a channel plane at a time,
//! so every pass streams contiguous runs of positions.

use hasten_core::op::max_nan;
use hasten_core::ActShape;
use rayon::prelude::*;

use crate::plan::OpKernel;
use crate::pool::ScratchPool;
use crate::Isa;

/// A [`hasten_core::Softmax`] prepared for one input shape.
#[derive(Debug)]
pub(crate) struct SoftmaxKernel {
    isa: Isa,
    input: ActShape,
}

impl SoftmaxKernel {
    /// The kernel for samples of shape `input`.
    pub fn new(isa: Isa, input: ActShape) -> Self {
        SoftmaxKernel { isa, input }
    }

    /// One sample: `max` and `sum` hold one value per position.
    #[inline(always)]
    fn sample(&self, src: &[f32], dst: &mut [f32], max: &mut [f32], sum: &mut [f64]) {
        let area = self.input.area();
        max.copy_from_slice(&src[..area]);
        for plane in src.chunks_exact(area).skip(1) {
            max.iter_mut()
                .zip(plane)
                .for_each(|(m, &v)| *m = max_nan(*m, v));
        }
        sum.fill(0.0);
        for (out, plane) in dst.chunks_exact_mut(area).zip(src.chunks_exact(area)) {
            for (((o, &v), &m), s) in out.iter_mut().zip(plane).zip(&*max).zip(sum.iter_mut()) {
                *o = (v - m).exp();
                *s += f64::from(*o);
            }
        }
        // Reuse `max` for the reciprocal of each sum.
        max.iter_mut()
            .zip(&*sum)
            .for_each(|(m, &s)| *m = (1.0 / s) as f32);
        for out in dst.chunks_exact_mut(area) {
            out.iter_mut().zip(&*max).for_each(|(o, &r)| *o *= r);
        }
    }
}

impl OpKernel for SoftmaxKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], _batch: usize, pool: &ScratchPool) {
        let (len, area) = (self.input.len(), self.input.area());
        dst.par_chunks_mut(len)
            .zip(src.par_chunks(len))
            .for_each(|(d, s)| {
                crate::profile::task(|| {
                    pool.with(|scratch| {
                        scratch.floats.resize(area, 0.0);
                        scratch.doubles.resize(area, 0.0);
                        let (max, sum) =
                            (&mut scratch.floats[..area], &mut scratch.doubles[..area]);
                        self.isa.run(|| self.sample(s, d, max, sum));
                    })
                })
            });
    }
}

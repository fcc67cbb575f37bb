//! Element-wise ops where no convolution precedes them to absorb them: every
//! [`Elementwise`] activation through one generic map, and inference-mode
//! batch normalisation (a per-channel affine map `y = scale·x + shift`);
//! [`Clamp`], the activation fused into convolution, linear and add
//! epilogues; and the multi-input graph ops — n-ary residual sums (with a
//! fused clamp), broadcast products (squeeze–excitation gates) and the
//! copies of a channel concatenation, which write each sample at a stride
//! (so their output can be a channel slice of a concatenation) and run their
//! loops compiled for the plan's [`Isa`].

use std::ops::Range;

use hasten_core::op::{clamp_nan, Elementwise};
use hasten_core::Op;
use rayon::prelude::*;

use crate::pool::ScratchPool;
use crate::tiling::SharedOut;
use crate::{plan::OpKernel, Isa};

/// Elements per parallel chunk of an element-wise op.
const CHUNK: usize = 1 << 14;

/// Elements per pass of a multi-operand sum (stays in L1 between passes).
const BLOCK: usize = 2048;

/// An activation clamp `lo..=hi` fused into a kernel's store, NaN kept:
/// [`Clamp::NONE`] is `−∞..=∞`, ReLU `0..=∞`, a [`hasten_core::Clip`] its
/// bounds (ReLU6 `0..=6`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Clamp {
    /// Lower bound.
    pub lo: f32,
    /// Upper bound.
    pub hi: f32,
}

impl Clamp {
    /// No activation.
    pub const NONE: Clamp = Clamp {
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };

    /// The clamp computing `op` when it is a ReLU or a Clip.
    pub fn of(op: Option<&Op>) -> Option<Clamp> {
        match op? {
            Op::Relu(_) => Some(Clamp {
                lo: 0.0,
                hi: f32::INFINITY,
            }),
            Op::Clip(c) => Some(Clamp {
                lo: c.min(),
                hi: c.max(),
            }),
            _ => None,
        }
    }

    /// Whether the clamp is the identity.
    pub fn is_none(self) -> bool {
        self == Clamp::NONE
    }

    /// `x` clamped, NaN kept (the same function as the IR's ops).
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        clamp_nan(x, self.lo, self.hi)
    }
}

/// `dst[i] = op.eval(src[i])`, inlined so the caller's instruction set
/// vectorises it.
#[inline(always)]
fn map_slice<E: Elementwise>(op: &E, src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = op.eval(s);
    }
}

/// An [`Elementwise`] op on its own: `dst = f(src)` in parallel chunks,
/// each compiled for the plan's instruction set.
#[derive(Debug)]
pub(crate) struct MapKernel<E> {
    op: E,
    isa: Isa,
}

impl<E: Elementwise + std::fmt::Debug + Send + Sync> MapKernel<E> {
    /// The kernel of `op` on the `isa` path.
    pub fn new(isa: Isa, op: E) -> Self {
        MapKernel { op, isa }
    }
}

impl<E: Elementwise + std::fmt::Debug + Send + Sync> OpKernel for MapKernel<E> {
    fn run(&self, src: &[f32], dst: &mut [f32], _batch: usize, _pool: &ScratchPool) {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| crate::profile::task(|| self.isa.run(|| map_slice(&self.op, s, d))));
    }
}

/// The kernel of an element-wise activation op, `None` for other ops.
pub(crate) fn map_kernel(isa: Isa, op: &Op) -> Option<Box<dyn OpKernel>> {
    Some(match op {
        Op::Relu(o) => Box::new(MapKernel::new(isa, *o)),
        Op::Clip(o) => Box::new(MapKernel::new(isa, *o)),
        Op::Sigmoid(o) => Box::new(MapKernel::new(isa, *o)),
        Op::HardSigmoid(o) => Box::new(MapKernel::new(isa, *o)),
        Op::HardSwish(o) => Box::new(MapKernel::new(isa, *o)),
        Op::Silu(o) => Box::new(MapKernel::new(isa, *o)),
        _ => return None,
    })
}

/// `dst = scale[c]·src + shift[c]` on planes of `area` values, channel
/// `c = plane mod C`, in parallel over planes.
pub(crate) fn affine(src: &[f32], dst: &mut [f32], area: usize, scale: &[f32], shift: &[f32]) {
    let channels = scale.len();
    dst.par_chunks_mut(area)
        .zip(src.par_chunks(area))
        .enumerate()
        .for_each(|(k, (d, s))| {
            crate::profile::task(|| {
                let (a, b) = (scale[k % channels], shift[k % channels]);
                d.iter_mut().zip(s).for_each(|(d, &s)| *d = a * s + b);
            })
        });
}

/// The layout of a batch written at a stride: `batch` samples of `len`
/// floats, sample `n` starting at `n · stride` (`stride ≥ len`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided {
    /// Samples.
    pub batch: usize,
    /// Floats per sample.
    pub len: usize,
    /// Floats from one sample's start to the next's.
    pub stride: usize,
}

/// Runs `f(n, range, out)` over chunks of every sample in parallel, `out`
/// being the `range` of sample `n` inside `dst` (laid out as `layout`).
fn par_strided(
    dst: &mut [f32],
    layout: Strided,
    f: impl Fn(usize, Range<usize>, &mut [f32]) + Sync,
) {
    let Strided { batch, len, stride } = layout;
    assert!(stride >= len && batch >= 1 && dst.len() >= (batch - 1) * stride + len);
    let chunks = len.div_ceil(CHUNK).max(1);
    let out = SharedOut(dst.as_mut_ptr());
    (0..batch * chunks).into_par_iter().for_each(|task| {
        crate::profile::task(|| {
            let (n, c) = (task / chunks, task % chunks);
            let range = c * CHUNK..((c + 1) * CHUNK).min(len);
            // SAFETY: tasks own pairwise-disjoint ranges of distinct samples,
            // inside `dst` (asserted above).
            let d = unsafe {
                std::slice::from_raw_parts_mut(out.ptr().add(n * stride + range.start), range.len())
            };
            f(n, range, d);
        })
    });
}

/// `dst = clamp(Σₖ src(k))` over `count ≥ 2` contiguous batches of
/// `layout.batch × layout.len` floats (NaN kept); `dst` laid out as `layout`.
pub(crate) fn add<'a>(
    isa: Isa,
    count: usize,
    src: impl Fn(usize) -> &'a [f32] + Sync,
    dst: &mut [f32],
    layout: Strided,
    clamp: Clamp,
) {
    assert!(count >= 2);
    let len = layout.len;
    par_strided(dst, layout, |n, range, out| {
        isa.run(|| {
            let at = n * len + range.start;
            for b in (0..out.len()).step_by(BLOCK) {
                let e = (b + BLOCK).min(out.len());
                let d = &mut out[b..e];
                let (x, y) = (&src(0)[at + b..at + e], &src(1)[at + b..at + e]);
                for ((d, &x), &y) in d.iter_mut().zip(x).zip(y) {
                    *d = x + y;
                }
                for k in 2..count {
                    for (d, &x) in d.iter_mut().zip(&src(k)[at + b..at + e]) {
                        *d += x;
                    }
                }
                if !clamp.is_none() {
                    for d in d.iter_mut() {
                        *d = clamp.apply(*d);
                    }
                }
            }
        })
    });
}

/// `dst = x · gate` with `x` a contiguous batch of `layout.len` floats per
/// sample in planes of `area`, and `gate` of `x`'s shape, or one value per
/// plane (`C × 1 × 1`) broadcast over it when `broadcast`.
pub(crate) fn mul(
    isa: Isa,
    x: &[f32],
    gate: &[f32],
    broadcast: bool,
    area: usize,
    dst: &mut [f32],
    layout: Strided,
) {
    let len = layout.len;
    let planes = len / area.max(1);
    par_strided(dst, layout, |n, range, out| {
        isa.run(|| {
            let at = n * len + range.start;
            let x = &x[at..at + out.len()];
            if broadcast {
                let mut i = 0;
                while i < out.len() {
                    let p = (range.start + i) / area;
                    let end = ((p + 1) * area - range.start).min(out.len());
                    let g = gate[n * planes + p];
                    for (d, &v) in out[i..end].iter_mut().zip(&x[i..end]) {
                        *d = v * g;
                    }
                    i = end;
                }
            } else {
                let g = &gate[at..at + out.len()];
                for ((d, &v), &g) in out.iter_mut().zip(x).zip(g) {
                    *d = v * g;
                }
            }
        })
    });
}

/// Copies a contiguous batch `src` into `dst` laid out as `layout` (one
/// operand of a channel concatenation, or an output that is an input).
pub(crate) fn copy(src: &[f32], dst: &mut [f32], layout: Strided) {
    let len = layout.len;
    par_strided(dst, layout, |n, range, out| {
        out.copy_from_slice(&src[n * len + range.start..n * len + range.end]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{Clip, Relu};

    #[test]
    fn every_elementwise_op_has_a_map_kernel_and_clamps_match_the_ops() {
        let ops: Vec<Op> = vec![
            Relu.into(),
            Clip::relu6().into(),
            hasten_core::Sigmoid.into(),
            hasten_core::HardSigmoid::default().into(),
            hasten_core::HardSwish.into(),
            hasten_core::Silu.into(),
        ];
        for op in &ops {
            assert!(op.as_elementwise().is_some());
            assert!(map_kernel(Isa::Scalar, op).is_some(), "{op:?}");
            if let Some(c) = Clamp::of(Some(op)) {
                let e = op.as_elementwise().unwrap();
                for x in [-7.0, -0.5, 0.0, 2.0, 6.5, f32::INFINITY, f32::NEG_INFINITY] {
                    assert_eq!(c.apply(x), e.eval(x));
                }
                assert!(c.apply(f32::NAN).is_nan());
            }
        }
        assert!(map_kernel(Isa::Scalar, &hasten_core::Softmax.into()).is_none());
        assert!(Clamp::NONE.is_none() && Clamp::NONE.apply(f32::NAN).is_nan());
    }
}

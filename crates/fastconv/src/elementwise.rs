//! Element-wise ops where no convolution precedes them to absorb them: every
//! [`Elementwise`] activation through one generic map, and inference-mode
//! batch normalisation (a per-channel affine map `y = scale·x + shift`);
//! and [`Clamp`], the activation fused into convolution and linear
//! epilogues.

use hasten_core::op::{clamp_nan, Elementwise};
use hasten_core::Op;
use rayon::prelude::*;

use crate::pool::ScratchPool;
use crate::{plan::OpKernel, Isa};

/// Elements per parallel chunk of an element-wise op.
const CHUNK: usize = 1 << 14;

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

/// A fused activation: when `ops[*next]` is a ReLU or a Clip, its clamp,
/// with `*next` moved past it; else [`Clamp::NONE`].
pub(crate) fn take_clamp(ops: &[Op], next: &mut usize) -> Clamp {
    match Clamp::of(ops.get(*next)) {
        Some(c) => {
            *next += 1;
            c
        }
        None => Clamp::NONE,
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
            .for_each(|(d, s)| self.isa.run(|| map_slice(&self.op, s, d)));
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
            let (a, b) = (scale[k % channels], shift[k % channels]);
            d.iter_mut().zip(s).for_each(|(d, &s)| *d = a * s + b);
        });
}

/// `dst = src`, in parallel: Identity, Dropout and Flatten (whose data
/// layout is unchanged).
pub(crate) fn copy(src: &[f32], dst: &mut [f32]) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
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

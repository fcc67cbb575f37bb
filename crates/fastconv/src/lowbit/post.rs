//! The batch norm and ReLU / Clip a plan folds into a low-bit
//! convolution's epilogue (int8 and binary steps).

use crate::elementwise::Clamp;

/// The element-wise ops after a low-bit convolution that its epilogue
/// computes: `clamp(scale[t]·y + shift[t])`, each part optional.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Post {
    /// A batch norm's `(scale, shift)` per output channel.
    pub affine: Option<(Vec<f32>, Vec<f32>)>,
    /// A ReLU or Clip ([`Clamp::NONE`]: none).
    pub clamp: Clamp,
}

impl Post {
    /// Nothing after the convolution.
    pub(crate) const NONE: Post = Post {
        affine: None,
        clamp: Clamp::NONE,
    };

    /// Whether there is nothing to apply.
    pub(crate) fn is_none(&self) -> bool {
        self.affine.is_none() && self.clamp.is_none()
    }

    /// Applies the ops to `out`, value `k` belonging to output channel
    /// `channel(k)`.
    #[inline(always)]
    pub(crate) fn apply(&self, out: &mut [f32], channel: impl Fn(usize) -> usize) {
        if let Some((scale, shift)) = &self.affine {
            for (k, o) in out.iter_mut().enumerate() {
                let t = channel(k);
                *o = scale[t] * *o + shift[t];
            }
        }
        if !self.clamp.is_none() {
            for o in out {
                *o = self.clamp.apply(*o);
            }
        }
    }

    /// [`Self::apply`] to the one value `v` of output channel `t`.
    #[inline(always)]
    pub(crate) fn value(&self, v: f32, t: usize) -> f32 {
        let mut v = [v];
        self.apply(&mut v, |_| t);
        v[0]
    }
}

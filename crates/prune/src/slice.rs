//! Sparsity structures (survey section 6.1, after Anwar et al. \[69\] and
//! Wen et al. \[70\]): each [`Slicing`] partitions the OIHW kernel
//! `W[t, c, i, j]` (the survey's `W(i, j, s, t)` with `s = c`) into slices
//! that are kept or removed together.

use hasten_core::{Conv4d, Error, Result};
use ndarray::Array4;

/// How the kernel `W[t, c, i, j]` is cut into prunable slices.
///
/// ```
/// use hasten_core::Conv4d;
/// use hasten_prune::Slicing;
///
/// // 2 filters × 3 channels × 2×2 taps.
/// let w = Conv4d::new(ndarray::Array4::from_elem((2, 3, 2, 2), 1.0))?;
/// assert_eq!(Slicing::Groupwise.count(w.dims()), 12);
/// assert_eq!(Slicing::Filter.slice_of(w.dims(), [1, 2, 0, 1]), 1);
/// // Zeroing input channel 2 clears 2 · 2·2 = 8 of the 24 weights.
/// let z = Slicing::Channel.zero_slices(&w, &[2])?;
/// assert_eq!(z.array().iter().filter(|&&v| v == 0.0).count(), 8);
/// assert!(Slicing::Channel.zero_slices(&w, &[3]).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slicing {
    /// A whole filter `W[t, :, :, :]`: removes output channel `t`.
    Filter,
    /// `W[:, c, :, :]`: removes input channel `c`.
    Channel,
    /// `W[:, :, i, j]`: one tap of every filter (kernel-shape trimming).
    KernelTap,
    /// `W[t, c, :, :]`: the connection between input `c` and output `t`.
    Connection,
    /// `W[:, c, i, j]`: the survey's `W(i, j, s, :)`, group-wise sparsity \[66\].
    Groupwise,
    /// One weight `W[t, c, i, j]`: unstructured sparsity.
    Weight,
}

impl Slicing {
    /// Every slicing, in declaration order.
    pub const ALL: [Slicing; 6] = [
        Slicing::Filter,
        Slicing::Channel,
        Slicing::KernelTap,
        Slicing::Connection,
        Slicing::Groupwise,
        Slicing::Weight,
    ];

    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Slicing::Filter => "filter",
            Slicing::Channel => "channel",
            Slicing::KernelTap => "kernel-shape",
            Slicing::Connection => "connection",
            Slicing::Groupwise => "group-wise",
            Slicing::Weight => "weight",
        }
    }

    /// Number of slices of a kernel with dims `[T, C, kh, kw]`.
    pub fn count(&self, [t, c, kh, kw]: [usize; 4]) -> usize {
        match self {
            Slicing::Filter => t,
            Slicing::Channel => c,
            Slicing::KernelTap => kh * kw,
            Slicing::Connection => t * c,
            Slicing::Groupwise => c * kh * kw,
            Slicing::Weight => t * c * kh * kw,
        }
    }

    /// The slice that element `[t, c, i, j]` belongs to (dims `[T, C, kh, kw]`).
    pub fn slice_of(&self, [_, cs, khs, kws]: [usize; 4], [t, c, i, j]: [usize; 4]) -> usize {
        match self {
            Slicing::Filter => t,
            Slicing::Channel => c,
            Slicing::KernelTap => i * kws + j,
            Slicing::Connection => t * cs + c,
            Slicing::Groupwise => (c * khs + i) * kws + j,
            Slicing::Weight => ((t * cs + c) * khs + i) * kws + j,
        }
    }

    /// `Σ_{e ∈ slice} f(e)` for every slice, accumulated in f64.
    pub fn aggregate(&self, w: &Array4<f32>, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let dims = dims_of(w);
        let mut acc = vec![0.0; self.count(dims)];
        for ((t, c, i, j), &v) in w.indexed_iter() {
            acc[self.slice_of(dims, [t, c, i, j])] += f(f64::from(v));
        }
        acc
    }

    /// Element-wise combination of two same-shape arrays aggregated per slice:
    /// `Σ_{e ∈ slice} f(a_e, b_e)`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `a` and `b` differ in shape.
    pub fn aggregate2(
        &self,
        a: &Array4<f32>,
        b: &Array4<f32>,
        f: impl Fn(f64, f64) -> f64,
    ) -> Result<Vec<f64>> {
        if a.shape() != b.shape() {
            return Err(Error::shape(
                "second per-weight array",
                format!("{:?}", a.shape()),
                format!("{:?}", b.shape()),
            ));
        }
        let dims = dims_of(a);
        let mut acc = vec![0.0; self.count(dims)];
        for ((t, c, i, j), &v) in a.indexed_iter() {
            acc[self.slice_of(dims, [t, c, i, j])] += f(f64::from(v), f64::from(b[[t, c, i, j]]));
        }
        Ok(acc)
    }

    /// The kernel with the listed slices set to zero.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a slice index beyond
    /// [`Slicing::count`].
    pub fn zero_slices(&self, w: &Conv4d, slices: &[usize]) -> Result<Conv4d> {
        let dims = w.dims();
        let n = self.count(dims);
        let mut drop = vec![false; n];
        for &s in slices {
            if s >= n {
                return Err(Error::param(
                    format!("{} slice index", self.name()),
                    s,
                    format!("< {n}"),
                ));
            }
            drop[s] = true;
        }
        let mut a = w.array().clone();
        for ((t, c, i, j), v) in a.indexed_iter_mut() {
            if drop[self.slice_of(dims, [t, c, i, j])] {
                *v = 0.0;
            }
        }
        Conv4d::new(a)
    }
}

/// `[T, C, kh, kw]` of an OIHW array.
pub(crate) fn dims_of(w: &Array4<f32>) -> [usize; 4] {
    let s = w.shape();
    [s[0], s[1], s[2], s[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slicing_partitions_the_kernel() {
        let dims = [3, 4, 2, 5];
        for s in Slicing::ALL {
            let w = Array4::<f32>::ones(dims);
            let sums = s.aggregate(&w, |v| v);
            assert_eq!(sums.len(), s.count(dims));
            let per = (3 * 4 * 2 * 5) as f64 / s.count(dims) as f64;
            assert!(sums.iter().all(|&v| v == per), "{s:?}");
        }
        assert_eq!(Slicing::Groupwise.slice_of(dims, [2, 1, 1, 3]), 13 + 5);
    }

    #[test]
    fn zero_slices_zeroes_only_those() {
        let w = Conv4d::new(Array4::ones((2, 3, 3, 3))).unwrap();
        let z = Slicing::KernelTap.zero_slices(&w, &[0, 8]).unwrap();
        assert_eq!(z.array()[[1, 2, 0, 0]], 0.0);
        assert_eq!(z.array()[[1, 2, 2, 2]], 0.0);
        assert_eq!(z.array()[[1, 2, 1, 1]], 1.0);
        assert!(Slicing::Filter.zero_slices(&w, &[2]).is_err());
    }
}

//! Magnitude criterion, eq. (14): `Θ(w) = |w|` (Han et al. \[72\] for single
//! weights, Wen et al. \[18\] for groups), aggregated over each slice by an L1
//! or L2 norm.

use hasten_core::Conv4d;

use crate::slice::Slicing;

/// How the magnitudes of a slice are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Norm {
    /// `Σ |w|`.
    L1,
    /// `sqrt(Σ w²)`.
    L2,
}

/// One score per slice of `weight`: the slice's L1 or L2 norm (eq. (14)).
///
/// ```
/// use hasten_core::Conv4d;
/// use hasten_prune::criteria::{magnitude, Norm};
/// use hasten_prune::Slicing;
///
/// // Filter 0 holds 3 and −4, filter 1 holds 1.
/// let w = Conv4d::new(ndarray::Array4::from_shape_vec((2, 1, 1, 2), vec![3.0, -4.0, 0.0, 1.0])?)?;
/// assert_eq!(magnitude(&w, Slicing::Filter, Norm::L2), [5.0, 1.0]);
/// assert_eq!(magnitude(&w, Slicing::Filter, Norm::L1), [7.0, 1.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn magnitude(weight: &Conv4d, slicing: Slicing, norm: Norm) -> Vec<f64> {
    match norm {
        Norm::L1 => slicing.aggregate(weight.array(), f64::abs),
        Norm::L2 => slicing
            .aggregate(weight.array(), |v| v * v)
            .into_iter()
            .map(f64::sqrt)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn filter_norms_by_hand() {
        let mut w = Array4::<f32>::zeros((2, 1, 1, 2));
        w[[0, 0, 0, 0]] = 3.0;
        w[[0, 0, 0, 1]] = -4.0;
        w[[1, 0, 0, 1]] = 1.0;
        let w = Conv4d::new(w).unwrap();
        assert_eq!(magnitude(&w, Slicing::Filter, Norm::L1), vec![7.0, 1.0]);
        assert_eq!(magnitude(&w, Slicing::Filter, Norm::L2), vec![5.0, 1.0]);
        assert_eq!(magnitude(&w, Slicing::KernelTap, Norm::L1), vec![3.0, 5.0]);
    }
}

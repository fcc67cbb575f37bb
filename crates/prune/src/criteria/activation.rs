//! Activation criterion, eq. (15): `Θ(a) = Σ_i a_i²`, the energy of each
//! channel's activations (survey section 6.2).

use hasten_core::Result;
use ndarray::{Array4, Axis};

use super::check_acts;

/// Per channel of an NCHW activation batch: `(1/N) Σ_{n,y,x} a²`
/// (eq. (15) averaged over the `N` samples).
///
/// # Errors
/// [`Error::EmptyDimension`](hasten_core::Error::EmptyDimension) for an empty
/// batch and [`Error::NonFinite`](hasten_core::Error::NonFinite) for a NaN or
/// infinite activation.
///
/// ```
/// use hasten_core::ndarray::Array4;
/// use hasten_prune::criteria::activation_energy;
///
/// // Two samples, two 1×1 channels: channel 0 sees 1 and 3, channel 1 sees 0 and 2.
/// let a = Array4::from_shape_vec((2, 2, 1, 1), vec![1.0, 0.0, 3.0, 2.0])?;
/// assert_eq!(activation_energy(&a)?, [5.0, 2.0]); // (1² + 3²)/2, (0² + 2²)/2
/// assert!(activation_energy(&Array4::zeros((0, 2, 1, 1))).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn activation_energy(acts: &Array4<f32>) -> Result<Vec<f64>> {
    check_acts("activations", acts)?;
    let n = acts.shape()[0] as f64;
    Ok(acts
        .axis_iter(Axis(1))
        .map(|ch| ch.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn energy_by_hand() {
        let a = Array::from_shape_vec((2, 2, 1, 1), vec![1.0, 0.0, 3.0, 2.0]).unwrap();
        assert_eq!(activation_energy(&a).unwrap(), vec![5.0, 2.0]);
        assert!(activation_energy(&Array4::zeros((0, 2, 1, 1))).is_err());
    }
}

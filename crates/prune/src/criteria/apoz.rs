//! Average Percentage of Zeros (APoZ), Hu et al. \[73\] (survey section 6.2):
//! after a ReLU, channels that are mostly zero contribute little.

use hasten_core::Result;
use ndarray::{Array4, Axis};

use super::check_acts;

/// Per channel: the fraction of exact zeros (or negatives, i.e. values a
/// ReLU would zero) over samples and positions, in `[0, 1]`.
///
/// # Errors
/// [`Error::EmptyDimension`](hasten_core::Error::EmptyDimension) for an empty
/// batch and [`Error::NonFinite`](hasten_core::Error::NonFinite) for a NaN or
/// infinite activation.
///
/// ```
/// use hasten_core::ndarray::Array4;
/// use hasten_prune::criteria::average_percentage_of_zeros;
///
/// // Channel 0: three of four values are zero; channel 1: one is negative.
/// let a = Array4::from_shape_vec((1, 2, 1, 4), vec![0., 1., 0., 0., 2., 3., -1., 4.])?;
/// assert_eq!(average_percentage_of_zeros(&a)?, [0.75, 0.25]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn average_percentage_of_zeros(acts: &Array4<f32>) -> Result<Vec<f64>> {
    check_acts("activations", acts)?;
    Ok(acts
        .axis_iter(Axis(1))
        .map(|ch| ch.iter().filter(|&&v| v <= 0.0).count() as f64 / ch.len() as f64)
        .collect())
}

/// Importance `1 − APoZ` (higher = more often active).
///
/// # Errors
/// Those of [`average_percentage_of_zeros`].
///
/// ```
/// use hasten_core::ndarray::Array4;
/// use hasten_prune::criteria::apoz_scores;
///
/// let a = Array4::from_shape_vec((1, 2, 1, 4), vec![0., 1., 0., 0., 2., 3., -1., 4.])?;
/// assert_eq!(apoz_scores(&a)?, [0.25, 0.75]);
/// let mut bad = a.clone();
/// bad[[0, 0, 0, 0]] = f32::NAN;
/// assert!(apoz_scores(&bad).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apoz_scores(acts: &Array4<f32>) -> Result<Vec<f64>> {
    Ok(average_percentage_of_zeros(acts)?
        .into_iter()
        .map(|z| 1.0 - z)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn apoz_by_hand() {
        let a = Array::from_shape_vec((1, 2, 1, 4), vec![0., 1., 0., 0., 2., 3., -1., 4.]).unwrap();
        assert_eq!(average_percentage_of_zeros(&a).unwrap(), vec![0.75, 0.25]);
        assert_eq!(apoz_scores(&a).unwrap(), vec![0.25, 0.75]);
    }
}

//! Average Percentage of Zeros (APoZ), Hu et al. \[73\] (survey section 6.2):
//! after a ReLU, channels that are mostly zero contribute little.

use hasten_core::Result;
use ndarray::{Array4, Axis};

use super::check_acts;

/// Per channel: the fraction of exact zeros (or negatives, i.e. values a
/// ReLU would zero) over samples and positions, in `[0, 1]`.
pub fn average_percentage_of_zeros(acts: &Array4<f32>) -> Result<Vec<f64>> {
    check_acts("activations", acts)?;
    Ok(acts
        .axis_iter(Axis(1))
        .map(|ch| ch.iter().filter(|&&v| v <= 0.0).count() as f64 / ch.len() as f64)
        .collect())
}

/// Importance `1 − APoZ` (higher = more often active).
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

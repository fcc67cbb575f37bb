//! Turning scores into a kept set: fraction → count, top-k, rounding to a
//! multiple, per-layer score normalisation.

use hasten_core::{Error, Result};

/// Checks a fraction to remove: finite and in `[0, 1)`.
pub fn check_fraction(name: &str, fraction: f64) -> Result<f64> {
    if !(fraction.is_finite() && (0.0..1.0).contains(&fraction)) {
        return Err(Error::param(name, fraction, "in [0, 1)"));
    }
    Ok(fraction)
}

/// Slices kept when removing `fraction ∈ [0, 1)` of `n`: `n − ⌊fraction·n⌋`, at least 1.
pub fn keep_count(n: usize, fraction: f64) -> Result<usize> {
    check_fraction("fraction to remove", fraction)?;
    if n == 0 {
        return Err(Error::param("slice count", 0, ">= 1"));
    }
    Ok((n - (fraction * n as f64).floor() as usize).max(1))
}

/// Rounds a kept count up to a multiple of `multiple` (≥ 1), capped at `n`.
pub fn round_up_to(kept: usize, multiple: usize, n: usize) -> Result<usize> {
    if multiple == 0 {
        return Err(Error::param("channel multiple", 0, ">= 1"));
    }
    Ok(kept
        .div_ceil(multiple)
        .saturating_mul(multiple)
        .min(n)
        .max(1))
}

/// Indices of the `k` highest scores, ascending (ties keep the lower index).
pub fn top_k(scores: &[f64], k: usize) -> Result<Vec<usize>> {
    hasten_core::error::ensure_finite("scores", scores.iter())?;
    if k == 0 || k > scores.len() {
        return Err(Error::param(
            "kept count",
            k,
            format!("1..={}", scores.len()),
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut keep = order[..k].to_vec();
    keep.sort_unstable();
    Ok(keep)
}

/// Scores divided by their L2 norm (Molchanov et al. \[71\]), so layers compare
/// in global pruning; an all-zero vector stays zero.
pub fn l2_normalise(scores: &[f64]) -> Vec<f64> {
    let norm = scores.iter().map(|s| s * s).sum::<f64>().sqrt();
    if norm > 0.0 {
        scores.iter().map(|s| s / norm).collect()
    } else {
        scores.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_and_top_k() {
        assert_eq!(keep_count(10, 0.25).unwrap(), 8);
        assert_eq!(keep_count(3, 0.99).unwrap(), 1);
        assert!(keep_count(10, 1.0).is_err());
        assert!(keep_count(10, -0.1).is_err());
        assert!(keep_count(10, f64::NAN).is_err());
        assert_eq!(round_up_to(9, 8, 20).unwrap(), 16);
        assert_eq!(round_up_to(9, 8, 12).unwrap(), 12);
        assert_eq!(top_k(&[0.1, 3.0, 2.0, 3.0], 2).unwrap(), vec![1, 3]);
        assert!(top_k(&[1.0], 2).is_err());
        assert_eq!(l2_normalise(&[3.0, 4.0]), vec![0.6, 0.8]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn keep_count_never_panics(n in 0usize..1000, f in -2.0f64..2.0) {
            let r = keep_count(n, f);
            prop_assert_eq!(r.is_ok(), n > 0 && (0.0..1.0).contains(&f));
            if let Ok(k) = r { prop_assert!(k >= 1 && k <= n); }
        }
    }
}

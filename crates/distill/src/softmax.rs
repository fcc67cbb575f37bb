//! Numerically stable softmax and log-softmax at temperature τ — equation (19)
//! of the survey (Hinton et al. \[80\]):
//!
//! `p_i = exp(z_i/τ) / Σ_j exp(z_j/τ)`.
//!
//! Each row is shifted by its maximum before exponentiation (log-sum-exp), so
//! no `exp` overflows: `log p_i = (z_i − m)/τ − log Σ_j exp((z_j − m)/τ)` with
//! `m = max_j z_j`; the largest exponent is exactly `0`. Logits are
//! `[batch, classes]`.

use hasten_core::Result;
use ndarray::{Array2, ArrayView2, Axis, Zip};

use crate::{validate, Real};

/// Row-wise `log softmax(z/τ)` of `[batch, classes]` logits.
///
/// # Errors
/// [`Error::EmptyDimension`](hasten_core::Error::EmptyDimension) or
/// [`Error::NonFinite`](hasten_core::Error::NonFinite) for empty or
/// non-finite logits, and
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for a
/// temperature `τ` that is not finite and > 0.
///
/// ```
/// use hasten_distill::log_softmax;
/// use ndarray::array;
///
/// // Equal logits: every class has log-probability −ln 2.
/// let l = log_softmax(array![[1.0_f64, 1.0]].view(), 3.0)?;
/// assert!(l.iter().all(|v| (v + 2f64.ln()).abs() < 1e-15));
/// assert!(log_softmax(array![[1.0_f64, 1.0]].view(), 0.0).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn log_softmax<F: Real>(logits: ArrayView2<F>, temperature: F) -> Result<Array2<F>> {
    validate::tensor("logits", &logits)?;
    validate::positive("temperature", temperature)?;
    Ok(log_softmax_unchecked(logits, temperature))
}

/// Row-wise `softmax(z/τ)` of `[batch, classes]` logits; each row sums to 1.
///
/// # Errors
/// As [`log_softmax`].
///
/// ```
/// use hasten_distill::softmax;
/// use ndarray::array;
///
/// // softmax((0, ln 3)) = (1/4, 3/4); τ = 2 halves the logits first.
/// let p = softmax(array![[0.0_f64, 3f64.ln()]].view(), 1.0)?;
/// assert!((p[[0, 0]] - 0.25).abs() < 1e-15 && (p[[0, 1]] - 0.75).abs() < 1e-15);
/// let q = softmax(array![[0.0_f64, 2.0 * 3f64.ln()]].view(), 2.0)?;
/// assert!((q[[0, 1]] - 0.75).abs() < 1e-15);
/// assert!(softmax(array![[f64::NAN]].view(), 1.0).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn softmax<F: Real>(logits: ArrayView2<F>, temperature: F) -> Result<Array2<F>> {
    Ok(log_softmax(logits, temperature)?.mapv_into(F::exp))
}

/// [`log_softmax`] on validated input.
pub(crate) fn log_softmax_unchecked<F: Real>(logits: ArrayView2<F>, temperature: F) -> Array2<F> {
    let mut out = logits.to_owned();
    for mut row in out.axis_iter_mut(Axis(0)) {
        let max = row.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
        row.mapv_inplace(|z| (z - max) / temperature);
        let lse = row.iter().fold(F::zero(), |s, &v| s + v.exp()).ln();
        row.mapv_inplace(|v| v - lse);
    }
    out
}

/// [`softmax`] on validated input.
pub(crate) fn softmax_unchecked<F: Real>(logits: ArrayView2<F>, temperature: F) -> Array2<F> {
    log_softmax_unchecked(logits, temperature).mapv_into(F::exp)
}

/// `Σ_j q_j (log q_j − log p_j)` per row (Kullback–Leibler divergence), with
/// `0 · log 0 = 0`. Summed term by term rather than as cross-entropy minus
/// entropy, which would cancel catastrophically when `p ≈ q` (high τ).
pub(crate) fn kl_rows<F: Real>(q: ArrayView2<F>, log_p: ArrayView2<F>) -> Vec<F> {
    q.rows()
        .into_iter()
        .zip(log_p.rows())
        .map(|(qr, lr)| {
            qr.iter()
                .zip(lr.iter())
                .filter(|(&qv, _)| qv > F::zero())
                .fold(F::zero(), |s, (&qv, &lv)| s + qv * (qv.ln() - lv))
        })
        .collect()
}

/// `−Σ_j q_j log p_j` per row, skipping `q_j = 0` (so `log p_j = −∞` where the
/// target has no mass contributes nothing).
pub(crate) fn cross_entropy_rows<F: Real>(q: ArrayView2<F>, log_p: ArrayView2<F>) -> Vec<F> {
    let mut out = vec![F::zero(); q.nrows()];
    Zip::from(&mut out[..])
        .and(q.rows())
        .and(log_p.rows())
        .for_each(|o, qr, lr| {
            *o = qr
                .iter()
                .zip(lr.iter())
                .filter(|(&qv, _)| qv > F::zero())
                .fold(F::zero(), |s, (&qv, &lv)| s - qv * lv);
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{Error, SeededRng};
    use ndarray::array;
    use proptest::prelude::*;

    #[test]
    fn matches_naive_formula_on_moderate_logits() {
        let mut rng = SeededRng::new(1);
        let z = rng.normal_array_f64((5, 7), 2.0);
        for &tau in &[0.5, 1.0, 3.0] {
            let p = softmax(z.view(), tau).unwrap();
            for (zr, pr) in z.rows().into_iter().zip(p.rows()) {
                let denom: f64 = zr.iter().map(|v| (v / tau).exp()).sum();
                for (zv, pv) in zr.iter().zip(pr.iter()) {
                    assert!((pv - (zv / tau).exp() / denom).abs() < 1e-14);
                }
            }
        }
    }

    #[test]
    fn rows_sum_to_one_and_are_shift_invariant() {
        let mut rng = SeededRng::new(2);
        let z = rng.normal_array_f64((6, 9), 5.0);
        let p = softmax(z.view(), 2.0).unwrap();
        for s in p.sum_axis(Axis(1)) {
            assert!((s - 1.0).abs() < 1e-14);
        }
        let shifted = &z + 1234.5;
        let q = softmax(shifted.view(), 2.0).unwrap();
        assert!(p.iter().zip(q.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let z = array![[1e4_f32, -1e4, 0.0], [-1e4, -1e4, -1e4]];
        let lp = log_softmax(z.view(), 1.0).unwrap();
        assert!(lp.iter().all(|v| v.is_finite()));
        assert_eq!(lp[[0, 0]], 0.0);
        // Exactly −2·10⁴ up to two f32 ulps at that magnitude (ulp ≈ 1.95e-3).
        assert!((lp[[0, 1]] + 2e4).abs() <= 4e-3);
        let p = softmax(z.view(), 0.01).unwrap();
        assert!(p.iter().all(|v| v.is_finite()));
        assert!((p[[1, 0]] - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_bad_temperature_and_non_finite_logits() {
        let z = array![[0.0_f64, 1.0]];
        for tau in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                softmax(z.view(), tau),
                Err(Error::InvalidParameter { .. })
            ));
        }
        let bad = array![[0.0_f64, f64::NAN]];
        assert!(matches!(
            log_softmax(bad.view(), 1.0),
            Err(Error::NonFinite { index: 1, .. })
        ));
        let empty = Array2::<f64>::zeros((0, 3));
        assert!(matches!(
            softmax(empty.view(), 1.0),
            Err(Error::EmptyDimension { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn never_panics_and_normalises(
            n in 0usize..4, c in 0usize..5,
            vals in proptest::collection::vec(prop_oneof![
                8 => -1e30f64..1e30, 1 => Just(f64::NAN), 1 => Just(f64::NEG_INFINITY)], 20),
            tau in prop_oneof![-2.0f64..10.0, Just(0.0), Just(f64::NAN), Just(1e-300)],
        ) {
            let z = Array2::from_shape_fn((n, c), |(i, j)| vals[(i * c + j) % 20]);
            let valid = n > 0 && c > 0 && tau > 0.0
                && z.iter().all(|v| v.is_finite());
            match softmax(z.view(), tau) {
                Ok(p) => {
                    prop_assert!(valid);
                    for s in p.sum_axis(Axis(1)) {
                        prop_assert!((s - 1.0).abs() < 1e-12);
                    }
                }
                Err(_) => prop_assert!(!valid),
            }
        }
    }
}

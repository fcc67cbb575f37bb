//! Distillation from an ensemble of teachers (Bucila, Caruana &
//! Niculescu-Mizil \[78\]; Zeng & Martinez \[79\]; survey §7).
//!
//! The target is the average of the teachers' probability vectors at
//! temperature τ, `q = (1/K) Σ_k softmax(z^{T_k}/τ)` — whole posterior vectors,
//! not argmax labels, as \[79\] stresses — and the student is trained with the
//! distillation loss (20) against `q` (see [`crate::kd`]). Averaging
//! probabilities (not logits) keeps `q` a distribution; each row sums to 1.
//! The gradient is that of [`crate::kd`]: `(p − onehot(y))/N + λ s (p^S_τ − q)/(τ N)`.

use hasten_core::{Error, Result};
use ndarray::{Array2, ArrayView2};

use crate::kd::{distillation_loss_with_targets, Distillation, DistillationConfig};
use crate::real::count;
use crate::softmax::softmax_unchecked;
use crate::{validate, Real};

/// `(1/K) Σ_k softmax(z^{T_k}/τ)` for `K ≥ 1` teachers' `[batch, classes]`
/// logits of one shape.
///
/// # Errors
/// No teacher, shapes differ, empty or non-finite logits, `τ` not
/// finite and > 0.
pub fn ensemble_soft_targets<F: Real>(
    teacher_logits: &[ArrayView2<F>],
    temperature: F,
) -> Result<Array2<F>> {
    validate::positive("temperature", temperature)?;
    let first = teacher_logits
        .first()
        .ok_or_else(|| Error::param("number of teachers", 0, "at least 1"))?;
    let mut sum = Array2::zeros(first.raw_dim());
    for (k, z) in teacher_logits.iter().enumerate() {
        validate::same_shape(&format!("teacher {k} logits"), first.shape(), z.shape())?;
        validate::tensor(&format!("teacher {k} logits"), z)?;
        sum.zip_mut_with(&softmax_unchecked(z.view(), temperature), |s, &p| {
            *s = *s + p
        });
    }
    let k = count::<F>(teacher_logits.len());
    Ok(sum.mapv_into(|s| s / k))
}

/// Loss (20) of a student against the averaged soft targets of an ensemble;
/// see [`ensemble_soft_targets`] and [`distillation_loss_with_targets`].
///
/// # Errors
/// Those of both.
pub fn ensemble_distillation_loss<F: Real>(
    student_logits: ArrayView2<F>,
    teacher_logits: &[ArrayView2<F>],
    labels: Option<&[usize]>,
    config: &DistillationConfig<F>,
) -> Result<Distillation<F>> {
    let targets = ensemble_soft_targets(teacher_logits, config.temperature())?;
    distillation_loss_with_targets(student_logits, targets.view(), labels, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad_check::assert_grad;
    use crate::kd::distillation_loss;
    use crate::softmax::softmax;
    use hasten_core::SeededRng;
    use ndarray::{array, Axis};
    use proptest::prelude::*;

    #[test]
    fn targets_are_the_mean_distribution() {
        let mut rng = SeededRng::new(20);
        let ts: Vec<_> = (0..3).map(|_| rng.normal_array_f64((4, 6), 2.0)).collect();
        let views: Vec<_> = ts.iter().map(|t| t.view()).collect();
        let q = ensemble_soft_targets(&views, 2.0).unwrap();
        let manual = ts
            .iter()
            .map(|t| softmax(t.view(), 2.0).unwrap())
            .fold(Array2::<f64>::zeros((4, 6)), |a, p| a + p)
            / 3.0;
        assert!(q
            .iter()
            .zip(manual.iter())
            .all(|(a, b): (&f64, &f64)| (a - b).abs() < 1e-15));
        for s in q.sum_axis(Axis(1)) {
            assert!((s - 1.0).abs() < 1e-14);
        }
    }

    #[test]
    fn one_teacher_is_plain_distillation() {
        let mut rng = SeededRng::new(21);
        let zs = rng.normal_array_f64((3, 5), 1.0);
        let zt = rng.normal_array_f64((3, 5), 1.0);
        let cfg = DistillationConfig::new(3.0, 0.5).unwrap();
        let a =
            ensemble_distillation_loss(zs.view(), &[zt.view()], Some(&[0, 4, 2]), &cfg).unwrap();
        let b = distillation_loss(zs.view(), zt.view(), Some(&[0, 4, 2]), &cfg).unwrap();
        assert!((a.loss.value - b.loss.value).abs() < 1e-14);
        assert!(a
            .loss
            .grad
            .iter()
            .zip(b.loss.grad.iter())
            .all(|(x, y)| (x - y).abs() < 1e-15));
    }

    #[test]
    fn gradient_matches_finite_differences_and_vanishes_at_the_mean() {
        let mut rng = SeededRng::new(22);
        let ts: Vec<_> = (0..4).map(|_| rng.normal_array_f64((3, 7), 2.5)).collect();
        let views: Vec<_> = ts.iter().map(|t| t.view()).collect();
        let zs = rng.normal_array_f64((3, 7), 1.0);
        let cfg = DistillationConfig::new(2.0, 1.5).unwrap();
        let y = [6, 0, 3];
        let out = ensemble_distillation_loss(zs.view(), &views, Some(&y), &cfg).unwrap();
        assert_grad("ensemble", &zs, &out.loss.grad, |x| {
            ensemble_distillation_loss(x.view(), &views, Some(&y), &cfg)
                .unwrap()
                .loss
                .value
        });
        // Student logits τ·log q reproduce q exactly: the soft gradient is zero.
        let q = ensemble_soft_targets(&views, 2.0).unwrap();
        let at_q = q.mapv(|v| 2.0 * v.ln());
        let opt = ensemble_distillation_loss(at_q.view(), &views, None, &cfg).unwrap();
        assert!(opt.loss.grad.iter().all(|g| g.abs() < 1e-14));
    }

    #[test]
    fn typed_errors() {
        let a = array![[0.0_f64, 1.0]];
        let b = array![[0.0_f64, 1.0, 2.0]];
        assert!(matches!(
            ensemble_soft_targets::<f64>(&[], 1.0),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            ensemble_soft_targets(&[a.view(), b.view()], 1.0),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(ensemble_soft_targets(&[a.view()], 0.0).is_err());
        let cfg = DistillationConfig::new(1.0, 1.0).unwrap();
        assert!(matches!(
            ensemble_distillation_loss(b.view(), &[a.view()], None, &cfg),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn never_panics(
            k in 0usize..4, n in 1usize..3, c in 1usize..4, odd in 0usize..5,
            vals in proptest::collection::vec(prop_oneof![
                9 => -1e4f64..1e4, 1 => Just(f64::NAN)], 12),
            tau in -1.0f64..20.0,
        ) {
            let ts: Vec<Array2<f64>> = (0..k).map(|t| {
                let cc = if t == odd { c + 1 } else { c };
                Array2::from_shape_fn((n, cc), |(i, j)| vals[(t + i * cc + j) % 12])
            }).collect();
            let views: Vec<_> = ts.iter().map(|t| t.view()).collect();
            let valid = k > 0 && tau > 0.0 && (odd >= k || k == 1)
                && ts.iter().all(|t| t.iter().all(|v| v.is_finite()));
            match ensemble_soft_targets(&views, tau) {
                Ok(q) => {
                    prop_assert!(valid);
                    for s in q.sum_axis(Axis(1)) { prop_assert!((s - 1.0).abs() < 1e-12); }
                }
                Err(_) => prop_assert!(!valid),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn ensemble_loss_never_panics(
            k in 0usize..3, n in 0usize..3, ns in 0usize..3, c in 1usize..4,
            vals in proptest::collection::vec(prop_oneof![
                9 => -1e4f32..1e4, 1 => Just(f32::INFINITY)], 12),
            labels in proptest::collection::vec(0usize..5, 0..4),
        ) {
            let ts: Vec<Array2<f32>> = (0..k)
                .map(|t| Array2::from_shape_fn((n, c), |(i, j)| vals[(t + i * c + j) % 12]))
                .collect();
            let views: Vec<_> = ts.iter().map(|t| t.view()).collect();
            let zs = Array2::from_shape_fn((ns, c), |(i, j)| vals[(3 + i + j) % 12]);
            let cfg = DistillationConfig::new(3.0f32, 1.0).unwrap();
            let valid = k > 0 && n > 0 && ns == n
                && ts.iter().chain(std::iter::once(&zs)).all(|t| t.iter().all(|v| v.is_finite()))
                && labels.len() == n && labels.iter().all(|&y| y < c);
            let res = ensemble_distillation_loss(zs.view(), &views, Some(&labels), &cfg);
            if !valid { prop_assert!(res.is_err()); }
            if let Ok(out) = res { prop_assert!(out.loss.value.is_finite()); }
        }
    }
}

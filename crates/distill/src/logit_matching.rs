//! Logit matching (Li, Zhao, Huang & Gong \[81\]; Ba & Caruana), the
//! high-temperature limit of distillation (survey §7, after eq. (20)):
//!
//! `L = (1/(2N)) Σ_n ‖P (z^S_n − z^T_n)‖²`,  `∂L/∂z^S = (1/N) P (z^S − z^T)`,
//!
//! with `P = I − 11ᵀ/C` the centring projection, i.e. the squared distance of
//! the *zero-mean* logits (softmax cannot see a per-sample constant, so neither
//! does this loss).
//!
//! **The limit, exactly.** Write `w = P z`. Expanding
//! `softmax(z/τ)_i = (1/C)[1 + w_i/τ + (w_i² − ‖w‖²/C)/(2τ²)] + O(τ⁻³)`, the
//! τ²-scaled soft-term gradient of [`crate::kd`] (batch mean) is
//!
//! `τ (p^S_τ − p^T_τ)/N = (1/(C N)) P (z^S − z^T) + c₁/τ + O(τ⁻²)`,
//! `c₁ = (1/(2CN)) [(w_S² − w_T²) − (‖w_S‖² − ‖w_T‖²)/C]` (squares elementwise),
//!
//! so it converges to `∇L / C` at rate `O(1/τ)`, and `τ² KL(p^T_τ ‖ p^S_τ)`
//! converges to `L / C`. The constant `1/C` is the only difference between
//! distillation at high temperature and logit matching.

use hasten_core::Result;
use ndarray::{Array2, ArrayView2, Axis};

use crate::real::count;
use crate::{validate, LossGrad, Real};

/// `(1/(2N)) Σ_n ‖P (z^S_n − z^T_n)‖²` and its gradient `(1/N) P (z^S − z^T)`
/// for `[batch, classes]` logits.
///
/// # Errors
/// Shapes differ, empty or non-finite logits, overflow of the squared
/// distance.
///
/// ```
/// use hasten_distill::logit_matching_loss;
/// use ndarray::array;
///
/// // z^S − z^T = (1, 2) centres to (−½, ½): L = ½·½ = ¼, gradient (−½, ½).
/// let out = logit_matching_loss(array![[1.0_f64, 2.0]].view(), array![[0.0, 0.0]].view())?;
/// assert!((out.value - 0.25).abs() < 1e-15);
/// assert_eq!(out.grad, array![[-0.5, 0.5]]);
/// // A per-sample constant is invisible, as it is to softmax.
/// assert_eq!(logit_matching_loss(array![[5.0_f64, 5.0]].view(), array![[0.0, 0.0]].view())?.value, 0.0);
/// assert!(logit_matching_loss(array![[1.0_f64]].view(), array![[0.0, 0.0]].view()).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn logit_matching_loss<F: Real>(
    student_logits: ArrayView2<F>,
    teacher_logits: ArrayView2<F>,
) -> Result<LossGrad<F>> {
    validate::tensor("student logits", &student_logits)?;
    validate::same_shape(
        "teacher logits",
        student_logits.shape(),
        teacher_logits.shape(),
    )?;
    validate::tensor("teacher logits", &teacher_logits)?;
    let n = count::<F>(student_logits.nrows());
    let c = count::<F>(student_logits.ncols());
    let mut d: Array2<F> = Array2::zeros(student_logits.raw_dim());
    ndarray::Zip::from(&mut d)
        .and(student_logits)
        .and(teacher_logits)
        .for_each(|d, &s, &t| *d = s - t);
    for mut row in d.axis_iter_mut(Axis(0)) {
        let mean = row.iter().fold(F::zero(), |a, &b| a + b) / c;
        row.mapv_inplace(|v| v - mean);
    }
    let half = F::one() / (F::one() + F::one());
    let value = d.iter().fold(F::zero(), |a, &b| a + b * b) * half / n;
    validate::finite_output(
        "logit_matching_loss",
        LossGrad::new(value, d.mapv_into(|v| v / n)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad_check::assert_grad;
    use crate::kd::{distillation_loss, DistillationConfig, SoftTargetDivergence};
    use hasten_core::{Error, SeededRng};
    use ndarray::array;
    use proptest::prelude::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = SeededRng::new(30);
        let zs = rng.normal_array_f64((4, 6), 2.0);
        let zt = rng.normal_array_f64((4, 6), 2.0);
        let out = logit_matching_loss(zs.view(), zt.view()).unwrap();
        assert_grad("logit matching", &zs, &out.grad, |x| {
            logit_matching_loss(x.view(), zt.view()).unwrap().value
        });
    }

    #[test]
    fn ignores_per_sample_offsets() {
        let zs = array![[1.0_f64, 2.0, 3.0]];
        let zt = array![[11.0_f64, 12.0, 13.0]];
        let out = logit_matching_loss(zs.view(), zt.view()).unwrap();
        assert_eq!(out.value, 0.0);
        let zt = array![[0.0_f64, 0.0, 3.0]];
        // d = [1, 2, 0] → centred [0, 1, −1], ½‖·‖² = 1.
        let out = logit_matching_loss(zs.view(), zt.view()).unwrap();
        assert!((out.value - 1.0).abs() < 1e-15);
        assert!((out.grad[[0, 1]] - 1.0).abs() < 1e-15);
    }

    /// The τ²-scaled KD gradient converges to ∇L/C with the first-order error
    /// `c₁/τ` derived in the module docs; the remainder is `O(τ⁻²)`.
    #[test]
    fn distillation_converges_to_logit_matching_at_high_temperature() {
        let mut rng = SeededRng::new(31);
        let (n, c) = (3, 5);
        let zs = rng.normal_array_f64((n, c), 1.5);
        let zt = rng.normal_array_f64((n, c), 1.5);
        let lm = logit_matching_loss(zs.view(), zt.view()).unwrap();
        let (nf, cf) = (n as f64, c as f64);
        let limit = &lm.grad / cf;
        let centre = |z: &Array2<f64>| {
            let m = z.mean_axis(Axis(1)).unwrap().insert_axis(Axis(1));
            z - &m
        };
        let (ws, wt) = (centre(&zs), centre(&zt));
        let sq = |w: &Array2<f64>| w.mapv(|v| v * v).sum_axis(Axis(1)).insert_axis(Axis(1));
        let c1 = ((ws.mapv(|v| v * v) - wt.mapv(|v| v * v)) - (sq(&ws) - sq(&wt)) / cf)
            / (2.0 * cf * nf);
        let norm = |a: &Array2<f64>| a.mapv(|v| v * v).sum().sqrt();
        let mut prev: Option<(f64, f64)> = None;
        for tau in [1e2, 1e3, 1e4] {
            let cfg = DistillationConfig::new(tau, 1.0)
                .unwrap()
                .with_divergence(SoftTargetDivergence::KullbackLeibler);
            let kd = distillation_loss(zs.view(), zt.view(), None, &cfg).unwrap();
            let first_order = norm(&(&kd.loss.grad - &limit)) / norm(&limit);
            let remainder = norm(&((&kd.loss.grad - &limit) * tau - &c1)) / norm(&c1);
            let value_err = (kd.soft - lm.value / cf).abs() / (lm.value / cf);
            assert!(first_order < 2.0 / tau, "τ={tau}: {first_order}");
            assert!(remainder < 5.0 / tau, "τ={tau}: {remainder}");
            assert!(value_err < 5.0 / tau, "τ={tau}: {value_err}");
            if let Some((p_first, p_rem)) = prev {
                // One decade of τ: the gradient error drops tenfold and the
                // remainder after c₁/τ as well (it is O(τ⁻²) before × τ).
                assert!((5.0..20.0).contains(&(p_first / first_order)));
                assert!((5.0..20.0).contains(&(p_rem / remainder)));
            }
            prev = Some((first_order, remainder));
        }
    }

    #[test]
    fn typed_errors() {
        let a = array![[0.0_f32, 1.0]];
        let b = array![[0.0_f32, 1.0, 2.0]];
        assert!(matches!(
            logit_matching_loss(a.view(), b.view()),
            Err(Error::ShapeMismatch { .. })
        ));
        let nan = array![[0.0_f32, f32::NAN]];
        assert!(matches!(
            logit_matching_loss(a.view(), nan.view()),
            Err(Error::NonFinite { .. })
        ));
        let huge = array![[3e38_f32, -3e38]];
        assert!(matches!(
            logit_matching_loss(huge.view(), a.view()),
            Err(Error::Numerical { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn never_panics(
            n in 0usize..3, c in 0usize..4, nt in 0usize..3, ct in 0usize..4,
            vals in proptest::collection::vec(prop_oneof![
                9 => -1e4f32..1e4, 1 => Just(f32::NEG_INFINITY)], 12),
        ) {
            let zs = Array2::from_shape_fn((n, c), |(i, j)| vals[(i * c + j) % 12]);
            let zt = Array2::from_shape_fn((nt, ct), |(i, j)| vals[(5 + i * ct + j) % 12]);
            let valid = n > 0 && c > 0 && (n, c) == (nt, ct)
                && zs.iter().chain(zt.iter()).all(|v| v.is_finite());
            let res = logit_matching_loss(zs.view(), zt.view());
            prop_assert_eq!(res.is_ok(), valid);
        }
    }
}

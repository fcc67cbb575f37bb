//! Knowledge distillation with soft targets — equation (20) of the survey
//! (Hinton, Vinyals & Dean \[80\]):
//!
//! `L = H(p^y, p^S) + λ · s · D(p^T_τ ‖ p^S_τ)`,
//!
//! where `p_τ = softmax(z/τ)` (equation (19), see [`mod@crate::softmax`]), the
//! hard-label term `H(p^y, p^S) = −log p^S_y` uses the student's logits at
//! temperature 1 (as Hinton et al. prescribe), and `s = τ²` when
//! [`DistillationConfig::with_tau_squared`] is on (the default), else `s = 1`.
//!
//! **Direction of the cross-entropy.** The survey writes `H(p^S, q^T)`; what is
//! implemented is the standard distillation term, the cross-entropy of the
//! student's softened distribution *against* the teacher's soft targets,
//! `H(p^T_τ, p^S_τ) = −Σ_i p^T_i log p^S_i` (targets weight the student's
//! log-probabilities). It equals `KL(p^T_τ ‖ p^S_τ) + H(p^T_τ)`: the teacher
//! entropy does not depend on the student, so both have the same gradient
//! `∂/∂z^S = (p^S_τ − p^T_τ)/τ`, which vanishes exactly when the softened
//! distributions agree. [`SoftTargetDivergence`] selects which value is
//! reported (the KL form is `0` at the optimum).
//!
//! **Why τ².** The soft-term gradient carries a factor `1/τ` and, for large τ,
//! `p^S_τ − p^T_τ = O(1/τ)` as well, so it shrinks as `1/τ²`. Multiplying by
//! τ² keeps the relative contribution of hard and soft targets roughly
//! unchanged when the temperature is tuned (Hinton et al. \[80\], §2).
//!
//! **Reduction.** Batch mean ("batchmean"): summed over classes, divided by the
//! batch size `N`. With `p = softmax(z^S)`, the gradient w.r.t. the student
//! logits is `(p − onehot(y))/N + λ s (p^S_τ − q)/(τ N)`.

use hasten_core::{Error, Result};
use ndarray::{ArrayView2, Axis, Zip};

use crate::real::count;
use crate::softmax::{cross_entropy_rows, kl_rows, log_softmax_unchecked, softmax_unchecked};
use crate::{validate, LossGrad, Real};

/// Which value of the soft term is reported (the gradient is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SoftTargetDivergence {
    /// `H(q, p^S_τ) = −Σ q_i log p^S_i` — the survey's cross-entropy, eq. (20).
    #[default]
    CrossEntropy,
    /// `KL(q ‖ p^S_τ) = Σ q_i (log q_i − log p^S_i)`, which is 0 at the optimum
    /// (PyTorch's `kl_div(..., reduction="batchmean")`).
    KullbackLeibler,
}

/// Parameters of the distillation loss (20).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistillationConfig<F: Real> {
    temperature: F,
    lambda: F,
    tau_squared: bool,
    divergence: SoftTargetDivergence,
}

impl<F: Real> DistillationConfig<F> {
    /// Temperature `τ > 0` and soft-term weight `λ ≥ 0`; τ² scaling on,
    /// cross-entropy reported.
    pub fn new(temperature: F, lambda: F) -> Result<Self> {
        validate::positive("temperature", temperature)?;
        validate::non_negative("lambda", lambda)?;
        Ok(Self {
            temperature,
            lambda,
            tau_squared: true,
            divergence: SoftTargetDivergence::CrossEntropy,
        })
    }

    /// Turns the τ² scaling of the soft term (Hinton et al. \[80\]) on or off.
    pub fn with_tau_squared(mut self, on: bool) -> Self {
        self.tau_squared = on;
        self
    }

    /// Chooses the reported soft-term value (cross-entropy or KL).
    pub fn with_divergence(mut self, divergence: SoftTargetDivergence) -> Self {
        self.divergence = divergence;
        self
    }

    /// The temperature τ.
    pub fn temperature(&self) -> F {
        self.temperature
    }

    /// The soft-term weight λ.
    pub fn lambda(&self) -> F {
        self.lambda
    }

    /// Whether the soft term is multiplied by τ².
    pub fn tau_squared(&self) -> bool {
        self.tau_squared
    }

    /// The reported soft-term value.
    pub fn divergence(&self) -> SoftTargetDivergence {
        self.divergence
    }

    /// The factor `s` applied to the soft term: τ² or 1.
    pub fn soft_scale(&self) -> F {
        if self.tau_squared {
            self.temperature * self.temperature
        } else {
            F::one()
        }
    }
}

/// The distillation loss with its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Distillation<F: Real> {
    /// Total `hard + λ·soft` and its gradient w.r.t. the student logits.
    pub loss: LossGrad<F>,
    /// The hard-label cross-entropy (batch mean), if labels were given.
    pub hard: Option<F>,
    /// The soft term `s · D(q ‖ p^S_τ)` (batch mean, before λ).
    pub soft: F,
}

/// Hard-label cross-entropy `−(1/N) Σ_n log softmax(z_n)_{y_n}` (temperature
/// 1) and its gradient `(softmax(z) − onehot(y))/N`.
///
/// # Errors
/// Empty or non-finite logits, `labels.len() ≠ N`, a label `≥ C`.
///
/// ```
/// use hasten_distill::hard_label_loss;
/// use ndarray::array;
///
/// // Uniform logits over 4 classes: loss ln 4, gradient softmax − onehot.
/// let out = hard_label_loss(array![[0.0_f64, 0.0, 0.0, 0.0]].view(), &[0])?;
/// assert!((out.value - 4f64.ln()).abs() < 1e-15);
/// assert_eq!(out.grad, array![[-0.75, 0.25, 0.25, 0.25]]);
/// assert!(hard_label_loss(array![[0.0_f64, 0.0]].view(), &[2]).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn hard_label_loss<F: Real>(
    student_logits: ArrayView2<F>,
    labels: &[usize],
) -> Result<LossGrad<F>> {
    validate::tensor("student logits", &student_logits)?;
    check_labels(labels, student_logits.dim())?;
    validate::finite_output("hard_label_loss", hard_unchecked(student_logits, labels))
}

/// The soft term alone: `s · D(q ‖ softmax(z^S/τ))` (batch mean) and its
/// gradient `s (softmax(z^S/τ) − q)/(τ N)`, for given target probabilities
/// `q` (`[batch, classes]`, rows non-negative and summing to 1). λ is not
/// applied.
///
/// # Errors
/// Shapes differ, non-finite or empty input, a negative target, a target
/// row whose sum is not 1 (within `√ε`).
pub fn soft_target_loss<F: Real>(
    student_logits: ArrayView2<F>,
    targets: ArrayView2<F>,
    config: &DistillationConfig<F>,
) -> Result<LossGrad<F>> {
    validate::tensor("student logits", &student_logits)?;
    check_targets(targets, student_logits.shape())?;
    validate::finite_output(
        "soft_target_loss",
        soft_unchecked(student_logits, targets, config),
    )
}

/// Loss (20) against given soft targets `q` (e.g. precomputed teacher or
/// ensemble probabilities at temperature τ): `H(y, p^S) + λ s D(q ‖ p^S_τ)`;
/// without labels only the soft term is used (unlabelled transfer data).
///
/// # Errors
/// Those of [`hard_label_loss`] and [`soft_target_loss`].
pub fn distillation_loss_with_targets<F: Real>(
    student_logits: ArrayView2<F>,
    targets: ArrayView2<F>,
    labels: Option<&[usize]>,
    config: &DistillationConfig<F>,
) -> Result<Distillation<F>> {
    validate::tensor("student logits", &student_logits)?;
    check_targets(targets, student_logits.shape())?;
    if let Some(labels) = labels {
        check_labels(labels, student_logits.dim())?;
    }
    combine(student_logits, targets, labels, config)
}

/// Loss (20) with a teacher's logits: targets are `softmax(z^T/τ)`.
///
/// ```
/// use hasten_distill::{distillation_loss, DistillationConfig};
/// use ndarray::array;
///
/// let z = array![[3.0_f64, -1.0, 0.5]];
/// let cfg = DistillationConfig::new(2.0, 1.0)?;
/// // Student equal to teacher: the soft-term gradient vanishes.
/// let out = distillation_loss(z.view(), z.view(), None, &cfg)?;
/// assert!(out.loss.grad.iter().all(|g| g.abs() < 1e-15));
/// # Ok::<(), hasten_core::Error>(())
/// ```
///
/// # Errors
/// Shapes differ, empty or non-finite logits, bad labels.
pub fn distillation_loss<F: Real>(
    student_logits: ArrayView2<F>,
    teacher_logits: ArrayView2<F>,
    labels: Option<&[usize]>,
    config: &DistillationConfig<F>,
) -> Result<Distillation<F>> {
    validate::tensor("student logits", &student_logits)?;
    validate::same_shape(
        "teacher logits",
        student_logits.shape(),
        teacher_logits.shape(),
    )?;
    validate::tensor("teacher logits", &teacher_logits)?;
    if let Some(labels) = labels {
        check_labels(labels, student_logits.dim())?;
    }
    let targets = softmax_unchecked(teacher_logits, config.temperature);
    combine(student_logits, targets.view(), labels, config)
}

/// `hard + λ soft` on validated input.
fn combine<F: Real>(
    student_logits: ArrayView2<F>,
    targets: ArrayView2<F>,
    labels: Option<&[usize]>,
    config: &DistillationConfig<F>,
) -> Result<Distillation<F>> {
    let soft = soft_unchecked(student_logits, targets, config);
    let soft_value = soft.value;
    let mut total = soft.scaled(config.lambda);
    let hard = labels.map(|labels| hard_unchecked(student_logits, labels));
    let hard_value = hard.as_ref().map(|h| h.value);
    if let Some(h) = hard {
        total.value = total.value + h.value;
        total.grad.zip_mut_with(&h.grad, |a, &b| *a = *a + b);
    }
    let loss = validate::finite_output("distillation_loss", total)?;
    Ok(Distillation {
        loss,
        hard: hard_value,
        soft: soft_value,
    })
}

fn hard_unchecked<F: Real>(z: ArrayView2<F>, labels: &[usize]) -> LossGrad<F> {
    let n = count::<F>(z.nrows());
    let log_p = log_softmax_unchecked(z, F::one());
    let mut value = F::zero();
    for (row, &y) in log_p.rows().into_iter().zip(labels) {
        value = value - row[y];
    }
    let mut grad = log_p.mapv_into(F::exp);
    for (mut row, &y) in grad.rows_mut().into_iter().zip(labels) {
        row[y] = row[y] - F::one();
    }
    grad.mapv_inplace(|g| g / n);
    LossGrad::new(value / n, grad)
}

fn soft_unchecked<F: Real>(
    z: ArrayView2<F>,
    q: ArrayView2<F>,
    config: &DistillationConfig<F>,
) -> LossGrad<F> {
    let tau = config.temperature;
    let s = config.soft_scale();
    let n = count::<F>(z.nrows());
    let log_p = log_softmax_unchecked(z, tau);
    let per_row = match config.divergence {
        SoftTargetDivergence::CrossEntropy => cross_entropy_rows(q, log_p.view()),
        SoftTargetDivergence::KullbackLeibler => kl_rows(q, log_p.view()),
    };
    let value = per_row.iter().fold(F::zero(), |a, &b| a + b) * s / n;
    let coef = s / (tau * n);
    let mut grad = log_p.mapv_into(F::exp);
    Zip::from(&mut grad)
        .and(q)
        .for_each(|g, &qv| *g = (*g - qv) * coef);
    LossGrad::new(value, grad)
}

/// One label per sample, each `< C`.
pub(crate) fn check_labels(labels: &[usize], (n, c): (usize, usize)) -> Result<()> {
    if labels.len() != n {
        return Err(Error::shape("labels (one per sample)", n, labels.len()));
    }
    if let Some((i, &y)) = labels.iter().enumerate().find(|(_, &y)| y >= c) {
        return Err(Error::param(
            format!("label of sample {i}"),
            y,
            format!("a class index < {c}"),
        ));
    }
    Ok(())
}

/// Targets: same shape as the logits, finite, non-negative, rows summing to 1.
pub(crate) fn check_targets<F: Real>(targets: ArrayView2<F>, shape: &[usize]) -> Result<()> {
    validate::same_shape("soft targets", shape, targets.shape())?;
    validate::tensor("soft targets", &targets)?;
    if let Some((i, &v)) = targets.iter().enumerate().find(|(_, &v)| v < F::zero()) {
        return Err(Error::param(
            format!("soft target at flat index {i}"),
            v,
            "a probability >= 0",
        ));
    }
    let tol = F::epsilon().sqrt();
    for (i, sum) in targets.sum_axis(Axis(1)).iter().enumerate() {
        if (*sum - F::one()).abs() > tol {
            return Err(Error::param(
                format!("sum of soft-target row {i}"),
                sum,
                format!("1 (within {tol})"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad_check::assert_grad;
    use crate::softmax::softmax;
    use hasten_core::SeededRng;
    use ndarray::{array, Array1, Array2};
    use proptest::prelude::*;

    fn labels(rng: &mut SeededRng, n: usize, c: usize) -> Vec<usize> {
        (0..n).map(|_| rng.below(c)).collect()
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = SeededRng::new(10);
        for (n, c, tau, lambda, sq) in [
            (4, 5, 1.0, 0.5, true),
            (3, 7, 4.0, 2.0, true),
            (5, 3, 0.5, 1.0, false),
            (2, 10, 20.0, 0.7, true),
        ] {
            let zs = rng.normal_array_f64((n, c), 2.0);
            let zt = rng.normal_array_f64((n, c), 3.0);
            let y = labels(&mut rng, n, c);
            for div in [
                SoftTargetDivergence::CrossEntropy,
                SoftTargetDivergence::KullbackLeibler,
            ] {
                let cfg = DistillationConfig::new(tau, lambda)
                    .unwrap()
                    .with_tau_squared(sq)
                    .with_divergence(div);
                let out = distillation_loss(zs.view(), zt.view(), Some(&y), &cfg).unwrap();
                assert_grad("distillation", &zs, &out.loss.grad, |x| {
                    distillation_loss(x.view(), zt.view(), Some(&y), &cfg)
                        .unwrap()
                        .loss
                        .value
                });
            }
        }
    }

    #[test]
    fn value_matches_direct_formula() {
        let zs = array![[1.0_f64, 2.0, 0.5], [0.0, -1.0, 1.0]];
        let zt = array![[2.0_f64, 0.0, 1.0], [1.0, 1.0, -2.0]];
        let (tau, lambda) = (3.0, 0.25);
        let y = [1, 2];
        let cfg = DistillationConfig::new(tau, lambda).unwrap();
        let out = distillation_loss(zs.view(), zt.view(), Some(&y), &cfg).unwrap();
        let sm = |z: &Array1<f64>, t: f64| {
            let e = z.mapv(|v| (v / t).exp());
            &e / e.sum()
        };
        let mut hard = 0.0;
        let mut soft = 0.0;
        for i in 0..2 {
            let ps1 = sm(&zs.row(i).to_owned(), 1.0);
            hard -= ps1[y[i]].ln();
            let ps = sm(&zs.row(i).to_owned(), tau);
            let pt = sm(&zt.row(i).to_owned(), tau);
            soft -= (&pt * &ps.mapv(f64::ln)).sum();
        }
        let (hard, soft) = (hard / 2.0, tau * tau * soft / 2.0);
        assert!((out.hard.unwrap() - hard).abs() < 1e-13);
        assert!((out.soft - soft).abs() < 1e-13);
        assert!((out.loss.value - (hard + lambda * soft)).abs() < 1e-13);
    }

    #[test]
    fn student_equal_to_teacher_is_the_minimum() {
        let mut rng = SeededRng::new(11);
        let z = rng.normal_array_f64((6, 8), 3.0);
        let cfg = DistillationConfig::new(2.5, 1.0).unwrap();
        let ce = distillation_loss(z.view(), z.view(), None, &cfg).unwrap();
        assert!(ce.loss.grad.iter().all(|g| g.abs() < 1e-15));
        // Cross-entropy at the optimum is the teacher entropy (times τ²) ...
        let q = softmax(z.view(), 2.5).unwrap();
        let entropy: f64 = -q.iter().map(|v| v * v.ln()).sum::<f64>() / 6.0 * 6.25;
        assert!((ce.soft - entropy).abs() < 1e-12);
        // ... and KL there is zero; both grow under a perturbation.
        let kl_cfg = cfg.with_divergence(SoftTargetDivergence::KullbackLeibler);
        let kl = distillation_loss(z.view(), z.view(), None, &kl_cfg).unwrap();
        assert!(kl.soft.abs() < 1e-13);
        // A per-row constant shift changes nothing (softmax invariance).
        let shifted = &z + &Array1::from_vec((0..6).map(f64::from).collect()).insert_axis(Axis(1));
        let sh = distillation_loss(shifted.view(), z.view(), None, &kl_cfg).unwrap();
        assert!(sh.soft.abs() < 1e-12 && sh.loss.grad.iter().all(|g| g.abs() < 1e-14));
        let moved = &z + &rng.normal_array_f64((6, 8), 0.1);
        let mv = distillation_loss(moved.view(), z.view(), None, &kl_cfg).unwrap();
        assert!(mv.soft > 1e-6);
        assert!(mv.loss.grad.iter().any(|g| g.abs() > 1e-6));
    }

    #[test]
    fn extreme_logits_give_finite_results() {
        let zs = array![[1e4_f32, -1e4, 0.0], [-1e4, 1e4, 1e4]];
        let zt = array![[-1e4_f32, 1e4, 5.0], [1e4, -1e4, 0.0]];
        for tau in [0.1_f32, 1.0, 10.0] {
            let cfg = DistillationConfig::new(tau, 1.0)
                .unwrap()
                .with_divergence(SoftTargetDivergence::KullbackLeibler);
            let out = distillation_loss(zs.view(), zt.view(), Some(&[1, 0]), &cfg).unwrap();
            assert!(out.loss.value.is_finite() && out.loss.value > 1e3);
            assert!(out.loss.grad.iter().all(|g| g.is_finite()));
        }
    }

    #[test]
    fn gradient_shrinks_as_inverse_tau_squared_without_scaling() {
        let mut rng = SeededRng::new(12);
        let zs = rng.normal_array_f64((3, 6), 1.0);
        let zt = rng.normal_array_f64((3, 6), 1.0);
        let norm = |tau: f64, sq: bool| {
            let cfg = DistillationConfig::new(tau, 1.0)
                .unwrap()
                .with_tau_squared(sq);
            let g = distillation_loss(zs.view(), zt.view(), None, &cfg)
                .unwrap()
                .loss
                .grad;
            g.iter().map(|v| v * v).sum::<f64>().sqrt()
        };
        let ratio = norm(100.0, false) / norm(200.0, false);
        assert!((ratio - 4.0).abs() < 0.05, "ratio {ratio}");
        let ratio = norm(100.0, true) / norm(200.0, true);
        assert!((ratio - 1.0).abs() < 0.02, "ratio {ratio}");
    }

    #[test]
    fn typed_errors_on_bad_input() {
        let z = array![[0.0_f64, 1.0, 2.0], [1.0, 0.0, 0.5]];
        let t3 = array![[0.0_f64, 1.0], [1.0, 0.0]];
        let cfg = DistillationConfig::new(2.0, 1.0).unwrap();
        assert!(matches!(
            distillation_loss(z.view(), t3.view(), None, &cfg),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            distillation_loss(z.view(), z.view(), Some(&[0]), &cfg),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            distillation_loss(z.view(), z.view(), Some(&[0, 3]), &cfg),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(DistillationConfig::new(0.0, 1.0).is_err());
        assert!(DistillationConfig::new(-1.0, 1.0).is_err());
        assert!(DistillationConfig::new(1.0, -0.1).is_err());
        assert!(DistillationConfig::new(f64::NAN, 1.0).is_err());
        let mut bad = z.clone();
        bad[[1, 1]] = f64::INFINITY;
        assert!(matches!(
            distillation_loss(z.view(), bad.view(), None, &cfg),
            Err(Error::NonFinite { index: 4, .. })
        ));
        let not_prob = array![[0.5_f64, 0.6, 0.0], [1.0, 0.0, 0.0]];
        assert!(soft_target_loss(z.view(), not_prob.view(), &cfg).is_err());
        let negative = array![[1.5_f64, -0.5, 0.0], [1.0, 0.0, 0.0]];
        assert!(soft_target_loss(z.view(), negative.view(), &cfg).is_err());
        assert!(hard_label_loss(z.view(), &[0, 2]).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn never_panics(
            n in 0usize..4, c in 0usize..5, nt in 0usize..4, ct in 0usize..5,
            vals in proptest::collection::vec(prop_oneof![
                8 => -1e4f32..1e4, 1 => Just(f32::NAN), 1 => Just(f32::INFINITY)], 20),
            labels in proptest::collection::vec(0usize..6, 0..5),
            use_labels in any::<bool>(),
            tau in prop_oneof![-1.0f32..50.0, Just(0.0)],
            lambda in -1.0f32..3.0,
        ) {
            let zs = Array2::from_shape_fn((n, c), |(i, j)| vals[(i * c + j) % 20]);
            let zt = Array2::from_shape_fn((nt, ct), |(i, j)| vals[(7 + i * ct + j) % 20]);
            let cfg = match DistillationConfig::new(tau, lambda) {
                Ok(cfg) => cfg,
                Err(_) => { prop_assert!(tau <= 0.0 || lambda < 0.0); return Ok(()); }
            };
            let lab = use_labels.then_some(&labels[..]);
            let valid = n > 0 && c > 0 && (n, c) == (nt, ct)
                && zs.iter().chain(zt.iter()).all(|v| v.is_finite())
                && lab.is_none_or(|l| l.len() == n && l.iter().all(|&y| y < c));
            let res = distillation_loss(zs.view(), zt.view(), lab, &cfg);
            if !valid { prop_assert!(res.is_err()); }
            if let Ok(out) = res {
                prop_assert!(out.loss.value.is_finite());
                prop_assert!(out.loss.grad.iter().all(|g| g.is_finite()));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn target_and_label_losses_never_panic(
            n in 0usize..4, c in 0usize..4, nt in 0usize..4,
            vals in proptest::collection::vec(prop_oneof![
                8 => -50.0f64..50.0, 1 => Just(f64::NAN)], 16),
            probs in proptest::collection::vec(prop_oneof![
                6 => 0.0f64..1.0, 1 => Just(-0.1), 1 => Just(f64::INFINITY)], 16),
            normalise in any::<bool>(),
            labels in proptest::collection::vec(0usize..5, 0..5),
        ) {
            let z = Array2::from_shape_fn((n, c), |(i, j)| vals[(i * c + j) % 16]);
            let mut q = Array2::from_shape_fn((nt, c), |(i, j)| probs[(i * c + j) % 16]);
            if normalise {
                for mut row in q.rows_mut() {
                    let s: f64 = row.sum();
                    if s > 0.0 && s.is_finite() { row.mapv_inplace(|v| v / s); }
                }
            }
            let cfg = DistillationConfig::new(2.0, 0.5).unwrap();
            let z_ok = n > 0 && c > 0 && z.iter().all(|v| v.is_finite());
            let q_ok = nt == n && q.iter().all(|&v| v.is_finite() && v >= 0.0)
                && q.rows().into_iter().all(|r| (r.sum() - 1.0).abs() <= f64::EPSILON.sqrt());
            let l_ok = labels.len() == n && labels.iter().all(|&y| y < c);
            prop_assert_eq!(soft_target_loss(z.view(), q.view(), &cfg).is_ok(), z_ok && q_ok);
            prop_assert_eq!(hard_label_loss(z.view(), &labels).is_ok(), z_ok && l_ok);
            prop_assert_eq!(
                distillation_loss_with_targets(z.view(), q.view(), Some(&labels), &cfg).is_ok(),
                z_ok && q_ok && l_ok
            );
        }
    }
}

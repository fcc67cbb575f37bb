//! Relational knowledge distillation (Park, Kim, Lu & Cho, CVPR 2019) —
//! beyond the survey; like §7's teacher–student losses it transfers the
//! teacher's knowledge, here the *relations* between the samples of a batch,
//! so student and teacher embeddings may have different dimensions.
//!
//! For embeddings `x_1..x_N` (`[batch, dim]`) and the Huber loss
//! `h_δ(r) = ½ r²` if `|r| ≤ δ`, else `δ (|r| − ½ δ)` (δ = 1 is the paper's
//! smooth-L1):
//!
//! - **Distance-wise.** `ψ_ij = d_ij / μ`, `d_ij = ‖x_i − x_j‖`, `μ` the mean of
//!   `d` over the `P = N(N−1)/2` pairs `i < j`;
//!   `L_D = (1/P) Σ_{i<j} h_δ(ψ^S_ij − ψ^T_ij)`. With `G_ij = h'_δ(r_ij)/P`,
//!   `∂L_D/∂d_ij = (G_ij − (1/P) Σ_kl G_kl ψ^S_kl)/μ_S` and
//!   `∂d_ij/∂x_i = (x_i − x_j)/d_ij = −∂d_ij/∂x_j` (subgradient 0 when `d_ij = 0`).
//! - **Angle-wise.** With unit vectors `e_ij = (x_i − x_j)/d_ij`,
//!   `ψ_ijk = ⟨e_ij, e_kj⟩` (the cosine of the angle at vertex `j`);
//!   `L_A = (1/T) Σ h_δ(ψ^S_ijk − ψ^T_ijk)` over the `T = N(N−1)(N−2)` ordered
//!   triplets of distinct samples. Per vertex, `∂L_A/∂e_ij = 2 Σ_k G_ik e_kj`
//!   with `G_ik = h'_δ(r_ijk)/T`, and
//!   `∂L_A/∂(x_i − x_j) = (g − e⟨e, g⟩)/d_ij` for `g = ∂L_A/∂e_ij`.
//!
//! The paper averages its smooth-L1 over all `N²` (or `N³`) entries, the
//! degenerate `i = j` ones included; averaging over the genuine pairs and
//! triplets only changes the constant. Both terms are invariant to scaling the
//! embeddings, so each batch is divided by its largest magnitude before the
//! distances are formed (no overflow); coincident samples make an angle
//! undefined and are a typed error.

use hasten_core::{Error, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::real::{count, lit};
use crate::{validate, LossGrad, Real};

/// Weights and Huber threshold of the relational loss
/// `w_D L_D + w_A L_A`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RkdConfig<F: Real> {
    distance_weight: F,
    angle_weight: F,
    delta: F,
}

impl<F: Real> RkdConfig<F> {
    /// Weights `w_D, w_A ≥ 0` and Huber threshold `δ > 0`.
    pub fn new(distance_weight: F, angle_weight: F, delta: F) -> Result<Self> {
        validate::non_negative("distance weight", distance_weight)?;
        validate::non_negative("angle weight", angle_weight)?;
        validate::positive("Huber delta", delta)?;
        Ok(Self {
            distance_weight,
            angle_weight,
            delta,
        })
    }

    /// The paper's setting: `w_D = 25`, `w_A = 50`, `δ = 1`.
    pub fn paper() -> Self {
        Self {
            distance_weight: lit(25.0),
            angle_weight: lit(50.0),
            delta: F::one(),
        }
    }

    /// `w_D`.
    pub fn distance_weight(&self) -> F {
        self.distance_weight
    }

    /// `w_A`.
    pub fn angle_weight(&self) -> F {
        self.angle_weight
    }

    /// The Huber threshold δ.
    pub fn delta(&self) -> F {
        self.delta
    }
}

/// Distance-wise relational loss `L_D` and its gradient w.r.t. the student
/// embeddings (`[N, Ds]` vs `[N, Dt]`, `N ≥ 2`).
///
/// # Errors
/// Batch sizes differ or `N < 2`, empty or non-finite embeddings, `δ` not
/// finite and > 0, all samples of a batch identical.
///
/// ```
/// use hasten_distill::rkd_distance_loss;
/// use ndarray::array;
///
/// // Distances are normalised by their mean: a scaled teacher is matched exactly.
/// let t = array![[0.0_f64, 0.0], [1.0, 0.0], [0.0, 2.0]];
/// let s = t.mapv(|v| 3.0 * v);
/// let out = rkd_distance_loss(s.view(), t.view(), 1.0)?;
/// assert!(out.value.abs() < 1e-15);
/// assert!(rkd_distance_loss(s.slice(ndarray::s![..1, ..]), t.slice(ndarray::s![..1, ..]), 1.0).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn rkd_distance_loss<F: Real>(
    student: ArrayView2<F>,
    teacher: ArrayView2<F>,
    delta: F,
) -> Result<LossGrad<F>> {
    let (s, t) = prepare(student, teacher, delta, 2)?;
    validate::finite_output("rkd_distance_loss", distance_term(&s, &t, delta)?)
}

/// Angle-wise relational loss `L_A` and its gradient w.r.t. the student
/// embeddings (`N ≥ 3`).
///
/// # Errors
/// Batch sizes differ or `N < 3`, empty or non-finite embeddings, `δ` not
/// finite and > 0, two coincident samples.
pub fn rkd_angle_loss<F: Real>(
    student: ArrayView2<F>,
    teacher: ArrayView2<F>,
    delta: F,
) -> Result<LossGrad<F>> {
    let (s, t) = prepare(student, teacher, delta, 3)?;
    validate::finite_output("rkd_angle_loss", angle_term(&s, &t, delta)?)
}

/// `w_D L_D + w_A L_A` and its gradient; a term with weight 0 is skipped (so
/// `N = 2` is accepted when `w_A = 0`).
///
/// # Errors
/// Those of [`rkd_distance_loss`] and [`rkd_angle_loss`] for the terms used.
pub fn rkd_loss<F: Real>(
    student: ArrayView2<F>,
    teacher: ArrayView2<F>,
    config: &RkdConfig<F>,
) -> Result<LossGrad<F>> {
    let use_angle = config.angle_weight > F::zero();
    let min_batch = if use_angle { 3 } else { 2 };
    let (s, t) = prepare(student, teacher, config.delta, min_batch)?;
    let mut total = LossGrad::new(F::zero(), Array2::zeros(student.raw_dim()));
    if config.distance_weight > F::zero() {
        let d = distance_term(&s, &t, config.delta)?.scaled(config.distance_weight);
        total.value = total.value + d.value;
        total.grad.zip_mut_with(&d.grad, |a, &b| *a = *a + b);
    }
    if use_angle {
        let a = angle_term(&s, &t, config.delta)?.scaled(config.angle_weight);
        total.value = total.value + a.value;
        total.grad.zip_mut_with(&a.grad, |x, &y| *x = *x + y);
    }
    validate::finite_output("rkd_loss", total)
}

/// A batch divided by its largest magnitude (`x = scale · unit`).
struct Scaled<F: Real> {
    unit: Array2<F>,
    scale: F,
}

fn prepare<F: Real>(
    student: ArrayView2<F>,
    teacher: ArrayView2<F>,
    delta: F,
    min_batch: usize,
) -> Result<(Scaled<F>, Scaled<F>)> {
    validate::tensor("student embeddings", &student)?;
    validate::tensor("teacher embeddings", &teacher)?;
    validate::positive("Huber delta", delta)?;
    if student.nrows() != teacher.nrows() {
        return Err(Error::shape(
            "teacher embeddings batch size",
            student.nrows(),
            teacher.nrows(),
        ));
    }
    if student.nrows() < min_batch {
        return Err(Error::param(
            "batch size",
            student.nrows(),
            format!("at least {min_batch} samples for relational terms"),
        ));
    }
    Ok((scaled(student), scaled(teacher)))
}

fn scaled<F: Real>(x: ArrayView2<F>) -> Scaled<F> {
    let m = x.iter().fold(F::zero(), |m, &v| m.max(v.abs()));
    let scale = if m > F::zero() { m } else { F::one() };
    Scaled {
        unit: x.mapv(|v| v / scale),
        scale,
    }
}

fn huber<F: Real>(r: F, delta: F) -> (F, F) {
    let half = F::one() / (F::one() + F::one());
    if r.abs() <= delta {
        (half * r * r, r)
    } else {
        (delta * (r.abs() - half * delta), delta * r.signum())
    }
}

/// Pairwise distances `[N, N]` (symmetric, zero diagonal).
fn distances<F: Real>(x: &Array2<F>) -> Array2<F> {
    let n = x.nrows();
    let mut d = Array2::zeros((n, n));
    for i in 0..n {
        for j in (i + 1)..n {
            let v = x
                .row(i)
                .iter()
                .zip(x.row(j).iter())
                .fold(F::zero(), |s, (&a, &b)| s + (a - b) * (a - b))
                .sqrt();
            d[[i, j]] = v;
            d[[j, i]] = v;
        }
    }
    d
}

/// Mean of the distances over `i < j`; zero means every sample is identical.
fn mean_distance<F: Real>(d: &Array2<F>, who: &str) -> Result<F> {
    let n = d.nrows();
    let pairs = count::<F>(n) * count::<F>(n - 1) / (F::one() + F::one());
    let mut sum = F::zero();
    for i in 0..n {
        for j in (i + 1)..n {
            sum = sum + d[[i, j]];
        }
    }
    if sum == F::zero() {
        return Err(Error::numerical(
            "relational distance loss",
            format!("all {who} embeddings of the batch are identical, so distances cannot be normalised"),
        ));
    }
    Ok(sum / pairs)
}

fn distance_term<F: Real>(s: &Scaled<F>, t: &Scaled<F>, delta: F) -> Result<LossGrad<F>> {
    let n = s.unit.nrows();
    let pairs = count::<F>(n) * count::<F>(n - 1) / (F::one() + F::one());
    let (ds, dt) = (distances(&s.unit), distances(&t.unit));
    let (mu_s, mu_t) = (
        mean_distance(&ds, "student")?,
        mean_distance(&dt, "teacher")?,
    );
    let mut value = F::zero();
    let mut g = Array2::zeros((n, n));
    let mut g_psi = F::zero();
    for i in 0..n {
        for j in (i + 1)..n {
            let psi_s = ds[[i, j]] / mu_s;
            let (h, dh) = huber(psi_s - dt[[i, j]] / mu_t, delta);
            value = value + h;
            g[[i, j]] = dh / pairs;
            g_psi = g_psi + g[[i, j]] * psi_s;
        }
    }
    let g_psi = g_psi / pairs;
    // Gradient in unit coordinates, then divided by the scale.
    let mut grad = Array2::zeros(s.unit.raw_dim());
    for i in 0..n {
        for j in (i + 1)..n {
            if ds[[i, j]] == F::zero() {
                continue;
            }
            let coef = (g[[i, j]] - g_psi) / mu_s / ds[[i, j]] / s.scale;
            for k in 0..s.unit.ncols() {
                let v = coef * (s.unit[[i, k]] - s.unit[[j, k]]);
                grad[[i, k]] = grad[[i, k]] + v;
                grad[[j, k]] = grad[[j, k]] - v;
            }
        }
    }
    Ok(LossGrad::new(value / pairs, grad))
}

/// Unit vectors `e_ij = (x_i − x_j)/d_ij` for vertex `j` (row `j` is zero).
fn unit_vectors<F: Real>(x: &Array2<F>, d: &Array2<F>, j: usize, who: &str) -> Result<Array2<F>> {
    let mut e = x.to_owned();
    let xj: Array1<F> = x.row(j).to_owned();
    for (i, mut row) in e.axis_iter_mut(Axis(0)).enumerate() {
        if i == j {
            row.fill(F::zero());
            continue;
        }
        let dij = d[[i, j]];
        if dij == F::zero() {
            return Err(Error::numerical(
                "relational angle loss",
                format!("{who} embeddings {i} and {j} coincide, so their angle is undefined"),
            ));
        }
        row.zip_mut_with(&xj, |a, &b| *a = (*a - b) / dij);
    }
    Ok(e)
}

fn angle_term<F: Real>(s: &Scaled<F>, t: &Scaled<F>, delta: F) -> Result<LossGrad<F>> {
    let n = s.unit.nrows();
    let triplets = count::<F>(n) * count::<F>(n - 1) * count::<F>(n - 2);
    let two = F::one() + F::one();
    let (ds, dt) = (distances(&s.unit), distances(&t.unit));
    let mut value = F::zero();
    let mut grad = Array2::zeros(s.unit.raw_dim());
    for j in 0..n {
        let es = unit_vectors(&s.unit, &ds, j, "student")?;
        let et = unit_vectors(&t.unit, &dt, j, "teacher")?;
        let (a_s, a_t) = (es.dot(&es.t()), et.dot(&et.t()));
        let mut g = Array2::zeros((n, n));
        for i in 0..n {
            for k in 0..n {
                if i == j || k == j || i == k {
                    continue;
                }
                let (h, dh) = huber(a_s[[i, k]] - a_t[[i, k]], delta);
                value = value + h;
                g[[i, k]] = dh / triplets;
            }
        }
        let g_e = g.dot(&es).mapv(|v| v * two);
        for i in 0..n {
            if i == j {
                continue;
            }
            let e = es.row(i);
            let ge = g_e.row(i);
            let proj = e.dot(&ge);
            let inv = F::one() / (ds[[i, j]] * s.scale);
            for k in 0..s.unit.ncols() {
                let v = (ge[k] - e[k] * proj) * inv;
                grad[[i, k]] = grad[[i, k]] + v;
                grad[[j, k]] = grad[[j, k]] - v;
            }
        }
    }
    Ok(LossGrad::new(value / triplets, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad_check::assert_grad;
    use hasten_core::{linalg, SeededRng};
    use ndarray::array;
    use proptest::prelude::*;

    fn huber_f64(r: f64, delta: f64) -> f64 {
        if r.abs() <= delta {
            0.5 * r * r
        } else {
            delta * (r.abs() - 0.5 * delta)
        }
    }

    fn dist(x: &Array2<f64>, i: usize, j: usize) -> f64 {
        (&x.row(i) - &x.row(j)).mapv(|v| v * v).sum().sqrt()
    }

    /// Brute force over ordered pairs and triplets, straight from the definitions.
    fn brute(s: &Array2<f64>, t: &Array2<f64>, delta: f64) -> (f64, f64) {
        let n = s.nrows();
        let mean = |x: &Array2<f64>| {
            let mut acc = 0.0;
            for i in 0..n {
                for j in 0..n {
                    if i != j {
                        acc += dist(x, i, j);
                    }
                }
            }
            acc / (n * (n - 1)) as f64
        };
        let (ms, mt) = (mean(s), mean(t));
        let mut ld = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    ld += huber_f64(dist(s, i, j) / ms - dist(t, i, j) / mt, delta);
                }
            }
        }
        let cos = |x: &Array2<f64>, i: usize, j: usize, k: usize| {
            let a = &x.row(i) - &x.row(j);
            let b = &x.row(k) - &x.row(j);
            a.dot(&b) / (dist(x, i, j) * dist(x, k, j))
        };
        let mut la = 0.0;
        for i in 0..n {
            for j in 0..n {
                for k in 0..n {
                    if i != j && j != k && i != k {
                        la += huber_f64(cos(s, i, j, k) - cos(t, i, j, k), delta);
                    }
                }
            }
        }
        (
            ld / (n * (n - 1)) as f64,
            la / (n * (n - 1) * (n - 2)) as f64,
        )
    }

    #[test]
    fn values_match_brute_force() {
        let mut rng = SeededRng::new(60);
        let s = rng.normal_array_f64((6, 3), 1.0);
        let t = rng.normal_array_f64((6, 5), 2.0);
        for delta in [1.0, 0.1] {
            let (ld, la) = brute(&s, &t, delta);
            let d = rkd_distance_loss(s.view(), t.view(), delta).unwrap();
            let a = rkd_angle_loss(s.view(), t.view(), delta).unwrap();
            assert!((d.value - ld).abs() < 1e-14, "{} vs {ld}", d.value);
            assert!((a.value - la).abs() < 1e-14, "{} vs {la}", a.value);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = SeededRng::new(61);
        for delta in [1.0, 0.2] {
            let s = rng.normal_array_f64((5, 4), 1.0);
            let t = rng.normal_array_f64((5, 6), 1.0);
            let d = rkd_distance_loss(s.view(), t.view(), delta).unwrap();
            assert_grad("rkd distance", &s, &d.grad, |x| {
                rkd_distance_loss(x.view(), t.view(), delta).unwrap().value
            });
            let a = rkd_angle_loss(s.view(), t.view(), delta).unwrap();
            assert_grad("rkd angle", &s, &a.grad, |x| {
                rkd_angle_loss(x.view(), t.view(), delta).unwrap().value
            });
            let cfg = RkdConfig::new(25.0, 50.0, delta).unwrap();
            let both = rkd_loss(s.view(), t.view(), &cfg).unwrap();
            assert!((both.value - 25.0 * d.value - 50.0 * a.value).abs() < 1e-12);
            assert_grad("rkd", &s, &both.grad, |x| {
                rkd_loss(x.view(), t.view(), &cfg).unwrap().value
            });
        }
    }

    #[test]
    fn similarity_transformed_teacher_is_matched_exactly() {
        let mut rng = SeededRng::new(62);
        let t = rng.normal_array_f64((7, 4), 1.0);
        let (q, _) = linalg::qr(rng.normal_array_f64((4, 4), 1.0).view()).unwrap();
        let s = t.dot(&q) * 1e3 + 5.0;
        let out = rkd_loss(s.view(), t.view(), &RkdConfig::paper()).unwrap();
        assert!(out.value < 1e-24, "{}", out.value);
        assert!(out.grad.iter().all(|g| g.abs() < 1e-13));
        // Perturbing the student makes it worse.
        let moved = &s + &rng.normal_array_f64((7, 4), 10.0);
        assert!(
            rkd_loss(moved.view(), t.view(), &RkdConfig::paper())
                .unwrap()
                .value
                > 1e-4
        );
    }

    #[test]
    fn extreme_embeddings_stay_finite() {
        let mut rng = SeededRng::new(63);
        let s = rng.normal_array((5, 3), 1.0).mapv(|v: f32| v * 1e30);
        let t = rng.normal_array((5, 8), 1.0).mapv(|v: f32| v * 1e-30);
        let out = rkd_loss(s.view(), t.view(), &RkdConfig::paper()).unwrap();
        assert!(out.value.is_finite() && out.value > 0.0);
        assert!(out.grad.iter().all(|g| g.is_finite()));
    }

    #[test]
    fn typed_errors() {
        let a = array![[0.0_f64, 1.0], [1.0, 0.0], [2.0, 2.0]];
        let two = array![[0.0_f64, 1.0], [1.0, 0.0]];
        assert!(matches!(
            rkd_distance_loss(a.view(), two.view(), 1.0),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(rkd_distance_loss(two.view(), two.view(), 1.0).is_ok());
        assert!(matches!(
            rkd_angle_loss(two.view(), two.view(), 1.0),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(rkd_loss(
            two.view(),
            two.view(),
            &RkdConfig::new(1.0, 0.0, 1.0).unwrap()
        )
        .is_ok());
        let dup = array![[0.0_f64, 1.0], [0.0, 1.0], [2.0, 2.0]];
        assert!(matches!(
            rkd_angle_loss(dup.view(), a.view(), 1.0),
            Err(Error::Numerical { .. })
        ));
        assert!(rkd_distance_loss(dup.view(), a.view(), 1.0).is_ok());
        let same = array![[1.0_f64, 1.0], [1.0, 1.0], [1.0, 1.0]];
        assert!(matches!(
            rkd_distance_loss(a.view(), same.view(), 1.0),
            Err(Error::Numerical { .. })
        ));
        assert!(rkd_distance_loss(a.view(), a.view(), 0.0).is_err());
        assert!(RkdConfig::new(-1.0, 1.0, 1.0).is_err());
        assert!(RkdConfig::new(1.0, f64::NAN, 1.0).is_err());
        assert!(RkdConfig::new(1.0, 1.0, -1.0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn never_panics(
            n in 0usize..5, nt in 0usize..5, ds in 0usize..3, dt in 0usize..3,
            vals in proptest::collection::vec(prop_oneof![
                6 => -1e30f32..1e30, 2 => Just(1.0f32), 1 => Just(f32::NAN)], 16),
            wd in -1.0f32..30.0, wa in -1.0f32..60.0, delta in -0.5f32..2.0,
        ) {
            let s = Array2::from_shape_fn((n, ds), |(i, k)| vals[(3 * i + k) % 16]);
            let t = Array2::from_shape_fn((nt, dt), |(i, k)| vals[(7 + 5 * i + k) % 16]);
            let cfg = match RkdConfig::new(wd, wa, delta) {
                Ok(cfg) => cfg,
                Err(_) => { prop_assert!(wd < 0.0 || wa < 0.0 || delta <= 0.0); return Ok(()); }
            };
            let res = rkd_loss(s.view(), t.view(), &cfg);
            let shapes_ok = n == nt && n >= 2 && ds > 0 && dt > 0
                && s.iter().chain(t.iter()).all(|v| v.is_finite());
            if !shapes_ok { prop_assert!(res.is_err()); }
            if let Ok(out) = res {
                prop_assert!(out.value.is_finite());
                prop_assert!(out.grad.iter().all(|g| g.is_finite()));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn single_terms_never_panic(
            n in 0usize..5, nt in 0usize..5, d in 0usize..3,
            vals in proptest::collection::vec(prop_oneof![
                6 => -1e3f64..1e3, 2 => Just(1.0f64), 1 => Just(f64::NAN)], 16),
            delta in -0.5f64..2.0,
        ) {
            let s = Array2::from_shape_fn((n, d), |(i, k)| vals[(3 * i + k) % 16]);
            let t = Array2::from_shape_fn((nt, d), |(i, k)| vals[(7 + 5 * i + k) % 16]);
            let ok = n == nt && d > 0 && delta > 0.0
                && s.iter().chain(t.iter()).all(|v| v.is_finite());
            let dist = rkd_distance_loss(s.view(), t.view(), delta);
            let angle = rkd_angle_loss(s.view(), t.view(), delta);
            if !(ok && n >= 2) { prop_assert!(dist.is_err()); }
            if !(ok && n >= 3) { prop_assert!(angle.is_err()); }
            for out in [dist, angle].into_iter().flatten() {
                prop_assert!(out.value.is_finite() && out.value >= 0.0);
            }
        }
    }
}

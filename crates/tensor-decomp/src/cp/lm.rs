//! Levenberg–Marquardt (damped Gauss–Newton) refinement of a CP
//! decomposition: the non-linear least squares Lebedev et al. \[18\] use to
//! obtain a better CP approximation of a kernel than greedy or ALS fits
//! (survey section 2).
//!
//! All factors move at once. The damped normal equations
//! `(JᵀJ + μI) δ = −g` are solved matrix-free by preconditioned conjugate
//! gradients, using the structure of the CP Jacobian (Tomasi & Bro; the
//! `cpd_nls` approach):
//! `(JᵀJ v)_n = V_n Γ_n + A_n Σ_{m≠n} (V_mᵀA_m) ⊛ Γ_{nm}` with
//! `Γ_n = ⊛_{k≠n} A_kᵀA_k`, `Γ_{nm} = ⊛_{k≠n,m} A_kᵀA_k`, and
//! `g_n = A_n Γ_n − X_(n)(⊙_{k≠n} A_k)`. The preconditioner is block Jacobi,
//! `V_n ↦ V_n (Γ_n + μI)⁻¹`. Steps are accepted when they lower the error;
//! `μ` follows Nielsen's gain-ratio rule.

use hasten_core::error::{Error, Result};
use hasten_core::linalg;
use hasten_core::ndarray::{Array1, Array2, ArrayD};

use super::als::cp_error;
use super::{check_rank, CpResult, CpTensor};
use crate::tensor::{check_tensor, Mttkrp};

/// Options of [`cp_lm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmOptions {
    /// Outer (Gauss–Newton) iterations.
    pub max_iter: usize,
    /// Stop when the relative error decreases by less than this.
    pub tol: f64,
    /// Initial damping relative to the largest diagonal entry of `JᵀJ`.
    pub tau: f64,
    /// Conjugate-gradient iterations per step.
    pub cg_iter: usize,
}

impl Default for LmOptions {
    fn default() -> Self {
        LmOptions {
            max_iter: 50,
            tol: 1e-10,
            tau: 1e-3,
            cg_iter: 25,
        }
    }
}

type Factors = Vec<Array2<f64>>;

fn dot(a: &Factors, b: &Factors) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x * y).sum()).sum()
}

fn axpy(a: f64, x: &Factors, y: &Factors) -> Factors {
    x.iter().zip(y).map(|(x, y)| y + &(x * a)).collect()
}

fn hadamard_except(grams: &[Array2<f64>], skip: &[usize]) -> Array2<f64> {
    let r = grams[0].nrows();
    let mut h = Array2::<f64>::ones((r, r));
    for (k, g) in grams.iter().enumerate() {
        if !skip.contains(&k) {
            h *= g;
        }
    }
    h
}

/// `JᵀJ v` for the CP Jacobian at `factors`.
fn gauss_newton_product(factors: &Factors, grams: &[Array2<f64>], v: &Factors) -> Factors {
    let order = factors.len();
    let cross: Vec<Array2<f64>> = (0..order).map(|m| v[m].t().dot(&factors[m])).collect();
    (0..order)
        .map(|n| {
            let mut out = v[n].dot(&hadamard_except(grams, &[n]));
            let r = grams[0].nrows();
            let mut h = Array2::<f64>::zeros((r, r));
            for m in 0..order {
                if m != n {
                    h += &(&cross[m] * &hadamard_except(grams, &[n, m]));
                }
            }
            out += &factors[n].dot(&h);
            out
        })
        .collect()
}

/// Refines `start` by Levenberg–Marquardt on `tensor`. The error history
/// holds the relative error of the start followed by that of every
/// accepted step (non-increasing).
///
/// # Errors
/// [`Error::ShapeMismatch`](hasten_core::Error::ShapeMismatch) for a tensor
/// of order below 2, [`Error::EmptyDimension`](hasten_core::Error::EmptyDimension)
/// or [`Error::NonFinite`](hasten_core::Error::NonFinite) for an empty or
/// non-finite tensor, [`Error::InvalidRank`](hasten_core::Error::InvalidRank)
/// for a rank outside `1..=Π I_n / max I_n` (the start's rank), the errors of
/// [`CpTensor::validate`] for an invalid start,
/// [`Error::ShapeMismatch`](hasten_core::Error::ShapeMismatch) when the
/// start's shape is not the tensor's, and
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for bad
/// options.
///
/// ```
/// use hasten_core::{ndarray::IxDyn, SeededRng};
/// use hasten_tensor_decomp::cp::{cp_als, cp_lm, CpOptions, LmOptions};
///
/// let x = SeededRng::new(0).normal_array_f64(IxDyn(&[4, 5, 6]), 1.0);
/// let start = cp_als(&x, 3, &CpOptions::default().with_max_iter(3))?;
/// let fit = cp_lm(&x, &start.cp, &LmOptions::default())?;
/// let h = &fit.error_history;
/// assert!(h.windows(2).all(|w| w[1] <= w[0]));
/// let y = SeededRng::new(0).normal_array_f64(IxDyn(&[4, 5, 7]), 1.0);
/// assert!(cp_lm(&y, &start.cp, &LmOptions::default()).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn cp_lm(tensor: &ArrayD<f64>, start: &CpTensor, options: &LmOptions) -> Result<CpResult> {
    check_tensor("CP-LM tensor", tensor)?;
    start.validate()?;
    check_rank(tensor.shape(), start.rank())?;
    if start.shape() != tensor.shape() {
        return Err(Error::shape(
            "CP-LM start",
            format!("{:?}", tensor.shape()),
            format!("{:?}", start.shape()),
        ));
    }
    for f in &start.factors {
        hasten_core::error::ensure_finite("CP-LM start factor", f.iter())?;
    }
    hasten_core::error::ensure_finite("CP-LM start weights", start.weights.iter())?;
    if !(options.tau > 0.0 && options.tau.is_finite()) {
        return Err(Error::param("tau", options.tau, "a finite value > 0"));
    }
    let r = start.rank();
    let plan = Mttkrp::new(tensor, r)?;
    let norm2: f64 = tensor.iter().map(|v| v * v).sum();
    let mut factors: Factors = start.balanced()?.factors;
    let ones = Array1::<f64>::ones(r);
    let cp_of = |f: &Factors| CpTensor {
        weights: ones.clone(),
        factors: f.clone(),
    };
    let mut err = if norm2 == 0.0 {
        0.0
    } else {
        cp_error(&plan, norm2, &cp_of(&factors))?
    };
    let mut history = vec![err];
    if norm2 == 0.0 {
        return Ok(CpResult {
            cp: cp_of(&factors).normalized()?,
            error_history: history,
            iterations: 0,
            converged: true,
        });
    }
    let mut mu = -1.0;
    let mut nu = 2.0;
    let mut iterations = 0;
    let mut converged = false;
    for _ in 0..options.max_iter {
        iterations += 1;
        let grams: Vec<Array2<f64>> = factors.iter().map(|f| f.t().dot(f)).collect();
        if mu < 0.0 {
            let max_diag = (0..factors.len())
                .map(|n| {
                    hadamard_except(&grams, &[n])
                        .diag()
                        .iter()
                        .fold(0.0f64, |a, &b| a.max(b))
                })
                .fold(0.0f64, f64::max);
            mu = options.tau * max_diag.max(f64::MIN_POSITIVE);
        }
        // Gradient of ½‖X − X̂‖².
        let mut grad = Vec::with_capacity(factors.len());
        let mut partial = None;
        for n in 0..factors.len() {
            if n == 0 || n == plan.split() {
                partial = Some(plan.partial(&factors, n)?);
            }
            let m = plan.finish(partial.as_ref().expect("set"), &factors, n)?;
            grad.push(factors[n].dot(&hadamard_except(&grams, &[n])) - m);
        }
        let step = pcg(&factors, &grams, &grad, mu, options.cg_iter)?;
        let jd = gauss_newton_product(&factors, &grams, &step);
        let predicted = -dot(&grad, &step) - 0.5 * dot(&step, &jd) - 0.5 * mu * dot(&step, &step);
        let candidate = axpy(1.0, &step, &factors);
        let cand_err = cp_error(&plan, norm2, &cp_of(&candidate))?;
        let actual = 0.5 * norm2 * (err * err - cand_err * cand_err);
        let rho = if predicted > 0.0 {
            actual / predicted
        } else {
            -1.0
        };
        if rho > 0.0 && cand_err < err {
            let decrease = err - cand_err;
            factors = candidate;
            err = cand_err;
            history.push(err);
            mu *= (1.0f64 / 3.0).max(1.0 - (2.0 * rho - 1.0).powi(3));
            nu = 2.0;
            if decrease < options.tol {
                converged = true;
                break;
            }
        } else {
            mu *= nu;
            nu *= 2.0;
            if !mu.is_finite() || mu > 1e300 {
                converged = true;
                break;
            }
        }
    }
    Ok(CpResult {
        cp: cp_of(&factors).normalized()?,
        error_history: history,
        iterations,
        converged,
    })
}

/// Preconditioned CG for `(JᵀJ + μI) δ = −g`.
fn pcg(
    factors: &Factors,
    grams: &[Array2<f64>],
    grad: &Factors,
    mu: f64,
    iters: usize,
) -> Result<Factors> {
    let r = grams[0].nrows();
    let eye = Array2::<f64>::eye(r);
    let precond: Vec<Array2<f64>> = (0..factors.len())
        .map(|n| {
            let mut g = hadamard_except(grams, &[n]);
            for i in 0..r {
                g[[i, i]] += mu;
            }
            linalg::solve(g.view(), eye.view()).or_else(|_| linalg::pinv(g.view()))
        })
        .collect::<Result<_>>()?;
    let apply_p =
        |v: &Factors| -> Factors { v.iter().zip(&precond).map(|(v, p)| v.dot(p)).collect() };
    let apply_a = |v: &Factors| -> Factors {
        let mut out = gauss_newton_product(factors, grams, v);
        for (o, x) in out.iter_mut().zip(v) {
            *o += &(x * mu);
        }
        out
    };
    let b: Factors = grad.iter().map(|g| -g).collect();
    let mut x: Factors = grad.iter().map(|g| Array2::zeros(g.raw_dim())).collect();
    let mut res = b.clone();
    let mut z = apply_p(&res);
    let mut p = z.clone();
    let mut rz = dot(&res, &z);
    let b_norm = dot(&b, &b).sqrt();
    for _ in 0..iters.max(1) {
        let ap = apply_a(&p);
        let pap = dot(&p, &ap);
        if pap.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            break;
        }
        let alpha = rz / pap;
        x = axpy(alpha, &p, &x);
        res = axpy(-alpha, &ap, &res);
        if dot(&res, &res).sqrt() <= 1e-12 * b_norm {
            break;
        }
        z = apply_p(&res);
        let rz_new = dot(&res, &z);
        let beta = rz_new / rz;
        rz = rz_new;
        p = axpy(beta, &p, &z);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::fixtures::random_cp as planted;
    use crate::cp::{cp_als, CpOptions};
    use crate::tensor::relative_error;
    use hasten_core::ndarray::IxDyn;
    use hasten_core::SeededRng;

    #[test]
    fn gauss_newton_product_matches_explicit_jacobian() {
        // Build J column by column by finite differences of the (multilinear)
        // model and compare JᵀJ v with the structured product.
        let cp = planted(&[3, 4, 2], 2, 1);
        let f = cp.factors.clone();
        let grams: Vec<Array2<f64>> = f.iter().map(|a| a.t().dot(a)).collect();
        let mut rng = SeededRng::new(2);
        let v: Factors = f
            .iter()
            .map(|a| rng.normal_array_f64(a.raw_dim(), 1.0))
            .collect();
        let model = |f: &Factors| {
            CpTensor {
                weights: Array1::ones(2),
                factors: f.clone(),
            }
            .to_tensor()
            .unwrap()
        };
        // J v = Σ_n [[…, V_n, …]] exactly (linear in each factor).
        let mut jv = ArrayD::<f64>::zeros(IxDyn(&[3, 4, 2]));
        for n in 0..3 {
            let mut g = f.clone();
            g[n] = v[n].clone();
            jv = jv + model(&g);
        }
        // Jᵀ T for mode n is the MTTKRP of T.
        let plan = Mttkrp::new(&jv, 2).unwrap();
        let want: Factors = (0..3).map(|n| plan.compute(&f, n).unwrap()).collect();
        let got = gauss_newton_product(&f, &grams, &v);
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).iter().all(|d| d.abs() < 1e-10));
        }
    }

    #[test]
    fn converges_from_perturbed_start_and_never_increases() {
        let cp = planted(&[6, 5, 4, 3], 3, 3);
        let x = cp.to_tensor().unwrap();
        let mut rng = SeededRng::new(4);
        let start = CpTensor {
            weights: cp.weights.clone(),
            factors: cp
                .factors
                .iter()
                .map(|f| f + &rng.normal_array_f64(f.raw_dim(), 0.1))
                .collect(),
        };
        let fit = cp_lm(&x, &start, &LmOptions::default()).unwrap();
        let err = relative_error(&x, &fit.cp.to_tensor().unwrap()).unwrap();
        assert!(err < 1e-8, "{err} {:?}", fit.error_history);
        for w in fit.error_history.windows(2) {
            assert!(w[1] < w[0]);
        }
    }

    #[test]
    fn improves_on_a_short_als_run() {
        let x = SeededRng::new(5).normal_array_f64(IxDyn(&[6, 7, 5]), 1.0);
        let als = cp_als(&x, 4, &CpOptions::default().with_max_iter(5)).unwrap();
        let lm = cp_lm(&x, &als.cp, &LmOptions::default()).unwrap();
        let e = |cp: &CpTensor| relative_error(&x, &cp.to_tensor().unwrap()).unwrap();
        assert!(
            e(&lm.cp) < e(&als.cp) - 1e-4,
            "{} vs {}",
            e(&lm.cp),
            e(&als.cp)
        );
    }

    #[test]
    fn bad_inputs() {
        let x = SeededRng::new(1).normal_array_f64(IxDyn(&[3, 4, 2]), 1.0);
        let wrong = planted(&[3, 4, 3], 2, 1);
        assert!(cp_lm(&x, &wrong, &LmOptions::default()).is_err());
        let ok = planted(&[3, 4, 2], 2, 1);
        let bad = LmOptions {
            tau: 0.0,
            ..LmOptions::default()
        };
        assert!(cp_lm(&x, &ok, &bad).is_err());
        let mut nan = ok.clone();
        nan.factors[0][[0, 0]] = f64::NAN;
        assert!(cp_lm(&x, &nan, &LmOptions::default()).is_err());
    }
}

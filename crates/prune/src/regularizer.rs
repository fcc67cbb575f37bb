//! Sparsity-inducing regularizers (survey section 6.3): each returns its
//! value and a (sub)gradient with respect to the parameters it penalises,
//! to be added to the training loss and its gradient during fine-tuning.
//!
//! - L1, `Ω₁(w) = λ Σ |w|`: unstructured sparsity.
//! - Group lasso `L2,1`, eq. (18): `Ω(w) = λ Σ_g sqrt(Σ_{j ∈ g} w_j²)` over the
//!   groups of any [`Slicing`] (the survey's eq. (18) drops the square under
//!   the root; this is the standard form of Wen et al. \[70\]).
//! - Network slimming (Liu et al. \[75\]): L1 on batch-norm scales `γ`, driving
//!   whole channels to zero.
//!
//! At non-differentiable points (a weight or a whole group at zero) the
//! subgradient 0 is returned.

use hasten_core::{BatchNorm, Conv4d, Error, Result};
use ndarray::{Array1, Array4};

use crate::slice::Slicing;

/// A penalty value and its (sub)gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Penalty<G> {
    /// `Ω(w)`.
    pub value: f64,
    /// `∂Ω/∂w`, shaped like the parameters.
    pub grad: G,
}

fn check_lambda(lambda: f64) -> Result<()> {
    if !(lambda.is_finite() && lambda >= 0.0) {
        return Err(Error::param(
            "regularization strength λ",
            lambda,
            "finite and >= 0",
        ));
    }
    Ok(())
}

/// `λ Σ |w|` and its subgradient `λ sign(w)`.
pub fn l1(weight: &Conv4d, lambda: f64) -> Result<Penalty<Array4<f64>>> {
    check_lambda(lambda)?;
    let w = weight.to_f64();
    Ok(Penalty {
        value: lambda * w.iter().map(|v| v.abs()).sum::<f64>(),
        grad: w.mapv(|v| if v == 0.0 { 0.0 } else { lambda * v.signum() }),
    })
}

/// `λ Σ_g ‖w_g‖₂` over the slices of `slicing`, gradient `λ w / ‖w_g‖₂`.
pub fn group_lasso(weight: &Conv4d, slicing: Slicing, lambda: f64) -> Result<Penalty<Array4<f64>>> {
    check_lambda(lambda)?;
    let norms: Vec<f64> = slicing
        .aggregate(weight.array(), |v| v * v)
        .into_iter()
        .map(f64::sqrt)
        .collect();
    let dims = weight.dims();
    let mut grad = weight.to_f64();
    for ((t, c, i, j), g) in grad.indexed_iter_mut() {
        let n = norms[slicing.slice_of(dims, [t, c, i, j])];
        *g = if n > 0.0 { lambda * *g / n } else { 0.0 };
    }
    Ok(Penalty {
        value: lambda * norms.iter().sum::<f64>(),
        grad,
    })
}

/// Network slimming: `λ Σ |γ_c|` over a batch-norm's scales, gradient `λ sign(γ)`.
pub fn bn_slimming(bn: &BatchNorm, lambda: f64) -> Result<Penalty<Array1<f64>>> {
    check_lambda(lambda)?;
    let g = bn.gamma().mapv(f64::from);
    Ok(Penalty {
        value: lambda * g.iter().map(|v| v.abs()).sum::<f64>(),
        grad: g.mapv(|v| if v == 0.0 { 0.0 } else { lambda * v.signum() }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::SeededRng;

    /// Central differences of `f` at `w` in f64 (step 1e-3 on O(1) weights whose
    /// groups have norm ≫ 1e-3: truncation error O(h²) ≈ 1e-6 relative).
    fn fd_check(w: &Array4<f32>, f: impl Fn(&Array4<f32>) -> f64, grad: &Array4<f64>) {
        let h = 1e-3f32;
        for (idx, &g) in grad.indexed_iter() {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[idx] += h;
            m[idx] -= h;
            let (hp, hm) = (
                f64::from(w[idx] + h) - f64::from(w[idx]),
                f64::from(w[idx]) - f64::from(w[idx] - h),
            );
            let fd = (f(&p) - f(&m)) / (hp + hm);
            assert!(
                (fd - g).abs() < 1e-4 * (1.0 + g.abs()),
                "{idx:?}: fd {fd} vs {g}"
            );
        }
    }

    #[test]
    fn group_lasso_gradient_matches_finite_differences_for_every_slicing() {
        let mut rng = SeededRng::new(31);
        let w = rng.normal_array((3, 2, 2, 2), 1.0);
        for slicing in Slicing::ALL {
            let lambda = 0.7;
            let pen = group_lasso(&Conv4d::new(w.clone()).unwrap(), slicing, lambda).unwrap();
            let f = |a: &Array4<f32>| {
                group_lasso(&Conv4d::new(a.clone()).unwrap(), slicing, lambda)
                    .unwrap()
                    .value
            };
            if slicing == Slicing::Weight {
                // Groups of one weight: group lasso is exactly L1.
                let l = l1(&Conv4d::new(w.clone()).unwrap(), lambda).unwrap();
                assert!((l.value - pen.value).abs() < 1e-9);
            }
            fd_check(&w, f, &pen.grad);
        }
    }

    #[test]
    fn group_lasso_value_by_hand_and_zero_group() {
        let mut w = Array4::<f32>::zeros((2, 1, 1, 2));
        w[[0, 0, 0, 0]] = 3.0;
        w[[0, 0, 0, 1]] = 4.0;
        let p = group_lasso(&Conv4d::new(w).unwrap(), Slicing::Filter, 2.0).unwrap();
        assert_eq!(p.value, 10.0);
        assert_eq!(p.grad[[0, 0, 0, 1]], 2.0 * 0.8);
        assert_eq!(p.grad[[1, 0, 0, 0]], 0.0);
    }

    #[test]
    fn slimming_and_l1_gradients_match_finite_differences() {
        let mut rng = SeededRng::new(2);
        let gamma: Array1<f32> = rng.normal_array(5, 1.0);
        let mk = |g: Array1<f32>| {
            BatchNorm::new(g, Array1::zeros(5), Array1::zeros(5), Array1::ones(5), 1e-5).unwrap()
        };
        let p = bn_slimming(&mk(gamma.clone()), 0.3).unwrap();
        let h = 1e-3f32;
        for c in 0..5 {
            let (mut a, mut b) = (gamma.clone(), gamma.clone());
            a[c] += h;
            b[c] -= h;
            let fd = (bn_slimming(&mk(a.clone()), 0.3).unwrap().value
                - bn_slimming(&mk(b.clone()), 0.3).unwrap().value)
                / (f64::from(a[c]) - f64::from(b[c]));
            assert!((fd - p.grad[c]).abs() < 1e-6, "{fd} vs {}", p.grad[c]);
        }
        let w = rng.normal_array((2, 2, 1, 1), 1.0);
        let pen = l1(&Conv4d::new(w.clone()).unwrap(), 0.5).unwrap();
        fd_check(
            &w,
            |a| l1(&Conv4d::new(a.clone()).unwrap(), 0.5).unwrap().value,
            &pen.grad,
        );
        assert!(l1(&Conv4d::new(w).unwrap(), -1.0).is_err());
        assert!(bn_slimming(&mk(gamma), f64::NAN).is_err());
    }
}

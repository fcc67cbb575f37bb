//! Greedy rank-1 deflation: the "outer product decomposition" Denton et al.
//! \[17\] use for the CP decomposition of a kernel (survey section 2).
//!
//! Component `r` is the best rank-1 fit (rank-1 ALS, i.e. the higher-order
//! power method) to the residual left by components `0..r`, which is then
//! subtracted. Cheap and robust, but not optimal: the components are never
//! revisited, so it is mostly used as a start for [`super::cp_als`] or
//! [`super::cp_lm`].

use hasten_core::error::Result;
use hasten_core::ndarray::{Array1, ArrayD};
use hasten_core::SeededRng;

use super::{check_rank, cp_als, CpInit, CpOptions, CpResult, CpTensor};
use crate::tensor::{check_tensor, norm};

/// Greedy rank-1 deflation to rank `rank`. Each rank-1 fit runs
/// `options.max_iter` sweeps (stopping at `options.tol`) from a random start
/// drawn with `options.seed`; `options.init` is not used. The error history
/// holds the relative error after each component.
pub fn cp_deflation(tensor: &ArrayD<f64>, rank: usize, options: &CpOptions) -> Result<CpResult> {
    check_tensor("CP deflation tensor", tensor)?;
    check_rank(tensor.shape(), rank)?;
    let norm_x = norm(tensor);
    let mut rng = SeededRng::new(options.seed);
    let mut residual = tensor.clone();
    let mut model: Option<CpTensor> = None;
    let mut history = Vec::with_capacity(rank);
    let mut iterations = 0;
    for _ in 0..rank {
        let start = random_rank_one(tensor.shape(), &mut rng)?;
        let opts = CpOptions {
            init: CpInit::Given(start),
            ..options.clone()
        };
        let fit = cp_als(&residual, 1, &opts)?;
        iterations += fit.iterations;
        residual = residual - fit.cp.to_tensor()?;
        model = Some(match model {
            None => fit.cp,
            Some(m) => m.concat(&fit.cp)?,
        });
        history.push(if norm_x == 0.0 {
            0.0
        } else {
            norm(&residual) / norm_x
        });
    }
    Ok(CpResult {
        cp: model.expect("rank >= 1").normalized()?,
        error_history: history,
        iterations,
        converged: true,
    })
}

/// A random rank-1 CP tensor with unit Gaussian factors.
pub(crate) fn random_rank_one(shape: &[usize], rng: &mut SeededRng) -> Result<CpTensor> {
    CpTensor::new(
        Array1::ones(1),
        shape
            .iter()
            .map(|&d| rng.normal_array_f64((d, 1), 1.0))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::relative_error;
    use hasten_core::ndarray::{Array2, IxDyn};

    #[test]
    fn recovers_orthogonal_components_exactly() {
        // With orthogonal factors the greedy deflation is exact: each step
        // finds the largest remaining component.
        let shape = [6, 5, 4];
        let mut rng = SeededRng::new(1);
        let factors: Vec<Array2<f64>> = shape
            .iter()
            .map(|&d| {
                let g: Array2<f64> = rng.normal_array_f64((d, 3), 1.0);
                hasten_core::linalg::qr(g.view()).unwrap().0
            })
            .collect();
        let cp = CpTensor::new(Array1::from(vec![5.0, 3.0, 1.5]), factors).unwrap();
        let x = cp.to_tensor().unwrap();
        let fit = cp_deflation(
            &x,
            3,
            &CpOptions::default().with_max_iter(200).with_tol(1e-14),
        )
        .unwrap();
        let err = relative_error(&x, &fit.cp.to_tensor().unwrap()).unwrap();
        assert!(err < 1e-6, "{err}");
        for w in fit.error_history.windows(2) {
            assert!(w[1] <= w[0]);
        }
        assert!((fit.cp.weights[0] - 5.0).abs() < 1e-6);
    }

    #[test]
    fn bad_inputs() {
        let x = SeededRng::new(1).normal_array_f64(IxDyn(&[3, 4, 2]), 1.0);
        assert!(cp_deflation(&x, 0, &CpOptions::default()).is_err());
        assert!(cp_deflation(&x, 100, &CpOptions::default()).is_err());
    }
}

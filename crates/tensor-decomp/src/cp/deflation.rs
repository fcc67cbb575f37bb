//! Greedy rank-1 deflation: the "outer product decomposition" Denton et al.
//! \[17\] use for the CP decomposition of a kernel (survey section 2).
//!
//! Component `r` is the best rank-1 fit (rank-1 ALS, i.e. the higher-order
//! power method) to the residual left by components `0..r`, which is then
//! subtracted. Cheap and robust, but not optimal: the components are never
//! revisited, so it is mostly used as a start for [`super::cp_als`] or
//! [`super::cp_lm`].

use hasten_core::error::Result;
use hasten_core::ndarray::ArrayD;
use hasten_core::SeededRng;

use super::{check_rank, cp_als, CpInit, CpOptions, CpResult, CpTensor};
use crate::tensor::{check_tensor, norm};

/// Greedy rank-1 deflation to rank `rank`. Each rank-1 fit runs
/// `options.max_iter` sweeps (stopping at `options.tol`) from a random start
/// drawn with `options.seed`; `options.init` is not used. The error history
/// holds the relative error after each component.
///
/// # Errors
/// [`Error::ShapeMismatch`](hasten_core::Error::ShapeMismatch) for a tensor
/// of order below 2, [`Error::EmptyDimension`](hasten_core::Error::EmptyDimension)
/// or [`Error::NonFinite`](hasten_core::Error::NonFinite) for an empty or
/// non-finite tensor, [`Error::InvalidRank`](hasten_core::Error::InvalidRank)
/// for a rank outside `1..=Π I_n / max I_n`.
///
/// ```
/// use hasten_core::{ndarray::{Array1, ArrayD, IxDyn}, SeededRng};
/// use hasten_tensor_decomp::cp::{cp_deflation, CpOptions};
///
/// // A planted rank-1 tensor a ∘ b ∘ c is recovered by one deflation step.
/// let mut rng = SeededRng::new(1);
/// let (a, b, c): (Array1<f64>, Array1<f64>, Array1<f64>) = (
///     rng.normal_array_f64(3, 1.0),
///     rng.normal_array_f64(4, 1.0),
///     rng.normal_array_f64(5, 1.0),
/// );
/// let x = ArrayD::from_shape_fn(IxDyn(&[3, 4, 5]), |i| a[i[0]] * b[i[1]] * c[i[2]]);
/// let fit = cp_deflation(&x, 1, &CpOptions::default())?;
/// assert!(fit.error_history[0] < 1e-6);
/// assert!(cp_deflation(&x, 0, &CpOptions::default()).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn cp_deflation(tensor: &ArrayD<f64>, rank: usize, options: &CpOptions) -> Result<CpResult> {
    check_tensor("CP deflation tensor", tensor)?;
    check_rank(tensor.shape(), rank)?;
    let mut rng = SeededRng::new(options.seed);
    deflate(tensor, rank, |residual| {
        let start = CpTensor::random_gaussian(tensor.shape(), 1, &mut rng)?;
        let opts = CpOptions {
            init: CpInit::Given(start),
            ..options.clone()
        };
        let fit = cp_als(residual, 1, &opts)?;
        Ok((fit.cp, fit.iterations))
    })
}

/// The greedy deflation loop shared by [`cp_deflation`] and
/// [`super::cp_power`]: `rank` times, `fit_rank_one(residual)` returns a
/// rank-1 CP fit of the current residual and the iterations it took; the fit
/// is subtracted from the residual and appended to the model. Returns the
/// normalised model, the relative error after each component and the total
/// iterations. `rank` must be ≥ 1 (checked by the callers).
pub(crate) fn deflate(
    tensor: &ArrayD<f64>,
    rank: usize,
    mut fit_rank_one: impl FnMut(&ArrayD<f64>) -> Result<(CpTensor, usize)>,
) -> Result<CpResult> {
    let norm_x = norm(tensor);
    let mut residual = tensor.clone();
    let mut model: Option<CpTensor> = None;
    let mut history = Vec::with_capacity(rank);
    let mut iterations = 0;
    for _ in 0..rank {
        let (component, component_iterations) = fit_rank_one(&residual)?;
        iterations += component_iterations;
        residual = residual - component.to_tensor()?;
        model = Some(match model {
            None => component,
            Some(m) => m.concat(&component)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::fixtures::orthogonal_cp;
    use crate::tensor::relative_error;
    use hasten_core::ndarray::IxDyn;

    #[test]
    fn recovers_orthogonal_components_exactly() {
        // With orthogonal factors the greedy deflation is exact: each step
        // finds the largest remaining component.
        let cp = orthogonal_cp(&[6, 5, 4], vec![5.0, 3.0, 1.5], 1);
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

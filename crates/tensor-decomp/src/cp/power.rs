//! The tensor power method with restarts and deflation, argued for by Astrid
//! & Lee \[19\] as the initial CP decomposition of a kernel (survey section 2;
//! the robust tensor power method of Anandkumar et al. \[21\]).
//!
//! For every component, `restarts` random starts are iterated by the
//! (asymmetric) power update `a_n ← X ×_{k≠n} a_k / ‖·‖`; the run with the
//! largest `|λ|` is polished and deflated from the tensor.

use hasten_core::error::{Error, Result};
use hasten_core::ndarray::ArrayD;
use hasten_core::SeededRng;

use super::deflation::deflate;
use super::{check_rank, cp_als, CpInit, CpOptions, CpResult, CpTensor};
use crate::tensor::check_tensor;

/// Options of [`cp_power`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerOptions {
    /// Random starts per component (≥ 1).
    pub restarts: usize,
    /// Power iterations per start.
    pub iterations: usize,
    /// Extra iterations polishing the best start.
    pub polish: usize,
    /// Seed of the starts.
    pub seed: u64,
}

impl Default for PowerOptions {
    fn default() -> Self {
        PowerOptions {
            restarts: 8,
            iterations: 20,
            polish: 50,
            seed: 0,
        }
    }
}

/// Rank-`rank` CP decomposition by the tensor power method with deflation.
/// The error history holds the relative error after each component.
///
/// # Errors
/// [`Error::ShapeMismatch`](hasten_core::Error::ShapeMismatch) for a tensor
/// of order below 2, [`Error::EmptyDimension`](hasten_core::Error::EmptyDimension)
/// or [`Error::NonFinite`](hasten_core::Error::NonFinite) for an empty or
/// non-finite tensor, [`Error::InvalidRank`](hasten_core::Error::InvalidRank)
/// for a rank outside `1..=Π I_n / max I_n`, and
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for
/// zero `restarts`.
///
/// ```
/// use hasten_core::{ndarray::{Array1, ArrayD, IxDyn}, SeededRng};
/// use hasten_tensor_decomp::cp::{cp_power, PowerOptions};
///
/// // A planted rank-1 tensor a ∘ b ∘ c is recovered by the power method.
/// let mut rng = SeededRng::new(1);
/// let (a, b, c): (Array1<f64>, Array1<f64>, Array1<f64>) = (
///     rng.normal_array_f64(3, 1.0),
///     rng.normal_array_f64(4, 1.0),
///     rng.normal_array_f64(5, 1.0),
/// );
/// let x = ArrayD::from_shape_fn(IxDyn(&[3, 4, 5]), |i| a[i[0]] * b[i[1]] * c[i[2]]);
/// let fit = cp_power(&x, 1, &PowerOptions::default())?;
/// assert!(fit.error_history[0] < 1e-6);
/// let none = PowerOptions { restarts: 0, ..PowerOptions::default() };
/// assert!(cp_power(&x, 1, &none).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn cp_power(tensor: &ArrayD<f64>, rank: usize, options: &PowerOptions) -> Result<CpResult> {
    check_tensor("tensor power method input", tensor)?;
    check_rank(tensor.shape(), rank)?;
    if options.restarts == 0 {
        return Err(Error::param("restarts", 0, ">= 1"));
    }
    let mut rng = SeededRng::new(options.seed);
    let run = |x: &ArrayD<f64>, start: CpTensor, n: usize| {
        cp_als(
            x,
            1,
            &CpOptions::default()
                .with_init(CpInit::Given(start))
                .with_max_iter(n.max(1))
                .with_tol(1e-12),
        )
    };
    deflate(tensor, rank, |residual| {
        let mut iterations = 0;
        let mut best: Option<CpTensor> = None;
        for _ in 0..options.restarts {
            let fit = run(
                residual,
                CpTensor::random_gaussian(tensor.shape(), 1, &mut rng)?,
                options.iterations,
            )?;
            iterations += fit.iterations;
            if best
                .as_ref()
                .is_none_or(|b| fit.cp.weights[0].abs() > b.weights[0].abs())
            {
                best = Some(fit.cp);
            }
        }
        let polished = run(residual, best.expect("restarts >= 1"), options.polish)?;
        Ok((polished.cp, iterations + polished.iterations))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::fixtures::orthogonal_cp;
    use crate::tensor::relative_error;
    use hasten_core::ndarray::IxDyn;

    #[test]
    fn finds_components_in_order_of_magnitude() {
        let cp = orthogonal_cp(&[7, 6, 5], vec![1.0, 4.0, 2.0], 2);
        let x = cp.to_tensor().unwrap();
        let fit = cp_power(&x, 3, &PowerOptions::default()).unwrap();
        assert!(relative_error(&x, &fit.cp.to_tensor().unwrap()).unwrap() < 1e-6);
        let w: Vec<f64> = fit.cp.weights.iter().map(|v| v.abs()).collect();
        assert!(
            (w[0] - 4.0).abs() < 1e-6 && (w[1] - 2.0).abs() < 1e-6 && (w[2] - 1.0).abs() < 1e-6
        );
    }

    #[test]
    fn bad_inputs() {
        let x = SeededRng::new(1).normal_array_f64(IxDyn(&[3, 4, 2]), 1.0);
        assert!(cp_power(&x, 0, &PowerOptions::default()).is_err());
        let none = PowerOptions {
            restarts: 0,
            ..PowerOptions::default()
        };
        assert!(cp_power(&x, 1, &none).is_err());
    }
}

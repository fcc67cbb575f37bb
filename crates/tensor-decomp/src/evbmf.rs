//! Empirical variational Bayesian matrix factorisation (EVBMF): the analytic
//! global solution of Nakajima, Sugiyama, Babacan & Tomioka (JMLR 2013).
//!
//! Kim et al. \[24\] (survey section 2) choose the Tucker-2 ranks of a kernel
//! by running EVBMF on its mode unfoldings: EVBMF estimates the noise variance
//! `σ²` by minimising the free energy, and keeps exactly the singular values
//! above the threshold `√(M σ² (1 + τ̄)(1 + α/τ̄))`, `α = L/M`, `τ̄ ≈ 2.5129 √α`.

use hasten_core::error::{ensure_finite, ensure_nonempty, Result};
use hasten_core::linalg;
use hasten_core::ndarray::ArrayView2;

/// The outcome of EVBMF on one matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Evbmf {
    /// Number of singular values above the threshold: the selected rank.
    pub rank: usize,
    /// Estimated noise variance `σ²` per entry.
    pub sigma2: f64,
    /// The singular-value threshold implied by `σ²`.
    pub threshold: f64,
    /// Singular values of the matrix, non-increasing.
    pub singular_values: Vec<f64>,
}

/// Runs EVBMF on `y` (any orientation; non-empty and finite): the rank of
/// the signal under i.i.d. Gaussian noise, with no parameter to tune (the
/// rank selection of Kim et al. \[24\], survey section 2).
///
/// # Errors
/// [`Error::EmptyDimension`](hasten_core::Error::EmptyDimension) for an
/// empty matrix, [`Error::NonFinite`](hasten_core::Error::NonFinite) for a
/// NaN or infinite entry, and the SVD's numerical errors.
///
/// ```
/// use hasten_core::{ndarray::Array2, SeededRng};
/// use hasten_tensor_decomp::evbmf;
///
/// // A planted rank-3 signal (singular values ≈ 40) under noise of σ = 0.1.
/// let mut rng = SeededRng::new(2);
/// let a: Array2<f64> = rng.normal_array_f64((40, 3), 1.0);
/// let b: Array2<f64> = rng.normal_array_f64((3, 50), 1.0);
/// let y = a.dot(&b) + rng.normal_array_f64((40, 50), 0.1);
/// let e = evbmf(y.view())?;
/// assert_eq!(e.rank, 3);
/// assert!(e.singular_values[2] > e.threshold && e.singular_values[3] < e.threshold);
/// assert!(evbmf(Array2::<f64>::zeros((0, 4)).view()).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn evbmf(y: ArrayView2<f64>) -> Result<Evbmf> {
    ensure_nonempty("EVBMF input", y.shape())?;
    ensure_finite("EVBMF input", y.iter())?;
    let y = if y.nrows() > y.ncols() {
        y.reversed_axes()
    } else {
        y
    };
    let (l, m) = (y.nrows() as f64, y.ncols() as f64);
    let s_all = linalg::thin_svd(y)?.s.to_vec();
    let scale = s_all.first().copied().unwrap_or(0.0);
    if scale == 0.0 {
        return Ok(Evbmf {
            rank: 0,
            sigma2: 0.0,
            threshold: 0.0,
            singular_values: s_all,
        });
    }
    // Exactly zero singular values carry no information and make the free
    // energy infinite; they are left out of the sum (an `H < L` truncation
    // whose residual is zero).
    let s: Vec<f64> = s_all
        .iter()
        .copied()
        .filter(|&v| v > scale * 1e-13)
        .collect();
    let h = s.len() as f64;
    let alpha = l / m;
    let tau_bar = 2.5129 * alpha.sqrt();
    let x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar);
    let sum_sq: f64 = s.iter().map(|v| v * v).sum();
    let upper = sum_sq / (l * m);
    let e_h_ub = ((l / (1.0 + alpha)).ceil() as isize - 1).min(h as isize) - 1;
    let first = ((e_h_ub + 1).max(0) as usize).min(s.len() - 1);
    let tail = &s[first..];
    let tail_mean = tail.iter().map(|v| v * v).sum::<f64>() / tail.len() as f64;
    let mut lower = (s[first] * s[first] / (m * x_bar)).max(tail_mean / m);
    if lower.is_nan() || lower <= 0.0 || lower >= upper {
        lower = upper * 1e-12;
    }
    let objective = |sigma2: f64| free_energy(sigma2, l, m, &s, alpha, x_bar);
    let sigma2 = minimise_bounded(objective, lower, upper);
    let threshold = (m * sigma2 * (1.0 + tau_bar) * (1.0 + alpha / tau_bar)).sqrt();
    let rank = s.iter().filter(|&&v| v > threshold).count();
    Ok(Evbmf {
        rank,
        sigma2,
        threshold,
        singular_values: s_all,
    })
}

/// The rank EVBMF selects for `y`; see [`evbmf`].
///
/// # Errors
/// Those of [`evbmf`].
///
/// ```
/// use hasten_core::{ndarray::Array2, SeededRng};
/// use hasten_tensor_decomp::evbmf::evbmf_rank;
///
/// // Pure noise carries no signal: EVBMF keeps nothing.
/// let y: Array2<f64> = SeededRng::new(9).normal_array_f64((30, 40), 1.0);
/// assert_eq!(evbmf_rank(y.view())?, 0);
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn evbmf_rank(y: ArrayView2<f64>) -> Result<usize> {
    Ok(evbmf(y)?.rank)
}

fn tau(x: f64, alpha: f64) -> f64 {
    let b = x - (1.0 + alpha);
    0.5 * (b + (b * b - 4.0 * alpha).max(0.0).sqrt())
}

/// The EVB free energy as a function of `σ²` (Nakajima et al., Theorem 2).
fn free_energy(sigma2: f64, l: f64, m: f64, s: &[f64], alpha: f64, x_bar: f64) -> f64 {
    let h = s.len() as f64;
    let mut obj = (l - h) * sigma2.ln();
    for &sv in s {
        let x = sv * sv / (m * sigma2);
        if x > x_bar {
            let t = tau(x, alpha);
            obj += x - t + ((t + 1.0) / x).ln() + alpha * (t / alpha + 1.0).ln();
        } else {
            obj += x - x.ln();
        }
    }
    obj
}

/// Minimises a one-dimensional function on `[lo, hi]`: a logarithmic grid
/// (the free energy may have several local minima) refined by golden-section
/// search around the best grid point.
fn minimise_bounded(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    const GRID: usize = 400;
    let (llo, lhi) = (lo.ln(), hi.ln());
    let at = |i: usize| (llo + (lhi - llo) * i as f64 / GRID as f64).exp();
    let mut best = 0;
    let mut best_val = f64::INFINITY;
    for i in 0..=GRID {
        let v = f(at(i));
        if v < best_val {
            best_val = v;
            best = i;
        }
    }
    let (mut a, mut b) = (at(best.saturating_sub(1)), at((best + 1).min(GRID)));
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..100 {
        let c = b - g * (b - a);
        let d = a + g * (b - a);
        if f(c) < f(d) {
            b = d;
        } else {
            a = c;
        }
    }
    let mid = 0.5 * (a + b);
    if f(mid) <= best_val {
        mid
    } else {
        at(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::ndarray::Array2;
    use hasten_core::SeededRng;

    fn planted(rows: usize, cols: usize, rank: usize, noise: f64, seed: u64) -> Array2<f64> {
        let mut rng = SeededRng::new(seed);
        let a: Array2<f64> = rng.normal_array_f64((rows, rank), 1.0);
        let b: Array2<f64> = rng.normal_array_f64((rank, cols), 1.0);
        let n: Array2<f64> = rng.normal_array_f64((rows, cols), noise);
        a.dot(&b) + n
    }

    #[test]
    fn recovers_planted_rank_under_noise() {
        // Signal singular values ≈ √(100·80) ≈ 90, noise edge ≈ 0.1·(√100 + √80) ≈ 1.9.
        for (rows, cols, rank, seed) in [(100, 80, 5, 1), (60, 150, 3, 2), (40, 40, 8, 3)] {
            let y = planted(rows, cols, rank, 0.1, seed);
            let e = evbmf(y.view()).unwrap();
            assert_eq!(
                e.rank,
                rank,
                "{rows}×{cols}: {:?}",
                &e.singular_values[..rank + 2]
            );
            // The estimated noise variance is the planted one (0.01) within 20 %.
            assert!((e.sigma2 - 0.01).abs() < 0.002, "σ² = {}", e.sigma2);
        }
    }

    #[test]
    fn pure_noise_keeps_nothing() {
        let mut rng = SeededRng::new(9);
        let y: Array2<f64> = rng.normal_array_f64((50, 70), 1.0);
        assert_eq!(evbmf(y.view()).unwrap().rank, 0);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(evbmf(Array2::<f64>::zeros((0, 3)).view()).is_err());
        let mut y = Array2::<f64>::ones((3, 3));
        y[[1, 1]] = f64::NAN;
        assert!(evbmf(y.view()).is_err());
        assert_eq!(evbmf(Array2::<f64>::zeros((3, 4)).view()).unwrap().rank, 0);
    }
}

//! The linear-algebra facade: thin SVD, symmetric eigendecomposition, QR,
//! linear solve and least squares, on f64 matrices.
//!
//! The default backend is `faer` (pure Rust). The cargo feature `lapack`
//! routes the same functions through `ndarray-linalg` and the system OpenBLAS.
//! Both return the same factorisations up to the sign of singular/eigen
//! vectors; the least-squares solution is the minimum-norm one in both.

// With `lapack`, the faer backend is still compiled for the test that compares
// the two backends on the same inputs.
#[cfg(any(not(feature = "lapack"), test))]
mod faer_backend;
#[cfg(not(feature = "lapack"))]
use faer_backend as backend;

#[cfg(feature = "lapack")]
mod lapack_backend;
#[cfg(feature = "lapack")]
use lapack_backend as backend;

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::error::{ensure_finite, ensure_nonempty, Error, Result};

/// Name of the backend compiled in (`"faer"` or `"lapack"`).
pub const BACKEND: &str = backend::NAME;

/// A thin SVD `A = U · diag(s) · Vᵀ`, `k = min(m, n)`.
#[derive(Debug, Clone)]
pub struct Svd {
    /// `m × k`, orthonormal columns.
    pub u: Array2<f64>,
    /// `k` singular values, non-increasing.
    pub s: Array1<f64>,
    /// `k × n`, orthonormal rows.
    pub vt: Array2<f64>,
}

impl Svd {
    /// The rank-`r` truncation `U_r diag(s_r) V_rᵀ` (r ≤ k).
    pub fn reconstruct(&self, r: usize) -> Array2<f64> {
        let r = r.min(self.s.len());
        let us = &self.u.slice(ndarray::s![.., ..r]) * &self.s.slice(ndarray::s![..r]);
        us.dot(&self.vt.slice(ndarray::s![..r, ..]))
    }
}

fn check(what: &str, a: &ArrayView2<f64>) -> Result<()> {
    ensure_nonempty(what, a.shape())?;
    ensure_finite(what, a.iter())
}

/// Thin SVD of an `m × n` matrix: `U` is `m × k`, `Vᵀ` is `k × n`,
/// `k = min(m, n)` (the factorisation behind every low-rank method of the
/// survey's section 2).
///
/// # Errors
/// [`Error::EmptyDimension`] for an empty matrix, [`Error::NonFinite`] for a
/// NaN or infinite entry, a backend error if the iteration fails.
///
/// ```
/// use hasten_core::linalg::thin_svd;
/// use hasten_core::ndarray::array;
///
/// // Singular values of diag(3, 4) padded with a zero column: 4 and 3.
/// let a = array![[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]];
/// let svd = thin_svd(a.view())?;
/// assert_eq!((svd.u.dim(), svd.vt.dim()), ((2, 2), (2, 3)));
/// assert!((svd.s[0] - 4.0).abs() < 1e-12 && (svd.s[1] - 3.0).abs() < 1e-12);
/// assert!((&svd.reconstruct(2) - &a).iter().all(|v| v.abs() < 1e-12));
/// assert!(thin_svd(array![[f64::NAN]].view()).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn thin_svd(a: ArrayView2<f64>) -> Result<Svd> {
    check("SVD input", &a)?;
    backend::svd(a)
}

/// The former name of [`thin_svd`].
#[deprecated(since = "0.1.0", note = "renamed to `thin_svd`")]
pub fn svd(a: ArrayView2<f64>) -> Result<Svd> {
    thin_svd(a)
}

/// Eigendecomposition of a symmetric matrix: eigenvalues in non-decreasing
/// order and the matching orthonormal eigenvectors as columns. Only the lower
/// triangle is read.
pub fn sym_eig(a: ArrayView2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    check("symmetric eigendecomposition input", &a)?;
    square("symmetric eigendecomposition input", &a)?;
    backend::sym_eig(a)
}

/// Thin QR `A = Q R`: `Q` is `m × k` with orthonormal columns, `R` is `k × n`
/// upper triangular, `k = min(m, n)`.
pub fn qr(a: ArrayView2<f64>) -> Result<(Array2<f64>, Array2<f64>)> {
    check("QR input", &a)?;
    backend::qr(a)
}

/// Solves the square system `A X = B` (LU with partial pivoting); fails on a
/// singular `A`.
pub fn solve(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Array2<f64>> {
    check("solve matrix", &a)?;
    check("solve right-hand side", &b)?;
    square("solve matrix", &a)?;
    if b.nrows() != a.nrows() {
        return Err(Error::shape(
            "solve right-hand side rows",
            a.nrows(),
            b.nrows(),
        ));
    }
    let x = backend::solve(a, b)?;
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::numerical(
            "solve",
            "matrix is singular to working precision",
        ));
    }
    Ok(x)
}

/// Minimum-norm least squares `argmin_X ‖A X − B‖_F`, through the SVD with
/// singular values below `max(m, n) · ε · σ_max` treated as zero.
pub fn lstsq(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Array2<f64>> {
    if b.nrows() != a.nrows() {
        return Err(Error::shape(
            "least-squares right-hand side rows",
            a.nrows(),
            b.nrows(),
        ));
    }
    check("least-squares right-hand side", &b)?;
    Ok(pinv(a)?.dot(&b))
}

/// Moore–Penrose pseudo-inverse (same cut-off as [`lstsq`]).
pub fn pinv(a: ArrayView2<f64>) -> Result<Array2<f64>> {
    let Svd { u, s, vt } = thin_svd(a)?;
    let cutoff = a.nrows().max(a.ncols()) as f64 * f64::EPSILON * s.first().copied().unwrap_or(0.0);
    let inv: Array1<f64> = s.mapv(|v| if v > cutoff { 1.0 / v } else { 0.0 });
    // A⁺ = V diag(1/s) Uᵀ
    let v_scaled = &vt.t() * &inv.insert_axis(Axis(0));
    Ok(v_scaled.dot(&u.t()))
}

fn square(what: &str, a: &ArrayView2<f64>) -> Result<()> {
    if a.nrows() != a.ncols() {
        return Err(Error::shape(
            what,
            "a square matrix",
            format!("{} × {}", a.nrows(), a.ncols()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(all(test, feature = "lapack"))]
mod backends_agree;

//! `faer` implementation of the facade (default).

use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};
use ndarray::{Array1, Array2, ArrayView2};

use super::Svd;
use crate::error::{Error, Result};

#[cfg_attr(feature = "lapack", allow(dead_code))] // only the comparison test uses this backend then
pub(super) const NAME: &str = "faer";

fn to_faer(a: ArrayView2<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

fn to_ndarray(m: MatRef<'_, f64>) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

pub(super) fn svd(a: ArrayView2<f64>) -> Result<Svd> {
    let m = to_faer(a);
    let f = m
        .thin_svd()
        .map_err(|e| Error::numerical("svd (faer)", format!("{e:?}")))?;
    let s = f.S().column_vector();
    Ok(Svd {
        u: to_ndarray(f.U()),
        s: Array1::from_shape_fn(s.nrows(), |i| s[i]),
        vt: to_ndarray(f.V()).reversed_axes(),
    })
}

pub(super) fn sym_eig(a: ArrayView2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    let m = to_faer(a);
    let f = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::numerical("sym_eig (faer)", format!("{e:?}")))?;
    let s = f.S().column_vector();
    Ok((
        Array1::from_shape_fn(s.nrows(), |i| s[i]),
        to_ndarray(f.U()),
    ))
}

pub(super) fn qr(a: ArrayView2<f64>) -> Result<(Array2<f64>, Array2<f64>)> {
    let m = to_faer(a);
    let f = m.qr();
    Ok((
        to_ndarray(f.compute_thin_Q().as_ref()),
        to_ndarray(f.thin_R()),
    ))
}

pub(super) fn solve(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Array2<f64>> {
    let lu = to_faer(a).partial_piv_lu();
    let x = lu.solve(to_faer(b));
    Ok(to_ndarray(x.as_ref()))
}

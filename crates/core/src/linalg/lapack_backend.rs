//! LAPACK implementation of the facade (`lapack` feature; system OpenBLAS).

use ndarray::{Array1, Array2, ArrayView2};
use ndarray_linalg::{Eigh, JobSvd, Solve, QR, SVDDC, UPLO};

use super::Svd;
use crate::error::{Error, Result};

pub(super) const NAME: &str = "lapack";

fn fail(routine: &str, e: impl std::fmt::Display) -> Error {
    Error::numerical(format!("{routine} (lapack)"), e)
}

pub(super) fn svd(a: ArrayView2<f64>) -> Result<Svd> {
    let (u, s, vt) = a
        .to_owned()
        .svddc(JobSvd::Some)
        .map_err(|e| fail("svd", e))?;
    Ok(Svd {
        u: u.ok_or_else(|| fail("svd", "no U returned"))?,
        s,
        vt: vt.ok_or_else(|| fail("svd", "no Vᵀ returned"))?,
    })
}

pub(super) fn sym_eig(a: ArrayView2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    a.to_owned()
        .eigh(UPLO::Lower)
        .map_err(|e| fail("sym_eig", e))
}

pub(super) fn qr(a: ArrayView2<f64>) -> Result<(Array2<f64>, Array2<f64>)> {
    a.to_owned().qr().map_err(|e| fail("qr", e))
}

pub(super) fn solve(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Array2<f64>> {
    let a = a.to_owned();
    let mut x = Array2::zeros(b.raw_dim());
    for (j, col) in b.columns().into_iter().enumerate() {
        let sol = a.solve(&col.to_owned()).map_err(|e| fail("solve", e))?;
        x.column_mut(j).assign(&sol);
    }
    Ok(x)
}

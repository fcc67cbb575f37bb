//! Fully connected layer `y = W x + b` on the flattened sample, in f64:
//! `∂L/∂x = Wᵀ ∂L/∂y` (reshaped to the input), `∂L/∂W = Σ_n ∂L/∂y_n x_nᵀ`,
//! `∂L/∂b = Σ_n ∂L/∂y_n`.

use ndarray::{Array1, Array2, Array4, ArrayView1, ArrayView2, Ix1, Ix2};

use super::{param, OpGrad, OpParams};
use crate::error::{Error, Result};

fn weights<'a>(
    x: &Array4<f64>,
    p: &'a OpParams,
    out: usize,
) -> Result<(ndarray::ArrayView2<'a, f64>, Option<ArrayView1<'a, f64>>)> {
    let features = x.len() / x.shape()[0];
    let w = param(p, "linear", "weight", &[out, features])?
        .view()
        .into_dimensionality::<Ix2>()
        .expect("shape checked");
    let b = match p.get("bias") {
        Some(_) => Some(
            param(p, "linear", "bias", &[out])?
                .view()
                .into_dimensionality::<Ix1>()
                .expect("shape checked"),
        ),
        None => None,
    };
    Ok((w, b))
}

fn flat(x: &Array4<f64>) -> Result<Array2<f64>> {
    let n = x.shape()[0];
    let f = x.len() / n;
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, f))
        .map_err(|e| Error::shape("linear input", format!("{n} × {f}"), e))
}

pub(super) fn forward(x: &Array4<f64>, p: &OpParams, out: [usize; 4]) -> Result<Array4<f64>> {
    let (w, b) = weights(x, p, out[1])?;
    forward_with(w, b, x, out)
}

/// `y = W x + b` with the weight `w [out, in]` and bias `b` given directly
/// (for the compressed ops of [`super::packed`] with a linear layout).
pub(super) fn forward_with(
    w: ArrayView2<f64>,
    b: Option<ArrayView1<f64>>,
    x: &Array4<f64>,
    out: [usize; 4],
) -> Result<Array4<f64>> {
    let xf = flat(x)?;
    let mut y = Array4::<f64>::zeros(out);
    for n in 0..out[0] {
        for o in 0..out[1] {
            let mut acc = b.map_or(0.0, |b| b[o]);
            for i in 0..w.ncols() {
                acc += w[[o, i]] * xf[[n, i]];
            }
            y[[n, o, 0, 0]] = acc;
        }
    }
    Ok(y)
}

pub(super) fn backward(x: &Array4<f64>, dy: &Array4<f64>, p: &OpParams) -> Result<OpGrad> {
    let out = dy.shape()[1];
    let (w, b) = weights(x, p, out)?;
    let (input, dw, db) = backward_with(w, b.is_some(), x, dy)?;
    let mut params = OpParams::new();
    params.insert("weight".into(), dw.into_dyn());
    if let Some(db) = db {
        params.insert("bias".into(), db.into_dyn());
    }
    Ok(OpGrad { input, params })
}

/// `(∂L/∂x, ∂L/∂W, ∂L/∂b)` of a linear layer.
pub(super) type LinearGrads = (Array4<f64>, Array2<f64>, Option<Array1<f64>>);

/// The backward of [`forward_with`]: `(∂L/∂x, ∂L/∂W, ∂L/∂b)`, the bias
/// gradient when `bias` is set.
pub(super) fn backward_with(
    w: ArrayView2<f64>,
    bias: bool,
    x: &Array4<f64>,
    dy: &Array4<f64>,
) -> Result<LinearGrads> {
    let out = dy.shape()[1];
    let xf = flat(x)?;
    let (batch, features) = xf.dim();
    let mut dx = Array2::<f64>::zeros((batch, features));
    let mut dw = Array2::<f64>::zeros((out, features));
    let mut db = Array1::<f64>::zeros(out);
    for n in 0..batch {
        for o in 0..out {
            let g = dy[[n, o, 0, 0]];
            db[o] += g;
            for i in 0..features {
                dx[[n, i]] += w[[o, i]] * g;
                dw[[o, i]] += xf[[n, i]] * g;
            }
        }
    }
    let input = dx
        .into_shape_with_order(x.raw_dim())
        .map_err(|e| Error::shape("linear input gradient", format!("{:?}", x.shape()), e))?;
    Ok((input, dw, bias.then_some(db)))
}

//! Convolution (survey eq. (1)) forward and backward in f64: with
//! `V[n,t,y,x] = b[t] + Σ_{s,i,j} W[t,s,i,j] · U[n, g·C_g + s, y·σ_h + i·δ_h − p_t, x·σ_w + j·δ_w − p_l]`,
//! `∂L/∂U` scatters `W · ∂L/∂V` back to every tap that read it,
//! `∂L/∂W[t,s,i,j] = Σ_{n,y,x} U[…] · ∂L/∂V[n,t,y,x]` and
//! `∂L/∂b[t] = Σ_{n,y,x} ∂L/∂V[n,t,y,x]`.

use ndarray::{Array1, Array4, ArrayView1, ArrayView4, Ix1, Ix4};

use super::{param, OpGrad, OpParams};
use crate::error::Result;
use crate::layer::ConvLayer;
use crate::spec::ConvSpec;

/// Visits every (output, weight tap, input) triple of the convolution that
/// reads a real (non-padding) input: `f(n, t, y, x, s, i, j, c, iy, ix)`.
fn for_each_tap(
    dims: [usize; 4],
    spec: &ConvSpec,
    xs: &[usize],
    out: [usize; 4],
    mut f: impl FnMut([usize; 4], [usize; 3], [usize; 3]),
) {
    let [_, c_g, kh, kw] = dims;
    let t_g = out[1] / spec.groups;
    let (sh, sw) = spec.stride;
    let (dh, dw) = spec.dilation;
    let (pt, pl) = (spec.padding.top as isize, spec.padding.left as isize);
    let (h, wd) = (xs[2] as isize, xs[3] as isize);
    for n in 0..out[0] {
        for t in 0..out[1] {
            let group = t / t_g;
            for y in 0..out[2] {
                for x in 0..out[3] {
                    for s in 0..c_g {
                        for i in 0..kh {
                            let iy = (y * sh + i * dh) as isize - pt;
                            if iy < 0 || iy >= h {
                                continue;
                            }
                            for j in 0..kw {
                                let ix = (x * sw + j * dw) as isize - pl;
                                if ix < 0 || ix >= wd {
                                    continue;
                                }
                                f(
                                    [n, t, y, x],
                                    [s, i, j],
                                    [group * c_g + s, iy as usize, ix as usize],
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

fn weights<'a>(
    layer: &ConvLayer,
    p: &'a OpParams,
) -> Result<(
    ndarray::ArrayView4<'a, f64>,
    Option<ndarray::ArrayView1<'a, f64>>,
)> {
    let w = param(p, "conv", "weight", &layer.weight().dims())?
        .view()
        .into_dimensionality::<Ix4>()
        .expect("shape checked");
    let b = match layer.bias() {
        Some(_) => Some(
            param(p, "conv", "bias", &[layer.out_channels()])?
                .view()
                .into_dimensionality::<Ix1>()
                .expect("shape checked"),
        ),
        None => None,
    };
    Ok((w, b))
}

pub(super) fn forward(
    layer: &ConvLayer,
    x: &Array4<f64>,
    p: &OpParams,
    out: [usize; 4],
) -> Result<Array4<f64>> {
    let (w, b) = weights(layer, p)?;
    Ok(forward_with(layer.spec(), w, b, x, out))
}

/// Equation (1) with the weight `w` (OIHW), bias `b` and `spec` given
/// directly — the forward of every op that is a convolution with a weight
/// derived from its own parameters (the compressed ops of [`super::packed`]).
pub(super) fn forward_with(
    spec: &ConvSpec,
    w: ArrayView4<f64>,
    b: Option<ArrayView1<f64>>,
    x: &Array4<f64>,
    out: [usize; 4],
) -> Array4<f64> {
    let dims = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
    let mut y = Array4::<f64>::zeros(out);
    if let Some(b) = b {
        for ((_, t, _, _), v) in y.indexed_iter_mut() {
            *v = b[t];
        }
    }
    for_each_tap(
        dims,
        spec,
        x.shape(),
        out,
        |[n, t, oy, ox], [s, i, j], [c, iy, ix]| {
            y[[n, t, oy, ox]] += w[[t, s, i, j]] * x[[n, c, iy, ix]];
        },
    );
    y
}

pub(super) fn backward(
    layer: &ConvLayer,
    x: &Array4<f64>,
    dy: &Array4<f64>,
    p: &OpParams,
) -> Result<OpGrad> {
    let (w, b) = weights(layer, p)?;
    let (dx, dw, db) = backward_with(layer.spec(), w, b.is_some(), x, dy);
    let mut params = OpParams::new();
    params.insert("weight".into(), dw.into_dyn());
    if let Some(db) = db {
        params.insert("bias".into(), db.into_dyn());
    }
    Ok(OpGrad { input: dx, params })
}

/// The backward of [`forward_with`]: `(∂L/∂x, ∂L/∂W, ∂L/∂b)`, the bias
/// gradient when `bias` is set.
pub(super) fn backward_with(
    spec: &ConvSpec,
    w: ArrayView4<f64>,
    bias: bool,
    x: &Array4<f64>,
    dy: &Array4<f64>,
) -> (Array4<f64>, Array4<f64>, Option<Array1<f64>>) {
    let dims = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
    let out = [dy.shape()[0], dy.shape()[1], dy.shape()[2], dy.shape()[3]];
    let mut dx = Array4::<f64>::zeros(x.raw_dim());
    let mut dw = Array4::<f64>::zeros(w.raw_dim());
    for_each_tap(
        dims,
        spec,
        x.shape(),
        out,
        |[n, t, oy, ox], [s, i, j], [c, iy, ix]| {
            let g = dy[[n, t, oy, ox]];
            dx[[n, c, iy, ix]] += w[[t, s, i, j]] * g;
            dw[[t, s, i, j]] += x[[n, c, iy, ix]] * g;
        },
    );
    let db = bias.then(|| {
        let mut db = Array1::<f64>::zeros(out[1]);
        for ((_, t, _, _), &g) in dy.indexed_iter() {
            db[t] += g;
        }
        db
    });
    (dx, dw, db)
}

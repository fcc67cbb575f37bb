//! Reverse mode of XNOR-Net binary convolutions (`BinaryConv` with
//! binarized inputs; survey eq. (8)–(9), Rastegari et al. \[59\]) by the
//! straight-through estimator.
//!
//! The forward is the op's own formula in f64 with the parameter values
//! `p`: `y = S ⊙ K · α_t + b_t`, with `S = B ∗ sign(x)` (the `±1` weight
//! signs `B` against the binarized input, zero padding staying zero) and
//! the scaling map `K = A ∗ k` of eq. (9) (`BinaryConv::scaling_map`).
//!
//! `sign(x)` is piecewise constant, so the backward differentiates the
//! surrogate `(B ∗ htanh(x)) ⊙ K · α_t + b_t` with `htanh(x) =
//! clamp(x, −1, 1)` — the straight-through estimator of BinaryConnect and
//! XNOR-Net: the gradient passes where `|x| ≤ 1` and is 0 elsewhere. `K` is
//! treated as a constant of the input (no gradient flows through `|x|`),
//! as in XNOR-Net's own training: `∂L/∂x = 1[|x| ≤ 1] · (Bᵀ ∗ (∂L/∂y ⊙ K ·
//! α))`. In sign mode ([`BinaryInput::Sign`]) `K ≡ 1`. The signs `B` are fixed codes (their latent weights are trained by
//! quantization-aware training); the trainable values are the per-filter
//! `alpha`, with `∂L/∂α_t = Σ ∂L/∂y_t ⊙ S_t ⊙ K` (exact: the forward is
//! linear in `α`), and the `bias`.

use ndarray::{Array1, Array2, Array4, Ix1};

use super::{conv, linear, param, OpGrad, OpParams};
use crate::error::Result;
use crate::op::{binary_sign, BinaryConv, BinaryInput, WeightLayout};

/// The op's values read once: signs, `alpha`, bias, `K` and `S`.
struct Parts {
    /// `B [rows, row_len]`.
    signs: Array2<f64>,
    /// `α` by filter.
    alpha: Array1<f64>,
    /// The bias, where the op has one.
    bias: Option<Array1<f64>>,
    /// `K [N, groups, out_h, out_w]`.
    k: Array4<f64>,
    /// `S = B ∗ sign(x)`, the output shape.
    s: Array4<f64>,
}

/// The binary activation of the batch, on its f32 values as the op sees it.
fn binarized(x: &Array4<f64>) -> Array4<f64> {
    x.mapv(|v| f64::from(binary_sign(v as f32)))
}

/// `W ∗ x` (no bias) for the op's geometry, `W [rows, row_len]`.
fn apply(
    layout: &WeightLayout,
    w: &Array2<f64>,
    x: &Array4<f64>,
    out: [usize; 4],
) -> Result<Array4<f64>> {
    match *layout {
        WeightLayout::Conv { dims, spec } => {
            let w = w
                .view()
                .into_shape_with_order(dims)
                .expect("rows × row_len");
            Ok(conv::forward_with(&spec, w, None, x, out))
        }
        WeightLayout::Linear { .. } => linear::forward_with(w.view(), None, x, out),
    }
}

/// `Wᵀ ∗ g`, the input gradient of [`apply`].
fn apply_transposed(
    layout: &WeightLayout,
    w: &Array2<f64>,
    x: &Array4<f64>,
    g: &Array4<f64>,
) -> Result<Array4<f64>> {
    match *layout {
        WeightLayout::Conv { dims, spec } => {
            let w = w
                .view()
                .into_shape_with_order(dims)
                .expect("rows × row_len");
            Ok(conv::backward_with(&spec, w, false, x, g).0)
        }
        WeightLayout::Linear { .. } => Ok(linear::backward_with(w.view(), false, x, g)?.0),
    }
}

/// The scaling map `K` of eq. (9) in f64: the box filter of weight
/// `1 / row_len` over `|x|`, one map per convolution group (as
/// `BinaryConv::scaling_map`).
fn scaling_map(op: &BinaryConv, x: &Array4<f64>, out: [usize; 4]) -> Result<Array4<f64>> {
    let (layout, groups) = match *op.layout() {
        WeightLayout::Conv { dims, spec } => (
            WeightLayout::conv([spec.groups, dims[1], dims[2], dims[3]], spec)?,
            spec.groups,
        ),
        WeightLayout::Linear { inp, .. } => (WeightLayout::linear(1, inp)?, 1),
    };
    let w = Array2::from_elem((groups, layout.row_len()), 1.0 / layout.row_len() as f64);
    apply(
        &layout,
        &w,
        &x.mapv(f64::abs),
        [out[0], groups, out[2], out[3]],
    )
}

fn parts(op: &BinaryConv, x: &Array4<f64>, p: &OpParams, out: [usize; 4]) -> Result<Parts> {
    let kind = "xnor_conv";
    let rows = op.layout().rows();
    let vector = |name: &str| -> Result<Array1<f64>> {
        Ok(param(p, kind, name, &[rows])?
            .view()
            .into_dimensionality::<Ix1>()
            .expect("shape checked")
            .to_owned())
    };
    let signs = op.sign_matrix().mapv(f64::from);
    let alpha = vector("alpha")?;
    let bias = op.bias().map(|_| vector("bias")).transpose()?;
    let k = match op.input() {
        BinaryInput::XnorK => scaling_map(op, x, out)?,
        // Sign mode: `K ≡ 1` (one map, every filter).
        _ => Array4::ones([out[0], 1, out[2], out[3]]),
    };
    let s = apply(op.layout(), &signs, &binarized(x), out)?;
    Ok(Parts {
        signs,
        alpha,
        bias,
        k,
        s,
    })
}

/// The group of filter `t` when `rows` filters share `groups` maps.
fn group(t: usize, rows: usize, groups: usize) -> usize {
    t / (rows / groups)
}

/// The f64 forward `y = (B ∗ sign(x)) ⊙ K · α_t + b_t`.
pub(super) fn forward(
    op: &BinaryConv,
    x: &Array4<f64>,
    p: &OpParams,
    out: [usize; 4],
) -> Result<Array4<f64>> {
    let Parts {
        alpha, bias, k, s, ..
    } = parts(op, x, p, out)?;
    let (rows, groups) = (out[1], k.shape()[1]);
    Ok(Array4::from_shape_fn(out, |(n, t, i, j)| {
        s[[n, t, i, j]] * k[[n, group(t, rows, groups), i, j]] * alpha[t]
            + bias.as_ref().map_or(0.0, |b| b[t])
    }))
}

/// The straight-through backward (see the module docs): `∂L/∂x` through
/// `htanh` with `K` constant, `∂L/∂alpha` and `∂L/∂bias`.
pub(super) fn backward(
    op: &BinaryConv,
    x: &Array4<f64>,
    dy: &Array4<f64>,
    p: &OpParams,
) -> Result<OpGrad> {
    let out = [dy.shape()[0], dy.shape()[1], dy.shape()[2], dy.shape()[3]];
    let Parts {
        signs,
        alpha,
        bias,
        k,
        s,
    } = parts(op, x, p, out)?;
    let (rows, groups) = (out[1], k.shape()[1]);
    let mut scaled = dy.clone();
    let mut d_alpha = Array1::<f64>::zeros(rows);
    let mut d_bias = Array1::<f64>::zeros(rows);
    for ((n, t, i, j), g) in scaled.indexed_iter_mut() {
        let kk = k[[n, group(t, rows, groups), i, j]];
        d_alpha[t] += *g * s[[n, t, i, j]] * kk;
        d_bias[t] += *g;
        *g *= kk * alpha[t];
    }
    let mut input = apply_transposed(op.layout(), &signs, x, &scaled)?;
    input.zip_mut_with(x, |g, &v| {
        if v.abs() > 1.0 {
            *g = 0.0;
        }
    });
    let mut params = OpParams::new();
    params.insert("alpha".into(), d_alpha.into_dyn());
    if bias.is_some() {
        params.insert("bias".into(), d_bias.into_dyn());
    }
    Ok(OpGrad { input, params })
}

//! Batch normalisation forward and backward in f64.
//!
//! Inference mode: `y = γ·(x − μ)/√(σ² + ε) + β` with the running statistics;
//! `∂L/∂x = γ/√(σ² + ε) · ∂L/∂y`, `∂L/∂γ = Σ ∂L/∂y · x̂`, `∂L/∂β = Σ ∂L/∂y`.
//!
//! Training mode: `μ_B`, `σ²_B` are the mean and biased variance of each
//! channel over the `m = N·H·W` values of the batch, `x̂ = (x − μ_B)/√(σ²_B + ε)`,
//! `y = γ x̂ + β`, and, differentiating through the statistics,
//! `∂L/∂x = γ/(m √(σ²_B + ε)) · (m ∂L/∂y − Σ ∂L/∂y − x̂ Σ ∂L/∂y · x̂)`.
//! The running averages become `(1 − m_r)·r + m_r·b` with momentum `m_r`,
//! the variance averaging the unbiased `σ²_B · m/(m − 1)` (PyTorch).

use ndarray::{Array1, Array4, Axis, Ix1};

use super::{param, Forward, Mode, OpGrad, OpParams};
use crate::error::{Error, Result};
use crate::op::BatchNorm;

/// PyTorch's default running-average momentum.
pub const BN_DEFAULT_MOMENTUM: f64 = 0.1;

/// The per-channel mean and biased variance of `x` over batch and plane.
pub fn batch_norm_batch_stats(x: &Array4<f64>) -> (Array1<f64>, Array1<f64>) {
    let c = x.shape()[1];
    let m = (x.len() / c) as f64;
    let mut mean = Array1::zeros(c);
    let mut var = Array1::zeros(c);
    for (ch, lane) in x.axis_iter(Axis(1)).enumerate() {
        let mu = lane.iter().sum::<f64>() / m;
        mean[ch] = mu;
        var[ch] = lane.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / m;
    }
    (mean, var)
}

struct Values<'a> {
    gamma: ndarray::ArrayView1<'a, f64>,
    beta: ndarray::ArrayView1<'a, f64>,
    mean: ndarray::ArrayView1<'a, f64>,
    var: ndarray::ArrayView1<'a, f64>,
}

fn values<'a>(bn: &BatchNorm, p: &'a OpParams) -> Result<Values<'a>> {
    let c = [bn.channels()];
    let get = |name| -> Result<ndarray::ArrayView1<'a, f64>> {
        Ok(param(p, "batch-norm", name, &c)?
            .view()
            .into_dimensionality::<Ix1>()
            .expect("shape checked"))
    };
    Ok(Values {
        gamma: get("weight")?,
        beta: get("bias")?,
        mean: get("running_mean")?,
        var: get("running_var")?,
    })
}

/// The statistics the forward normalises with: batch statistics in training,
/// running ones at inference.
fn stats(x: &Array4<f64>, v: &Values, mode: Mode) -> Result<(Array1<f64>, Array1<f64>)> {
    if mode.is_train() {
        let per_channel = x.len() / x.shape()[1];
        if per_channel < 2 {
            return Err(Error::param(
                "batch-norm values per channel in training",
                per_channel,
                ">= 2 (a batch variance needs two values)",
            ));
        }
        Ok(batch_norm_batch_stats(x))
    } else {
        Ok((v.mean.to_owned(), v.var.to_owned()))
    }
}

pub(super) fn forward(
    bn: &BatchNorm,
    x: &Array4<f64>,
    p: &OpParams,
    mode: Mode,
) -> Result<Forward> {
    let v = values(bn, p)?;
    let (mean, var) = stats(x, &v, mode)?;
    let eps = f64::from(bn.eps());
    let mut y = x.clone();
    for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let denom = (var[c] + eps).sqrt();
        plane.mapv_inplace(|u| v.gamma[c] * (u - mean[c]) / denom + v.beta[c]);
    }
    let mut buffers = OpParams::new();
    if let Mode::Train { momentum, .. } = mode {
        if !(0.0..=1.0).contains(&momentum) {
            return Err(Error::param("batch-norm momentum", momentum, "in [0, 1]"));
        }
        let m = (x.len() / x.shape()[1]) as f64;
        let run_mean = &v.mean * (1.0 - momentum) + &mean * momentum;
        let run_var = &v.var * (1.0 - momentum) + &var * (momentum * m / (m - 1.0));
        buffers.insert("running_mean".into(), run_mean.into_dyn());
        buffers.insert("running_var".into(), run_var.into_dyn());
    }
    Ok(Forward { output: y, buffers })
}

pub(super) fn backward(
    bn: &BatchNorm,
    x: &Array4<f64>,
    dy: &Array4<f64>,
    p: &OpParams,
    mode: Mode,
) -> Result<OpGrad> {
    let v = values(bn, p)?;
    let (mean, var) = stats(x, &v, mode)?;
    let eps = f64::from(bn.eps());
    let c_all = bn.channels();
    let m = (x.len() / c_all) as f64;
    let mut dx = Array4::<f64>::zeros(x.raw_dim());
    let mut dgamma = Array1::<f64>::zeros(c_all);
    let mut dbeta = Array1::<f64>::zeros(c_all);
    for c in 0..c_all {
        let xc = x.index_axis(Axis(1), c);
        let gc = dy.index_axis(Axis(1), c);
        let inv = 1.0 / (var[c] + eps).sqrt();
        let (mut sum_g, mut sum_gx) = (0.0, 0.0);
        for (&u, &g) in xc.iter().zip(gc.iter()) {
            let xhat = (u - mean[c]) * inv;
            sum_g += g;
            sum_gx += g * xhat;
        }
        dgamma[c] = sum_gx;
        dbeta[c] = sum_g;
        let mut dxc = dx.index_axis_mut(Axis(1), c);
        for ((d, &u), &g) in dxc.iter_mut().zip(xc.iter()).zip(gc.iter()) {
            *d = if mode.is_train() {
                let xhat = (u - mean[c]) * inv;
                v.gamma[c] * inv / m * (m * g - sum_g - xhat * sum_gx)
            } else {
                v.gamma[c] * inv * g
            };
        }
    }
    let mut params = OpParams::new();
    params.insert("weight".into(), dgamma.into_dyn());
    params.insert("bias".into(), dbeta.into_dyn());
    Ok(OpGrad { input: dx, params })
}

//! Inference-mode batch normalisation:
//! `y = γ · (x − μ) / sqrt(σ² + ε) + β`, per channel.

use ndarray::{Array1, Array4, Axis};

use super::{expect_channels, input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{ensure_finite, ensure_nonempty, Error, Result};
use crate::shape::ActShape;

/// Batch normalisation with frozen statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    gamma: Array1<f32>,
    beta: Array1<f32>,
    mean: Array1<f32>,
    var: Array1<f32>,
    eps: f32,
}

impl BatchNorm {
    /// Validates equal lengths, finite values, `var ≥ 0` and `eps > 0`.
    pub fn new(
        gamma: Array1<f32>,
        beta: Array1<f32>,
        mean: Array1<f32>,
        var: Array1<f32>,
        eps: f32,
    ) -> Result<Self> {
        ensure_nonempty("batch-norm scale", gamma.shape())?;
        let c = gamma.len();
        for (name, v) in [
            ("beta", &beta),
            ("running mean", &mean),
            ("running var", &var),
        ] {
            if v.len() != c {
                return Err(Error::shape(
                    format!("batch-norm {name} length"),
                    c,
                    v.len(),
                ));
            }
        }
        for (name, v) in [
            ("gamma", &gamma),
            ("beta", &beta),
            ("mean", &mean),
            ("var", &var),
        ] {
            ensure_finite(&format!("batch-norm {name}"), v.iter())?;
        }
        if let Some(bad) = var.iter().find(|&&v| v < 0.0) {
            return Err(Error::param("batch-norm running var", bad, ">= 0"));
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::param("batch-norm eps", eps, "finite and > 0"));
        }
        Ok(BatchNorm {
            gamma,
            beta,
            mean,
            var,
            eps,
        })
    }

    /// Channels normalised.
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// Scale γ.
    pub fn gamma(&self) -> &Array1<f32> {
        &self.gamma
    }

    /// Shift β.
    pub fn beta(&self) -> &Array1<f32> {
        &self.beta
    }

    /// Running mean μ.
    pub fn mean(&self) -> &Array1<f32> {
        &self.mean
    }

    /// Running variance σ².
    pub fn var(&self) -> &Array1<f32> {
        &self.var
    }

    /// ε.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// The per-channel affine map `(scale, shift)` with `y = scale·x + shift`.
    pub fn affine(&self) -> (Array1<f32>, Array1<f32>) {
        let scale: Array1<f32> = self
            .gamma
            .iter()
            .zip(self.var.iter())
            .map(|(&g, &v)| g / (v + self.eps).sqrt())
            .collect();
        let shift = &self.beta - &(&self.mean * &scale);
        (scale, shift)
    }

    /// Keeps only the listed channels, in order.
    pub fn select(&self, channels: &[usize]) -> Result<Self> {
        if let Some(&bad) = channels.iter().find(|&&c| c >= self.channels()) {
            return Err(Error::param(
                "batch-norm channel",
                bad,
                format!("< {}", self.channels()),
            ));
        }
        let pick = |a: &Array1<f32>| a.select(Axis(0), channels);
        BatchNorm::new(
            pick(&self.gamma),
            pick(&self.beta),
            pick(&self.mean),
            pick(&self.var),
            self.eps,
        )
    }
}

impl Operator for BatchNorm {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        expect_channels("batch-norm", self.channels(), input)?;
        input.checked_len()?;
        Ok(input)
    }

    /// One multiply–add per element; γ and β are the parameters.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        let mut cost = Cost::f32_op(
            input.len() as u64,
            2 * self.channels() as u64,
            input.len(),
            out.len(),
        )?;
        cost.weight_bytes = 4 * 4 * self.channels() as u64;
        Ok(cost)
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        self.output_shape(input_shape_of(input)?)?;
        let mut y = input.to_owned();
        for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
            let denom = (f64::from(self.var[c]) + f64::from(self.eps)).sqrt();
            let (g, b, m) = (
                f64::from(self.gamma[c]),
                f64::from(self.beta[c]),
                f64::from(self.mean[c]),
            );
            plane.mapv_inplace(|v| (g * (f64::from(v) - m) / denom + b) as f32);
        }
        Ok(y)
    }
}

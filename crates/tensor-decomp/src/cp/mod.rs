//! CP (canonical polyadic) decomposition of N-way tensors and of convolution
//! kernels (survey section 2, Table 1 "cp-decomposition": `K(C + 2d + N)` MACs
//! per pixel; Fig. 1).
//!
//! - [`cp_als`]: alternating least squares (Kolda & Bader \[20\]) with SVD or
//!   random start, optional l2 regularisation, Bro's line search,
//!   normalisation, tolerance, iteration cap and error history;
//! - [`cp_deflation`]: greedy rank-1 deflation, the "outer product
//!   decomposition" of Denton et al. \[17\];
//! - [`cp_power`]: the tensor power method with restarts argued for by Astrid
//!   & Lee \[19\];
//! - [`cp_lm`]: damped Gauss–Newton (Levenberg–Marquardt) refinement, the
//!   non-linear least squares of Lebedev et al. \[18\];
//! - [`CpConv`]: the transform; its block is `1×1 C→K`, `d×1` depthwise,
//!   `1×d` depthwise, `1×1 K→N` (or one `d×d` depthwise core for the 3-way
//!   variant).

mod als;
mod block;
mod deflation;
mod lm;
mod power;

pub use als::{cp_als, CpInit, CpOptions, CpResult};
pub use block::{CpAlgorithm, CpConv, CpVariant};
pub use deflation::cp_deflation;
pub use lm::{cp_lm, LmOptions};
pub use power::{cp_power, PowerOptions};

use hasten_core::error::{Error, Result};
use hasten_core::ndarray::{Array1, Array2, ArrayD, Axis};

use crate::tensor::cp_to_tensor;

/// A CP tensor `Σ_r λ_r a_r^{(0)} ∘ a_r^{(1)} ∘ …`: weights `λ` and one
/// `I_n × R` factor per mode.
#[derive(Debug, Clone, PartialEq)]
pub struct CpTensor {
    /// Component weights `λ_r`.
    pub weights: Array1<f64>,
    /// Factor matrices, `factors[n]` is `I_n × R`.
    pub factors: Vec<Array2<f64>>,
}

impl CpTensor {
    /// Validates that every factor has `weights.len()` columns.
    pub fn new(weights: Array1<f64>, factors: Vec<Array2<f64>>) -> Result<Self> {
        if factors.len() < 2 {
            return Err(Error::param("CP factor count", factors.len(), ">= 2"));
        }
        if let Some(f) = factors.iter().find(|f| f.ncols() != weights.len()) {
            return Err(Error::shape("CP factor columns", weights.len(), f.ncols()));
        }
        Ok(CpTensor { weights, factors })
    }

    /// Checks the invariants [`CpTensor::new`] establishes (useful after
    /// editing the public fields): ≥ 2 factors, each with `weights.len()`
    /// columns, all values finite.
    pub fn validate(&self) -> Result<()> {
        CpTensor::new(self.weights.clone(), self.factors.clone())?;
        hasten_core::error::ensure_finite("CP weights", self.weights.iter())?;
        for f in &self.factors {
            hasten_core::error::ensure_finite("CP factor", f.iter())?;
        }
        Ok(())
    }

    /// Number of components `R`.
    pub fn rank(&self) -> usize {
        self.weights.len()
    }

    /// Mode sizes `I_n`.
    pub fn shape(&self) -> Vec<usize> {
        self.factors.iter().map(|f| f.nrows()).collect()
    }

    /// The full tensor.
    pub fn to_tensor(&self) -> Result<ArrayD<f64>> {
        cp_to_tensor(&self.weights, &self.factors)
    }

    /// The same tensor with unit-norm factor columns, the norms moved into the
    /// weights, and components sorted by decreasing `|λ_r|`; fails on an
    /// invalid tensor (see [`CpTensor::validate`]).
    pub fn normalized(&self) -> Result<CpTensor> {
        self.validate()?;
        let r = self.rank();
        let mut weights = self.weights.clone();
        let mut factors = self.factors.clone();
        for f in &mut factors {
            for k in 0..r {
                let n = f.column(k).iter().map(|v| v * v).sum::<f64>().sqrt();
                if n > 0.0 {
                    f.column_mut(k).mapv_inplace(|v| v / n);
                }
                weights[k] *= n;
            }
        }
        let mut order: Vec<usize> = (0..r).collect();
        order.sort_by(|&a, &b| weights[b].abs().total_cmp(&weights[a].abs()));
        Ok(CpTensor {
            weights: order.iter().map(|&k| weights[k]).collect(),
            factors: factors.iter().map(|f| f.select(Axis(1), &order)).collect(),
        })
    }

    /// Distributes `|λ_r|` evenly over the factors (`|λ_r|^{1/N}` each, the sign
    /// on the first factor) and sets the weights to one: the best-conditioned
    /// form for f32 storage of the factors; fails on an invalid tensor.
    pub fn balanced(&self) -> Result<CpTensor> {
        let n = self.factors.len() as f64;
        let norm = self.normalized()?;
        let mut factors = norm.factors.clone();
        for (k, &w) in norm.weights.iter().enumerate() {
            let root = w.abs().powf(1.0 / n);
            for (m, f) in factors.iter_mut().enumerate() {
                let s = if m == 0 { root * w.signum() } else { root };
                f.column_mut(k).mapv_inplace(|v| v * s);
            }
        }
        Ok(CpTensor {
            weights: Array1::ones(self.rank()),
            factors,
        })
    }

    /// Concatenates the components of two CP tensors of the same shape.
    pub fn concat(&self, other: &CpTensor) -> Result<CpTensor> {
        if self.shape() != other.shape() {
            return Err(Error::shape(
                "CP tensors to concatenate",
                format!("{:?}", self.shape()),
                format!("{:?}", other.shape()),
            ));
        }
        let weights = hasten_core::ndarray::concatenate(
            Axis(0),
            &[self.weights.view(), other.weights.view()],
        )
        .map_err(|e| Error::shape("CP weights", self.rank(), e))?;
        let factors = self
            .factors
            .iter()
            .zip(&other.factors)
            .map(|(a, b)| {
                hasten_core::ndarray::concatenate(Axis(1), &[a.view(), b.view()])
                    .map_err(|e| Error::shape("CP factor", a.nrows(), e))
            })
            .collect::<Result<Vec<_>>>()?;
        CpTensor::new(weights, factors)
    }
}

/// The largest CP rank accepted for `shape`: `Π I_n / max I_n`, the generic
/// upper bound on the rank of any tensor of that shape.
pub fn max_cp_rank(shape: &[usize]) -> usize {
    let prod: usize = shape.iter().product();
    let max = shape.iter().copied().max().unwrap_or(1).max(1);
    prod / max
}

/// Checks a requested CP rank against [`max_cp_rank`].
pub(crate) fn check_rank(shape: &[usize], rank: usize) -> Result<()> {
    let max = max_cp_rank(shape);
    if rank == 0 || rank > max {
        return Err(Error::InvalidRank { rank, max });
    }
    Ok(())
}

//! Training losses with their exact gradients, generic over the float type
//! (f64 for the reference and gradient checks, f32 for training).

use ndarray::{Array4, ArrayView4};
use num_traits::Float;

use crate::error::{Error, Result};

/// A loss value and its gradient with respect to the prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct LossGrad<F> {
    /// The loss (mean over the batch).
    pub value: F,
    /// `∂loss/∂prediction`, the shape of the prediction.
    pub grad: Array4<F>,
}

fn f<F: Float>(v: f64) -> F {
    F::from(v).expect("representable constant")
}

/// Softmax cross-entropy of logits `[N, K, 1, 1]` against integer labels,
/// with label smoothing `ε ∈ [0, 1)`: the target is
/// `q = (1 − ε)·onehot(label) + ε/K`, the loss
/// `L = −(1/N) Σ_n Σ_k q_k log softmax(z_n)_k` and its gradient
/// `∂L/∂z_n = (softmax(z_n) − q)/N`. Log-softmax is max-subtracted.
///
/// Errors: empty logits, a spatial size other than `1×1`, a label count
/// other than `N`, a label `≥ K`, `ε` outside `[0, 1)`, non-finite logits.
pub fn softmax_cross_entropy<F: Float>(
    logits: ArrayView4<F>,
    labels: &[usize],
    smoothing: F,
) -> Result<LossGrad<F>> {
    let (n, k, h, w) = logits.dim();
    if n == 0 || k == 0 || h != 1 || w != 1 {
        return Err(Error::shape(
            "cross-entropy logits",
            "[N ≥ 1, K ≥ 1, 1, 1]",
            format!("{:?}", logits.shape()),
        ));
    }
    if labels.len() != n {
        return Err(Error::shape("cross-entropy labels", n, labels.len()));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
        return Err(Error::param("cross-entropy label", bad, format!("< {k}")));
    }
    if !(smoothing >= F::zero() && smoothing < F::one()) {
        return Err(Error::param(
            "label smoothing",
            smoothing.to_f64().unwrap_or(f64::NAN),
            "in [0, 1)",
        ));
    }
    if logits.iter().any(|v| !v.is_finite()) {
        return Err(Error::param(
            "cross-entropy logits",
            "non-finite",
            "finite values",
        ));
    }
    let kf = F::from(k).expect("class count fits");
    let nf = F::from(n).expect("batch fits");
    let off = smoothing / kf;
    let on = F::one() - smoothing + off;
    let mut grad = Array4::<F>::zeros((n, k, 1, 1));
    let mut total = F::zero();
    for (s, &label) in labels.iter().enumerate() {
        let z = logits.slice(ndarray::s![s, .., 0, 0]);
        let m = z.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
        let sum = z.iter().fold(F::zero(), |a, &b| a + (b - m).exp());
        let lse = m + sum.ln();
        for c in 0..k {
            let q = if c == label { on } else { off };
            let logp = z[c] - lse;
            total = total - q * logp;
            grad[[s, c, 0, 0]] = (logp.exp() - q) / nf;
        }
    }
    Ok(LossGrad {
        value: total / nf,
        grad,
    })
}

/// Mean squared error `L = (1/M) Σ (y − t)²` over all `M` elements, with
/// `∂L/∂y = 2(y − t)/M`. Errors: shapes differ or are empty.
pub fn mse<F: Float>(prediction: ArrayView4<F>, target: ArrayView4<F>) -> Result<LossGrad<F>> {
    if prediction.shape() != target.shape() {
        return Err(Error::shape(
            "mse target",
            format!("{:?}", prediction.shape()),
            format!("{:?}", target.shape()),
        ));
    }
    if prediction.is_empty() {
        return Err(Error::EmptyDimension {
            what: "mse prediction".into(),
            shape: format!("{:?}", prediction.shape()),
        });
    }
    let m = F::from(prediction.len()).expect("size fits");
    let two: F = f(2.0);
    let diff = &prediction - &target;
    let value = diff.iter().fold(F::zero(), |a, &d| a + d * d) / m;
    Ok(LossGrad {
        value,
        grad: diff.mapv(|d| two * d / m),
    })
}

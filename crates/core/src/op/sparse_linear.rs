//! Unstructured sparse fully connected layer: `y = W x + b` with `W`
//! (`[out, in]`) held as a [`Csr`] (survey section 6.1, magnitude pruning \[72\]).

use ndarray::{Array1, Array4};

use super::common::{check_bias, flatten_samples, zeros_output};
use super::csr::Csr;
use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::layer::LinearLayer;
use crate::shape::ActShape;

/// A fully connected layer whose weight matrix is stored in CSR form.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseLinear {
    weight: Csr,
    bias: Option<Array1<f32>>,
}

impl SparseLinear {
    /// `weight` is `[out, in]`; the bias (if any) has `out` finite entries.
    pub fn new(weight: Csr, bias: Option<Array1<f32>>) -> Result<Self> {
        check_bias(bias.as_ref(), weight.rows())?;
        Ok(SparseLinear { weight, bias })
    }

    /// The non-zeros of a dense linear layer.
    pub fn from_linear(layer: &LinearLayer) -> Result<Self> {
        SparseLinear::new(
            Csr::from_dense(layer.weight().view())?,
            layer.bias().cloned(),
        )
    }

    /// The equivalent dense layer.
    pub fn to_dense(&self) -> Result<LinearLayer> {
        LinearLayer::new(self.weight.to_dense(), self.bias.clone())
    }

    /// The weight matrix `[out, in]` in CSR form.
    pub fn weight(&self) -> &Csr {
        &self.weight
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }
}

impl Operator for SparseLinear {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        if input.checked_len()? != self.weight.cols() {
            return Err(Error::shape(
                "sparse linear input features (C·H·W)",
                self.weight.cols(),
                format!("{} ({input})", input.len()),
            ));
        }
        Ok(ActShape::flat(self.weight.rows()))
    }

    /// One MAC per stored non-zero; CSR bytes plus the bias.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        let nnz = self.weight.nnz() as u64;
        let bias = self.bias.as_ref().map_or(0, |b| b.len() as u64);
        let mut cost = Cost::f32_op(nnz, nnz + bias, input.len(), out.len())?;
        cost.weight_bytes = self.weight.bytes() + 4 * bias;
        Ok(cost)
    }

    /// `y[n, o] = b[o] + Σ_{(i, w) ∈ row o} w · x[n, i]` over the flattened sample, in f64.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let shape = input_shape_of(input)?;
        let out = self.output_shape(shape)?;
        let batch = input.shape()[0];
        let flat = flatten_samples(input, shape);
        let mut y = zeros_output::<f32>("sparse linear", out, batch)?;
        for n in 0..batch {
            for o in 0..self.weight.rows() {
                let mut acc = self.bias.as_ref().map_or(0.0, |b| f64::from(b[o]));
                for (i, w) in self.weight.row(o) {
                    acc += f64::from(w) * f64::from(flat[[n, i]]);
                }
                y[[n, o, 0, 0]] = acc as f32;
            }
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;

    #[test]
    fn equals_dense_linear_with_same_zeros() {
        let mut rng = SeededRng::new(5);
        let mut w = rng.normal_array((4, 12), 1.0);
        w.mapv_inplace(|v| if v.abs() < 1.0 { 0.0 } else { v });
        let dense = LinearLayer::new(w, Some(rng.normal_array(4, 1.0))).unwrap();
        let sparse = SparseLinear::from_linear(&dense).unwrap();
        let x = rng.normal_array((3, 3, 2, 2), 1.0);
        let (a, b) = (
            dense.reference_forward(&x).unwrap(),
            sparse.reference_forward(&x).unwrap(),
        );
        assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-5));
        assert_eq!(sparse.to_dense().unwrap(), dense);
        assert!(sparse.output_shape(ActShape::flat(11)).is_err());
        assert!(SparseLinear::new(sparse.weight().clone(), Some(Array1::zeros(2))).is_err());
    }
}

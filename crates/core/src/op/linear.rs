//! Fully connected layer `y = W x + b` (section 5, eq. (2), is its SVD).

use ndarray::Array4;

use super::common::{flatten_samples, zeros_output};
use super::{input_shape_of, Operator, WeightLayout};
use crate::cost::Cost;
use crate::error::Result;
use crate::layer::LinearLayer;
use crate::shape::ActShape;

impl Operator for LinearLayer {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        LinearLayer::output_shape(self, input)
    }

    /// `out · in` MACs: the dense cost of its [`WeightLayout`].
    fn cost(&self, input: ActShape) -> Result<Cost> {
        LinearLayer::output_shape(self, input)?;
        let layout = WeightLayout::Linear {
            out: self.out_features(),
            inp: self.in_features(),
        };
        layout.dense_cost(input, self.bias().is_some())
    }

    /// `y[n, o] = b[o] + Σ_i W[o, i] · x[n, i]` over the flattened sample, in f64.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let shape = input_shape_of(input)?;
        let out = LinearLayer::output_shape(self, shape)?;
        let batch = input.shape()[0];
        let flat = flatten_samples(input, shape);
        let w = self.weight();
        let mut y = zeros_output::<f32>("linear", out, batch)?;
        for n in 0..batch {
            for o in 0..w.nrows() {
                let mut acc = self.bias().map_or(0.0, |b| f64::from(b[o]));
                for i in 0..w.ncols() {
                    acc += f64::from(w[[o, i]]) * f64::from(flat[[n, i]]);
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
    use ndarray::Array;

    #[test]
    fn hand_computed_linear_flattens_chw() {
        // Input 2×1×2 = [1, 2, 3, 4]; W = [[1, 0, 0, 1], [0, 1, 1, 0]], b = [0.5, -0.5].
        let l =
            LinearLayer::from_slice(2, 4, &[1., 0., 0., 1., 0., 1., 1., 0.], Some(&[0.5, -0.5]))
                .unwrap();
        let x = Array::from_shape_vec((1, 2, 1, 2), vec![1., 2., 3., 4.]).unwrap();
        let y = l.reference_forward(&x).unwrap();
        assert_eq!(y.shape(), &[1, 2, 1, 1]);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![5.5, 4.5]);
        assert!(l.output_shape(ActShape::new(3, 1, 1)).is_err());
    }

    #[test]
    fn cost_by_hand() {
        // 3 outputs from a 2×2×2 sample: 24 MACs, 24 weights + 3 biases.
        let l = LinearLayer::from_slice(3, 8, &[0.5; 24], Some(&[0.0; 3])).unwrap();
        let cost = l.cost(ActShape::new(2, 2, 2)).unwrap();
        assert_eq!((cost.macs, cost.params, cost.weight_bytes), (24, 27, 108));
        assert_eq!(cost.activation_bytes, 4 * (8 + 3));
        let no_bias = LinearLayer::from_slice(3, 8, &[0.5; 24], None).unwrap();
        assert_eq!(no_bias.cost(ActShape::flat(8)).unwrap().params, 24);
        assert!(l.cost(ActShape::flat(7)).is_err());
    }
}

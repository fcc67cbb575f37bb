//! Softmax over the channel axis (ONNX opset ≥ 13 `Softmax` with `axis = 1`):
//! at every sample and position `(n, h, w)`,
//! `y_c = exp(x_c − m) / Σ_k exp(x_k − m)` with `m = max_k x_k`.
//!
//! Computed in f64. A NaN anywhere in a column makes the whole column NaN.
//! Infinities follow IEEE arithmetic of the max-subtracted form, as PyTorch
//! does: a `+∞` entry makes its column NaN (`∞ − ∞`), as does a column of
//! only `−∞`; a `−∞` among finite values gets probability 0.

use ndarray::{Array4, Axis};

use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::Result;
use crate::shape::ActShape;

/// Softmax over channels at each `(n, h, w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Softmax;

impl Operator for Softmax {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        input.checked_len()?;
        Ok(input)
    }

    /// One exponential and one multiplication per value (counted as one
    /// MAC); no parameters.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        Cost::f32_op(
            input.checked_len()? as u64,
            0,
            input.checked_len()?,
            input.checked_len()?,
        )
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        input_shape_of(input)?;
        let mut y = input.to_owned();
        for mut sample in y.axis_iter_mut(Axis(0)) {
            for mut column in sample.lanes_mut(Axis(0)) {
                let xs: Vec<f64> = column.iter().map(|&v| f64::from(v)).collect();
                let m = if xs.iter().any(|v| v.is_nan()) {
                    f64::NAN
                } else {
                    xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                };
                let e: Vec<f64> = xs.iter().map(|&v| (v - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (out, e) in column.iter_mut().zip(e) {
                    *out = (e / sum) as f32;
                }
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
    fn columns_sum_to_one_and_shift_invariance() {
        let x = SeededRng::new(7).normal_array((2, 5, 3, 4), 3.0);
        let y = Softmax.reference_forward(&x).unwrap();
        for n in 0..2 {
            for h in 0..3 {
                for w in 0..4 {
                    let s: f64 = (0..5).map(|c| f64::from(y[[n, c, h, w]])).sum();
                    assert!((s - 1.0).abs() < 1e-6);
                }
            }
        }
        let shifted = Softmax.reference_forward(&x.mapv(|v| v + 1000.0)).unwrap();
        assert!(shifted
            .iter()
            .zip(y.iter())
            .all(|(a, b)| (a - b).abs() < 1e-4));
    }

    #[test]
    fn hand_computed() {
        // [0, ln 3] → [1/4, 3/4]; a single channel gives 1.
        let x = Array4::from_shape_vec((1, 2, 1, 1), vec![0.0, 3f32.ln()]).unwrap();
        let y = Softmax.reference_forward(&x).unwrap();
        assert!((y[[0, 0, 0, 0]] - 0.25).abs() < 1e-7 && (y[[0, 1, 0, 0]] - 0.75).abs() < 1e-7);
        let one = Softmax
            .reference_forward(&Array4::from_elem((1, 1, 2, 2), -5.0))
            .unwrap();
        assert!(one.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn nan_and_infinities() {
        let mut x = Array4::<f32>::zeros((1, 3, 1, 4));
        x[[0, 1, 0, 0]] = f32::NAN;
        x[[0, 2, 0, 1]] = f32::INFINITY;
        x[[0, 0, 0, 2]] = f32::NEG_INFINITY;
        for c in 0..3 {
            x[[0, c, 0, 3]] = f32::NEG_INFINITY;
        }
        let y = Softmax.reference_forward(&x).unwrap();
        for c in 0..3 {
            assert!(y[[0, c, 0, 0]].is_nan(), "NaN column");
            assert!(y[[0, c, 0, 1]].is_nan(), "+inf column");
            assert!(y[[0, c, 0, 3]].is_nan(), "all -inf column");
        }
        assert_eq!(y[[0, 0, 0, 2]], 0.0);
        assert_eq!(y[[0, 1, 0, 2]], 0.5);
        let c = Softmax.cost(ActShape::new(10, 2, 2)).unwrap();
        assert_eq!((c.macs, c.params), (40, 0));
        assert!(Softmax
            .reference_forward(&Array4::zeros((1, 0, 1, 1)))
            .is_err());
    }
}

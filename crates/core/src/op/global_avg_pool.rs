//! Global average pooling (ONNX `GlobalAveragePool`): the mean of each
//! channel's plane, `C×H×W → C×1×1`.

use ndarray::{Array4, Axis};

use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::Result;
use crate::shape::ActShape;

/// Mean over `H × W` per channel, summed in f64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalAvgPool;

impl Operator for GlobalAvgPool {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        input.checked_len()?;
        Ok(ActShape::new(input.channels, 1, 1))
    }

    /// One addition per input value; no parameters.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        Cost::f32_op(
            input.checked_len()? as u64,
            0,
            input.checked_len()?,
            input.channels,
        )
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let shape = input_shape_of(input)?;
        let (n, c) = (input.shape()[0], shape.channels);
        let mut y = Array4::zeros((n, c, 1, 1));
        for (i, sample) in input.axis_iter(Axis(0)).enumerate() {
            for (ch, plane) in sample.axis_iter(Axis(0)).enumerate() {
                let sum: f64 = plane.iter().map(|&v| f64::from(v)).sum();
                y[[i, ch, 0, 0]] = (sum / shape.area() as f64) as f32;
            }
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{AvgPool, PoolSpec};
    use crate::rng::SeededRng;

    #[test]
    fn mean_of_each_plane() {
        let x = Array4::from_shape_fn((2, 3, 2, 2), |(n, c, h, w)| {
            (n * 12 + c * 4 + h * 2 + w) as f32
        });
        let y = GlobalAvgPool.reference_forward(&x).unwrap();
        assert_eq!(y.shape(), &[2, 3, 1, 1]);
        // Plane values k..k+4 → mean k + 1.5.
        assert_eq!(y[[0, 0, 0, 0]], 1.5);
        assert_eq!(y[[1, 2, 0, 0]], 21.5);
        let mut nan = x.clone();
        nan[[1, 1, 0, 1]] = f32::NAN;
        let y = GlobalAvgPool.reference_forward(&nan).unwrap();
        assert!(y[[1, 1, 0, 0]].is_nan());
        assert_eq!(y.iter().filter(|v| v.is_nan()).count(), 1);
        assert!(GlobalAvgPool
            .reference_forward(&Array4::zeros((1, 0, 2, 2)))
            .is_err());
    }

    #[test]
    fn equals_a_whole_plane_average_pool() {
        let x = SeededRng::new(3).normal_array((2, 4, 5, 7), 1.0);
        let g = GlobalAvgPool.reference_forward(&x).unwrap();
        let a = AvgPool::new(PoolSpec::new(5, 7), false)
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        assert!(g.iter().zip(a.iter()).all(|(p, q)| (p - q).abs() <= 1e-6));
    }

    #[test]
    fn cost() {
        let c = GlobalAvgPool.cost(ActShape::new(512, 7, 7)).unwrap();
        assert_eq!(c.macs, 512 * 49);
        assert_eq!(c.params, 0);
        assert_eq!(c.activation_bytes, 4 * (512 * 49 + 512));
        assert_eq!(
            GlobalAvgPool.output_shape(ActShape::new(8, 3, 3)).unwrap(),
            ActShape::flat(8)
        );
    }
}

//! Constant padding (ONNX `Pad`, mode `constant`, on the spatial axes).

use ndarray::{s, Array4};

use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;
use crate::spec::Padding;

/// Surrounds each plane with `padding` rows and columns of `value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pad {
    padding: Padding,
    value: f32,
}

impl Pad {
    /// Constant padding with `value`: any value but NaN (±∞ is allowed, e.g.
    /// −∞ before a max pool; a NaN border would only poison what reads it).
    pub fn new(padding: Padding, value: f32) -> Result<Self> {
        if value.is_nan() {
            return Err(Error::param("pad value", value, "not NaN"));
        }
        Ok(Pad { padding, value })
    }

    /// The padding on each side.
    pub fn padding(&self) -> Padding {
        self.padding
    }

    /// The fill value.
    pub fn value(&self) -> f32 {
        self.value
    }
}

impl Operator for Pad {
    /// `C × (H + top + bottom) × (W + left + right)`, overflow-checked
    /// (including the per-sample length).
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        let p = self.padding;
        let grow = |n: usize, a: usize, b: usize, what: &str| {
            n.checked_add(a)
                .and_then(|v| v.checked_add(b))
                .ok_or_else(|| {
                    Error::param(
                        format!("padded {what}"),
                        "overflow",
                        "a size that fits in usize",
                    )
                })
        };
        let h = grow(input.height, p.top, p.bottom, "height")?;
        let w = grow(input.width, p.left, p.right, "width")?;
        input
            .channels
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| Error::param("padded size", "overflow", "C·H·W that fits in usize"))?;
        Ok(ActShape::new(input.channels, h, w))
    }

    /// One write per output value; the fill value is the one parameter.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        Cost::f32_op(0, 1, input.checked_len()?, out.checked_len()?)
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let shape = input_shape_of(input)?;
        let out = self.output_shape(shape)?;
        let mut y = Array4::from_elem(out.batched(input.shape()[0]), self.value);
        let (t, l) = (self.padding.top, self.padding.left);
        y.slice_mut(s![.., .., t..t + shape.height, l..l + shape.width])
            .assign(input);
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_border() {
        let x = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let pad = Pad::new(
            Padding {
                top: 1,
                bottom: 0,
                left: 0,
                right: 2,
            },
            -1.0,
        )
        .unwrap();
        let y = pad.reference_forward(&x).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 4]);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![-1., -1., -1., -1., 1., 2., -1., -1., 3., 4., -1., -1.]
        );
        assert_eq!((pad.value(), pad.padding().right), (-1.0, 2));
        let inf = Pad::new(Padding::same(1), f32::NEG_INFINITY).unwrap();
        let mut nan = x.clone();
        nan[[0, 0, 1, 1]] = f32::NAN;
        let y = inf.reference_forward(&nan).unwrap();
        assert_eq!(y[[0, 0, 0, 0]], f32::NEG_INFINITY);
        assert!(y[[0, 0, 2, 2]].is_nan());
        assert_eq!(y.iter().filter(|v| v.is_nan()).count(), 1);
    }

    #[test]
    fn invalid_values_and_overflow_are_typed_errors() {
        assert!(matches!(
            Pad::new(Padding::same(1), f32::NAN),
            Err(Error::InvalidParameter { .. })
        ));
        let huge = Pad::new(Padding::symmetric(usize::MAX, 0), 0.0).unwrap();
        assert!(huge.output_shape(ActShape::new(1, 1, 1)).is_err());
        let big = Pad::new(Padding::symmetric(usize::MAX / 4, usize::MAX / 4), 0.0).unwrap();
        assert!(big.output_shape(ActShape::new(1, 1, 1)).is_err());
        assert!(big.cost(ActShape::new(1, 1, 1)).is_err());
        let c = Pad::new(Padding::same(1), 0.0)
            .unwrap()
            .cost(ActShape::new(2, 3, 3))
            .unwrap();
        assert_eq!(
            (c.macs, c.params, c.activation_bytes),
            (0, 1, 4 * (18 + 50))
        );
    }
}

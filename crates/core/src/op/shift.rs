//! ShiftNet spatial shift (survey section 3, Wu et al. [35]; also eq. (11)).
//!
//! Channel `c` is moved by `(dy, dx)`: `out[c, y, x] = in[c, y − dy, x − dx]`,
//! zero where that falls outside the image. It costs no multiplications.

use ndarray::Array4;

use super::{expect_channels, input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;

/// Per-channel integer shifts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    offsets: Vec<(isize, isize)>,
}

impl Shift {
    /// One `(dy, dx)` per channel.
    pub fn new(offsets: Vec<(isize, isize)>) -> Result<Self> {
        if offsets.is_empty() {
            return Err(Error::EmptyDimension {
                what: "shift offsets".into(),
                shape: "[0]".into(),
            });
        }
        Ok(Shift { offsets })
    }

    /// The ShiftNet pattern for a `d × d` neighbourhood: channels split into
    /// `d²` nearly equal groups, group `k` shifted by `(k / d − d/2, k % d − d/2)`.
    pub fn grouped(channels: usize, d: usize) -> Result<Self> {
        if d == 0 || d.is_multiple_of(2) {
            return Err(Error::param("shift kernel size", d, "odd and >= 1"));
        }
        let taps = d * d;
        let half = (d / 2) as isize;
        let offsets = (0..channels)
            .map(|c| {
                let k = (c * taps / channels.max(1)).min(taps - 1);
                ((k / d) as isize - half, (k % d) as isize - half)
            })
            .collect();
        Shift::new(offsets)
    }

    /// The `(dy, dx)` of each channel.
    pub fn offsets(&self) -> &[(isize, isize)] {
        &self.offsets
    }
}

impl Operator for Shift {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        expect_channels("shift", self.offsets.len(), input)?;
        input.checked_len()?;
        Ok(input)
    }

    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        Cost::f32_op(0, 0, input.len(), out.len())
    }

    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let shape = self.output_shape(input_shape_of(input)?)?;
        let mut y = Array4::<f32>::zeros(input.raw_dim());
        let (h, w) = (shape.height as isize, shape.width as isize);
        for n in 0..input.shape()[0] {
            for (c, &(dy, dx)) in self.offsets.iter().enumerate() {
                for yy in 0..h {
                    for xx in 0..w {
                        let (sy, sx) = (yy - dy, xx - dx);
                        if sy >= 0 && sy < h && sx >= 0 && sx < w {
                            y[[n, c, yy as usize, xx as usize]] =
                                input[[n, c, sy as usize, sx as usize]];
                        }
                    }
                }
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
    fn shift_moves_and_zero_fills() {
        let x = Array::from_shape_vec((1, 1, 2, 3), vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let y = Shift::new(vec![(1, -1)])
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![0., 0., 0., 2., 3., 0.]
        );
    }

    #[test]
    fn grouped_pattern_covers_neighbourhood() {
        let s = Shift::grouped(9, 3).unwrap();
        assert_eq!(s.offsets()[0], (-1, -1));
        assert_eq!(s.offsets()[4], (0, 0));
        assert_eq!(s.offsets()[8], (1, 1));
    }
}

//! Perforated convolution (survey section 6.1; Figurnov et al. \[68\]): columns
//! of the patch matrix `Û` of eq. (13) are removed, i.e. the convolution is
//! evaluated only at a subset of output positions (the same for every channel
//! and sample) and every other position copies the value of its nearest
//! evaluated position (nearest-neighbour interpolation).
//!
//! Layout: `mask` is row-major over the `oh × ow` output plane (`true` =
//! evaluated); `positions` lists the evaluated `(y, x)` in row-major order;
//! `nearest[y·ow + x]` is the index into `positions` whose value fills output
//! `(y, x)` — the closest evaluated position in Euclidean distance, ties to
//! the first in row-major order (an evaluated position is its own nearest).

use ndarray::Array4;

use super::patch::tap;
use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::layer::ConvLayer;
use crate::shape::ActShape;

/// A convolution evaluated on a mask of output positions, filled by nearest neighbour.
#[derive(Debug, Clone, PartialEq)]
pub struct PerforatedConv {
    conv: ConvLayer,
    out_hw: (usize, usize),
    mask: Vec<bool>,
    positions: Vec<(usize, usize)>,
    nearest: Vec<u32>,
}

impl PerforatedConv {
    /// `mask` has `oh·ow` entries (row-major), at least one `true`.
    pub fn new(conv: ConvLayer, out_hw: (usize, usize), mask: Vec<bool>) -> Result<Self> {
        let (oh, ow) = out_hw;
        if oh == 0 || ow == 0 {
            return Err(Error::EmptyDimension {
                what: "perforation output plane".into(),
                shape: format!("{out_hw:?}"),
            });
        }
        if mask.len() != oh * ow || oh * ow > u32::MAX as usize {
            return Err(Error::shape(
                "perforation mask length (oh·ow)",
                oh * ow,
                mask.len(),
            ));
        }
        let positions: Vec<(usize, usize)> = (0..oh * ow)
            .filter(|&p| mask[p])
            .map(|p| (p / ow, p % ow))
            .collect();
        if positions.is_empty() {
            return Err(Error::param(
                "perforation mask",
                "no evaluated position",
                "at least one true entry",
            ));
        }
        let nearest = (0..oh * ow)
            .map(|p| {
                let (y, x) = ((p / ow) as isize, (p % ow) as isize);
                let mut best = (isize::MAX, 0u32);
                for (k, &(py, px)) in positions.iter().enumerate() {
                    let (dy, dx) = (py as isize - y, px as isize - x);
                    let d = dy * dy + dx * dx;
                    if d < best.0 {
                        best = (d, k as u32);
                    }
                }
                best.1
            })
            .collect();
        Ok(PerforatedConv {
            conv,
            out_hw,
            mask,
            positions,
            nearest,
        })
    }

    /// The underlying dense convolution.
    pub fn conv(&self) -> &ConvLayer {
        &self.conv
    }

    /// The output plane `(oh, ow)` the mask is defined on.
    pub fn out_hw(&self) -> (usize, usize) {
        self.out_hw
    }

    /// Row-major mask over the output plane, `true` = evaluated.
    pub fn mask(&self) -> &[bool] {
        &self.mask
    }

    /// Evaluated positions `(y, x)`, row-major order.
    pub fn positions(&self) -> &[(usize, usize)] {
        &self.positions
    }

    /// For each output position (row-major), the index of the evaluated position it copies.
    pub fn nearest(&self) -> &[u32] {
        &self.nearest
    }

    /// Evaluated positions over all output positions.
    pub fn density(&self) -> f64 {
        self.positions.len() as f64 / self.mask.len() as f64
    }
}

impl Operator for PerforatedConv {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        let out = self.conv.output_shape(input)?;
        if (out.height, out.width) != self.out_hw {
            return Err(Error::shape(
                "perforated convolution output plane",
                format!("{:?}", self.out_hw),
                format!("{:?} for input {input}", (out.height, out.width)),
            ));
        }
        Ok(out)
    }

    /// The dense MACs of the evaluated positions only; the weights plus one
    /// `u32` interpolation index per output position.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        let dense = self.conv.cost(input)?;
        let weights = self.conv.weight().len() as u64;
        let mut cost = Cost::f32_op(
            crate::cost::product("MAC", &[weights, self.positions.len() as u64])?,
            dense.params,
            input.len(),
            out.len(),
        )?;
        cost.weight_bytes = dense.weight_bytes + 4 * self.nearest.len() as u64;
        Ok(cost)
    }

    /// Equation (1) evaluated at the masked positions (f64 accumulation), then
    /// `V[n, t, y, x] = V[n, t, positions[nearest[y·ow + x]]]`.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let out = self.output_shape(input_shape_of(input)?)?;
        let batch = input.shape()[0];
        let w = self.conv.weight().array();
        let [t_all, c_g, kh, kw] = self.conv.weight().dims();
        let spec = self.conv.spec();
        let t_g = t_all / spec.groups;
        let mut evaluated = vec![0f32; batch * t_all * self.positions.len()];
        for n in 0..batch {
            for t in 0..t_all {
                let g = t / t_g;
                for (k, &(y, x)) in self.positions.iter().enumerate() {
                    let mut acc = self.conv.bias().map_or(0.0, |b| f64::from(b[t]));
                    for s in 0..c_g {
                        for i in 0..kh {
                            for j in 0..kw {
                                acc += f64::from(w[[t, s, i, j]])
                                    * tap(input, spec, n, g * c_g + s, (y, x), (i, j));
                            }
                        }
                    }
                    evaluated[(n * t_all + t) * self.positions.len() + k] = acc as f32;
                }
            }
        }
        let ow = out.width;
        let mut v = super::common::zeros_output::<f32>("perforated convolution", out, batch)?;
        for n in 0..batch {
            for t in 0..t_all {
                for y in 0..out.height {
                    for x in 0..ow {
                        let k = self.nearest[y * ow + x] as usize;
                        v[[n, t, y, x]] = evaluated[(n * t_all + t) * self.positions.len() + k];
                    }
                }
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use crate::spec::ConvSpec;

    #[test]
    fn exact_at_evaluated_positions_and_nearest_elsewhere() {
        let mut rng = SeededRng::new(2);
        let conv = ConvLayer::new(
            crate::Conv4d::new(rng.normal_array((3, 2, 3, 3), 1.0)).unwrap(),
            Some(rng.normal_array(3, 1.0)),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let (oh, ow) = (5, 6);
        let mask: Vec<bool> = (0..oh * ow)
            .map(|p| (p / ow) % 2 == 0 && (p % ow) % 2 == 0)
            .collect();
        let perf = PerforatedConv::new(conv.clone(), (oh, ow), mask.clone()).unwrap();
        let x = rng.normal_array((2, 2, oh, ow), 1.0);
        let dense = conv.reference_forward(&x).unwrap();
        let v = perf.reference_forward(&x).unwrap();
        for n in 0..2 {
            for t in 0..3 {
                for y in 0..oh {
                    for xx in 0..ow {
                        // Independent nearest neighbour: grid points at even (y, x);
                        // rounding odd coordinates down is the row-major tie break.
                        let (sy, sx) = (y - y % 2, xx - xx % 2);
                        assert!((v[[n, t, y, xx]] - dense[[n, t, sy, sx]]).abs() < 1e-5);
                    }
                }
            }
        }
        let cost = perf.cost(ActShape::new(2, oh, ow)).unwrap();
        assert_eq!(cost.macs, (3 * 2 * 9 * perf.positions().len()) as u64);
        assert!(perf.output_shape(ActShape::new(2, 4, 6)).is_err());
        assert!(PerforatedConv::new(conv.clone(), (oh, ow), vec![false; oh * ow]).is_err());
        assert!(PerforatedConv::new(conv, (oh, ow), vec![true; 3]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn random_masks_and_inputs_never_panic(oh in 0usize..5, ow in 0usize..5, bits in proptest::collection::vec(proptest::bool::ANY, 0..30), h in 0usize..6) {
            let conv = ConvLayer::from_array(Array4::ones((2, 1, 3, 3)), ConvSpec::new().with_padding(1)).unwrap();
            let ok = bits.len() == oh * ow && bits.iter().any(|&b| b);
            let p = PerforatedConv::new(conv, (oh, ow), bits);
            proptest::prop_assert_eq!(p.is_ok(), ok);
            if let Ok(p) = p {
                let r = p.reference_forward(&Array4::<f32>::ones((1, 1, h, h)));
                proptest::prop_assert_eq!(r.is_ok(), h == oh && h == ow);
            }
        }
    }
}

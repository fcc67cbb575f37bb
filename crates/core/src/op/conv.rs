//! Convolution, equation (1) of the survey, with stride, zero padding,
//! dilation, groups and bias (PyTorch `Conv2d` semantics).

use ndarray::Array4;

use super::common::zeros_output;
use super::WeightLayout;
use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::Result;
use crate::layer::ConvLayer;
use crate::shape::ActShape;

impl Operator for ConvLayer {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        ConvLayer::output_shape(self, input)
    }

    /// `T · (C/g) · kh · kw` MACs per output pixel — Table 1's `CNd²` for one group.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        ConvLayer::output_shape(self, input)?;
        let layout = WeightLayout::Conv {
            dims: self.weight().dims(),
            spec: *self.spec(),
        };
        layout.dense_cost(input, self.bias().is_some())
    }

    /// Direct evaluation of
    /// `V[n,t,y,x] = b[t] + Σ_{s,i,j} W[t,s,i,j] · U[n, g·C_g + s, y·σ_h + i·δ_h − p_t, x·σ_w + j·δ_w − p_l]`
    /// with out-of-range input read as zero, accumulated in f64.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let in_shape = input_shape_of(input)?;
        let out = ConvLayer::output_shape(self, in_shape)?;
        let batch = input.shape()[0];
        let w = self.weight().array();
        let [t_all, c_g, kh, kw] = self.weight().dims();
        let spec = self.spec();
        let t_g = t_all / spec.groups;
        let (sh, sw) = spec.stride;
        let (dh, dw) = spec.dilation;
        let (pt, pl) = (spec.padding.top as isize, spec.padding.left as isize);
        let (h, wd) = (in_shape.height as isize, in_shape.width as isize);
        let mut result = zeros_output::<f32>("convolution", out, batch)?;
        for n in 0..batch {
            for t in 0..t_all {
                let group = t / t_g;
                let bias = self.bias().map_or(0.0, |b| f64::from(b[t]));
                for y in 0..out.height {
                    for x in 0..out.width {
                        let mut acc = bias;
                        for s in 0..c_g {
                            let c = group * c_g + s;
                            for i in 0..kh {
                                let iy = (y * sh + i * dh) as isize - pt;
                                if iy < 0 || iy >= h {
                                    continue;
                                }
                                for j in 0..kw {
                                    let ix = (x * sw + j * dw) as isize - pl;
                                    if ix < 0 || ix >= wd {
                                        continue;
                                    }
                                    acc += f64::from(w[[t, s, i, j]])
                                        * f64::from(input[[n, c, iy as usize, ix as usize]]);
                                }
                            }
                        }
                        result[[n, t, y, x]] = acc as f32;
                    }
                }
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ConvSpec, Padding};
    use crate::weight::Conv4d;
    use ndarray::{arr1, Array};

    fn layer(w: Array4<f32>, bias: Option<Vec<f32>>, spec: ConvSpec) -> ConvLayer {
        ConvLayer::new(Conv4d::new(w).unwrap(), bias.map(|b| arr1(&b)), spec).unwrap()
    }

    #[test]
    fn hand_computed_3x3_valid() {
        // 1 input channel 3×3 = 1..9, kernel 2×2 of ones: sums of 2×2 windows.
        let x = Array::from_shape_vec((1, 1, 3, 3), (1..=9).map(|v| v as f32).collect()).unwrap();
        let l = layer(Array4::ones((1, 1, 2, 2)), Some(vec![0.5]), ConvSpec::new());
        let y = l.reference_forward(&x).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![12.5, 16.5, 24.5, 28.5]
        );
    }

    #[test]
    fn hand_computed_padding_and_stride() {
        // 3×3 input of ones, 3×3 kernel of ones, pad 1, stride 2 → corners see 4 ones.
        let x = Array4::ones((1, 1, 3, 3));
        let l = layer(
            Array4::ones((1, 1, 3, 3)),
            None,
            ConvSpec::new().with_padding(1).with_stride(2),
        );
        let y = l.reference_forward(&x).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![4.0, 4.0, 4.0, 4.0]
        );
    }

    #[test]
    fn hand_computed_dilation() {
        // 1×5 input 1..5, 1×2 kernel [1, 10] with dilation 2: x[i] + 10·x[i+2].
        let x = Array::from_shape_vec((1, 1, 1, 5), vec![1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let w = Array::from_shape_vec((1, 1, 1, 2), vec![1.0, 10.0]).unwrap();
        let l = layer(w, None, ConvSpec::new().with_dilation(2));
        let y = l.reference_forward(&x).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![31.0, 42.0, 53.0]
        );
    }

    #[test]
    fn hand_computed_groups_and_batch() {
        // Two groups, 1×1 kernels: output t reads only its own group's channel.
        let x = Array::from_shape_vec((2, 2, 1, 1), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let w = Array::from_shape_vec((2, 1, 1, 1), vec![10.0, 100.0]).unwrap();
        let l = layer(w, Some(vec![1.0, -1.0]), ConvSpec::new().with_groups(2));
        let y = l.reference_forward(&x).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![11.0, 199.0, 31.0, 399.0]
        );
    }

    #[test]
    fn asymmetric_padding() {
        // 1×2 input [1, 2], 1×2 kernel [1, 1], pad left 1 only: [0+1, 1+2].
        let x = Array::from_shape_vec((1, 1, 1, 2), vec![1.0, 2.0]).unwrap();
        let pad = Padding {
            left: 1,
            ..Padding::default()
        };
        let l = layer(
            Array4::ones((1, 1, 1, 2)),
            None,
            ConvSpec::new().with_padding_sides(pad),
        );
        let y = l.reference_forward(&x).unwrap();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![1.0, 3.0]);
    }

    #[test]
    fn table1_full_convolution_cost() {
        // Full convolution: C·N·d² MACs per output pixel.
        let (c, n, d, h) = (16, 32, 3, 10);
        let l = layer(
            Array4::ones((n, c, d, d)),
            None,
            ConvSpec::new().with_padding(1),
        );
        let cost = l.cost(ActShape::new(c, h, h)).unwrap();
        assert_eq!(cost.macs, (c * n * d * d * h * h) as u64);
        assert_eq!(cost.params, (c * n * d * d) as u64);
    }

    #[test]
    fn grouped_strided_biased_cost_by_hand() {
        // 2 groups, 8 → 6 channels (C_g = 4), 3×3, stride 2, padding 1, bias:
        // 12×12 → 6×6; each output value reads C_g·9 = 36 weights.
        let l = layer(
            Array4::ones((6, 4, 3, 3)),
            Some(vec![0.0; 6]),
            ConvSpec::new()
                .with_groups(2)
                .with_stride(2)
                .with_padding(1),
        );
        let cost = l.cost(ActShape::new(8, 12, 12)).unwrap();
        assert_eq!(cost.macs, 6 * 36 * 36);
        assert_eq!(cost.params, 6 * 36 + 6);
        assert_eq!(cost.weight_bytes, 4 * (6 * 36 + 6));
        assert_eq!(cost.activation_bytes, 4 * (8 * 144 + 6 * 36));
    }
}

//! [`WeightLayout`]: the geometry shared by the packed-weight ops of survey
//! section 5 — either a convolution (OIHW dims and a [`ConvSpec`]) or a fully
//! connected layer. Either way the weights form a matrix of `rows()` output
//! filters by `row_len()` inputs (the filter matrix of
//! [`crate::Conv4d::filter_matrix`], or `W [out, in]`), which is the matrix a
//! quantizer codes and the order in which packed codes are stored.

use ndarray::{Array1, Array2, Array4};

use crate::bits::PackedCodes;
use crate::cost::Cost;
use crate::error::{ensure_nonempty, Error, Result};
use crate::layer::{ConvLayer, Layer, LinearLayer};
use crate::op::Operator;
use crate::shape::ActShape;
use crate::spec::ConvSpec;
use crate::weight::Conv4d;

/// Where a packed weight matrix sits: a convolution or a linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Convolution with OIHW `dims = [T, C/groups, kh, kw]` and `spec`.
    Conv {
        /// `[out, in per group, kh, kw]`.
        dims: [usize; 4],
        /// Stride, padding, dilation, groups.
        spec: ConvSpec,
    },
    /// Fully connected `[out, in]`, applied to the flattened sample.
    Linear {
        /// Output features.
        out: usize,
        /// Input features.
        inp: usize,
    },
}

impl WeightLayout {
    /// A convolution layout; validates non-empty dims, the spec and groups.
    pub fn conv(dims: [usize; 4], spec: ConvSpec) -> Result<Self> {
        ensure_nonempty("convolution kernel dims", &dims)?;
        spec.validate()?;
        if !dims[0].is_multiple_of(spec.groups) {
            let in_channels = dims[1]
                .checked_mul(spec.groups)
                .ok_or_else(|| Error::overflow("input channels (groups × channels per group)"))?;
            return Err(Error::InvalidGroups {
                groups: spec.groups,
                in_channels,
                out_channels: dims[0],
            });
        }
        Ok(WeightLayout::Conv { dims, spec })
    }

    /// A linear layout `[out, inp]`.
    pub fn linear(out: usize, inp: usize) -> Result<Self> {
        ensure_nonempty("linear weight dims", &[out, inp])?;
        Ok(WeightLayout::Linear { out, inp })
    }

    /// The layout of an existing layer.
    pub fn of_layer(layer: &Layer) -> Self {
        match layer {
            Layer::Conv(c) => WeightLayout::Conv {
                dims: c.weight().dims(),
                spec: *c.spec(),
            },
            Layer::Linear(l) => WeightLayout::Linear {
                out: l.out_features(),
                inp: l.in_features(),
            },
        }
    }

    /// Output filters `T` (rows of the weight matrix).
    pub fn rows(&self) -> usize {
        match *self {
            WeightLayout::Conv { dims, .. } => dims[0],
            WeightLayout::Linear { out, .. } => out,
        }
    }

    /// Weights per filter, `C/groups · kh · kw` or `in`.
    pub fn row_len(&self) -> usize {
        match *self {
            WeightLayout::Conv { dims, .. } => dims[1] * dims[2] * dims[3],
            WeightLayout::Linear { inp, .. } => inp,
        }
    }

    /// Total weights, `rows · row_len`.
    pub fn weight_count(&self) -> usize {
        self.rows() * self.row_len()
    }

    /// The dense layer with weight matrix `weights [rows, row_len]` and `bias`.
    pub fn dense_layer(&self, weights: Array2<f32>, bias: Option<Array1<f32>>) -> Result<Layer> {
        if weights.dim() != (self.rows(), self.row_len()) {
            return Err(Error::shape(
                "weight matrix",
                format!("{} × {}", self.rows(), self.row_len()),
                format!("{} × {}", weights.nrows(), weights.ncols()),
            ));
        }
        Ok(match *self {
            WeightLayout::Conv { dims, spec } => {
                let flat: Vec<f32> = weights.iter().copied().collect();
                Layer::Conv(ConvLayer::new(
                    Conv4d::from_slice(dims, &flat)?,
                    bias,
                    spec,
                )?)
            }
            WeightLayout::Linear { .. } => Layer::Linear(LinearLayer::new(weights, bias)?),
        })
    }

    /// Output shape for one sample of shape `input`.
    pub fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        match *self {
            WeightLayout::Conv { dims, spec } => {
                let cin = dims[1]
                    .checked_mul(spec.groups)
                    .ok_or_else(|| Error::overflow("convolution input channels"))?;
                if input.channels != cin {
                    return Err(Error::shape(
                        "convolution input channels",
                        cin,
                        input.channels,
                    ));
                }
                ensure_nonempty("convolution input", &[input.height, input.width])?;
                let (oh, ow) = spec.output_hw(input.height, input.width, dims[2], dims[3])?;
                ActShape::checked(dims[0], oh, ow)
            }
            WeightLayout::Linear { out, inp } => {
                if input.checked_len()? != inp {
                    return Err(Error::shape(
                        "linear input features (C·H·W)",
                        inp,
                        format!("{} ({input})", input.len()),
                    ));
                }
                Ok(ActShape::flat(out))
            }
        }
    }

    /// The cost of a packed op: `weight_count · output area` MACs, `params`
    /// stored parameters, `weight_bytes` bytes of storage, f32 activations in
    /// and out.
    pub fn cost(&self, input: ActShape, params: u64, weight_bytes: u64) -> Result<Cost> {
        let out = self.output_shape(input)?;
        let macs = crate::cost::product("MAC", &[self.weight_count() as u64, out.area() as u64])?;
        Ok(Cost {
            macs,
            params,
            weight_bytes,
            activation_bytes: crate::cost::activation_bytes(input.len(), out.len())?,
        })
    }

    /// The cost of the dense f32 layer of this layout, with a bias when
    /// `bias`: `weight_count · output area` MACs (Table 1's `CNd²` per output
    /// pixel for a convolution, one group's share for grouped ones), one
    /// parameter per weight and bias entry, 4 bytes each. [`ConvLayer`] and
    /// [`LinearLayer`] state their cost through it, and so can a caller that
    /// knows only the shapes of a layer it has not built.
    pub fn dense_cost(&self, input: ActShape, bias: bool) -> Result<Cost> {
        let weights = self.weight_count() as u64;
        let params = if bias {
            crate::cost::sum("parameter", &[weights, self.rows() as u64])?
        } else {
            weights
        };
        self.cost(
            input,
            params,
            crate::cost::product("weight bytes", &[params, 4])?,
        )
    }

    /// The cost of a bit-packed op of survey section 5: [`Self::cost`] with
    /// one parameter per stored code plus `side_f32` f32 side values (scales,
    /// offsets, codebook entries, bias), stored as the packed code words plus
    /// 4 bytes per side value.
    pub(crate) fn packed_cost(
        &self,
        input: ActShape,
        codes: &PackedCodes,
        side_f32: u64,
    ) -> Result<Cost> {
        let stored_codes = (codes.rows() * codes.cols()) as u64;
        self.cost(
            input,
            stored_codes + side_f32,
            codes.payload_bytes() + 4 * side_f32,
        )
    }

    /// The reference forward of the dense layer with these weights: equation
    /// (1) evaluated by [`ConvLayer`] / [`LinearLayer`].
    pub fn dense_forward(
        &self,
        weights: Array2<f32>,
        bias: Option<Array1<f32>>,
        input: &Array4<f32>,
    ) -> Result<Array4<f32>> {
        self.dense_layer(weights, bias)?
            .to_op()
            .reference_forward(input)
    }
}

/// Validates a per-filter vector (`what`: a bias, scales, α): exactly `rows`
/// finite entries.
pub(crate) fn check_per_filter(what: &str, values: &Array1<f32>, rows: usize) -> Result<()> {
    if values.len() != rows {
        return Err(Error::shape(format!("{what} length"), rows, values.len()));
    }
    crate::error::ensure_finite(what, values.iter())
}

/// Validates per-group scale vectors: length 1 (per layer) or `rows` (per filter), finite.
pub(crate) fn check_groups(what: &str, len: usize, rows: usize) -> Result<()> {
    if len != 1 && len != rows {
        return Err(Error::shape(
            what,
            format!("1 (per layer) or {rows} (per output channel)"),
            len,
        ));
    }
    Ok(())
}

/// Bias parameters and bytes.
pub(crate) fn bias_len(bias: Option<&Array1<f32>>) -> u64 {
    bias.map_or(0, |b| b.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_and_errors() {
        let l = WeightLayout::conv([4, 3, 3, 3], ConvSpec::new().with_padding(1)).unwrap();
        assert_eq!((l.rows(), l.row_len()), (4, 27));
        assert_eq!(
            l.output_shape(ActShape::new(3, 5, 5)).unwrap(),
            ActShape::new(4, 5, 5)
        );
        assert!(l.output_shape(ActShape::new(2, 5, 5)).is_err());
        assert!(WeightLayout::conv([3, 1, 1, 1], ConvSpec::new().with_groups(2)).is_err());
        assert!(WeightLayout::linear(0, 3).is_err());
        let f = WeightLayout::linear(2, 12).unwrap();
        assert_eq!(
            f.output_shape(ActShape::new(3, 2, 2)).unwrap(),
            ActShape::flat(2)
        );
        assert!(f.dense_layer(Array2::zeros((2, 11)), None).is_err());
    }
}

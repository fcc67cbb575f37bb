//! Layers: a convolution ([`ConvLayer`]) or a fully connected map ([`LinearLayer`]).

use ndarray::{Array1, Array2, Array4};

use crate::cost::Cost;
use crate::error::{ensure_finite, ensure_nonempty, Error, Result};
use crate::op::common::check_bias;
use crate::op::{Op, Operator};
use crate::shape::ActShape;
use crate::spec::ConvSpec;
use crate::weight::Conv4d;

/// A convolution: kernel, optional bias and hyper-parameters, validated together.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvLayer {
    weight: Conv4d,
    bias: Option<Array1<f32>>,
    spec: ConvSpec,
}

impl ConvLayer {
    /// A convolution (survey eq. (1)) of `weight` (`T × C/groups × kh × kw`)
    /// with an optional bias; validates that `groups` divides the output
    /// channels and that the bias (when given) has one finite entry per
    /// output channel.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a zero stride, dilation or group
    /// count, [`Error::InvalidGroups`] when the groups do not divide the
    /// filters, and a shape or non-finite error for a bad bias.
    ///
    /// # Examples
    ///
    /// ```
    /// use hasten_core::ndarray::Array1;
    /// use hasten_core::{ActShape, Conv4d, ConvLayer, ConvSpec, SeededRng};
    ///
    /// let w = Conv4d::new(SeededRng::new(0).normal_array((8, 2, 3, 3), 0.1))?;
    /// let spec = ConvSpec::new().with_padding(1).with_groups(2);
    /// let conv = ConvLayer::new(w.clone(), Some(Array1::zeros(8)), spec)?;
    /// assert_eq!(conv.output_shape(ActShape::new(4, 10, 10))?, ActShape::new(8, 10, 10));
    /// assert!(ConvLayer::new(w, None, ConvSpec::new().with_groups(3)).is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn new(weight: Conv4d, bias: Option<Array1<f32>>, spec: ConvSpec) -> Result<Self> {
        spec.validate()?;
        let out = weight.out_channels();
        if !out.is_multiple_of(spec.groups) {
            let in_channels = weight
                .in_channels_per_group()
                .checked_mul(spec.groups)
                .ok_or_else(|| Error::overflow("input channels (groups × channels per group)"))?;
            return Err(Error::InvalidGroups {
                groups: spec.groups,
                in_channels,
                out_channels: out,
            });
        }
        check_bias(bias.as_ref(), out)?;
        Ok(ConvLayer { weight, bias, spec })
    }

    /// A layer from an OIHW array, no bias.
    pub fn from_array(weight: Array4<f32>, spec: ConvSpec) -> Result<Self> {
        ConvLayer::new(Conv4d::new(weight)?, None, spec)
    }

    /// The kernel.
    pub fn weight(&self) -> &Conv4d {
        &self.weight
    }

    /// The bias, one entry per output channel.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// Stride, padding, dilation and groups.
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.out_channels()
    }

    /// Input channels (all groups).
    pub fn in_channels(&self) -> usize {
        self.weight.in_channels_per_group() * self.spec.groups
    }

    /// The same layer with another kernel of the same shape.
    pub fn with_weight(&self, weight: Conv4d) -> Result<Self> {
        ConvLayer::new(weight, self.bias.clone(), self.spec)
    }

    /// Output shape for an input of shape `input`.
    pub fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        if input.channels != self.in_channels() {
            return Err(Error::shape(
                "convolution input channels",
                self.in_channels(),
                input.channels,
            ));
        }
        ensure_nonempty("convolution input", &[input.height, input.width])?;
        let (kh, kw) = self.weight.kernel_hw();
        let (oh, ow) = self.spec.output_hw(input.height, input.width, kh, kw)?;
        ActShape::checked(self.out_channels(), oh, ow)
    }
}

/// A fully connected layer `y = W x + b`, `W` of shape `[out, in]`.
///
/// Applied to an NCHW activation it flattens each sample (C·H·W must equal
/// `in`) and produces `[N, out, 1, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLayer {
    weight: Array2<f32>,
    bias: Option<Array1<f32>>,
}

impl LinearLayer {
    /// Validates non-empty, finite weights and a matching bias.
    pub fn new(weight: Array2<f32>, bias: Option<Array1<f32>>) -> Result<Self> {
        ensure_nonempty("linear weight", weight.shape())?;
        ensure_finite("linear weight", weight.iter())?;
        check_bias(bias.as_ref(), weight.nrows())?;
        Ok(LinearLayer {
            weight: weight.as_standard_layout().into_owned(),
            bias,
        })
    }

    /// Builds a layer from a row-major `[out, in]` slice.
    pub fn from_slice(
        out: usize,
        inp: usize,
        values: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        if values.len() != out * inp {
            return Err(Error::shape(
                "linear weight slice length",
                out * inp,
                values.len(),
            ));
        }
        let w = Array2::from_shape_vec((out, inp), values.to_vec())
            .map_err(|e| Error::shape("linear weight", format!("{out} × {inp}"), e))?;
        LinearLayer::new(w, bias.map(|b| Array1::from(b.to_vec())))
    }

    /// The weight matrix `[out, in]`.
    pub fn weight(&self) -> &Array2<f32> {
        &self.weight
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }

    /// Output shape: `out × 1 × 1`, after checking that the input flattens to `in`.
    pub fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        if input.checked_len()? != self.in_features() {
            return Err(Error::shape(
                "linear input features (C·H·W)",
                self.in_features(),
                format!("{} ({input})", input.len()),
            ));
        }
        Ok(ActShape::flat(self.out_features()))
    }
}

/// A layer a [`crate::Transform`] can compress.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// A convolution.
    Conv(ConvLayer),
    /// A fully connected layer.
    Linear(LinearLayer),
}

impl From<ConvLayer> for Layer {
    fn from(l: ConvLayer) -> Self {
        Layer::Conv(l)
    }
}

impl From<LinearLayer> for Layer {
    fn from(l: LinearLayer) -> Self {
        Layer::Linear(l)
    }
}

impl Layer {
    /// The layer as a single op.
    pub fn to_op(&self) -> Op {
        match self {
            Layer::Conv(c) => Op::Conv(c.clone()),
            Layer::Linear(l) => Op::Linear(l.clone()),
        }
    }

    /// Output shape for input `input`.
    pub fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        match self {
            Layer::Conv(c) => c.output_shape(input),
            Layer::Linear(l) => l.output_shape(input),
        }
    }

    /// Cost for input `input` (Table 1 of the survey).
    pub fn cost(&self, input: ActShape) -> Result<Cost> {
        match self {
            Layer::Conv(c) => Operator::cost(c, input),
            Layer::Linear(l) => Operator::cost(l, input),
        }
    }

    /// Short name of the layer kind (`conv` or `linear`), as [`Op::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv(c) => c.kind(),
            Layer::Linear(l) => l.kind(),
        }
    }
}

//! The op IR: every operation a compressed [`crate::Block`] can contain.
//!
//! Each op lives in its own file with its validation, output-shape rule, cost
//! and *reference semantics* — a direct, obviously correct forward that the
//! fast kernels of `hasten-fastconv` are tested against. Adding an op is one
//! new file, one [`Operator`] impl and one line in the `ops!` list below; a
//! packed-weight op whose forward is the dense layer of its dequantized
//! weights gets its impl from `dequantizing_operator!`, and an element-wise
//! activation (an [`Elementwise`] op) from `elementwise_operator!`.

/// Implements [`Operator`] for a packed-weight op of survey section 5 whose
/// reference semantics is the dense layer (eq. (1)) of its dequantized weight
/// matrix: the output shape and MACs are those of its [`WeightLayout`], the
/// payload is the packed codes plus 4 bytes per f32 side value and bias entry
/// (`WeightLayout::packed_cost`), and `reference_forward` runs
/// [`WeightLayout::dense_forward`] on `dequantized()` and the bias.
///
/// The op needs the fields `layout: Box<WeightLayout>`,
/// `codes: PackedCodes` and `bias: Option<Array1<f32>>`, and a
/// `dequantized()` method; `side_f32: |op| …` counts its f32 side values
/// besides the bias, and `payload` documents that storage.
macro_rules! dequantizing_operator {
    (
        $op:ty,
        side_f32: |$this:ident| $side:expr,
        payload: $payload:literal $(,)?
    ) => {
        impl $crate::op::Operator for $op {
            fn output_shape(
                &self,
                input: $crate::shape::ActShape,
            ) -> $crate::error::Result<$crate::shape::ActShape> {
                self.layout.output_shape(input)
            }

            #[doc = $payload]
            fn cost(
                &self,
                input: $crate::shape::ActShape,
            ) -> $crate::error::Result<$crate::cost::Cost> {
                let $this = self;
                let side: u64 = $side + $crate::op::weight_layout::bias_len(self.bias.as_ref());
                self.layout.packed_cost(input, &self.codes, side)
            }

            fn reference_forward(
                &self,
                input: &::ndarray::Array4<f32>,
            ) -> $crate::error::Result<::ndarray::Array4<f32>> {
                self.layout
                    .dense_forward(self.dequantized(), self.bias.clone(), input)
            }
        }
    };
}

#[macro_use]
mod elementwise;

mod batch_norm;
mod binary_conv;
mod channel_gather;
mod channel_shuffle;
mod clip;
mod codebook_conv;
pub(crate) mod common;
mod conv;
mod csr;
mod dropout;
mod fixed_point_conv;
mod flatten;
mod global_avg_pool;
mod groupwise_conv;
mod hard_sigmoid;
mod hard_swish;
mod identity;
mod int8_conv;
mod lcnn_conv;
mod linear;
mod pad;
mod patch;
mod perforated_conv;
mod pool;
mod product_quantized_conv;
mod relu;
mod shift;
mod sigmoid;
mod silu;
mod softmax;
mod sparse_conv;
mod sparse_linear;
mod ternary_conv;
mod tt_linear;
mod weight_layout;

pub use batch_norm::BatchNorm;
pub use binary_conv::{binary_sign, BinaryConv, BinaryInput};
pub use channel_gather::ChannelGather;
pub use channel_shuffle::ChannelShuffle;
pub use clip::Clip;
pub use codebook_conv::CodebookConv;
pub use csr::Csr;
pub use dropout::Dropout;
pub use elementwise::{clamp_nan, Elementwise};
pub use fixed_point_conv::FixedPointConv;
pub use flatten::Flatten;
pub use global_avg_pool::GlobalAvgPool;
pub use groupwise_conv::GroupwiseConv;
pub use hard_sigmoid::HardSigmoid;
pub use hard_swish::HardSwish;
pub use identity::Identity;
pub use int8_conv::{Int8Conv, IntType, QuantParams, Requant};
pub use lcnn_conv::LcnnConv;
pub use pad::Pad;
pub use perforated_conv::PerforatedConv;
pub use pool::{max_nan, AvgPool, MaxPool, PoolSpec, PoolWindow};
pub use product_quantized_conv::ProductQuantizedConv;
pub use relu::Relu;
pub use shift::Shift;
pub use sigmoid::Sigmoid;
pub use silu::Silu;
pub use softmax::Softmax;
pub use sparse_conv::SparseConv;
pub use sparse_linear::SparseLinear;
pub use ternary_conv::{ternary_value, TernaryConv, TERNARY_MINUS, TERNARY_PLUS, TERNARY_ZERO};
pub(crate) use tt_linear::tt_prefixes;
pub use tt_linear::TtLinear;
pub use weight_layout::WeightLayout;

use ndarray::Array4;

use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::layer::{ConvLayer, LinearLayer};
use crate::shape::ActShape;

/// What every op of the IR defines.
///
/// An op's kind name (`conv`, `relu`, …) is not part of this trait: the
/// `ops!` table below declares it once per op, next to its [`Op`] variant,
/// and generates the inherent `kind()` of [`Op`] and of every op type.
pub trait Operator {
    /// Output shape for one sample of shape `input`; rejects inputs the op
    /// cannot take.
    fn output_shape(&self, input: ActShape) -> Result<ActShape>;
    /// MACs, parameters and bytes for one sample of shape `input`.
    fn cost(&self, input: ActShape) -> Result<Cost>;
    /// The reference forward on an NCHW batch.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>>;
}

/// Declares the [`Op`] enum from a table of `Variant(binding: Type) => kind`
/// rows: the variants, `From<Type> for Op`, [`Op::as_operator`], and the
/// kind names — `Type::kind()` evaluates the row's `kind` expression with
/// the op bound to `binding` (`_` where the kind is a constant), and
/// [`Op::kind`] dispatches to it.
macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident($bind:tt: $ty:ty) => $kind:expr,)*) => {
        /// One operation of a [`crate::Block`].
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Op {
            $($(#[$doc])* $variant($ty),)*
        }

        $(impl From<$ty> for Op {
            fn from(op: $ty) -> Self {
                Op::$variant(op)
            }
        })*

        $(impl $ty {
            /// Short name of the op kind (its row of the `ops!` table), for
            /// reports, errors and [`crate::NodeFilter::kind`].
            pub fn kind(&self) -> &'static str {
                let $bind = self;
                $kind
            }
        })*

        impl Op {
            /// The op as its [`Operator`] trait object.
            pub fn as_operator(&self) -> &dyn Operator {
                match self {
                    $(Op::$variant(op) => op,)*
                }
            }

            /// Short name of the op kind (`conv`, `relu`, …), for reports,
            /// errors and [`crate::NodeFilter::kind`].
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Op::$variant(op) => op.kind(),)*
                }
            }
        }
    };
}

ops! {
    /// Dense, grouped, depthwise, pointwise, `1×d` or `d×1` convolution.
    Conv(_: ConvLayer) => "conv",
    /// Fully connected layer (flattens each sample).
    Linear(_: LinearLayer) => "linear",
    /// ShuffleNet channel shuffle.
    ChannelShuffle(_: ChannelShuffle) => "channel_shuffle",
    /// ShiftNet per-channel spatial shift.
    Shift(_: Shift) => "shift",
    /// Inference-mode batch normalisation.
    BatchNorm(_: BatchNorm) => "batch_norm",
    /// Rectified linear unit.
    Relu(_: Relu) => "relu",
    /// Bit-packed binary weights with per-filter scale; optional binarized
    /// inputs (XNOR-Net's with `K`, or plain signs).
    BinaryConv(op: BinaryConv) => match op.input() {
        BinaryInput::Real => "binary_conv",
        BinaryInput::XnorK => "xnor_conv",
        BinaryInput::Sign => "bnn_conv",
    },
    /// 2-bit packed ternary weights with per-filter scale.
    TernaryConv(_: TernaryConv) => "ternary_conv",
    /// k-means codebook indices with per-layer or per-channel codebooks.
    CodebookConv(_: CodebookConv) => "codebook_conv",
    /// Product-quantized weights: sub-block codes and codebooks.
    ProductQuantizedConv(_: ProductQuantizedConv) => "product_quantized_conv",
    /// Uniform k-bit weight codes with affine dequantization.
    FixedPointConv(_: FixedPointConv) => "fixed_point_conv",
    /// i8 weights, quantized activations, i32 accumulation, requantization.
    Int8Conv(_: Int8Conv) => "int8_conv",
    /// LCNN dictionary 1×1 convolution, shifts and sparse combination.
    LcnnConv(_: LcnnConv) => "lcnn_conv",
    /// Group-wise pruned convolution: a subset of (channel, row, column) taps.
    GroupwiseConv(_: GroupwiseConv) => "groupwise_conv",
    /// Unstructured sparse convolution, filter matrix in CSR form.
    SparseConv(_: SparseConv) => "sparse_conv",
    /// Unstructured sparse fully connected layer, CSR weights.
    SparseLinear(_: SparseLinear) => "sparse_linear",
    /// Convolution evaluated at a subset of output positions.
    PerforatedConv(_: PerforatedConv) => "perforated_conv",
    /// Tensor-Train (TT-matrix) fully connected layer.
    TtLinear(_: TtLinear) => "tt_linear",
    /// Channel gather (permutation / selection / replication).
    ChannelGather(_: ChannelGather) => "channel_gather",
    /// Max pooling.
    MaxPool(_: MaxPool) => "max_pool",
    /// Average pooling.
    AvgPool(_: AvgPool) => "avg_pool",
    /// Global average pooling, `C×H×W → C×1×1`.
    GlobalAvgPool(_: GlobalAvgPool) => "global_avg_pool",
    /// Flatten each sample to a `C·H·W` vector.
    Flatten(_: Flatten) => "flatten",
    /// Clamp to `min..=max` (ReLU6).
    Clip(_: Clip) => "clip",
    /// Constant spatial padding.
    Pad(_: Pad) => "pad",
    /// The identity.
    Identity(_: Identity) => "identity",
    /// Dropout (the identity at inference).
    Dropout(_: Dropout) => "dropout",
    /// Softmax over channels.
    Softmax(_: Softmax) => "softmax",
    /// Logistic sigmoid.
    Sigmoid(_: Sigmoid) => "sigmoid",
    /// Hard sigmoid, `max(0, min(1, αx + β))`.
    HardSigmoid(_: HardSigmoid) => "hard_sigmoid",
    /// Hard swish, `x·max(0, min(1, x/6 + 1/2))`.
    HardSwish(_: HardSwish) => "hard_swish",
    /// SiLU / swish, `x·σ(x)`.
    Silu(_: Silu) => "silu",
}

impl Op {
    /// The op as its scalar [`Elementwise`] function, for the element-wise
    /// activations (ReLU, Clip, Sigmoid, HardSigmoid, HardSwish, SiLU);
    /// `None` for every other op.
    pub fn as_elementwise(&self) -> Option<&dyn Elementwise> {
        match self {
            Op::Relu(op) => Some(op),
            Op::Clip(op) => Some(op),
            Op::Sigmoid(op) => Some(op),
            Op::HardSigmoid(op) => Some(op),
            Op::HardSwish(op) => Some(op),
            Op::Silu(op) => Some(op),
            _ => None,
        }
    }
}

impl Operator for Op {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        self.as_operator().output_shape(input)
    }
    fn cost(&self, input: ActShape) -> Result<Cost> {
        self.as_operator().cost(input)
    }
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        self.as_operator().reference_forward(input)
    }
}

/// Checks that an NCHW batch is non-empty and returns its per-sample shape.
pub fn input_shape_of(input: &Array4<f32>) -> Result<ActShape> {
    let s = input.shape();
    if s.contains(&0) {
        return Err(Error::EmptyDimension {
            what: "input activation (NCHW)".into(),
            shape: format!("{s:?}"),
        });
    }
    Ok(ActShape::new(s[1], s[2], s[3]))
}

/// Checks that an input's channels equal `expected`; the common first check.
pub(crate) fn expect_channels(kind: &str, expected: usize, input: ActShape) -> Result<()> {
    if input.channels != expected {
        return Err(Error::shape(
            format!("{kind} input channels"),
            expected,
            input.channels,
        ));
    }
    Ok(())
}

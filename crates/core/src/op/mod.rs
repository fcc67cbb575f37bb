//! The op IR: every operation a compressed [`crate::Block`] can contain.
//!
//! Each op lives in its own file with its validation, output-shape rule, cost
//! and *reference semantics* — a direct, obviously correct forward that the
//! fast kernels of `hasten-fastconv` are tested against. Adding an op is one
//! new file, one [`Operator`] impl and one line in the `ops!` list below.

mod batch_norm;
mod channel_gather;
mod channel_shuffle;
mod conv;
mod linear;
mod relu;
mod shift;
mod tt_linear;

pub use batch_norm::BatchNorm;
pub use channel_gather::ChannelGather;
pub use channel_shuffle::ChannelShuffle;
pub use relu::Relu;
pub use shift::Shift;
pub use tt_linear::TtLinear;

use ndarray::Array4;

use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::layer::{ConvLayer, LinearLayer};
use crate::shape::ActShape;

/// What every op of the IR defines.
pub trait Operator {
    /// Short name of the op kind, for reports and errors.
    fn kind(&self) -> &'static str;
    /// Output shape for one sample of shape `input`; rejects inputs the op
    /// cannot take.
    fn output_shape(&self, input: ActShape) -> Result<ActShape>;
    /// MACs, parameters and bytes for one sample of shape `input`.
    fn cost(&self, input: ActShape) -> Result<Cost>;
    /// The reference forward on an NCHW batch.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>>;
}

macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident($ty:ty),)*) => {
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

        impl Op {
            /// The op as its [`Operator`] trait object.
            pub fn as_operator(&self) -> &dyn Operator {
                match self {
                    $(Op::$variant(op) => op,)*
                }
            }
        }
    };
}

ops! {
    /// Dense, grouped, depthwise, pointwise, `1×d` or `d×1` convolution.
    Conv(ConvLayer),
    /// Fully connected layer (flattens each sample).
    Linear(LinearLayer),
    /// ShuffleNet channel shuffle.
    ChannelShuffle(ChannelShuffle),
    /// ShiftNet per-channel spatial shift.
    Shift(Shift),
    /// Inference-mode batch normalisation.
    BatchNorm(BatchNorm),
    /// Rectified linear unit.
    Relu(Relu),
    /// Tensor-Train (TT-matrix) fully connected layer.
    TtLinear(TtLinear),
    /// Channel gather (permutation / selection / replication).
    ChannelGather(ChannelGather),
}

impl Operator for Op {
    fn kind(&self) -> &'static str {
        self.as_operator().kind()
    }
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

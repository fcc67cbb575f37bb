//! # hasten-core
//!
//! The shared vocabulary of Hasten, following the survey *Speeding-up
//! convolutional neural networks* (Lebedev & Lempitsky):
//!
//! - [`Conv4d`], [`ConvSpec`], [`ConvLayer`], [`LinearLayer`]: weights in OIHW
//!   layout (the survey's `W(i, j, s, t)` is `W[t, s, i, j]`), activations NCHW;
//! - the op IR ([`Op`], [`Block`]) with output-shape inference, and the
//!   [`Graph`] of a whole network (a DAG of named nodes, with surgery);
//! - the cost model ([`Cost`]): MACs, parameters, bytes — Table 1's formulas;
//! - reference semantics: [`Operator::reference_forward`], a direct evaluation
//!   of equation (1) for every op, against which the fast kernels are tested;
//! - the [`Transform`] contract and its [`Report`];
//! - [`linalg`]: thin SVD, symmetric eigendecomposition, QR, solve, least
//!   squares (faer by default, LAPACK with the `lapack` feature);
//! - [`SeededRng`]: the only source of randomness.
//!
//! ```
//! use hasten_core::{ActShape, ConvLayer, ConvSpec, Operator, SeededRng};
//!
//! let mut rng = SeededRng::new(0);
//! let layer = ConvLayer::from_array(
//!     rng.normal_array((64, 32, 3, 3), 0.1),
//!     ConvSpec::new().with_padding(1),
//! )?;
//! let cost = layer.cost(ActShape::new(32, 56, 56))?;
//! assert_eq!(cost.macs, 64 * 32 * 9 * 56 * 56);
//! # Ok::<(), hasten_core::Error>(())
//! ```

pub mod bits;
pub mod block;
pub mod cost;
pub mod error;
pub mod grad;
pub mod graph;
pub mod kmeans;
pub mod layer;
pub mod linalg;
pub mod memory;
pub mod metrics;
pub mod op;
pub mod rng;
pub mod shape;
pub mod spec;
pub mod transform;
pub mod weight;

pub use bits::{bits_for, PackedCodes};
pub use block::Block;
pub use cost::Cost;
pub use error::{Error, Result};
pub use graph::{Graph, GraphBuilder, GraphError, NodeFilter, NodeOp};
pub use layer::{ConvLayer, Layer, LinearLayer};
pub use metrics::relative_error;
pub use op::{
    AvgPool, BatchNorm, BinaryConv, BinaryInput, ChannelGather, ChannelShuffle, Clip, CodebookConv,
    Csr, Dropout, Elementwise, FixedPointConv, Flatten, GlobalAvgPool, GroupwiseConv, HardSigmoid,
    HardSwish, Identity, Int8Conv, IntType, LcnnConv, MaxPool, Op, Operator, Pad, PerforatedConv,
    PoolSpec, PoolWindow, ProductQuantizedConv, QuantParams, Relu, Requant, Shift, Sigmoid, Silu,
    Softmax, SparseConv, SparseLinear, TernaryConv, TtLinear, WeightLayout,
};
pub use rng::SeededRng;
pub use shape::ActShape;
pub use spec::{ConvSpec, Padding};
pub use transform::{Compressed, Report, Transform};
pub use weight::{mode_fold, mode_unfold, Conv4d};

pub use ndarray;

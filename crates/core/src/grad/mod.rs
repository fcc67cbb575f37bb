//! Reverse mode: the reference backward of every graph op, and of a whole
//! [`Graph`](crate::Graph).
//!
//! The training reference runs in f64 throughout — activations, parameters
//! and gradients — so that every gradient can be checked against central
//! finite differences ([`check`]) to a relative error below 1e-5. Like the
//! reference forward, each backward is a direct, obviously correct loop; the
//! fast f32 training kernels are tested against it.
//!
//! - [`forward`] / [`backward`]: one op of the IR on an NCHW batch, its
//!   parameters given as [`OpParams`] (f64 values by `state_dict` suffix:
//!   `weight`, `bias`, `running_mean`, `running_var`); [`op_params`] reads an
//!   op's own values.
//! - [`Mode`]: inference, or training (batch-norm batch statistics and
//!   running-average update, dropout with a seeded mask).
//! - [`merge`]: `Add`, `Concat`, `Mul` (a broadcast gate gets the summed
//!   gradient).
//! - [`loss`]: softmax cross-entropy with label smoothing, MSE.
//! - [`ste`]: the straight-through estimator of quantization-aware
//!   training (eq. (5)): gradient masking to the clip region, weight clipping.
//! - [`Tape`]: the graph's forward in f64 recording every value, and its
//!   reverse sweep over the topological order, accumulating the gradient of a
//!   value read by several nodes and returning parameter gradients by
//!   `state_dict` name.
//!
//! - The compressed ops train the values they store, never their structure
//!   (`packed`): sparse `values` (removed weights stay zero), codebook and
//!   PQ `centroids` (codes fixed; a centroid's gradient sums those of its
//!   members), binary `alpha`, ternary and fixed-point `scales` (and
//!   `offsets`), group-wise kept-tap `weight`, LCNN `dictionary` and
//!   `coeffs`, TT-linear cores `core.0`, `core.1`, …, every `bias`; a
//!   perforated convolution trains its dense `weight` and `bias` through the
//!   nearest-neighbour fill; shift has an input gradient only. Binary,
//!   ternary and fixed-point codes are fixed here: their latent
//!   full-precision weights are trained before packing, by
//!   quantization-aware training (`hasten-train`'s `FakeQuant`).
//!
//! - `Int8Conv` (`int8`): the exact integer forward, and the
//!   straight-through backward of its input quantization (the derivative of
//!   `Ŵ ∗ clamp(x, lo, hi) + b̂`, [`ste::passes_activation`]); it has no
//!   trainable values, but for the activation fake quantizer with a learned
//!   step size, whose `scale` gets LSQ's gradient ([`lsq`]).
//!
//! - XNOR-Net binary convolutions (`BinaryConv` with binarized inputs,
//!   `xnor`, eq. (9)): the straight-through estimator of `sign(x)` (the
//!   gradient passes where `|x| ≤ 1`), the scaling map `K` held constant;
//!   `alpha` and `bias` are trained.
//!
//! Every op of the IR has a backward; an op that had none would be rejected
//! with [`Error::Unsupported`].

mod activation;
mod batch_norm;
pub mod check;
mod conv;
mod int8;
mod layout;
mod linear;
pub mod loss;
pub mod lsq;
pub mod merge;
mod packed;
mod perforated;
mod pool;
pub mod ste;
mod tape;
mod xnor;

pub use activation::{activation_derivative, activation_value};
pub use batch_norm::{batch_norm_batch_stats, BN_DEFAULT_MOMENTUM};
pub use layout::dropout_mask;
pub use packed::{dense_equivalent, dense_weight_grads, DenseEquivalent};
pub use tape::{graph_with_params, Gradients, Tape};

use std::collections::BTreeMap;

use ndarray::{Array4, ArrayD};

use crate::error::{Error, Result};
use crate::op::Op;
use crate::rng::SeededRng;

/// f64 parameter values by name: for one op, the `state_dict` suffix
/// (`weight`, `bias`, `running_mean`, `running_var`); for a graph, the full
/// `state_dict` name (`layer1.0.conv1.weight`).
pub type Params = BTreeMap<String, ArrayD<f64>>;

/// The values of one op's parameters, by `state_dict` suffix.
pub type OpParams = Params;

/// Whether the forward runs as at inference or as in training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Inference: batch norm uses its running statistics, dropout is the
    /// identity.
    Eval,
    /// Training: batch norm normalises with the batch statistics and updates
    /// its running averages with `momentum` (PyTorch's convention,
    /// `r ← (1 − m)·r + m·batch`, the running variance from the unbiased
    /// batch variance); dropout draws its mask from a [`crate::SeededRng`]
    /// seeded with `seed` (per node, see [`Tape`]).
    Train {
        /// Seed of the dropout masks.
        seed: u64,
        /// Running-average momentum of batch norm, in `[0, 1]`.
        momentum: f64,
    },
}

impl Mode {
    /// Training mode with PyTorch's batch-norm momentum 0.1.
    pub fn train(seed: u64) -> Self {
        Mode::Train {
            seed,
            momentum: BN_DEFAULT_MOMENTUM,
        }
    }

    /// Whether this is training mode.
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train { .. })
    }
}

/// What one op's forward returns: its output and, in training mode, the new
/// values of its buffers (batch norm's running statistics) by suffix.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// The output batch.
    pub output: Array4<f64>,
    /// Updated buffers (empty unless a batch norm runs in training mode).
    pub buffers: OpParams,
}

/// What one op's backward returns.
#[derive(Debug, Clone, PartialEq)]
pub struct OpGrad {
    /// `∂L/∂x`, the shape of the input.
    pub input: Array4<f64>,
    /// `∂L/∂θ` for each trainable parameter, by `state_dict` suffix
    /// (batch-norm running statistics are buffers and get none).
    pub params: OpParams,
}

/// The f64 values of `op`'s dense parameters by `state_dict` suffix, as
/// [`crate::Graph::parameters`] names them (convolution and linear `weight`
/// and `bias`; batch norm `weight` = γ, `bias` = β, `running_mean`,
/// `running_var`); empty for parameter-free ops.
pub fn op_params(op: &Op) -> OpParams {
    crate::graph::op_parameters(op)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.mapv(f64::from)))
        .collect()
}

/// Whether `suffix` names a trainable parameter (not a buffer).
pub fn is_trainable(suffix: &str) -> bool {
    !matches!(suffix, "running_mean" | "running_var")
}

/// Reads parameter `name` of shape `shape` from `p`.
pub(crate) fn param<'a>(
    p: &'a OpParams,
    kind: &str,
    name: &str,
    shape: &[usize],
) -> Result<&'a ArrayD<f64>> {
    let v = p.get(name).ok_or_else(|| {
        Error::param(
            format!("{kind} parameter `{name}`"),
            "missing",
            "a value in the parameter set",
        )
    })?;
    if v.shape() != shape {
        return Err(Error::shape(
            format!("{kind} parameter `{name}`"),
            format!("{shape:?}"),
            format!("{:?}", v.shape()),
        ));
    }
    Ok(v)
}

/// Checks that `dy` has the shape of the forward output.
pub(crate) fn check_grad_shape(kind: &str, expected: &[usize], dy: &Array4<f64>) -> Result<()> {
    if dy.shape() != expected {
        return Err(Error::shape(
            format!("{kind} output gradient"),
            format!("{expected:?}"),
            format!("{:?}", dy.shape()),
        ));
    }
    Ok(())
}

/// The f64 input shape check shared by the ops: a non-empty batch and the
/// op's own shape rule; returns the output shape of the batch.
pub(crate) fn out_dims(op: &Op, x: &Array4<f64>) -> Result<[usize; 4]> {
    use crate::op::Operator;
    let s = x.shape();
    if s.contains(&0) {
        return Err(Error::EmptyDimension {
            what: "input activation (NCHW)".into(),
            shape: format!("{s:?}"),
        });
    }
    let out = op.output_shape(crate::ActShape::new(s[1], s[2], s[3]))?;
    Ok([s[0], out.channels, out.height, out.width])
}

/// The f64 forward of `op` on the NCHW batch `x`, with parameter values `p`
/// (see [`op_params`]) in mode `mode`; `seed` draws a dropout mask.
///
/// Evaluates the same formula as the op's `reference_forward`, in f64.
pub fn forward(op: &Op, x: &Array4<f64>, p: &OpParams, mode: Mode) -> Result<Forward> {
    let dims = out_dims(op, x)?;
    let plain = |output| {
        Ok(Forward {
            output,
            buffers: OpParams::new(),
        })
    };
    match op {
        Op::Conv(c) => plain(conv::forward(c, x, p, dims)?),
        Op::Linear(_) => plain(linear::forward(x, p, dims)?),
        Op::BatchNorm(bn) => batch_norm::forward(bn, x, p, mode),
        Op::MaxPool(m) => plain(pool::max_forward(m, x, dims)?.0),
        Op::AvgPool(a) => plain(pool::avg_forward(a, x, dims)?),
        Op::GlobalAvgPool(_) => plain(pool::global_forward(x)),
        Op::Softmax(_) => plain(activation::softmax_forward(x)),
        Op::Dropout(d) => plain(layout::dropout_forward(d, x, mode)),
        Op::Flatten(_)
        | Op::Pad(_)
        | Op::Identity(_)
        | Op::ChannelShuffle(_)
        | Op::ChannelGather(_) => plain(layout::forward(op, x, dims)),
        Op::Shift(s) => plain(layout::shift(s, x, false)),
        Op::PerforatedConv(pc) => plain(perforated::forward(pc, x, p, dims)?),
        Op::Int8Conv(q) => plain(int8::forward(q, x, p)?),
        Op::BinaryConv(b) if b.binarize_input() => plain(xnor::forward(b, x, p, dims)?),
        _ if packed::handles(op) => plain(packed::forward(op, x, p, dims)?),
        _ => match activation::Activation::of(op) {
            Some(a) => plain(x.mapv(|v| a.value(v))),
            None => Err(Error::unsupported("reference backward", op.kind())),
        },
    }
}

/// The reference backward of `op`: given the input `x` of [`forward`] (same
/// parameters `p` and mode; in training mode the same seed), and the output
/// gradient `dy`, returns `∂L/∂x` and the parameter gradients.
pub fn backward(
    op: &Op,
    x: &Array4<f64>,
    dy: &Array4<f64>,
    p: &OpParams,
    mode: Mode,
) -> Result<OpGrad> {
    let dims = out_dims(op, x)?;
    check_grad_shape(op.kind(), &dims, dy)?;
    let plain = |input| {
        Ok(OpGrad {
            input,
            params: OpParams::new(),
        })
    };
    match op {
        Op::Conv(c) => conv::backward(c, x, dy, p),
        Op::Linear(_) => linear::backward(x, dy, p),
        Op::BatchNorm(bn) => batch_norm::backward(bn, x, dy, p, mode),
        Op::MaxPool(m) => plain(pool::max_backward(m, x, dy, dims)?),
        Op::AvgPool(a) => plain(pool::avg_backward(a, x, dy)?),
        Op::GlobalAvgPool(_) => plain(pool::global_backward(x, dy)),
        Op::Softmax(_) => plain(activation::softmax_backward(x, dy)),
        Op::Dropout(d) => plain(layout::dropout_backward(d, dy, mode)),
        Op::Flatten(_)
        | Op::Pad(_)
        | Op::Identity(_)
        | Op::ChannelShuffle(_)
        | Op::ChannelGather(_) => plain(layout::backward(op, x, dy)),
        Op::Shift(s) => plain(layout::shift(s, dy, true)),
        Op::PerforatedConv(pc) => perforated::backward(pc, x, dy, p),
        Op::Int8Conv(q) => int8::backward(q, x, dy, p),
        Op::BinaryConv(b) if b.binarize_input() => xnor::backward(b, x, dy, p),
        _ if packed::handles(op) => packed::backward(op, x, dy, p),
        _ => match activation::Activation::of(op) {
            Some(a) => plain(
                ndarray::Zip::from(x)
                    .and(dy)
                    .map_collect(|&v, &g| g * a.derivative(v)),
            ),
            None => Err(Error::unsupported("reference backward", op.kind())),
        },
    }
}

/// Whether `op` has a reference backward ([`forward`] and [`backward`]
/// accept it): true for every op of the IR since XNOR-Net convolutions
/// gained their straight-through backward (see the module docs); an op
/// without one could not be fine-tuned.
pub fn has_backward(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_)
            | Op::Linear(_)
            | Op::BatchNorm(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool(_)
            | Op::Softmax(_)
            | Op::Dropout(_)
            | Op::Flatten(_)
            | Op::Pad(_)
            | Op::Identity(_)
            | Op::ChannelShuffle(_)
            | Op::ChannelGather(_)
            | Op::Shift(_)
            | Op::PerforatedConv(_)
            | Op::Int8Conv(_)
            | Op::BinaryConv(_)
    ) || packed::handles(op)
        || activation::Activation::of(op).is_some()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_compressed;
#[cfg(test)]
mod tests_int8;
#[cfg(test)]
mod tests_xnor;

pub use crate::graph::{inner_ops, prefix};

/// The mode of op `index` of node `node`: training mode gets a dropout
/// seed forked per node and op, so every tape draws the same masks.
pub fn op_mode(mode: Mode, node: usize, index: usize) -> Mode {
    match mode {
        Mode::Eval => Mode::Eval,
        Mode::Train { seed, momentum } => Mode::Train {
            seed: SeededRng::new(seed)
                .fork(((node as u64) << 20) | index as u64)
                .next_u64(),
            momentum,
        },
    }
}

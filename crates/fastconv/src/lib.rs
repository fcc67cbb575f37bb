//! # hasten-fastconv
//!
//! Fast CPU execution of the Hasten op IR — the step that turns the
//! operation-count savings of the survey's methods into wall-clock savings.
//!
//! - [`Plan`] compiles a whole network — a [`hasten_core::Graph`]
//!   ([`Plan::for_graph`]), or a [`Block`] as a graph of one node
//!   ([`Plan::new`]) — for its input shapes and one batch size, into one
//!   topological schedule of steps: it picks a kernel per op, packs the
//!   weights, and fuses `Pad(0)? → Conv → BatchNorm? → Add? → (Relu | Clip)?`
//!   into one convolution (padding folded, the residual added and the
//!   activation clamped, NaN kept, in the GEMM's store; Winograd and
//!   depthwise layers leave the add to the n-ary add kernel), a ReLU / Clip
//!   into linear layers and adds; it absorbs channel shuffles and shifts into
//!   the next convolution's reads, lets concatenation operands write their
//!   channel slices in place and Identity / Dropout / Flatten share their
//!   input's buffer. Every activation is a range of one arena, assigned by
//!   liveness ([`Plan::peak_activation_bytes`] against
//!   [`Plan::naive_activation_bytes`]), so [`Plan::run`] / [`Plan::run_all`]
//!   allocate nothing. [`Plan::steps`], `Display` and [`Plan::run_timed`]
//!   describe and time the steps; [`PlanOptions::fuse`] turns fusion off to
//!   measure it. Work is split over batch × output tiles with rayon, so
//!   batch 1 uses every core.
//! - Convolution (equation (1) of the survey): our own BLIS-style GEMM with
//!   lazy im2col packing for dense and grouped layers, plain GEMM for `1×1`
//!   layers, Winograd F(4×4, 3×3) or F(2×2, 3×3) for stride-1 3×3 layers
//!   with many channels ([`Winograd`]), a direct vectorised kernel for depthwise
//!   layers, GEMM over the kept positions for perforated layers (survey
//!   section 6.1); bias and ReLU / Clip fused into the GEMM's store.
//! - [`matmul`]: one single-threaded `C = op(A)·op(B)` on the same GEMM,
//!   for callers that parallelise outside (the training kernels of
//!   `hasten-train`).
//! - Pooling (max, average, global average), padding, softmax over
//!   channels and every element-wise activation (`hasten_core::Elementwise`)
//!   have vectorisable kernels compiled per instruction set, as do the
//!   graph's residual sums, broadcast (squeeze–excitation) products and
//!   concatenation copies.
//! - Fully connected layers: a skinny SIMD product streaming each weight
//!   row once for all samples at batch ≤ 8, the GEMM above; Tensor-Train
//!   layers as one GEMM per core; bias and ReLU fused.
//! - Microkernels for AVX-512, AVX2 + FMA and portable Rust, chosen at run
//!   time ([`Isa::detect`]) or forced ([`PlanOptions`]) — every path is tested
//!   against the reference.
//! - Ops without a fast kernel (including ops added to the IR later) run
//!   their reference semantics, so the result always agrees with
//!   `hasten_core`'s reference forward (relative error below `1e-4`, checked
//!   by property tests on random graphs). The one `match` on [`Op`] that
//!   dispatches ops to kernels is in `plan/compile.rs`; a new kernel is one
//!   arm there.
//! - Low-bit and sparse kernels, usable on their own (survey sections 5 and
//!   6): [`XnorGemm`] (XNOR–popcount, binary weights and inputs) and
//!   [`TernaryGemm`], [`Int8Gemm`] (u8 × i8 → i32 with requantisation),
//!   [`CodebookLinear`] / [`PqLinear`], [`CsrConv`] / [`CsrLinear`] and
//!   [`GroupwiseGemm`]; the plan runs the core ops (`BinaryConv`,
//!   `Int8Conv`, …) through them. Measured figures are in
//!   `docs/performance.md`.
//!
//! ```
//! use hasten_core::{Block, ConvLayer, ConvSpec, Relu, SeededRng};
//!
//! let mut rng = SeededRng::new(0);
//! let conv = ConvLayer::from_array(rng.normal_array((8, 4, 3, 3), 0.1), ConvSpec::new().with_padding(1))?;
//! let block = Block::new(vec![conv.into(), Relu.into()])?;
//! let x = rng.normal_array((2, 4, 10, 10), 1.0);
//! let fast = hasten_fastconv::forward(&block, &x)?;
//! let slow = block.reference_forward(&x)?;
//! assert!((&fast - &slow).iter().all(|d| d.abs() < 1e-4));
//! # Ok::<(), hasten_core::Error>(())
//! ```

mod aligned;
mod conv;
mod elementwise;
mod gather;
mod gemm;
mod isa;
mod linear;
mod lowbit;
mod matmul;
mod pad;
mod peak;
mod plan;
mod pool;
mod pooling;
mod profile;
mod shares;
mod shift;
mod softmax;
mod tiling;
mod tt_linear;

pub use gemm::rate::{gemm_kernel_run, KernelRun};
pub use isa::{Isa, Needs};
pub use lowbit::{
    dense_conv, dense_gemv, xor_popcount, ActivationScale, CodebookLinear, CsrConv, CsrLinear,
    GroupwiseGemm, Int8Gemm, Int8Output, PackedFilters, PackedSigns, PqLinear, TernaryGemm,
    U8Quant, XnorGemm,
};
pub use matmul::{matmul, Operand};
pub use peak::{fma_run, FmaRun};
pub use plan::{Outputs, Plan, PlanOptions, StepInfo, Winograd, BINARY_CHAIN, INT8_CHAIN};
#[cfg(feature = "step-profile")]
pub use profile::StepProfile;

use hasten_core::ndarray::Array4;
use hasten_core::op::input_shape_of;
use hasten_core::{Block, Op, Result};

/// Runs every op of `block` on the NCHW batch `input` with the fast kernels:
/// a convenience wrapper that builds a [`Plan`] for this input and runs it
/// once (build the plan yourself to run many batches without re-packing).
///
/// The whole chain's shapes are validated before any work is done; an input
/// the block cannot take is an error naming the offending op.
///
/// # Errors
/// [`hasten_core::Error::ShapeMismatch`] (or another shape error) for an
/// input the first op cannot take, [`hasten_core::Error::KernelLargerThanInput`]
/// where a kernel does not fit, and the errors of [`Plan::new`].
///
/// ```
/// use hasten_core::{Block, ConvLayer, ConvSpec, SeededRng};
///
/// let mut rng = SeededRng::new(1);
/// let conv = ConvLayer::from_array(rng.normal_array((6, 3, 3, 3), 0.1), ConvSpec::new())?;
/// let block = Block::single(conv);
/// let y = hasten_fastconv::forward(&block, &rng.normal_array((1, 3, 8, 8), 1.0))?;
/// assert_eq!(y.dim(), (1, 6, 6, 6));
/// // Four input channels where the convolution takes three.
/// assert!(hasten_fastconv::forward(&block, &rng.normal_array((1, 4, 8, 8), 1.0)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn forward(block: &Block, input: &Array4<f32>) -> Result<Array4<f32>> {
    let shape = input_shape_of(input)?;
    let mut plan = Plan::new(block, shape, input.shape()[0])?;
    Ok(plan.run(input)?.to_owned())
}

/// Runs one op on the NCHW batch `input` with its fast kernel, or with its
/// reference semantics where it has none.
///
/// # Errors
/// Those of [`forward`].
///
/// ```
/// use hasten_core::{ndarray::Array4, Op, Relu};
///
/// let x = Array4::from_shape_vec((1, 1, 1, 3), vec![-1.0f32, 0.5, 2.0]).unwrap();
/// let y = hasten_fastconv::forward_op(&Op::from(Relu), &x)?;
/// assert_eq!(y.iter().copied().collect::<Vec<_>>(), [0.0, 0.5, 2.0]);
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn forward_op(op: &Op, input: &Array4<f32>) -> Result<Array4<f32>> {
    forward(&Block::single(op.clone()), input)
}

//! [`Plan`]: a block compiled for one input shape and batch size — kernels
//! chosen, weights pre-packed, following batch norms and ReLUs fused into
//! convolutions, channel shuffles and shifts absorbed into the next
//! convolution's reads, and every buffer allocated — so running it allocates
//! nothing. [`compile`] holds the one `match` on [`Op`] that dispatches each
//! op to its kernel; ops without a fast kernel run their reference semantics.

use hasten_core::ndarray::{Array4, ArrayView4};
use hasten_core::{ActShape, Block, Error, Op, Operator, Result};
use rayon::prelude::*;
use std::sync::Mutex;

use crate::conv::{ChannelView, ConvStep, PerforatedKernel};
use crate::elementwise::{map_kernel, take_clamp};
use crate::gather::GatherKernel;
use crate::pad::PadKernel;
use crate::pool::ScratchPool;
use crate::pooling::{GlobalAvgKernel, PoolKernel};
use crate::softmax::SoftmaxKernel;
use crate::tt_linear::TtKernel;
use crate::{elementwise, linear, Isa};

/// How a [`Plan`] chooses its kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Instruction set of every kernel (must be supported by this CPU).
    pub isa: Isa,
    /// When stride-1 3×3 dense convolutions run by Winograd F(2×2, 3×3).
    pub winograd: Winograd,
}

/// When a plan runs a stride-1, undilated, dense 3×3 convolution by
/// Winograd F(2×2, 3×3) instead of GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winograd {
    /// Never.
    Off,
    /// Where measurements show it faster: at least 128 input and output
    /// channels and between 32 and 400 output tiles of 2×2 (the default).
    Auto,
    /// Whenever the layer allows it (for tests and comparisons).
    Always,
}

impl Default for PlanOptions {
    /// The fastest supported ISA, Winograd where it pays.
    fn default() -> Self {
        PlanOptions {
            isa: Isa::detect(),
            winograd: Winograd::Auto,
        }
    }
}

/// A block ready to run on batches of a fixed shape.
#[derive(Debug)]
pub struct Plan {
    input: ActShape,
    output: ActShape,
    batch: usize,
    isa: Isa,
    steps: Vec<Step>,
    buffers: [Vec<f32>; 2],
    pool: ScratchPool,
}

/// One executable step and the per-sample shapes it maps between.
#[derive(Debug)]
struct Step {
    kind: Kind,
    input: ActShape,
    output: ActShape,
}

/// What a step runs.
#[derive(Debug)]
enum Kind {
    /// A convolution, with whatever was fused into it.
    Conv(Box<ConvStep>),
    /// A plain copy (Identity, Dropout, Flatten).
    Copy,
    /// A batch norm no convolution absorbed: `scale·x + shift` per channel.
    Affine { scale: Vec<f32>, shift: Vec<f32> },
    /// A pending shuffle / shift written out (no convolution followed).
    Remap(ChannelView),
    /// An op with its own kernel object (the hook for further kernel
    /// families: one arm in [`compile`]).
    Kernel(Box<dyn OpKernel>),
    /// A packed-format op on its low-bit or sparse kernel, with its scratch.
    Lowbit(Box<(crate::lowbit::prepare::Prepared, Mutex<Vec<f32>>)>),
    /// An op without a fast kernel: its reference forward.
    Reference(Box<Op>),
}

/// A prepared kernel for one op of a plan: built in [`compile`] (weights
/// packed, sizes fixed), then run on whole batches.
pub(crate) trait OpKernel: std::fmt::Debug + Send + Sync {
    /// Runs on `batch` samples: `src` holds `batch` inputs and `dst`
    /// `batch` outputs of the shapes the kernel was built for, row-major
    /// NCHW; `pool` lends per-thread scratch buffers.
    fn run(&self, src: &[f32], dst: &mut [f32], batch: usize, pool: &ScratchPool);
}

impl Plan {
    /// Compiles `block` for batches of `batch` samples of shape `input`, with
    /// the fastest kernels this CPU supports ([`PlanOptions::default`]).
    pub fn new(block: &Block, input: ActShape, batch: usize) -> Result<Plan> {
        Plan::with_options(block, input, batch, PlanOptions::default())
    }

    /// As [`Plan::new`], with the kernels of `isa` (an error if this CPU
    /// lacks it) — to compare or test the paths.
    pub fn with_isa(block: &Block, input: ActShape, batch: usize, isa: Isa) -> Result<Plan> {
        let options = PlanOptions {
            isa,
            ..PlanOptions::default()
        };
        Plan::with_options(block, input, batch, options)
    }

    /// As [`Plan::new`], with explicit kernel choices.
    pub fn with_options(
        block: &Block,
        input: ActShape,
        batch: usize,
        options: PlanOptions,
    ) -> Result<Plan> {
        let isa = options.isa;
        let isa = isa.ensure_supported()?;
        if batch == 0 {
            return Err(Error::param("plan batch size", batch, ">= 1"));
        }
        hasten_core::error::ensure_nonempty(
            "plan input shape (C, H, W)",
            &[input.channels, input.height, input.width],
        )?;
        let shapes = block.shapes(input)?;
        let steps = compile(block.ops(), &shapes, batch, isa, options.winograd)?;
        let largest = steps.iter().map(|s| s.output.len()).max().unwrap_or(0);
        let len = largest.checked_mul(batch).ok_or_else(|| {
            Error::param(
                "plan batch × activation size",
                format!("{batch} × {largest}"),
                "a size that fits in memory",
            )
        })?;
        Ok(Plan {
            input,
            output: *shapes.last().expect("input shape is always present"),
            batch,
            isa,
            steps,
            buffers: [vec![0.0; len], vec![0.0; len]],
            pool: ScratchPool::new(),
        })
    }

    /// The per-sample input shape the plan was built for.
    pub fn input_shape(&self) -> ActShape {
        self.input
    }

    /// The per-sample output shape.
    pub fn output_shape(&self) -> ActShape {
        self.output
    }

    /// The batch size the plan was built for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The instruction set its kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs the block on `input` (`batch × C × H × W`); the result lives in
    /// the plan's own buffer until the next run.
    pub fn run(&mut self, input: &Array4<f32>) -> Result<ArrayView4<'_, f32>> {
        let expected = self.input.batched(self.batch);
        if input.shape() != expected {
            return Err(Error::shape(
                "plan input (NCHW)",
                format!("{expected:?}"),
                format!("{:?}", input.shape()),
            ));
        }
        let x = input.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let [first, second] = &mut self.buffers;
        let mut src_is_input = true;
        let mut in_first = false;
        for step in &self.steps {
            let (src, dst): (&[f32], &mut [f32]) = match (src_is_input, in_first) {
                (true, _) => (xs, &mut first[..]),
                (false, true) => (&first[..], &mut second[..]),
                (false, false) => (&second[..], &mut first[..]),
            };
            let dst_len = self.batch * step.output.len();
            step.run(
                &src[..self.batch * step.input.len()],
                &mut dst[..dst_len],
                self.batch,
                &self.pool,
            )?;
            in_first = src_is_input || !in_first;
            src_is_input = false;
        }
        let out = if in_first {
            &self.buffers[0]
        } else {
            &self.buffers[1]
        };
        let len = self.batch * self.output.len();
        Ok(
            ArrayView4::from_shape(self.output.batched(self.batch), &out[..len])
                .expect("buffer holds the output"),
        )
    }

    /// Runs the block on `input` and writes the result into `output`
    /// (`batch × C' × H' × W'`).
    pub fn run_into(&mut self, input: &Array4<f32>, output: &mut Array4<f32>) -> Result<()> {
        let expected = self.output.batched(self.batch);
        if output.shape() != expected {
            return Err(Error::shape(
                "plan output (NCHW)",
                format!("{expected:?}"),
                format!("{:?}", output.shape()),
            ));
        }
        let y = self.run(input)?;
        output.assign(&y);
        Ok(())
    }
}

impl Step {
    /// Runs on `batch` samples, `src` and `dst` row-major NCHW.
    fn run(&self, src: &[f32], dst: &mut [f32], batch: usize, pool: &ScratchPool) -> Result<()> {
        match &self.kind {
            Kind::Conv(c) => c.run(src, dst, batch, pool),
            Kind::Copy => elementwise::copy(src, dst),
            Kind::Affine { scale, shift } => {
                elementwise::affine(src, dst, self.input.area(), scale, shift)
            }
            Kind::Remap(view) => {
                let (len, (h, w)) = (self.input.len(), (self.input.height, self.input.width));
                dst.par_chunks_mut(len)
                    .zip(src.par_chunks(len))
                    .for_each(|(d, s)| view.materialize(s, d, h, w));
            }
            Kind::Kernel(kernel) => kernel.run(src, dst, batch, pool),
            Kind::Lowbit(p) => {
                let (prepared, buf) = &**p;
                let mut buf = buf.lock().unwrap_or_else(|e| e.into_inner());
                prepared.run(src, dst, batch, self.input, &mut buf, pool)?;
            }
            Kind::Reference(op) => {
                let x = Array4::from_shape_vec(self.input.batched(batch), src.to_vec())
                    .map_err(|e| Error::shape("reference step input", self.input, e))?;
                let y = op.reference_forward(&x)?;
                let y = y.as_standard_layout();
                dst.copy_from_slice(y.as_slice().expect("standard layout"));
            }
        }
        Ok(())
    }
}

/// The op dispatch: turns the ops (with `shapes[i]` the input of op `i`)
/// into steps for batches of `batch`, fusing `Conv → BatchNorm? → act?`,
/// `Linear → act?`, `TtLinear → act?` and `PerforatedConv → act?` (act a
/// ReLU or a Clip, as a clamp in the kernel's store), and
/// absorbing `ChannelShuffle` / `Shift` into the
/// next convolution's reads.
fn compile(
    ops: &[Op],
    shapes: &[ActShape],
    batch: usize,
    isa: Isa,
    winograd: Winograd,
) -> Result<Vec<Step>> {
    // Weight-only quantized ops on real inputs run as dense ops with decoded weights.
    let decoded = ops
        .iter()
        .map(crate::lowbit::prepare::decode_weight_only)
        .collect::<Result<Vec<Op>>>()?;
    let ops = &decoded[..];
    let mut steps = Vec::new();
    let mut view = ChannelView::identity(shapes[0].channels);
    let mut i = 0;
    while i < ops.len() {
        let input = shapes[i];
        let mut next = i + 1;
        let kind = match &ops[i] {
            Op::Conv(layer) => {
                let bn = match ops.get(next) {
                    Some(Op::BatchNorm(bn)) => {
                        next += 1;
                        Some(bn)
                    }
                    _ => None,
                };
                let clamp = take_clamp(ops, &mut next);
                let v = std::mem::replace(&mut view, ChannelView::identity(shapes[next].channels));
                Some(Kind::Conv(Box::new(ConvStep::new(
                    isa, winograd, layer, input, bn, clamp, v,
                )?)))
            }
            Op::ChannelShuffle(s) => {
                view = view.then_shuffle(s);
                None
            }
            Op::Shift(s) => {
                if view.then_shift(s).is_none() {
                    flush(&mut steps, &mut view, input);
                }
                view = view
                    .then_shift(s)
                    .expect("an identity view takes any shift");
                None
            }
            Op::MaxPool(p) => Some(Kind::Kernel(Box::new(PoolKernel::max(isa, p, input)?))),
            Op::AvgPool(p) => Some(Kind::Kernel(Box::new(PoolKernel::avg(isa, p, input)?))),
            Op::GlobalAvgPool(_) => Some(Kind::Kernel(Box::new(GlobalAvgKernel::new(isa, input)))),
            Op::Pad(p) => Some(Kind::Kernel(Box::new(PadKernel::new(
                isa,
                p,
                input,
                shapes[next],
            )))),
            Op::Softmax(_) => Some(Kind::Kernel(Box::new(SoftmaxKernel::new(isa, input)))),
            Op::Identity(_) | Op::Dropout(_) | Op::Flatten(_) => Some(Kind::Copy),
            Op::BatchNorm(bn) => {
                let (scale, shift) = bn.affine();
                Some(Kind::Affine {
                    scale: scale.to_vec(),
                    shift: shift.to_vec(),
                })
            }
            Op::Linear(layer) => {
                let clamp = take_clamp(ops, &mut next);
                Some(Kind::Kernel(Box::new(linear::LinearKernel::new(
                    isa, layer, batch, clamp,
                ))))
            }
            Op::ChannelGather(g) => Some(Kind::Kernel(Box::new(GatherKernel::new(g, input)))),
            Op::TtLinear(t) => {
                let clamp = take_clamp(ops, &mut next);
                Some(Kind::Kernel(Box::new(TtKernel::new(isa, t, batch, clamp))))
            }
            Op::PerforatedConv(p) => {
                let clamp = take_clamp(ops, &mut next);
                Some(Kind::Kernel(Box::new(PerforatedKernel::new(
                    isa, p, input, batch, clamp,
                )?)))
            }
            other => Some(match map_kernel(isa, other) {
                // Element-wise activations: one generic map.
                Some(k) => Kind::Kernel(k),
                None => match crate::lowbit::prepare::prepare(other)? {
                    Some(p) => Kind::Lowbit(Box::new((p, Mutex::new(Vec::new())))),
                    None => Kind::Reference(Box::new(other.clone())),
                },
            }),
        };
        if let Some(kind) = kind {
            if !matches!(kind, Kind::Conv(_)) {
                flush(&mut steps, &mut view, input);
                view = ChannelView::identity(shapes[next].channels);
            }
            steps.push(Step {
                kind,
                input,
                output: shapes[next],
            });
        }
        i = next;
    }
    flush(&mut steps, &mut view, shapes[ops.len()]);
    if steps.is_empty() {
        // Every op cancelled out (e.g. a shuffle that permutes nothing):
        // the output is a copy of the input.
        let shape = shapes[ops.len()];
        steps.push(Step {
            kind: Kind::Remap(ChannelView::identity(shape.channels)),
            input: shape,
            output: shape,
        });
    }
    Ok(steps)
}

/// Writes out a pending non-identity view as a step of its own.
fn flush(steps: &mut Vec<Step>, view: &mut ChannelView, shape: ActShape) {
    if !view.is_identity() {
        let v = std::mem::replace(view, ChannelView::identity(shape.channels));
        steps.push(Step {
            kind: Kind::Remap(v),
            input: shape,
            output: shape,
        });
    }
}

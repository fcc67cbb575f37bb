//! [`Plan`]: a network — a [`Graph`], or a single [`Block`] as a one-node
//! graph — compiled for its input shapes and one batch size: kernels chosen,
//! weights pre-packed, batch norms, residual adds and ReLUs fused into
//! convolutions, channel shuffles and shifts absorbed into the next
//! convolution's reads, concatenation operands written in place, and every
//! activation given a range of one arena by liveness — so running it
//! allocates nothing. The compilation and its op dispatch are in
//! `compile.rs`; the arena assignment in `arena.rs`.

mod arena;
mod compile;

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hasten_core::graph::{Graph, GraphBuilder, GraphError, NodeOp};
use hasten_core::ndarray::{Array4, ArrayView4};
use hasten_core::{ActShape, Block, Error, Op, Operator, Result};
use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::conv::{ChannelView, ConvOut, ConvStep};
use crate::elementwise::{self, Clamp, Strided};
use crate::pool::ScratchPool;
use crate::tiling::SharedOut;
use crate::Isa;

/// How a [`Plan`] chooses its kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Instruction set of every kernel (must be supported by this CPU).
    pub isa: Isa,
    /// When stride-1 3×3 dense convolutions run by Winograd, and with which tile.
    pub winograd: Winograd,
    /// Whether to fuse ops into their producers' steps (batch norm, residual
    /// add and ReLU into convolutions, ReLU into adds and linear layers) and
    /// to write concatenation operands in place. On by default; off, every
    /// node runs as a step of its own — to measure what fusion saves.
    pub fuse: bool,
    /// The most bytes the plan's buffers may take (the activation arena and
    /// the zero-padded inputs of its convolutions); a plan that would need
    /// more fails with [`Error::MemoryLimit`] instead of aborting on
    /// allocation. Defaults to [`hasten_core::memory::limit`].
    pub memory_limit: u64,
}

/// When a plan runs a stride-1, undilated, dense 3×3 convolution by
/// Winograd — F(2×2, 3×3) (kernel name `conv winograd`) or F(4×4, 3×3)
/// (`conv winograd f4`) — instead of GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winograd {
    /// Never.
    Off,
    /// With the tile, or the GEMM, that measurements show fastest for the
    /// layer's channels and size (the default): F(4×4) with at least 64
    /// input and output channels and outputs from 13×13, F(2×2) with at
    /// least 256 channels on smaller outputs, else GEMM (the numbers are in
    /// docs/performance.md).
    Auto,
    /// Whenever the layer allows it, with F(4×4, 3×3) (for tests and
    /// comparisons).
    Always,
    /// Whenever the layer allows it, with F(2×2, 3×3).
    F2,
    /// Whenever the layer allows it, with F(4×4, 3×3) (the same as `Always`).
    F4,
}

impl Default for PlanOptions {
    /// The fastest supported ISA, Winograd where it pays, fusion on.
    fn default() -> Self {
        PlanOptions {
            isa: Isa::detect(),
            winograd: Winograd::Auto,
            fuse: true,
            memory_limit: hasten_core::memory::limit(),
        }
    }
}

/// A network compiled to run on batches of fixed shapes.
#[derive(Debug)]
pub struct Plan {
    inputs: Vec<ActShape>,
    outputs: Vec<(Slot, ActShape)>,
    batch: usize,
    isa: Isa,
    steps: Vec<Step>,
    bufs: Vec<Buf>,
    /// Arena offset (floats) of every buffer (unused for graph inputs).
    offsets: Vec<usize>,
    arena: AlignedVec,
    naive_floats: usize,
    free: Vec<(String, &'static str)>,
    pool: ScratchPool,
}

/// A buffer: a graph input, or a range of the arena holding `batch`
/// samples `stride` floats apart.
#[derive(Debug, Clone, Copy)]
struct Buf {
    stride: usize,
    input: Option<usize>,
}

/// Where a value lives: `len` floats per sample at `offset` inside each
/// sample of buffer `buf` (a channel slice when a concatenation holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    buf: usize,
    offset: usize,
    len: usize,
}

/// One executable step: what it runs, the per-sample shapes it maps
/// between, the slots it reads and writes, and the graph nodes it computes.
#[derive(Debug)]
struct Step {
    kind: Kind,
    /// The kernel's name.
    kernel: String,
    /// What is fused into it, in order.
    fused: Vec<&'static str>,
    input: ActShape,
    output: ActShape,
    srcs: Vec<Slot>,
    dst: Slot,
    nodes: Vec<String>,
}

/// What a step runs.
#[derive(Debug)]
enum Kind {
    /// A convolution, with whatever was fused into it (a second source is
    /// the residual it adds).
    Conv(Box<ConvStep>),
    /// A batch norm no convolution absorbed: `scale·x + shift` per channel.
    Affine { scale: Vec<f32>, shift: Vec<f32> },
    /// A pending shuffle / shift written out (no convolution read it).
    Remap(ChannelView),
    /// An op with its own kernel object.
    Kernel(Box<dyn OpKernel>),
    /// A packed-format op on its low-bit or sparse kernel.
    Lowbit(Box<LowbitStep>),
    /// An op without a fast kernel: its reference forward.
    Reference(Box<Op>),
    /// The sum of the sources, with a fused activation clamp.
    Add { clamp: Clamp },
    /// `x · gate`, the gate broadcast over planes when `C × 1 × 1`.
    Mul { broadcast: bool },
    /// A copy (a concatenation operand not written in place, or a graph
    /// output that is a graph input).
    Copy,
}

/// A packed-format op on its low-bit or sparse kernel, with its scratch.
#[derive(Debug)]
struct LowbitStep {
    prepared: crate::lowbit::prepare::Prepared,
    scratch: Mutex<Vec<f32>>,
    /// Whether it hands its output to the next step as that int8 step's
    /// input codes or that binary step's packed signs instead of writing
    /// f32 (set by [`chain_lowbit_steps`]).
    feeds_next: bool,
}

impl LowbitStep {
    /// `prepared`, unchained, with an empty scratch buffer.
    fn new(prepared: crate::lowbit::prepare::Prepared) -> Self {
        LowbitStep {
            prepared,
            scratch: Mutex::new(Vec::new()),
            feeds_next: false,
        }
    }
}

/// What [`StepInfo::fused`] lists for an int8 step that hands its output
/// to the next one as u8 codes.
pub const INT8_CHAIN: &str = "u8 codes to next int8 step";

/// What [`StepInfo::fused`] lists for a binary step that hands its output
/// to the next one as packed sign bits.
pub const BINARY_CHAIN: &str = "packed signs to next binary step";

/// Marks the low-bit steps whose output is read only by the step right
/// after them so that they pass it on in that step's own input form: u8
/// codes between int8 steps (`lowbit::int8_step`: the chains of a Tucker-2
/// block (1×1 → 3×3 → 1×1) or of consecutive quantized layers), packed sign
/// bits into a binary step that takes `sign(x)` without `K`
/// (`lowbit::binary_chain`). Results are bit-identical; the f32 tensor
/// between them is never written.
fn chain_lowbit_steps(steps: &mut [Step], bufs: &[Buf], outputs: &[(Slot, ActShape)]) {
    use crate::lowbit::prepare::Chain;
    for k in 1..steps.len() {
        let dst = steps[k - 1].dst;
        let sole = steps[k].srcs == [dst]
            && dst.offset == 0
            && bufs[dst.buf].stride == dst.len
            && outputs.iter().all(|(o, _)| o.buf != dst.buf)
            && steps
                .iter()
                .enumerate()
                .all(|(j, s)| j == k || s.srcs.iter().all(|r| r.buf != dst.buf));
        if let (Kind::Lowbit(a), Kind::Lowbit(b)) = (&steps[k - 1].kind, &steps[k].kind) {
            let chain = a.prepared.chains_into(&b.prepared).filter(|_| sole);
            if let Some(chain) = chain {
                if let Kind::Lowbit(a) = &mut steps[k - 1].kind {
                    a.feeds_next = true;
                }
                steps[k - 1].fused.push(match chain {
                    Chain::Int8 => INT8_CHAIN,
                    Chain::Binary => BINARY_CHAIN,
                });
            }
        }
    }
}

/// A prepared kernel for one op of a plan: built at compilation (weights
/// packed, sizes fixed), then run on whole batches.
pub(crate) trait OpKernel: std::fmt::Debug + Send + Sync {
    /// Runs on `batch` samples: `src` holds `batch` inputs and `dst`
    /// `batch` outputs of the shapes the kernel was built for, row-major
    /// NCHW; `pool` lends per-thread scratch buffers.
    fn run(&self, src: &[f32], dst: &mut [f32], batch: usize, pool: &ScratchPool);
}

/// One step of a compiled plan as [`Plan::steps`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    /// The kernel (`"conv gemm"`, `"add"`, `"concat copy"`, …).
    pub kernel: String,
    /// The graph nodes it computes, the first one's op being the kernel's
    /// and the others fused into it (block ops named `block[k]`).
    pub nodes: Vec<String>,
    /// What is fused into the kernel, in order (`"batch_norm"`,
    /// `"residual add"`, `"relu"`; [`INT8_CHAIN`] for an int8 step whose
    /// output goes to the next int8 step as its u8 input codes,
    /// [`BINARY_CHAIN`] for a binary step whose output goes to the next
    /// binary step as its packed input signs).
    pub fused: Vec<String>,
    /// Per-sample input shape (the first source's).
    pub input: ActShape,
    /// Per-sample output shape.
    pub output: ActShape,
    /// Whether it writes a channel slice of a concatenation in place.
    pub in_place_concat: bool,
}

impl Plan {
    /// Compiles `block` for batches of `batch` samples of shape `input`, with
    /// the fastest kernels this CPU supports ([`PlanOptions::default`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a batch of 0, [`Error::EmptyDimension`]
    /// for an empty input shape, the block's own shape error (an
    /// [`Error::Op`] naming the op) when it cannot take `input`, and
    /// [`Error::Overflow`] / [`Error::MemoryLimit`] when its buffers would not
    /// fit.
    ///
    /// # Examples
    ///
    /// ```
    /// use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, Relu, SeededRng};
    /// use hasten_fastconv::Plan;
    ///
    /// let mut rng = SeededRng::new(0);
    /// let conv = ConvLayer::from_array(rng.normal_array((8, 3, 3, 3), 0.2), ConvSpec::new())?;
    /// let block = Block::new(vec![conv.into(), Relu.into()])?;
    /// let mut plan = Plan::new(&block, ActShape::new(3, 8, 8), 2)?;
    /// assert_eq!(plan.output_shape(), ActShape::new(8, 6, 6));
    /// let x = rng.normal_array((2, 3, 8, 8), 1.0);
    /// let y = plan.run(&x)?;
    /// assert!(y.iter().all(|&v| v >= 0.0));
    /// // A 2×2 input is smaller than the 3×3 kernel.
    /// assert!(Plan::new(&block, ActShape::new(3, 2, 2), 2).is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
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

    /// As [`Plan::new`], with explicit kernel choices: the block compiled
    /// as a graph of one node.
    pub fn with_options(
        block: &Block,
        input: ActShape,
        batch: usize,
        options: PlanOptions,
    ) -> Result<Plan> {
        options.isa.ensure_supported()?;
        check_batch(batch)?;
        hasten_core::error::ensure_nonempty(
            "plan input shape (C, H, W)",
            &[input.channels, input.height, input.width],
        )?;
        block.shapes(input)?;
        let mut b = GraphBuilder::new();
        let x = b.input("input", input);
        let y = b.node("block", block.clone(), &[x]);
        b.output(y);
        Plan::for_graph(&b.build()?, batch, options)
    }

    /// Compiles `graph` for batches of `batch` samples: a topological
    /// schedule of steps on the fast kernels, with fusions where
    /// `options.fuse`, and one activation arena assigned by liveness.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when `options.isa` is not supported by this
    /// CPU, [`Error::InvalidParameter`] for a batch of 0, and
    /// [`Error::Overflow`] / [`Error::MemoryLimit`] when the arena or a
    /// convolution's padded input would exceed `options.memory_limit`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hasten_core::{relative_error, ActShape, ConvLayer, ConvSpec, GraphBuilder, SeededRng};
    /// use hasten_fastconv::{Plan, PlanOptions};
    ///
    /// let mut rng = SeededRng::new(0);
    /// let mut b = GraphBuilder::new();
    /// let x = b.input("x", ActShape::new(4, 6, 6));
    /// let conv = ConvLayer::from_array(rng.normal_array((4, 4, 3, 3), 0.2), ConvSpec::new().with_padding(1))?;
    /// let y = b.op("conv", conv, x);
    /// let sum = b.add("residual", &[x, y]);
    /// b.output(sum);
    /// let graph = b.build()?;
    ///
    /// let mut plan = Plan::for_graph(&graph, 2, PlanOptions::default())?;
    /// let input = rng.normal_array((2, 4, 6, 6), 1.0);
    /// let fast = plan.run(&input)?.to_owned();
    /// let reference = graph.reference_forward(&[&input])?.remove(0);
    /// assert!(relative_error(&reference, &fast) < 1e-4);
    ///
    /// let tiny = PlanOptions { memory_limit: 64, ..PlanOptions::default() };
    /// assert!(Plan::for_graph(&graph, 2, tiny).is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn for_graph(graph: &Graph, batch: usize, options: PlanOptions) -> Result<Plan> {
        let isa = options.isa.ensure_supported()?;
        check_batch(batch)?;
        let overflow = |what: &str, n: usize| {
            Error::overflow(format!(
                "the plan's batch × activation size ({batch} × {n} floats, {what})"
            ))
        };
        // Every activation's size in bytes must fit before kernels size
        // their buffers by the batch.
        total_floats(graph.inputs().iter().map(|i| i.shape()), batch)?;
        let naive_floats = total_floats(graph.nodes().iter().map(|n| n.output_shape()), batch)?;
        crate::conv::check_padded_inputs(unary_ops(graph)?, batch, options.memory_limit)?;
        let mut compiled = compile::compile(graph, batch, options)?;
        if options.fuse {
            chain_lowbit_steps(&mut compiled.steps, &compiled.bufs, &compiled.outputs);
        }
        let mut lifetimes: Vec<arena::Lifetime> = Vec::new();
        let mut arena_index = vec![usize::MAX; compiled.bufs.len()];
        let end = compiled.steps.len();
        let mut first = vec![usize::MAX; compiled.bufs.len()];
        let mut last = vec![0; compiled.bufs.len()];
        for (k, step) in compiled.steps.iter().enumerate() {
            for s in step.srcs.iter().chain([&step.dst]) {
                first[s.buf] = first[s.buf].min(k);
                last[s.buf] = last[s.buf].max(k);
            }
        }
        for (slot, _) in &compiled.outputs {
            last[slot.buf] = end;
        }
        for (b, buf) in compiled.bufs.iter().enumerate() {
            if buf.input.is_none() && first[b] != usize::MAX {
                let size = buf
                    .stride
                    .checked_mul(batch)
                    .ok_or_else(|| overflow("buffer", buf.stride))?;
                arena_index[b] = lifetimes.len();
                lifetimes.push(arena::Lifetime {
                    size,
                    first: first[b],
                    last: last[b],
                });
            }
        }
        let (placed, total) = arena::assign(&lifetimes)?;
        hasten_core::memory::check_against(
            "the plan's activation arena",
            total,
            4,
            options.memory_limit,
        )?;
        let offsets = arena_index
            .iter()
            .map(|&i| if i == usize::MAX { 0 } else { placed[i] })
            .collect();
        let plan = Plan {
            inputs: graph.inputs().iter().map(|i| i.shape()).collect(),
            outputs: compiled.outputs,
            batch,
            isa,
            steps: compiled.steps,
            bufs: compiled.bufs,
            offsets,
            arena: AlignedVec::zeros(total),
            naive_floats,
            free: compiled.free,
            pool: ScratchPool::new(),
        };
        plan.check_disjoint();
        Ok(plan)
    }

    /// The per-sample input shape (the first graph input's).
    pub fn input_shape(&self) -> ActShape {
        self.inputs[0]
    }

    /// The per-sample output shape (the first graph output's).
    pub fn output_shape(&self) -> ActShape {
        self.outputs[0].1
    }

    /// The per-sample shapes of the graph inputs, in order.
    pub fn input_shapes(&self) -> &[ActShape] {
        &self.inputs
    }

    /// The per-sample shapes of the graph outputs, in order.
    pub fn output_shapes(&self) -> Vec<ActShape> {
        self.outputs.iter().map(|&(_, s)| s).collect()
    }

    /// The batch size the plan was built for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The instruction set its kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of the activation arena: every intermediate activation of a
    /// run, buffers shared between values whose lifetimes do not overlap.
    pub fn peak_activation_bytes(&self) -> usize {
        std::mem::size_of_val(self.arena.as_slice())
    }

    /// Bytes the activations of every graph node would take in buffers of
    /// their own (the figure [`Plan::peak_activation_bytes`] improves on).
    pub fn naive_activation_bytes(&self) -> usize {
        self.naive_floats.saturating_mul(std::mem::size_of::<f32>())
    }

    /// The steps, in execution order.
    pub fn steps(&self) -> Vec<StepInfo> {
        self.steps
            .iter()
            .map(|s| StepInfo {
                kernel: s.kernel.clone(),
                nodes: s.nodes.clone(),
                fused: s.fused.iter().map(|f| f.to_string()).collect(),
                input: s.input,
                output: s.output,
                in_place_concat: !matches!(s.kind, Kind::Copy)
                    && self.bufs[s.dst.buf].stride != s.dst.len,
            })
            .collect()
    }

    /// The graph nodes that run no step of their own and are fused into none
    /// either, with the reason: `"view"` (a shuffle / shift read through by
    /// the next convolution or written out once), `"alias"` (shares its
    /// input's buffer), `"written in place"` (a concatenation whose operands
    /// all wrote their channel slices).
    pub fn free_nodes(&self) -> &[(String, &'static str)] {
        &self.free
    }

    /// Runs the single-input, single-output network on `input`
    /// (`batch × C × H × W`); the result lives in the plan's arena until the
    /// next run.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a network of several inputs or outputs
    /// (use [`Plan::run_all`]) and [`Error::ShapeMismatch`] when `input` is
    /// not of the batch and shape the plan was compiled for.
    ///
    /// # Examples
    ///
    /// ```
    /// use hasten_core::ndarray::Array4;
    /// use hasten_core::{ActShape, Block, Relu};
    /// use hasten_fastconv::Plan;
    ///
    /// let mut plan = Plan::new(&Block::single(Relu), ActShape::new(1, 2, 2), 1)?;
    /// let x = Array4::from_shape_vec((1, 1, 2, 2), vec![-1.0, 2.0, -3.0, 4.0]).unwrap();
    /// assert_eq!(plan.run(&x)?.iter().copied().collect::<Vec<_>>(), [0.0, 2.0, 0.0, 4.0]);
    /// assert!(plan.run(&Array4::zeros((2, 1, 2, 2))).is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn run(&mut self, input: &Array4<f32>) -> Result<ArrayView4<'_, f32>> {
        if self.inputs.len() != 1 || self.outputs.len() != 1 {
            return Err(Error::unsupported(
                "Plan::run",
                format!(
                    "a network of {} inputs and {} outputs (use Plan::run_all)",
                    self.inputs.len(),
                    self.outputs.len()
                ),
            ));
        }
        let outputs = self.run_all(&[input])?;
        Ok(outputs.get(0).expect("one output"))
    }

    /// Runs the block on `input` and writes the result into `output`
    /// (`batch × C' × H' × W'`).
    pub fn run_into(&mut self, input: &Array4<f32>, output: &mut Array4<f32>) -> Result<()> {
        let expected = self.output_shape().batched(self.batch);
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

    /// Runs the network on one NCHW batch per graph input; the outputs live
    /// in the plan's arena until the next run.
    pub fn run_all(&mut self, inputs: &[&Array4<f32>]) -> Result<Outputs<'_>> {
        self.execute(inputs, |_, run| run())?;
        Ok(Outputs { plan: self })
    }

    /// Runs the network once, timing every step (in the order of
    /// [`Plan::steps`]).
    pub fn run_timed(&mut self, inputs: &[&Array4<f32>]) -> Result<Vec<Duration>> {
        let mut times = vec![Duration::ZERO; self.steps.len()];
        self.execute(inputs, |k, run| {
            let start = Instant::now();
            run();
            times[k] = start.elapsed();
        })?;
        Ok(times)
    }

    /// Runs the network once and reports, per step (in the order of
    /// [`Plan::steps`]), how its parallel tasks used the threads of the
    /// current rayon pool (feature `step-profile`; low-bit kernels' tasks
    /// are not logged).
    #[cfg(feature = "step-profile")]
    pub fn run_profiled(
        &mut self,
        inputs: &[&Array4<f32>],
    ) -> Result<Vec<crate::profile::StepProfile>> {
        let threads = rayon::current_num_threads();
        let mut profiles = Vec::with_capacity(self.steps.len());
        crate::profile::take();
        self.execute(inputs, |_, run| {
            let start = Instant::now();
            run();
            let wall = start.elapsed();
            let spans = crate::profile::take();
            profiles.push(crate::profile::StepProfile::new(
                start, wall, threads, &spans,
            ));
        })?;
        Ok(profiles)
    }

    /// Checks `inputs`, then runs every step through `each(k, run)`.
    fn execute(
        &mut self,
        inputs: &[&Array4<f32>],
        mut each: impl FnMut(usize, &mut dyn FnMut()),
    ) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            return Err(GraphError::InputCount {
                expected: self.inputs.len(),
                got: inputs.len(),
            }
            .into());
        }
        for (k, (x, &shape)) in inputs.iter().zip(&self.inputs).enumerate() {
            if x.shape() != shape.batched(self.batch) {
                return Err(Error::shape(
                    format!("plan input {k} (NCHW)"),
                    format!("{:?}", shape.batched(self.batch)),
                    format!("{:?}", x.shape()),
                ));
            }
        }
        // Inputs not in standard layout are copied (the only allocation).
        let owned: Option<Vec<Array4<f32>>> =
            inputs.iter().any(|x| !x.is_standard_layout()).then(|| {
                inputs
                    .iter()
                    .map(|x| x.as_standard_layout().into_owned())
                    .collect()
            });
        let input = |k: usize| -> &[f32] {
            match &owned {
                Some(o) => o[k].as_slice(),
                None => inputs[k].as_slice(),
            }
            .expect("standard layout")
        };
        let frame = Frame {
            arena: SharedOut(self.arena.as_mut_slice().as_mut_ptr()),
            offsets: &self.offsets,
            bufs: &self.bufs,
            input: &input,
            batch: self.batch,
        };
        let mut result = Ok(());
        for (k, step) in self.steps.iter().enumerate() {
            let next = self.steps.get(k + 1);
            each(k, &mut || {
                if result.is_ok() {
                    result = step.run(&frame, self.isa, &self.pool, next);
                }
            });
        }
        result
    }

    /// Asserts that no step reads memory it writes: the arena assignment
    /// gives values live at the same step disjoint ranges, and a value
    /// written into a concatenation is read by nothing but it.
    fn check_disjoint(&self) {
        let span = |s: &Slot| -> Option<(usize, usize)> {
            let buf = self.bufs[s.buf];
            buf.input.is_none().then(|| {
                let start = self.offsets[s.buf] + s.offset;
                (start, start + (self.batch - 1) * buf.stride + s.len)
            })
        };
        for step in &self.steps {
            let d = span(&step.dst).expect("steps write the arena");
            for s in step.srcs.iter().filter_map(span) {
                assert!(
                    s.1 <= d.0 || d.1 <= s.0,
                    "plan step {:?} reads what it writes",
                    step.nodes
                );
            }
        }
    }
}

/// Every single-input op of `graph` with its per-sample input shape, the
/// ops inside block nodes included.
fn unary_ops(graph: &Graph) -> Result<Vec<(&Op, ActShape)>> {
    let mut ops = Vec::new();
    for node in graph.nodes() {
        match node.op() {
            NodeOp::Op(op) => ops.push((op, node.input_shapes()[0])),
            NodeOp::Block(block) => {
                let shapes = block.shapes(node.input_shapes()[0])?;
                ops.extend(block.ops().iter().zip(shapes));
            }
            _ => {}
        }
    }
    Ok(ops)
}

/// `batch` samples of every shape, in floats; an error unless their bytes
/// fit in the address space.
fn total_floats(shapes: impl Iterator<Item = ActShape>, batch: usize) -> Result<usize> {
    let mut sum = 0usize;
    for s in shapes {
        sum = s
            .len()
            .checked_mul(batch)
            .and_then(|f| f.checked_add(sum))
            .filter(|&f| f <= isize::MAX as usize / std::mem::size_of::<f32>())
            .ok_or_else(|| {
                Error::overflow(format!(
                    "the plan's batch × activation size ({batch} × {} floats)",
                    s.len()
                ))
            })?;
    }
    Ok(sum)
}

/// `batch ≥ 1`.
fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(Error::param("plan batch size", batch, ">= 1"));
    }
    Ok(())
}

/// The outputs of a run, as views into the plan's arena.
#[derive(Debug, Clone, Copy)]
pub struct Outputs<'a> {
    plan: &'a Plan,
}

impl<'a> Outputs<'a> {
    /// The number of graph outputs.
    pub fn len(&self) -> usize {
        self.plan.outputs.len()
    }

    /// Whether there are none (never, for a valid graph).
    pub fn is_empty(&self) -> bool {
        self.plan.outputs.is_empty()
    }

    /// Output `i` (`batch × C × H × W`), or `None` past the last.
    pub fn get(&self, i: usize) -> Option<ArrayView4<'a, f32>> {
        let plan = self.plan;
        let &(slot, shape) = plan.outputs.get(i)?;
        let start = plan.offsets[slot.buf] + slot.offset;
        let data = &plan.arena.as_slice()[start..start + plan.batch * slot.len];
        Some(ArrayView4::from_shape(shape.batched(plan.batch), data).expect("output fits its slot"))
    }

    /// The outputs, in order.
    pub fn iter(&self) -> impl Iterator<Item = ArrayView4<'a, f32>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Owned copies of the outputs.
    pub fn to_vec(&self) -> Vec<Array4<f32>> {
        self.iter().map(|v| v.to_owned()).collect()
    }
}

/// What a running step sees: the arena, where each buffer is, the inputs.
struct Frame<'a> {
    arena: SharedOut,
    offsets: &'a [usize],
    bufs: &'a [Buf],
    input: &'a (dyn Fn(usize) -> &'a [f32] + Sync),
    batch: usize,
}

impl Frame<'_> {
    /// A contiguous source: `batch × s.len` floats.
    fn src(&self, s: Slot) -> &[f32] {
        let buf = self.bufs[s.buf];
        assert!(
            s.offset == 0 && buf.stride == s.len,
            "sources are contiguous"
        );
        match buf.input {
            Some(k) => (self.input)(k),
            // SAFETY: the slot lies inside the arena (its offset and the
            // buffer size were placed within it); no step writes it while
            // it is read (`Plan::check_disjoint`).
            None => unsafe {
                std::slice::from_raw_parts(
                    self.arena.ptr().add(self.offsets[s.buf]),
                    self.batch * s.len,
                )
            },
        }
    }

    /// The destination: from sample 0 of `s` to the end of its last
    /// sample, and the layout of the samples in it.
    #[allow(clippy::mut_from_ref)]
    fn dst(&self, s: Slot) -> (&mut [f32], Strided) {
        let buf = self.bufs[s.buf];
        assert!(buf.input.is_none(), "steps write the arena");
        let len = (self.batch - 1) * buf.stride + s.len;
        // SAFETY: inside the arena as above; the one step running writes
        // it and reads nothing inside it (`Plan::check_disjoint`), and steps
        // run one at a time.
        let d = unsafe {
            std::slice::from_raw_parts_mut(
                self.arena.ptr().add(self.offsets[s.buf] + s.offset),
                len,
            )
        };
        let layout = Strided {
            batch: self.batch,
            len: s.len,
            stride: buf.stride,
        };
        (d, layout)
    }
}

impl Step {
    /// Runs on the frame's batch (`next`: the step after it).
    fn run(&self, f: &Frame<'_>, isa: Isa, pool: &ScratchPool, next: Option<&Step>) -> Result<()> {
        let batch = f.batch;
        let (dst, layout) = f.dst(self.dst);
        match &self.kind {
            Kind::Conv(c) => {
                let out = ConvOut {
                    stride: layout.stride,
                    residual: self.srcs.get(1).map(|&s| f.src(s)),
                };
                c.run(f.src(self.srcs[0]), dst, batch, pool, out);
            }
            Kind::Affine { scale, shift } => {
                elementwise::affine(f.src(self.srcs[0]), dst, self.input.area(), scale, shift)
            }
            Kind::Remap(view) => {
                let (len, (h, w)) = (self.input.len(), (self.input.height, self.input.width));
                dst.par_chunks_mut(len)
                    .zip(f.src(self.srcs[0]).par_chunks(len))
                    .for_each(|(d, s)| crate::profile::task(|| view.materialize(s, d, h, w)));
            }
            Kind::Kernel(kernel) => kernel.run(f.src(self.srcs[0]), dst, batch, pool),
            Kind::Lowbit(l) => {
                let src = f.src(self.srcs[0]);
                if let (true, Some(Kind::Lowbit(n))) = (l.feeds_next, next.map(|s| &s.kind)) {
                    if l.prepared
                        .run_chained(src, batch, self.input, &n.prepared, pool)?
                    {
                        return Ok(());
                    }
                }
                let mut buf = l.scratch.lock().unwrap_or_else(|e| e.into_inner());
                l.prepared
                    .run(src, dst, batch, self.input, &mut buf, pool)?;
            }
            Kind::Reference(op) => {
                let src = f.src(self.srcs[0]);
                let x = Array4::from_shape_vec(self.input.batched(batch), src.to_vec())
                    .map_err(|e| Error::shape("reference step input", self.input, e))?;
                let y = op.reference_forward(&x)?;
                let y = y.as_standard_layout();
                dst.copy_from_slice(y.as_slice().expect("standard layout"));
            }
            Kind::Add { clamp } => {
                let srcs = &self.srcs;
                elementwise::add(isa, srcs.len(), |k| f.src(srcs[k]), dst, layout, *clamp);
            }
            Kind::Mul { broadcast } => {
                let (x, g) = (f.src(self.srcs[0]), f.src(self.srcs[1]));
                elementwise::mul(isa, x, g, *broadcast, self.output.area(), dst, layout);
            }
            Kind::Copy => elementwise::copy(f.src(self.srcs[0]), dst, layout),
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    /// One line per step: index, kernel, fused ops, shapes and the graph
    /// nodes it computes; then the free nodes and the arena size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan: batch {}, {}, {} steps, activation arena {:.1} KiB (every node its own buffer: {:.1} KiB)",
            self.batch,
            self.isa,
            self.steps.len(),
            self.peak_activation_bytes() as f64 / 1024.0,
            self.naive_activation_bytes() as f64 / 1024.0,
        )?;
        for (k, s) in self.steps().iter().enumerate() {
            let fused: String = s.fused.iter().map(|x| format!(" + {x}")).collect();
            let place = if s.in_place_concat {
                " (into concat)"
            } else {
                ""
            };
            writeln!(
                f,
                "{k:>4}  {}{fused}  {} -> {}{place}  [{}]",
                s.kernel,
                s.input,
                s.output,
                s.nodes.join(", ")
            )?;
        }
        for (name, why) in &self.free {
            writeln!(f, "   -  free ({why})  [{name}]")?;
        }
        Ok(())
    }
}

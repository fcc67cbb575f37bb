//! Compiling a [`Graph`] into steps: block nodes are lowered to their op
//! chains, then every node is visited in topological order and turned into
//! a step on its fast kernel — or fused into its producer's step, absorbed
//! as a view into its reader's, or aliased to the buffer of its input. The
//! one `match` on [`Op`] that dispatches ops to kernels is
//! [`Compiler::op`].

use hasten_core::graph::{Graph, NodeOp, ValueId};
use hasten_core::{ActShape, BatchNorm, ConvLayer, ConvSpec, Error, Op, Padding, Result};

use super::{Buf, Kind, LowbitStep, PlanOptions, Slot, Step};
use crate::conv::{ChannelView, ConvStep, PerforatedKernel};
use crate::elementwise::{map_kernel, Clamp};
use crate::gather::GatherKernel;
use crate::linear;
use crate::pad::PadKernel;
use crate::pooling::{GlobalAvgKernel, PoolKernel};
use crate::softmax::SoftmaxKernel;
use crate::tt_linear::TtKernel;

/// What a lowered node computes (one per node of a graph compiled once, so
/// the size of the op variant does not matter; patterns stay flat unboxed).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum LOp {
    /// Graph input `i`.
    Input(usize),
    /// A single-input op (weight-only formats decoded to dense ops).
    Op(Op),
    /// Element-wise sum.
    Add,
    /// Channel concatenation.
    Concat,
    /// `x · gate`.
    Mul,
}

/// A node of the lowered graph: graph inputs first, then every op of every
/// node (a block node becomes its chain of ops).
#[derive(Debug)]
struct LNode {
    name: String,
    op: LOp,
    inputs: Vec<usize>,
    shape: ActShape,
}

/// Where a value is, once computed.
#[derive(Debug, Clone)]
enum State {
    /// Not computed yet, or fused into a step that never writes it.
    Unset,
    /// Materialised in a slot.
    Stored(Slot),
    /// A channel view (pending shuffle / shift) of a stored value.
    Viewed(Slot, ChannelView),
}

/// A convolution (with its batch norm) waiting for the residual add it
/// fuses into: the add's other operand may come later in topological order.
#[derive(Debug)]
struct PendingConv {
    conv: usize,
    pad: Option<usize>,
    layer: ConvLayer,
    bn: Option<usize>,
    base: Slot,
    view: ChannelView,
    input: ActShape,
}

/// What compiling a graph produces.
#[derive(Debug)]
pub(super) struct Compiled {
    pub steps: Vec<Step>,
    pub bufs: Vec<Buf>,
    pub outputs: Vec<(Slot, ActShape)>,
    pub free: Vec<(String, &'static str)>,
}

/// Compiles `graph` for batches of `batch` with `options` (ISA checked).
pub(super) fn compile(graph: &Graph, batch: usize, options: PlanOptions) -> Result<Compiled> {
    let (nodes, index) = lower(graph, batch)?;
    let mut readers = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for &v in &node.inputs {
            readers[v].push(i);
        }
    }
    let outputs: Vec<usize> = graph
        .outputs()
        .iter()
        .map(|&v| match v {
            ValueId::Input(i) => i,
            ValueId::Node(k) => index[k],
        })
        .collect();
    let mut is_output = vec![false; nodes.len()];
    outputs.iter().for_each(|&v| is_output[v] = true);
    let mut bufs: Vec<Buf> = Vec::new();
    let mut state = vec![State::Unset; nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        if let LOp::Input(k) = node.op {
            bufs.push(Buf {
                stride: node.shape.len(),
                input: Some(k),
            });
            state[i] = State::Stored(Slot {
                buf: bufs.len() - 1,
                offset: 0,
                len: node.shape.len(),
            });
        }
    }
    let mut c = Compiler {
        options,
        batch,
        nodes: &nodes,
        readers,
        is_output,
        state,
        done: vec![false; nodes.len()],
        pending: (0..nodes.len()).map(|_| None).collect(),
        concat_slots: vec![None; nodes.len()],
        folded_pad: vec![None; nodes.len()],
        bufs,
        steps: Vec::new(),
        free: Vec::new(),
    };
    for i in 0..nodes.len() {
        if !c.done[i] {
            c.node(i)?;
        }
    }
    let mut out_slots = Vec::with_capacity(outputs.len());
    for &v in &outputs {
        let mut slot = c.materialize(v);
        if c.bufs[slot.buf].input.is_some() {
            // An output that is a graph input: copied into the plan's memory.
            let dst = c.new_buf(slot.len);
            c.push(Kind::Copy, v, &[v], vec![slot], dst, nodes[v].shape);
            slot = dst;
        }
        out_slots.push((slot, nodes[v].shape));
    }
    Ok(Compiled {
        steps: c.steps,
        bufs: c.bufs,
        outputs: out_slots,
        free: c.free,
    })
}

/// Graph inputs, then the nodes with block nodes expanded to op chains
/// (op `k` of block node `b` named `b[k]`; an empty chain aliases its
/// input), and the lowered index of every graph node's output.
fn lower(graph: &Graph, batch: usize) -> Result<(Vec<LNode>, Vec<usize>)> {
    let mut nodes: Vec<LNode> = graph
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, input)| LNode {
            name: input.name().to_string(),
            op: LOp::Input(i),
            inputs: Vec::new(),
            shape: input.shape(),
        })
        .collect();
    let mut index: Vec<usize> = Vec::with_capacity(graph.nodes().len());
    let id = |v: ValueId, index: &[usize]| match v {
        ValueId::Input(i) => i,
        ValueId::Node(k) => index[k],
    };
    for node in graph.nodes() {
        let inputs: Vec<usize> = node.inputs().iter().map(|&v| id(v, &index)).collect();
        let simple = |op| LNode {
            name: node.name().to_string(),
            op,
            inputs: inputs.clone(),
            shape: node.output_shape(),
        };
        match node.op() {
            NodeOp::Op(op) => {
                nodes.push(simple(LOp::Op(decode(op, batch)?)));
            }
            NodeOp::Block(block) => {
                let shapes = block.shapes(node.input_shapes()[0])?;
                let mut cur = inputs[0];
                for (k, op) in block.ops().iter().enumerate() {
                    nodes.push(LNode {
                        name: format!("{}[{k}]", node.name()),
                        op: LOp::Op(decode(op, batch)?),
                        inputs: vec![cur],
                        shape: shapes[k + 1],
                    });
                    cur = nodes.len() - 1;
                }
                if cur == inputs[0] {
                    nodes.push(LNode {
                        name: node.name().to_string(),
                        op: LOp::Concat,
                        inputs: vec![cur],
                        shape: node.output_shape(),
                    });
                }
            }
            NodeOp::Add => nodes.push(simple(LOp::Add)),
            NodeOp::Concat => nodes.push(simple(LOp::Concat)),
            NodeOp::Mul => nodes.push(simple(LOp::Mul)),
            other => {
                return Err(Error::unsupported(
                    "fastconv graph plan",
                    format!("node `{}` of kind {}", node.name(), other.kind()),
                ))
            }
        }
        index.push(nodes.len() - 1);
    }
    Ok((nodes, index))
}

/// Weight-only quantized ops on real inputs run as dense ops with decoded
/// weights (for batches of `batch`).
fn decode(op: &Op, batch: usize) -> Result<Op> {
    crate::lowbit::prepare::decode_weight_only(op, batch)
}

/// The state of one compilation.
struct Compiler<'g> {
    options: PlanOptions,
    batch: usize,
    nodes: &'g [LNode],
    readers: Vec<Vec<usize>>,
    is_output: Vec<bool>,
    state: Vec<State>,
    done: Vec<bool>,
    pending: Vec<Option<PendingConv>>,
    concat_slots: Vec<Option<Slot>>,
    /// The zero padding of a `Pad` folded into each convolution's own.
    folded_pad: Vec<Option<Padding>>,
    bufs: Vec<Buf>,
    steps: Vec<Step>,
    free: Vec<(String, &'static str)>,
}

impl Compiler<'_> {
    /// The node that alone reads `v` (once), when `v` is not a graph output:
    /// the condition for fusing `v`'s producer with its reader.
    fn sole_reader(&self, v: usize) -> Option<usize> {
        match self.readers[v][..] {
            [r] if !self.is_output[v] => Some(r),
            _ => None,
        }
    }

    /// The sole reader of `v` and its clamp when it is a ReLU or a Clip and
    /// fusion is on.
    fn fused_clamp(&self, v: usize) -> Option<(usize, Clamp)> {
        let r = self.sole_reader(v).filter(|_| self.options.fuse)?;
        match &self.nodes[r].op {
            LOp::Op(op) => Clamp::of(Some(op)).map(|c| (r, c)),
            _ => None,
        }
    }

    /// A fresh arena buffer of `len` floats per sample.
    fn new_buf(&mut self, len: usize) -> Slot {
        self.bufs.push(Buf {
            stride: len,
            input: None,
        });
        Slot {
            buf: self.bufs.len() - 1,
            offset: 0,
            len,
        }
    }

    /// The concatenation `v` can be written straight into, with its offset
    /// there: `v`'s sole reader, a concatenation of two or more operands.
    fn concat_target(&self, v: usize) -> Option<(usize, usize)> {
        let c = self.sole_reader(v).filter(|_| self.options.fuse)?;
        let node = &self.nodes[c];
        if !matches!(node.op, LOp::Concat) || node.inputs.len() < 2 {
            return None;
        }
        let at = node.inputs.iter().position(|&u| u == v)?;
        let offset = node.inputs[..at]
            .iter()
            .map(|&u| self.nodes[u].shape.len())
            .sum();
        Some((c, offset))
    }

    /// The slot of concatenation `c`: a channel slice of the concatenation
    /// that reads it, if any, else a buffer of its own.
    fn concat_slot(&mut self, c: usize) -> Slot {
        if let Some(s) = self.concat_slots[c] {
            return s;
        }
        let len = self.nodes[c].shape.len();
        let slot = match self.concat_target(c) {
            Some((outer, offset)) => {
                let o = self.concat_slot(outer);
                Slot {
                    buf: o.buf,
                    offset: o.offset + offset,
                    len,
                }
            }
            None => self.new_buf(len),
        };
        self.concat_slots[c] = Some(slot);
        slot
    }

    /// Where a step computing `v` writes: a channel slice of the
    /// concatenation that alone reads `v` when the step's kernel can write
    /// at a stride, else a new buffer.
    fn dst_for(&mut self, v: usize, strided: bool) -> Slot {
        let len = self.nodes[v].shape.len();
        match self.concat_target(v).filter(|_| strided) {
            Some((c, offset)) => {
                let s = self.concat_slot(c);
                Slot {
                    buf: s.buf,
                    offset: s.offset + offset,
                    len,
                }
            }
            None => self.new_buf(len),
        }
    }

    /// `v`'s stored slot, writing out a pending view as a step first.
    fn materialize(&mut self, v: usize) -> Slot {
        match self.state[v].clone() {
            State::Stored(s) => s,
            State::Viewed(base, view) => {
                let dst = self.new_buf(base.len);
                let shape = self.nodes[v].shape;
                self.steps.push(Step {
                    kind: Kind::Remap(view),
                    kernel: "remap (shuffle / shift)".into(),
                    fused: Vec::new(),
                    input: shape,
                    output: shape,
                    srcs: vec![base],
                    dst,
                    nodes: vec![self.nodes[v].name.clone()],
                });
                self.state[v] = State::Stored(dst);
                dst
            }
            State::Unset => unreachable!("values are computed before they are read"),
        }
    }

    /// `v` as a stored base and a channel view over it.
    fn view_of(&self, v: usize) -> (Slot, ChannelView) {
        match &self.state[v] {
            State::Stored(s) => (*s, ChannelView::identity(self.nodes[v].shape.channels)),
            State::Viewed(s, view) => (*s, view.clone()),
            State::Unset => unreachable!("values are computed before they are read"),
        }
    }

    /// Sets `v` to a view of `base`, or to `base` itself for the identity.
    fn set_view(&mut self, v: usize, base: Slot, view: ChannelView) {
        self.state[v] = if view.is_identity() {
            State::Stored(base)
        } else {
            State::Viewed(base, view)
        };
        self.free.push((self.nodes[v].name.clone(), "view"));
    }

    /// Records a step computing nodes `first..` (listed in `names`) whose
    /// result is `tail`.
    fn push(
        &mut self,
        kind: Kind,
        tail: usize,
        names: &[usize],
        srcs: Vec<Slot>,
        dst: Slot,
        input: ActShape,
    ) {
        let nodes = self.nodes;
        let kernel = match (&kind, &nodes[names[0]].op) {
            (Kind::Conv(c), _) => c.name().to_string(),
            (Kind::Affine { .. }, _) => "batch_norm (affine)".into(),
            (Kind::Kernel(_), LOp::Op(op)) => op.kind().into(),
            (Kind::Lowbit(_), LOp::Op(op)) => format!("low-bit {}", op.kind()),
            (Kind::Reference(_), LOp::Op(op)) => format!("reference {}", op.kind()),
            (Kind::Add { .. }, _) => format!("add ({} operands)", srcs.len()),
            (Kind::Mul { broadcast: true }, _) => "mul (broadcast gate)".into(),
            (Kind::Mul { .. }, _) => "mul".into(),
            (Kind::Copy, _) => "copy".into(),
            _ => "step".into(),
        };
        let fused = names[1..]
            .iter()
            .map(|&n| match &nodes[n].op {
                LOp::Op(Op::BatchNorm(_)) => "batch_norm",
                LOp::Op(Op::Relu(_)) => "relu",
                LOp::Op(Op::Clip(_)) => "clip",
                LOp::Op(Op::Pad(_)) => "pad",
                LOp::Add => "residual add",
                _ => "op",
            })
            .collect();
        self.steps.push(Step {
            kind,
            kernel,
            fused,
            input,
            output: self.nodes[tail].shape,
            srcs,
            dst,
            nodes: names.iter().map(|&n| self.nodes[n].name.clone()).collect(),
        });
        for &n in names {
            self.done[n] = true;
        }
        self.state[tail] = State::Stored(dst);
    }

    /// Compiles node `i`.
    fn node(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        match &node.op {
            LOp::Input(_) => {}
            LOp::Op(op) => self.op(i, op)?,
            LOp::Add => match self.pending[i].take() {
                Some(p) => self.residual_conv(i, p)?,
                None => {
                    let srcs: Vec<Slot> =
                        node.inputs.iter().map(|&v| self.materialize(v)).collect();
                    let act = self.fused_clamp(i);
                    let tail = act.map_or(i, |(r, _)| r);
                    let dst = self.dst_for(tail, true);
                    let names: Vec<usize> = std::iter::once(i).chain(act.map(|a| a.0)).collect();
                    let kind = Kind::Add {
                        clamp: act.map_or(Clamp::NONE, |a| a.1),
                    };
                    self.push(kind, tail, &names, srcs, dst, node.shape);
                }
            },
            LOp::Mul => {
                let x = self.materialize(node.inputs[0]);
                let g = self.materialize(node.inputs[1]);
                let broadcast = self.nodes[node.inputs[1]].shape != node.shape;
                let dst = self.dst_for(i, true);
                self.push(
                    Kind::Mul { broadcast },
                    i,
                    &[i],
                    vec![x, g],
                    dst,
                    node.shape,
                );
            }
            LOp::Concat if node.inputs.len() == 1 => {
                self.state[i] = self.state[node.inputs[0]].clone();
                self.free.push((node.name.clone(), "alias"));
            }
            LOp::Concat => {
                let whole = self.concat_slot(i);
                let mut offset = 0;
                let mut copied = false;
                for &u in &node.inputs {
                    let len = self.nodes[u].shape.len();
                    let target = Slot {
                        buf: whole.buf,
                        offset: whole.offset + offset,
                        len,
                    };
                    let written = matches!(self.state[u], State::Stored(s) if s == target);
                    if !written {
                        let src = self.materialize(u);
                        self.steps.push(Step {
                            kind: Kind::Copy,
                            kernel: "concat copy".into(),
                            fused: Vec::new(),
                            input: self.nodes[u].shape,
                            output: self.nodes[u].shape,
                            srcs: vec![src],
                            dst: target,
                            nodes: vec![format!("{} ← {}", node.name, self.nodes[u].name)],
                        });
                        copied = true;
                    }
                    offset += len;
                }
                if !copied {
                    self.free.push((node.name.clone(), "written in place"));
                }
                self.done[i] = true;
                self.state[i] = State::Stored(whole);
            }
        }
        Ok(())
    }

    /// The op dispatch: compiles op node `i` to its kernel, fusing a
    /// preceding zero `Pad` and a following batch norm / residual add /
    /// ReLU or Clip into convolutions and a ReLU or Clip into linear, TT and
    /// perforated layers, absorbing channel shuffles and shifts into the
    /// next convolution's reads, and aliasing Identity, Dropout and Flatten
    /// to their input's buffer.
    fn op(&mut self, i: usize, op: &Op) -> Result<()> {
        let (isa, batch) = (self.options.isa, self.batch);
        let node = &self.nodes[i];
        let input = self.nodes[node.inputs[0]].shape;
        let x = node.inputs[0];
        // Ops with a fused activation: (kind, the activation node taken).
        let with_clamp = |c: &Self| c.fused_clamp(i);
        let clamp_of = |a: Option<(usize, Clamp)>| a.map_or(Clamp::NONE, |a| a.1);
        let kind = match op {
            Op::Conv(layer) => return self.conv(i, layer),
            Op::ChannelShuffle(s) => {
                let (base, view) = self.view_of(x);
                self.set_view(i, base, view.then_shuffle(s));
                self.done[i] = true;
                return Ok(());
            }
            Op::Shift(s) => {
                let (mut base, mut view) = self.view_of(x);
                if view.then_shift(s).is_none() {
                    base = self.materialize(x);
                    view = ChannelView::identity(input.channels);
                }
                let view = view
                    .then_shift(s)
                    .expect("an identity view takes any shift");
                self.set_view(i, base, view);
                self.done[i] = true;
                return Ok(());
            }
            // Same data, same layout: the input's buffer (or view) itself.
            Op::Identity(_) | Op::Dropout(_) | Op::Flatten(_) => {
                if matches!(op, Op::Flatten(_)) {
                    self.materialize(x);
                }
                self.state[i] = self.state[x].clone();
                self.free.push((node.name.clone(), "alias"));
                self.done[i] = true;
                return Ok(());
            }
            Op::Pad(p) => {
                let into_conv = self.sole_reader(i).filter(|&r| {
                    self.options.fuse
                        && p.value() == 0.0
                        && matches!(self.nodes[r].op, LOp::Op(Op::Conv(_)))
                });
                if let Some(c) = into_conv {
                    self.folded_pad[c] = Some(p.padding());
                    self.done[i] = true;
                    return Ok(());
                }
                let k = PadKernel::new(isa, p, input, node.shape);
                (Kind::Kernel(Box::new(k)), None)
            }
            Op::MaxPool(p) => (
                Kind::Kernel(Box::new(PoolKernel::max(isa, p, input)?)),
                None,
            ),
            Op::AvgPool(p) => (
                Kind::Kernel(Box::new(PoolKernel::avg(isa, p, input)?)),
                None,
            ),
            Op::GlobalAvgPool(_) => (
                Kind::Kernel(Box::new(GlobalAvgKernel::new(isa, input))),
                None,
            ),
            Op::Softmax(_) => (Kind::Kernel(Box::new(SoftmaxKernel::new(isa, input))), None),
            Op::BatchNorm(bn) => {
                let (scale, shift) = bn.affine();
                let kind = Kind::Affine {
                    scale: scale.to_vec(),
                    shift: shift.to_vec(),
                };
                (kind, None)
            }
            Op::Linear(layer) => {
                let act = with_clamp(self);
                let k = linear::LinearKernel::new(isa, layer, batch, clamp_of(act));
                (Kind::Kernel(Box::new(k)), act)
            }
            Op::ChannelGather(g) => (Kind::Kernel(Box::new(GatherKernel::new(g, input))), None),
            Op::TtLinear(t) => {
                let act = with_clamp(self);
                let k = TtKernel::new(isa, t, batch, clamp_of(act));
                (Kind::Kernel(Box::new(k)), act)
            }
            Op::PerforatedConv(p) => {
                let act = with_clamp(self);
                let k = PerforatedKernel::new(isa, p, input, batch, clamp_of(act))?;
                (Kind::Kernel(Box::new(k)), act)
            }
            other => {
                // Element-wise activations: one generic map.
                match map_kernel(isa, other) {
                    Some(k) => (Kind::Kernel(k), None),
                    None => match crate::lowbit::prepare::prepare(other)? {
                        Some(p) if p.fuses_post() => return self.lowbit_with_post(i, p),
                        Some(p) => (
                            Kind::Lowbit(Box::new(LowbitStep::new(p.with_isa(isa)))),
                            None,
                        ),
                        None => (Kind::Reference(Box::new(other.clone())), None),
                    },
                }
            }
        };
        let (kind, act) = kind;
        let src = self.materialize(x);
        let tail = act.map_or(i, |a| a.0);
        let dst = self.new_buf(self.nodes[tail].shape.len());
        let names: Vec<usize> = std::iter::once(i).chain(act.map(|a| a.0)).collect();
        self.push(kind, tail, &names, vec![src], dst, input);
        Ok(())
    }

    /// A low-bit step whose epilogue takes `BatchNorm? → ReLU/Clip?` (an
    /// int8 or binary convolution): one step, which also lets it chain into
    /// a next int8 or binary step across them (`chain_lowbit_steps`).
    fn lowbit_with_post(&mut self, i: usize, p: crate::lowbit::prepare::Prepared) -> Result<()> {
        let bn = self.sole_reader(i).filter(|&r| {
            self.options.fuse && matches!(self.nodes[r].op, LOp::Op(Op::BatchNorm(_)))
        });
        let affine = self.bn(bn).map(|b| {
            let (scale, shift) = b.affine();
            (scale.to_vec(), shift.to_vec())
        });
        let act = self.fused_clamp(bn.unwrap_or(i));
        let post = crate::lowbit::post::Post {
            affine,
            clamp: act.map_or(Clamp::NONE, |a| a.1),
        };
        let p = p
            .with_isa(self.options.isa)
            .with_post(post)
            .expect("fuses_post: an int8 or binary kernel");
        let input = self.nodes[self.nodes[i].inputs[0]].shape;
        let src = self.materialize(self.nodes[i].inputs[0]);
        let tail = act.map(|a| a.0).or(bn).unwrap_or(i);
        let dst = self.new_buf(self.nodes[tail].shape.len());
        let names: Vec<usize> = [Some(i), bn, act.map(|a| a.0)]
            .into_iter()
            .flatten()
            .collect();
        self.push(
            Kind::Lowbit(Box::new(LowbitStep::new(p))),
            tail,
            &names,
            vec![src],
            dst,
            input,
        );
        Ok(())
    }

    /// A convolution: `Pad? → Conv → BatchNorm? → (Add)? → ReLU/Clip?`
    /// fused into one step where fusion is on (a zero pad folded into the
    /// convolution's padding); the residual add only on the GEMM path, the
    /// others fall back to a separate add.
    fn conv(&mut self, i: usize, layer: &ConvLayer) -> Result<()> {
        let mut x = self.nodes[i].inputs[0];
        let padded;
        let mut layer = layer;
        let pad = self.folded_pad[i].map(|p| (x, p));
        if let Some((pad_node, p)) = pad {
            x = self.nodes[pad_node].inputs[0];
            padded = with_extra_padding(layer, p)?;
            layer = &padded;
        }
        let input = self.nodes[x].shape;
        let (base, view) = self.view_of(x);
        let mut tail = i;
        let bn = self.sole_reader(i).filter(|&r| {
            self.options.fuse && matches!(self.nodes[r].op, LOp::Op(Op::BatchNorm(_)))
        });
        if let Some(b) = bn {
            tail = b;
        }
        // The add's other operand must not be fused into it too (two
        // convolutions feeding one add: the first one visited takes it).
        let residual = self.sole_reader(tail).filter(|&a| {
            let n = &self.nodes[a];
            self.options.fuse
                && matches!(n.op, LOp::Add)
                && n.inputs.len() == 2
                && self.pending[a].is_none()
        });
        if let Some(a) = residual {
            if ConvStep::gemm_chosen(self.options.winograd, layer, input, &view)? {
                self.done[i] = true;
                if let Some(b) = bn {
                    self.done[b] = true;
                }
                self.pending[a] = Some(PendingConv {
                    conv: i,
                    pad: pad.map(|p| p.0),
                    layer: layer.clone(),
                    bn,
                    base,
                    view,
                    input,
                });
                return Ok(());
            }
        }
        let act = self.fused_clamp(tail);
        let tail = act.map_or(tail, |a| a.0);
        let step = ConvStep::new(
            self.options.isa,
            self.options.winograd,
            layer,
            input,
            self.bn(bn),
            act.map_or(Clamp::NONE, |a| a.1),
            view,
        )?;
        let strided = matches!(step, ConvStep::Gemm(_));
        let dst = self.dst_for(tail, strided);
        let names: Vec<usize> = [Some(i), pad.map(|p| p.0), bn, act.map(|a| a.0)]
            .into_iter()
            .flatten()
            .collect();
        self.push(
            Kind::Conv(Box::new(step)),
            tail,
            &names,
            vec![base],
            dst,
            input,
        );
        Ok(())
    }

    /// The batch norm of node `b`.
    fn bn(&self, b: Option<usize>) -> Option<&BatchNorm> {
        b.map(|b| match &self.nodes[b].op {
            LOp::Op(Op::BatchNorm(bn)) => bn,
            _ => unreachable!("fused batch norms are batch norms"),
        })
    }

    /// The fused `Pad? → Conv → BatchNorm? → Add → ReLU/Clip?` of add node `a`.
    fn residual_conv(&mut self, a: usize, p: PendingConv) -> Result<()> {
        let from = p.bn.unwrap_or(p.conv);
        let inputs = &self.nodes[a].inputs;
        let other = if inputs[0] == from {
            inputs[1]
        } else {
            inputs[0]
        };
        let residual = self.materialize(other);
        let act = self.fused_clamp(a);
        let tail = act.map_or(a, |x| x.0);
        let step = ConvStep::new(
            self.options.isa,
            self.options.winograd,
            &p.layer,
            p.input,
            self.bn(p.bn),
            act.map_or(Clamp::NONE, |x| x.1),
            p.view,
        )?;
        let dst = self.dst_for(tail, true);
        let names: Vec<usize> = [Some(p.conv), p.pad, p.bn, Some(a), act.map(|x| x.0)]
            .into_iter()
            .flatten()
            .collect();
        self.push(
            Kind::Conv(Box::new(step)),
            tail,
            &names,
            vec![p.base, residual],
            dst,
            p.input,
        );
        Ok(())
    }
}

/// `layer` with `extra` added to its padding (a zero `Pad` before it).
fn with_extra_padding(layer: &ConvLayer, extra: Padding) -> Result<ConvLayer> {
    let spec = layer.spec();
    let p = spec.padding;
    let padding = Padding {
        top: p.top + extra.top,
        bottom: p.bottom + extra.bottom,
        left: p.left + extra.left,
        right: p.right + extra.right,
    };
    let spec = ConvSpec { padding, ..*spec };
    ConvLayer::new(layer.weight().clone(), layer.bias().cloned(), spec)
}

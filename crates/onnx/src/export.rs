//! [`Graph`] → ONNX opset 17 that onnxruntime runs.
//!
//! Activations keep their natural ONNX rank: NCHW tensors, and `[N, F]`
//! matrices after a flatten or a fully connected layer (a 4-D op reading a
//! matrix gets a `Reshape` to `[N, F, 1, 1]` first). The batch dimension is
//! symbolic (`N`). Parameters are initializers named `<node>.weight`,
//! `<node>.bias`, … as [`Graph::parameters`] names them.
//!
//! # How each op is written
//! - convolution, linear, batch norm, pooling, activations, pad, softmax,
//!   add / concat / mul: the ONNX op of the same meaning (linear as `Gemm`
//!   with `transB = 1`, a [`Block`](hasten_core::Block) as a chain of its
//!   ops, node `b` op `i` named `b.i`);
//! - [`Int8Conv`]: QDQ — `QuantizeLinear` / `DequantizeLinear` of the input,
//!   `DequantizeLinear` of the int8 weights (per-channel scales) and int32
//!   bias, a float `Conv`/`Gemm`, and the output's `QuantizeLinear` /
//!   `DequantizeLinear` when it requantizes — the pattern onnxruntime fuses
//!   into its integer kernels; the int8 weights stay int8 in the file;
//! - binary, ternary, codebook, product-quantized, fixed-point, LCNN,
//!   group-wise, sparse and TT layers: their dense equivalent (`Conv` or
//!   `Gemm` on the dequantized / reconstructed f32 weights). The file then
//!   holds 32 bits per weight: a `k`-bit code format grows by `32 / k` (a
//!   binary layer 32×), a sparse layer of density `d` by about `1 / d`, a TT
//!   layer by its compression ratio; the arithmetic is the same as Hasten's
//!   reference. XNOR layers (binarized inputs) add the input `sign` and the
//!   scaling map as standard ops;
//! - perforated convolution: the full `Conv`, then a `Gather` of each output
//!   position's nearest evaluated position;
//! - channel shuffle: `Reshape`–`Transpose`–`Reshape`; channel gather:
//!   `Gather` on axis 1; shift: a depthwise `Conv` with one-hot kernels.
//!
//! Rounding: Hasten's int8 input quantization rounds halves away from zero,
//! ONNX's `QuantizeLinear` to even, and Hasten requantizes with a fixed-point
//! multiplier; values can differ by one quantization step where a value
//! falls exactly on a tie.

use std::collections::HashMap;
use std::path::Path;

use hasten_core::graph::{Graph, NodeOp};
use hasten_core::op::{BinaryConv, BinaryInput, Int8Conv, Op, PerforatedConv, WeightLayout};
use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, LinearLayer};
use ndarray::{Array1, Array2, ArrayD};
use prost::Message;

use crate::error::{OnnxError, Result};
use crate::proto::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use crate::tensor::{dtype, Tensor};

/// The opset the exporter writes.
pub const EXPORT_OPSET: i64 = 17;

/// Writes `graph` as an ONNX model.
pub fn export_model(graph: &Graph) -> Result<ModelProto> {
    let mut ex = Exporter::default();
    let mut inputs = Vec::new();
    for input in graph.inputs() {
        ex.rank.insert(input.name().to_string(), 4);
        ex.shape.insert(input.name().to_string(), input.shape());
        inputs.push(value_info(input.name(), input.shape(), 4));
    }
    for node in graph.nodes() {
        let names: Vec<String> = node
            .inputs()
            .iter()
            .map(|&v| graph.value_name(v).to_string())
            .collect();
        ex.node_op(node.name(), node.op(), &names, node.output_shape())
            .map_err(|e| match e {
                OnnxError::Core { context, source } => OnnxError::Core {
                    context: format!("exporting node `{}`: {context}", node.name()),
                    source,
                },
                other => other,
            })?;
    }
    let mut outputs = Vec::new();
    for &v in graph.outputs() {
        let name = graph.value_name(v);
        outputs.push(value_info(name, graph.value_shape(v), ex.rank_of(name)));
    }
    Ok(ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(EXPORT_OPSET),
        }],
        producer_name: Some("hasten".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(GraphProto {
            node: ex.nodes,
            name: Some("hasten".into()),
            initializer: ex.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Writes `graph` as ONNX protobuf bytes (opset 17, a symbolic batch
/// dimension `N`).
///
/// # Errors
///
/// [`OnnxError::Core`](crate::OnnxError::Core) wrapping
/// `hasten_core::Error::Unsupported` for an op that standard ONNX cannot
/// express, or the core error of an op whose dense equivalent cannot be
/// formed.
///
/// # Examples
///
/// ```
/// use hasten_core::{ActShape, GraphBuilder, Relu};
/// use hasten_onnx::{export_bytes, import_bytes, ImportOptions};
///
/// let mut b = GraphBuilder::new();
/// let x = b.input("input", ActShape::new(3, 4, 4));
/// let y = b.op("relu", Relu, x);
/// b.output(y);
/// let graph = b.build()?;
///
/// let bytes = export_bytes(&graph)?;
/// let back = import_bytes(&bytes, &ImportOptions::default())?;
/// assert_eq!(back.output_shapes(), graph.output_shapes());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_bytes(graph: &Graph) -> Result<Vec<u8>> {
    Ok(export_model(graph)?.encode_to_vec())
}

/// Writes `graph` as an ONNX file at `path` (as [`export_bytes`]).
///
/// # Errors
///
/// As [`export_bytes`]; [`OnnxError::Io`](crate::OnnxError::Io) when the
/// file cannot be written.
///
/// # Examples
///
/// ```
/// use hasten_core::{ActShape, GraphBuilder, Relu};
/// use hasten_onnx::{export_bytes, import_bytes, ImportOptions};
///
/// let mut b = GraphBuilder::new();
/// let x = b.input("input", ActShape::new(3, 4, 4));
/// let y = b.op("relu", Relu, x);
/// b.output(y);
/// let graph = b.build()?;
///
/// let path = std::env::temp_dir().join(format!("hasten-export-file-doc-{}.onnx", std::process::id()));
/// hasten_onnx::export_file(&graph, &path)?;
/// assert!(std::fs::metadata(&path)?.len() > 0);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_file(graph: &Graph, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = export_bytes(graph)?;
    std::fs::write(path, bytes).map_err(|e| OnnxError::io(path, e))
}

fn value_info(name: &str, shape: ActShape, rank: usize) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    let dim = |v: Value| Dimension {
        value: Some(v),
        ..Default::default()
    };
    let mut dims = vec![dim(Value::DimParam("N".into()))];
    if rank == 2 {
        dims.push(dim(Value::DimValue(shape.len() as i64)));
    } else {
        for d in [shape.channels, shape.height, shape.width] {
            dims.push(dim(Value::DimValue(d as i64)));
        }
    }
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype::FLOAT),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn f32_tensor(a: ArrayD<f32>) -> Tensor {
    Tensor::F32(a)
}

fn vec_f32(v: &Array1<f32>) -> Tensor {
    Tensor::F32(v.clone().into_dyn())
}

fn i64_vec(v: &[i64]) -> Tensor {
    Tensor::I64(Array1::from(v.to_vec()).into_dyn())
}

fn scalar_f32(v: f32) -> Tensor {
    Tensor::F32(ndarray::arr0(v).into_dyn())
}

#[derive(Default)]
struct Exporter {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    rank: HashMap<String, usize>,
    shape: HashMap<String, ActShape>,
    reshaped: HashMap<(String, usize), String>,
    init_names: HashMap<String, ()>,
}

impl Exporter {
    fn rank_of(&self, v: &str) -> usize {
        self.rank.get(v).copied().unwrap_or(4)
    }

    fn push(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op_type.to_string()),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Adds an initializer (unique name) and returns its name.
    fn init(&mut self, name: &str, t: Tensor) -> String {
        let mut n = name.to_string();
        let mut k = 1;
        while self.init_names.contains_key(&n) {
            n = format!("{name}_{k}");
            k += 1;
        }
        self.init_names.insert(n.clone(), ());
        self.inits.push(t.to_proto(&n));
        n
    }

    fn set(&mut self, v: &str, rank: usize, shape: ActShape) {
        self.rank.insert(v.to_string(), rank);
        self.shape.insert(v.to_string(), shape);
    }

    /// `v` as an NCHW tensor (rank 4) or an `[N, F]` matrix (rank 2).
    fn as_rank(&mut self, v: &str, rank: usize) -> String {
        if self.rank_of(v) == rank {
            return v.to_string();
        }
        if let Some(n) = self.reshaped.get(&(v.to_string(), rank)) {
            return n.clone();
        }
        let out = format!("{v}.rank{rank}");
        if rank == 2 {
            self.push("Flatten", &out, &[v], &out, vec![attr_int("axis", 1)]);
        } else {
            let s = self.init(&format!("{out}.shape"), i64_vec(&[0, -1, 1, 1]));
            self.push("Reshape", &out, &[v, &s], &out, vec![]);
        }
        self.rank.insert(out.clone(), rank);
        self.reshaped.insert((v.to_string(), rank), out.clone());
        out
    }

    fn node_op(
        &mut self,
        name: &str,
        op: &NodeOp,
        inputs: &[String],
        out_shape: ActShape,
    ) -> Result<()> {
        match op {
            NodeOp::Op(o) => {
                let rank = self.op(name, o, &inputs[0], name, out_shape)?;
                self.set(name, rank, out_shape);
            }
            NodeOp::Block(block) => {
                let mut x = inputs[0].clone();
                let mut shape = self.shape.get(&x).copied().unwrap_or(out_shape);
                let ops = block.ops();
                for (i, o) in ops.iter().enumerate() {
                    let y = if i + 1 == ops.len() {
                        name.to_string()
                    } else {
                        format!("{name}.{i}")
                    };
                    shape = o
                        .as_operator()
                        .output_shape(shape)
                        .map_err(|e| OnnxError::core(format!("block op {i}"), e))?;
                    let rank = self.op(&format!("{name}.{i}"), o, &x, &y, shape)?;
                    self.set(&y, rank, shape);
                    x = y;
                }
            }
            NodeOp::Add | NodeOp::Concat => {
                let all2 = inputs.iter().all(|v| self.rank_of(v) == 2);
                let rank = if all2 { 2 } else { 4 };
                let xs: Vec<String> = inputs.iter().map(|v| self.as_rank(v, rank)).collect();
                let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
                match op {
                    NodeOp::Concat => {
                        self.push("Concat", name, &refs, name, vec![attr_int("axis", 1)])
                    }
                    _ if refs.len() == 2 => self.push("Add", name, &refs, name, vec![]),
                    _ => self.push("Sum", name, &refs, name, vec![]),
                }
                self.set(name, rank, out_shape);
            }
            NodeOp::Mul => {
                let rank = self.rank_of(&inputs[0]);
                let g = self.as_rank(&inputs[1], rank);
                self.push("Mul", name, &[&inputs[0], &g], name, vec![]);
                self.set(name, rank, out_shape);
            }
            other => {
                return Err(OnnxError::core(
                    "export",
                    hasten_core::Error::unsupported(
                        "ONNX export",
                        format!("node op {}", other.kind()),
                    ),
                ))
            }
        }
        Ok(())
    }

    fn conv(&mut self, p: &str, c: &ConvLayer, x: &str, y: &str) -> usize {
        let x = self.as_rank(x, 4);
        let w = self.init(
            &format!("{p}.weight"),
            f32_tensor(c.weight().array().clone().into_dyn()),
        );
        let mut ins = vec![x, w];
        if let Some(b) = c.bias() {
            ins.push(self.init(&format!("{p}.bias"), vec_f32(b)));
        }
        let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
        let (kh, kw) = c.weight().kernel_hw();
        self.push("Conv", p, &refs, y, conv_attrs(c.spec(), kh, kw));
        4
    }

    fn linear(&mut self, p: &str, l: &LinearLayer, x: &str, y: &str) -> usize {
        let x = self.as_rank(x, 2);
        let w = self.init(
            &format!("{p}.weight"),
            f32_tensor(l.weight().clone().into_dyn()),
        );
        let mut ins = vec![x, w];
        if let Some(b) = l.bias() {
            ins.push(self.init(&format!("{p}.bias"), vec_f32(b)));
        }
        let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
        self.push("Gemm", p, &refs, y, vec![attr_int("transB", 1)]);
        2
    }

    fn layer(&mut self, p: &str, layer: &Layer, x: &str, y: &str) -> usize {
        match layer {
            Layer::Conv(c) => self.conv(p, c, x, y),
            Layer::Linear(l) => self.linear(p, l, x, y),
        }
    }

    fn dense(
        &mut self,
        p: &str,
        layout: &WeightLayout,
        w: Array2<f32>,
        bias: Option<&Array1<f32>>,
        x: &str,
        y: &str,
    ) -> Result<usize> {
        let layer = layout
            .dense_layer(w, bias.cloned())
            .map_err(|e| OnnxError::core(format!("dense equivalent of `{p}`"), e))?;
        Ok(self.layer(p, &layer, x, y))
    }

    fn unary(
        &mut self,
        op_type: &str,
        p: &str,
        x: &str,
        y: &str,
        attrs: Vec<AttributeProto>,
    ) -> usize {
        self.push(op_type, p, &[x], y, attrs);
        self.rank_of(x)
    }

    /// Writes one op reading `x` into `y`; returns the ONNX rank of `y`.
    fn op(&mut self, p: &str, op: &Op, x: &str, y: &str, out: ActShape) -> Result<usize> {
        let core = |e: hasten_core::Error| OnnxError::core(format!("op `{p}`"), e);
        Ok(match op {
            Op::Conv(c) => self.conv(p, c, x, y),
            Op::Linear(l) => self.linear(p, l, x, y),
            Op::BatchNorm(bn) => {
                let ins = [
                    x.to_string(),
                    self.init(&format!("{p}.weight"), vec_f32(bn.gamma())),
                    self.init(&format!("{p}.bias"), vec_f32(bn.beta())),
                    self.init(&format!("{p}.running_mean"), vec_f32(bn.mean())),
                    self.init(&format!("{p}.running_var"), vec_f32(bn.var())),
                ];
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.push(
                    "BatchNormalization",
                    p,
                    &refs,
                    y,
                    vec![attr_float("epsilon", bn.eps())],
                );
                self.rank_of(x)
            }
            Op::Relu(_) => self.unary("Relu", p, x, y, vec![]),
            Op::Sigmoid(_) => self.unary("Sigmoid", p, x, y, vec![]),
            Op::HardSwish(_) => self.unary("HardSwish", p, x, y, vec![]),
            Op::HardSigmoid(h) => self.unary(
                "HardSigmoid",
                p,
                x,
                y,
                vec![attr_float("alpha", h.alpha()), attr_float("beta", h.beta())],
            ),
            Op::Silu(_) => {
                let s = format!("{p}.sigmoid");
                self.push("Sigmoid", &s, &[x], &s, vec![]);
                self.push("Mul", p, &[x, &s], y, vec![]);
                self.rank_of(x)
            }
            Op::Clip(c) => {
                let lo = self.init(&format!("{p}.min"), scalar_f32(c.min()));
                let hi = self.init(&format!("{p}.max"), scalar_f32(c.max()));
                self.push("Clip", p, &[x, &lo, &hi], y, vec![]);
                self.rank_of(x)
            }
            Op::Identity(_) | Op::Dropout(_) => self.unary("Identity", p, x, y, vec![]),
            Op::Softmax(_) => self.unary("Softmax", p, x, y, vec![attr_int("axis", 1)]),
            Op::Flatten(_) => {
                self.push("Flatten", p, &[x], y, vec![attr_int("axis", 1)]);
                2
            }
            Op::GlobalAvgPool(_) => {
                let x = self.as_rank(x, 4);
                self.push("GlobalAveragePool", p, &[&x], y, vec![]);
                4
            }
            Op::MaxPool(m) => {
                let x = self.as_rank(x, 4);
                self.push("MaxPool", p, &[&x], y, pool_attrs(&m.spec()));
                4
            }
            Op::AvgPool(a) => {
                let x = self.as_rank(x, 4);
                let mut attrs = pool_attrs(&a.spec());
                attrs.push(attr_int(
                    "count_include_pad",
                    i64::from(a.count_include_pad()),
                ));
                self.push("AveragePool", p, &[&x], y, attrs);
                4
            }
            Op::Pad(pad) => {
                let x = self.as_rank(x, 4);
                let q = pad.padding();
                let pads = [0, 0, q.top, q.left, 0, 0, q.bottom, q.right].map(|v| v as i64);
                let pads = self.init(&format!("{p}.pads"), i64_vec(&pads));
                let v = self.init(&format!("{p}.value"), scalar_f32(pad.value()));
                self.push("Pad", p, &[&x, &pads, &v], y, vec![]);
                4
            }
            Op::ChannelShuffle(s) => {
                let x = self.as_rank(x, 4);
                let g = s.groups();
                let (c, h, w) = (out.channels, out.height, out.width);
                let s1 = self.init(
                    &format!("{p}.shape5"),
                    i64_vec(&[0, g as i64, (c / g) as i64, h as i64, w as i64]),
                );
                let s2 = self.init(
                    &format!("{p}.shape4"),
                    i64_vec(&[0, c as i64, h as i64, w as i64]),
                );
                let (a, b) = (format!("{p}.grouped"), format!("{p}.transposed"));
                self.push("Reshape", &a, &[&x, &s1], &a, vec![]);
                self.push(
                    "Transpose",
                    &b,
                    &[&a],
                    &b,
                    vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
                );
                self.push("Reshape", p, &[&b, &s2], y, vec![]);
                4
            }
            Op::ChannelGather(g) => {
                let idx: Vec<i64> = g.indices().iter().map(|&i| i as i64).collect();
                let i = self.init(&format!("{p}.indices"), i64_vec(&idx));
                self.push("Gather", p, &[x, &i], y, vec![attr_int("axis", 1)]);
                self.rank_of(x)
            }
            Op::Shift(s) => {
                let x = self.as_rank(x, 4);
                let offs = s.offsets();
                let rh = offs.iter().map(|o| o.0.unsigned_abs()).max().unwrap_or(0);
                let rw = offs.iter().map(|o| o.1.unsigned_abs()).max().unwrap_or(0);
                let (kh, kw) = (2 * rh + 1, 2 * rw + 1);
                let mut k = ndarray::Array4::<f32>::zeros((offs.len(), 1, kh, kw));
                for (c, &(dy, dx)) in offs.iter().enumerate() {
                    k[[
                        c,
                        0,
                        (rh as isize - dy) as usize,
                        (rw as isize - dx) as usize,
                    ]] = 1.0;
                }
                let spec = ConvSpec::new()
                    .with_padding_sides(hasten_core::Padding::symmetric(rh, rw))
                    .with_groups(offs.len());
                let conv = ConvLayer::from_array(k, spec).map_err(core)?;
                self.conv(p, &conv, &x, y)
            }
            Op::Int8Conv(q) => self.int8(p, q, x, y)?,
            Op::BinaryConv(b) if b.binarize_input() => self.xnor(p, b, x, y)?,
            Op::BinaryConv(b) => self.dense(p, b.layout(), b.dequantized(), b.bias(), x, y)?,
            Op::TernaryConv(t) => self.dense(p, t.layout(), t.dequantized(), t.bias(), x, y)?,
            Op::CodebookConv(c) => self.dense(p, c.layout(), c.dequantized(), c.bias(), x, y)?,
            Op::ProductQuantizedConv(c) => {
                self.dense(p, c.layout(), c.dequantized(), c.bias(), x, y)?
            }
            Op::FixedPointConv(c) => self.dense(p, c.layout(), c.dequantized(), c.bias(), x, y)?,
            Op::LcnnConv(c) => self.dense(p, c.layout(), c.dequantized(), c.bias(), x, y)?,
            Op::GroupwiseConv(g) => {
                let c = g.to_dense().map_err(core)?;
                self.conv(p, &c, x, y)
            }
            Op::SparseConv(s) => {
                let c = s.to_dense().map_err(core)?;
                self.conv(p, &c, x, y)
            }
            Op::SparseLinear(s) => {
                let l = s.to_dense().map_err(core)?;
                self.linear(p, &l, x, y)
            }
            Op::TtLinear(t) => {
                let w = t.to_dense().mapv(|v| v as f32);
                let l = LinearLayer::new(w, t.bias().cloned()).map_err(core)?;
                self.linear(p, &l, x, y)
            }
            Op::PerforatedConv(pc) => self.perforated(p, pc, x, y, out)?,
            other => {
                return Err(core(hasten_core::Error::unsupported(
                    "ONNX export",
                    format!("op {}", other.kind()),
                )))
            }
        })
    }

    fn perforated(
        &mut self,
        p: &str,
        pc: &PerforatedConv,
        x: &str,
        y: &str,
        out: ActShape,
    ) -> Result<usize> {
        let full = format!("{p}.full");
        self.conv(&format!("{p}.conv"), pc.conv(), x, &full);
        let (oh, ow) = pc.out_hw();
        let idx: Vec<i64> = pc
            .nearest()
            .iter()
            .map(|&k| {
                let (py, px) = pc.positions()[k as usize];
                (py * ow + px) as i64
            })
            .collect();
        let flat_shape = self.init(
            &format!("{p}.flat_shape"),
            i64_vec(&[0, out.channels as i64, (oh * ow) as i64]),
        );
        let out_shape = self.init(
            &format!("{p}.out_shape"),
            i64_vec(&[0, out.channels as i64, oh as i64, ow as i64]),
        );
        let idx = self.init(&format!("{p}.nearest"), i64_vec(&idx));
        let (a, b) = (format!("{p}.flat"), format!("{p}.filled"));
        self.push("Reshape", &a, &[&full, &flat_shape], &a, vec![]);
        self.push("Gather", &b, &[&a, &idx], &b, vec![attr_int("axis", 2)]);
        self.push("Reshape", p, &[&b, &out_shape], y, vec![]);
        Ok(4)
    }

    /// XNOR: `(sign(x) ∗ B) ⊙ K · α + b` with `K` the box-filtered channel
    /// mean of `|x|`; in sign mode the same without `K`.
    fn xnor(&mut self, p: &str, b: &BinaryConv, x: &str, y: &str) -> Result<usize> {
        let core = |e: hasten_core::Error| OnnxError::core(format!("op `{p}`"), e);
        let layout = b.layout();
        let conv_layout = matches!(layout, WeightLayout::Conv { .. });
        let x = self.as_rank(x, if conv_layout { 4 } else { 2 });
        let zero = self.init(&format!("{p}.zero"), scalar_f32(0.0));
        let one = self.init(&format!("{p}.one"), scalar_f32(1.0));
        let minus = self.init(&format!("{p}.minus_one"), scalar_f32(-1.0));
        let (ge, sign, abs) = (
            format!("{p}.nonneg"),
            format!("{p}.sign"),
            format!("{p}.abs"),
        );
        self.push("GreaterOrEqual", &ge, &[&x, &zero], &ge, vec![]);
        self.push("Where", &sign, &[&ge, &one, &minus], &sign, vec![]);
        let r = self.rank_of(&x);
        self.rank.insert(sign.clone(), r);
        let (prod, kmap) = (format!("{p}.binary"), format!("{p}.scaling"));
        let rank = self.dense(
            &format!("{p}.signs"),
            layout,
            b.sign_matrix(),
            None,
            &sign,
            &prod,
        )?;
        let with_k = b.input() == BinaryInput::XnorK;
        if with_k {
            self.push("Abs", &abs, &[&x], &abs, vec![]);
            self.rank.insert(abs.clone(), r);
            match *layout {
                WeightLayout::Conv { dims, spec } => {
                    let g = spec.groups;
                    let box_layout =
                        WeightLayout::conv([g, dims[1], dims[2], dims[3]], spec).map_err(core)?;
                    let n = box_layout.row_len();
                    let k = Array2::from_elem((g, n), 1.0 / n as f32);
                    let kraw = format!("{p}.scaling_groups");
                    self.dense(&format!("{p}.box"), &box_layout, k, None, &abs, &kraw)?;
                    if g == 1 {
                        self.push("Identity", &kmap, &[&kraw], &kmap, vec![]);
                    } else {
                        let per = dims[0] / g;
                        let idx: Vec<i64> = (0..dims[0]).map(|t| (t / per) as i64).collect();
                        let i = self.init(&format!("{p}.scaling_index"), i64_vec(&idx));
                        self.push(
                            "Gather",
                            &kmap,
                            &[&kraw, &i],
                            &kmap,
                            vec![attr_int("axis", 1)],
                        );
                    }
                }
                WeightLayout::Linear { inp, .. } => {
                    let box_layout = WeightLayout::linear(1, inp).map_err(core)?;
                    let k = Array2::from_elem((1, inp), 1.0 / inp as f32);
                    self.dense(&format!("{p}.box"), &box_layout, k, None, &abs, &kmap)?;
                }
            }
        }
        let rows = layout.rows();
        let alpha_shape: Vec<usize> = if rank == 4 {
            vec![1, rows, 1, 1]
        } else {
            vec![1, rows]
        };
        let alpha = b
            .alpha()
            .clone()
            .into_shape_with_order(alpha_shape.clone())
            .map_err(|e| OnnxError::InvalidModel(e.to_string()))?;
        let alpha = self.init(&format!("{p}.alpha"), Tensor::F32(alpha.into_dyn()));
        let (m1, m2) = (format!("{p}.scaled"), format!("{p}.weighted"));
        let m1 = if with_k {
            self.push("Mul", &m1, &[&prod, &kmap], &m1, vec![]);
            m1
        } else {
            prod
        };
        match b.bias() {
            None => self.push("Mul", p, &[&m1, &alpha], y, vec![]),
            Some(bias) => {
                self.push("Mul", &m2, &[&m1, &alpha], &m2, vec![]);
                let bias = bias
                    .clone()
                    .into_shape_with_order(alpha_shape)
                    .map_err(|e| OnnxError::InvalidModel(e.to_string()))?;
                let bias = self.init(&format!("{p}.bias"), Tensor::F32(bias.into_dyn()));
                self.push("Add", p, &[&m2, &bias], y, vec![]);
            }
        }
        Ok(rank)
    }

    /// QDQ form of an int8 layer.
    fn int8(&mut self, p: &str, q: &Int8Conv, x: &str, y: &str) -> Result<usize> {
        let layout = q.layout();
        let conv_layout = matches!(layout, WeightLayout::Conv { .. });
        let x = self.as_rank(x, if conv_layout { 4 } else { 2 });
        let qp = q.input_params();
        let zp = |this: &mut Self, name: &str, z: i32, dt: hasten_core::IntType| -> String {
            let t = match dt {
                hasten_core::IntType::U8 => Tensor::U8(ndarray::arr0(z as u8).into_dyn()),
                hasten_core::IntType::I8 => Tensor::I8(ndarray::arr0(z as i8).into_dyn()),
            };
            this.init(name, t)
        };
        let s_in = self.init(&format!("{p}.input_scale"), scalar_f32(qp.scale()));
        let z_in = zp(
            self,
            &format!("{p}.input_zero_point"),
            qp.zero_point(),
            qp.dtype(),
        );
        let (xq, xd) = (format!("{p}.input_q"), format!("{p}.input_dq"));
        self.push("QuantizeLinear", &xq, &[&x, &s_in, &z_in], &xq, vec![]);
        self.push("DequantizeLinear", &xd, &[&xq, &s_in, &z_in], &xd, vec![]);
        let rows = layout.rows();
        let wshape: Vec<usize> = match *layout {
            WeightLayout::Conv { dims, .. } => dims.to_vec(),
            WeightLayout::Linear { out, inp } => vec![out, inp],
        };
        let w = q
            .weights()
            .clone()
            .into_shape_with_order(wshape.clone())
            .map_err(|e| OnnxError::InvalidModel(e.to_string()))?;
        let w = self.init(&format!("{p}.weight_quantized"), Tensor::I8(w.into_dyn()));
        let scales: Array1<f32> = (0..rows).map(|t| q.weight_scale(t)).collect();
        let ws = self.init(&format!("{p}.weight_scale"), vec_f32(&scales));
        let wz = self.init(
            &format!("{p}.weight_zero_point"),
            Tensor::I8(ArrayD::zeros(vec![rows])),
        );
        let wd = format!("{p}.weight");
        self.push(
            "DequantizeLinear",
            &wd,
            &[&w, &ws, &wz],
            &wd,
            vec![attr_int("axis", 0)],
        );
        let mut ins = vec![xd, wd];
        if let Some(b) = q.bias() {
            let bq = self.init(
                &format!("{p}.bias_quantized"),
                Tensor::I32(b.clone().into_dyn()),
            );
            let bs: Array1<f32> = (0..rows).map(|t| qp.scale() * q.weight_scale(t)).collect();
            let bs = self.init(&format!("{p}.bias_scale"), vec_f32(&bs));
            let bz = self.init(
                &format!("{p}.bias_zero_point"),
                Tensor::I32(ArrayD::zeros(vec![rows])),
            );
            let bd = format!("{p}.bias");
            self.push(
                "DequantizeLinear",
                &bd,
                &[&bq, &bs, &bz],
                &bd,
                vec![attr_int("axis", 0)],
            );
            ins.push(bd);
        }
        let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
        let float_out = if q.output_params().is_some() {
            format!("{p}.float")
        } else {
            y.to_string()
        };
        let rank = match *layout {
            WeightLayout::Conv { dims, spec } => {
                self.push(
                    "Conv",
                    p,
                    &refs,
                    &float_out,
                    conv_attrs(&spec, dims[2], dims[3]),
                );
                4
            }
            WeightLayout::Linear { .. } => {
                self.push("Gemm", p, &refs, &float_out, vec![attr_int("transB", 1)]);
                2
            }
        };
        if let Some(op) = q.output_params() {
            let s = self.init(&format!("{p}.output_scale"), scalar_f32(op.scale()));
            let z = zp(
                self,
                &format!("{p}.output_zero_point"),
                op.zero_point(),
                op.dtype(),
            );
            let yq = format!("{p}.output_q");
            self.push("QuantizeLinear", &yq, &[&float_out, &s, &z], &yq, vec![]);
            self.push(
                "DequantizeLinear",
                &format!("{p}.output_dq"),
                &[&yq, &s, &z],
                y,
                vec![],
            );
        }
        Ok(rank)
    }
}

fn conv_attrs(spec: &ConvSpec, kh: usize, kw: usize) -> Vec<AttributeProto> {
    let p = spec.padding;
    vec![
        attr_ints("kernel_shape", &[kh, kw]),
        attr_ints("strides", &[spec.stride.0, spec.stride.1]),
        attr_ints("pads", &[p.top, p.left, p.bottom, p.right]),
        attr_ints("dilations", &[spec.dilation.0, spec.dilation.1]),
        attr_int("group", spec.groups as i64),
    ]
}

fn pool_attrs(spec: &hasten_core::PoolSpec) -> Vec<AttributeProto> {
    let p = spec.padding;
    vec![
        attr_ints("kernel_shape", &[spec.kernel.0, spec.kernel.1]),
        attr_ints("strides", &[spec.stride.0, spec.stride.1]),
        attr_ints("pads", &[p.top, p.left, p.bottom, p.right]),
        attr_int("ceil_mode", i64::from(spec.ceil_mode)),
    ]
}

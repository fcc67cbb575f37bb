//! ONNX → [`Graph`]: decoding, constant folding of shape subgraphs, and the
//! mapping of each remaining node onto a Hasten op.
//!
//! Values are either constants (initializers, `Constant` nodes, folded
//! subgraphs) or activations (NCHW batches, or `[N, F]` matrices that Hasten
//! holds as `F×1×1`). A node whose inputs are all constants is evaluated by
//! the constant evaluator; `Shape` of an activation is the declared shape
//! with the batch size of [`ImportOptions`]. Every other node must map onto
//! a Hasten op, or the import fails with [`OnnxError::UnsupportedOp`] naming
//! the op type, the node and the opset. Int8 models map onto `Int8Conv`
//! both in QOperator form (`QLinearConv`) and in QDQ form (`QuantizeLinear` /
//! `DequantizeLinear` around float layers; see `docs/onnx.md`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use hasten_core::graph::NodeDef;
use hasten_core::op::{
    AvgPool, BatchNorm, ChannelGather, ChannelShuffle, Clip, Flatten, GlobalAvgPool, HardSigmoid,
    HardSwish, Int8Conv, IntType, MaxPool, Pad, PoolSpec, QuantParams, Relu, Sigmoid, Softmax,
    WeightLayout,
};
use hasten_core::{ActShape, ConvLayer, ConvSpec, Graph, LinearLayer, NodeOp, Op, Padding};
use ndarray::{Array1, Array2, Array4, ArrayD, Ix2, Ix4};
use prost::Message;

use crate::error::{OnnxError, Result};
use crate::fold::{fold, is_foldable, resolve_reshape, shape_slice_of};
use crate::node::NodeView;
use crate::proto::{GraphProto, ModelProto, ValueInfoProto};
use crate::tensor::{dtype, Tensor};

mod qdq;

/// Lowest and highest default-domain opset the importer accepts.
pub const OPSET_RANGE: std::ops::RangeInclusive<i64> = 11..=21;

/// How to read a model: the sizes that the file leaves symbolic, and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// The batch size that `Shape` of an activation reports (and that a
    /// symbolic leading input dim stands for). Default 1; the imported graph
    /// runs on any batch size, but shape subgraphs that depend on the batch
    /// are folded for this one.
    pub batch_size: usize,
    /// Full shapes (batch included) for named graph inputs, overriding the
    /// file's (needed when it declares symbolic spatial dims).
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Largest tensor the constant evaluator may create, in elements.
    pub max_folded_elements: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch_size: 1,
            input_shapes: HashMap::new(),
            max_folded_elements: 1 << 27,
        }
    }
}

impl ImportOptions {
    /// Sets the batch size.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Sets the full shape of input `name`.
    pub fn with_input_shape(mut self, name: impl Into<String>, shape: Vec<usize>) -> Self {
        self.input_shapes.insert(name.into(), shape);
        self
    }
}

/// Decodes an ONNX model (protobuf bytes) without interpreting it.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        what: "ModelProto".into(),
        reason: e.to_string(),
    })
}

/// Imports the ONNX model in `bytes` as a [`Graph`].
///
/// # Errors
///
/// [`OnnxError::Decode`] when the bytes are not an ONNX `ModelProto`;
/// [`OnnxError::UnsupportedOpset`] outside [`OPSET_RANGE`];
/// [`OnnxError::UnsupportedOp`] for a node no Hasten op computes;
/// [`OnnxError::InvalidNode`] / [`OnnxError::InvalidModel`] for attributes,
/// tensors or shapes that do not fit together; a constant larger than
/// [`ImportOptions::max_folded_elements`] is refused before it is built.
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
/// let back = import_bytes(&export_bytes(&graph)?, &ImportOptions::default())?;
/// assert_eq!(back.nodes().len(), 1);
/// assert!(import_bytes(b"not a model", &ImportOptions::default()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import_bytes(bytes: &[u8], options: &ImportOptions) -> Result<Graph> {
    import_model(&decode_model(bytes)?, options)
}

/// Imports the ONNX model file at `path` as a [`Graph`].
///
/// # Errors
///
/// [`OnnxError::Io`] when the file cannot be read; otherwise as
/// [`import_bytes`].
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
/// let path = std::env::temp_dir().join(format!("hasten-import-file-doc-{}.onnx", std::process::id()));
/// hasten_onnx::export_file(&graph, &path)?;
/// let back = hasten_onnx::import_file(&path, &ImportOptions::default())?;
/// assert_eq!(back.output_shapes(), graph.output_shapes());
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import_file(path: impl AsRef<Path>, options: &ImportOptions) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| OnnxError::io(path, e))?;
    import_bytes(&bytes, options)
}

/// Imports a decoded ONNX model as a [`Graph`].
pub fn import_model(model: &ModelProto, options: &ImportOptions) -> Result<Graph> {
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain() {
            "" | "ai.onnx" => opset = Some(o.version()),
            _ => {}
        }
    }
    let opset = opset.ok_or_else(|| OnnxError::InvalidModel("no ai.onnx opset import".into()))?;
    if !OPSET_RANGE.contains(&opset) {
        return Err(OnnxError::UnsupportedOpset {
            domain: String::new(),
            version: opset,
        });
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::InvalidModel("the model has no graph".into()))?;
    Importer::new(graph, opset, options)?.run()
}

/// An activation: a Hasten value with its per-sample shape and its ONNX
/// rank (4 for NCHW, 2 for `[N, F]`).
#[derive(Debug, Clone)]
struct Act {
    name: String,
    shape: ActShape,
    rank: usize,
}

#[derive(Debug, Clone)]
enum Val {
    Const(Tensor),
    Act(Act),
    /// `[N, g, C/g, H, W]`: the first half of a channel shuffle.
    Grouped {
        act: Act,
        groups: usize,
    },
    /// `[N, C/g, g, H, W]`: the transposed half of a channel shuffle.
    Shuffled {
        act: Act,
        groups: usize,
    },
    /// The output of `QuantizeLinear` on an activation; `sole`: the
    /// quantized float value has no other reader.
    Quantized {
        act: Act,
        params: QuantParams,
        sole: bool,
    },
    /// `DequantizeLinear` of constants: the folded f32 value, with the
    /// integer tensor and its quantization for an int8 layer reading it.
    QConst(Box<qdq::QConst>),
    /// `DequantizeLinear(QuantizeLinear(x))` of an activation (fake
    /// quantization), from the `DequantizeLinear` node `node`.
    Dequantized {
        act: Act,
        params: QuantParams,
        sole: bool,
        node: String,
    },
}

impl Val {
    /// The value of a constant (a folded `DequantizeLinear` included).
    fn as_const(&self) -> Option<&Tensor> {
        match self {
            Val::Const(t) => Some(t),
            Val::QConst(q) => Some(&q.value),
            _ => None,
        }
    }
}

struct Importer<'m> {
    graph: &'m GraphProto,
    opset: i64,
    options: &'m ImportOptions,
    env: HashMap<String, Val>,
    /// Initializer provenance: which constant names are initializers.
    init_names: HashSet<String>,
    defs: Vec<Option<NodeDef>>,
    def_of: HashMap<String, usize>,
    shapes: HashMap<String, ActShape>,
    taken: HashSet<String>,
    /// How many node inputs and graph outputs read each ONNX value.
    readers: HashMap<String, usize>,
    inputs: Vec<(String, ActShape)>,
}

fn elem_type_of(v: &ValueInfoProto) -> Option<(i32, Vec<Option<usize>>)> {
    use crate::proto::tensor_shape_proto::dimension::Value as Dim;
    use crate::proto::type_proto::Value;
    let Some(Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return None;
    };
    let dims = t
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Dim::DimValue(v)) if v >= 0 => Some(v as usize),
            _ => None,
        })
        .collect();
    Some((t.elem_type(), dims))
}

/// Sanitises an ONNX node name into a Hasten node name: `/a/b.0/Conv` →
/// `a.b.0` (the trailing op-type component dropped), characters outside
/// `[A-Za-z0-9_.:-]` replaced by `_`.
pub fn sanitize_name(name: &str, op_type: &str) -> String {
    let mut parts: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() > 1 {
        if let Some(last) = parts.last() {
            let rest = last.strip_prefix(op_type);
            if rest.is_some_and(|r| {
                r.is_empty() || (r.starts_with('_') && r[1..].chars().all(|c| c.is_ascii_digit()))
            }) {
                parts.pop();
            }
        }
    }
    let joined = parts.join(".");
    joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.:-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl<'m> Importer<'m> {
    fn new(graph: &'m GraphProto, opset: i64, options: &'m ImportOptions) -> Result<Self> {
        if !graph.sparse_initializer.is_empty() {
            return Err(OnnxError::InvalidModel(
                "sparse initializers are not supported".into(),
            ));
        }
        let mut readers: HashMap<String, usize> = HashMap::new();
        for n in &graph.node {
            for i in n.input.iter().filter(|s| !s.is_empty()) {
                *readers.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *readers.entry(o.name().to_string()).or_default() += 1;
        }
        Ok(Importer {
            graph,
            opset,
            options,
            env: HashMap::new(),
            init_names: HashSet::new(),
            defs: Vec::new(),
            def_of: HashMap::new(),
            shapes: HashMap::new(),
            taken: HashSet::new(),
            readers,
            inputs: Vec::new(),
        })
    }

    fn run(mut self) -> Result<Graph> {
        for init in &self.graph.initializer {
            let t = Tensor::from_proto(init)?;
            self.init_names.insert(init.name().to_string());
            self.env.insert(init.name().to_string(), Val::Const(t));
        }
        for input in &self.graph.input {
            let name = input.name();
            if self.env.contains_key(name) {
                continue; // an initializer listed as input (IR < 4)
            }
            self.declare_input(input)?;
        }
        for proto in &self.graph.node {
            let node = NodeView {
                proto,
                opset: self.opset,
            };
            self.node(&node)?;
        }
        let mut outputs = Vec::new();
        let graph = self.graph;
        for o in &graph.output {
            let val = match self.env.get(o.name()).cloned() {
                Some(v @ Val::Dequantized { .. }) => {
                    let reader = format!("graph output `{}`", o.name());
                    Some(Val::Act(self.fake_quant_act(v, &reader)?))
                }
                v => v,
            };
            match val {
                Some(Val::Act(a)) => outputs.push(a.name),
                Some(_) => {
                    return Err(OnnxError::InvalidModel(format!(
                        "graph output `{}` is a constant or a partial value, not an activation",
                        o.name()
                    )))
                }
                None => {
                    return Err(OnnxError::InvalidModel(format!(
                        "graph output `{}` is produced by no node",
                        o.name()
                    )))
                }
            }
        }
        let defs: Vec<NodeDef> = self.defs.into_iter().flatten().collect();
        Graph::new(self.inputs, defs, outputs).map_err(|e| OnnxError::core("building the graph", e))
    }

    fn declare_input(&mut self, input: &ValueInfoProto) -> Result<()> {
        let name = input.name().to_string();
        let bad =
            |reason: String| OnnxError::InvalidModel(format!("graph input `{name}`: {reason}"));
        let (elem, dims) =
            elem_type_of(input).ok_or_else(|| bad("not a tensor with a shape".into()))?;
        if elem != dtype::FLOAT {
            return Err(bad(format!("element type {elem}, only float is supported")));
        }
        let dims: Vec<usize> = match self.options.input_shapes.get(&name) {
            Some(s) => s.clone(),
            None => dims
                .iter()
                .enumerate()
                .map(|(i, d)| match (i, d) {
                    (_, Some(v)) => Ok(*v),
                    (0, None) => Ok(self.options.batch_size),
                    (i, None) => Err(bad(format!(
                        "dim {i} is symbolic; give its shape in ImportOptions::input_shapes"
                    ))),
                })
                .collect::<Result<_>>()?,
        };
        let (shape, rank) = match dims.as_slice() {
            [_, c, h, w] => (ActShape::new(*c, *h, *w), 4),
            [_, f] => (ActShape::flat(*f), 2),
            _ => {
                return Err(bad(format!(
                    "shape {dims:?}: only [N, C, H, W] and [N, F] are supported"
                )))
            }
        };
        if dims[0] != self.options.batch_size && !self.options.input_shapes.contains_key(&name) {
            return Err(bad(format!(
                "fixed batch {} differs from ImportOptions::batch_size {}",
                dims[0], self.options.batch_size
            )));
        }
        let hname = self.unique(&sanitize_name(&name, ""));
        self.inputs.push((hname.clone(), shape));
        self.shapes.insert(hname.clone(), shape);
        self.env.insert(
            name,
            Val::Act(Act {
                name: hname,
                shape,
                rank,
            }),
        );
        Ok(())
    }

    fn batch(&self) -> usize {
        self.options.batch_size
    }

    fn unique(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "node" } else { base };
        let mut name = base.to_string();
        let mut k = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// The Hasten name for a node: the prefix of its weight initializer when
    /// that ends in `.weight` (PyTorch module names), else its sanitised name.
    fn name_for(&mut self, node: &NodeView, weight: Option<&str>) -> String {
        if let Some(w) = weight {
            if self.init_names.contains(w) {
                if let Some(prefix) = w.strip_suffix(".weight") {
                    if !prefix.is_empty() && !self.taken.contains(prefix) {
                        let p = prefix.to_string();
                        return self.unique(&p);
                    }
                }
            }
        }
        let base = sanitize_name(node.name(), node.op_type());
        let base = if base.is_empty() {
            node.op_type().to_ascii_lowercase()
        } else {
            base
        };
        self.unique(&base)
    }

    fn onnx_shape(&self, a: &Act) -> Vec<usize> {
        if a.rank == 2 {
            vec![self.batch(), a.shape.channels]
        } else {
            vec![
                self.batch(),
                a.shape.channels,
                a.shape.height,
                a.shape.width,
            ]
        }
    }

    /// Adds a Hasten node reading `inputs`, returns its activation.
    fn emit(
        &mut self,
        node: &NodeView,
        name: String,
        op: NodeOp,
        inputs: &[&Act],
        rank: usize,
    ) -> Result<Act> {
        let shapes: Vec<ActShape> = inputs.iter().map(|a| a.shape).collect();
        let shape = op.output_shape(&shapes).map_err(|e| {
            OnnxError::core(format!("{} node `{}`", node.op_type(), node.name()), e)
        })?;
        self.def_of.insert(name.clone(), self.defs.len());
        let input_names: Vec<&str> = inputs.iter().map(|a| a.name.as_str()).collect();
        self.defs
            .push(Some(NodeDef::new(name.clone(), op, &input_names)));
        self.shapes.insert(name.clone(), shape);
        Ok(Act { name, shape, rank })
    }

    fn emit_op(
        &mut self,
        node: &NodeView,
        op: impl Into<Op>,
        x: &Act,
        weight: Option<&str>,
    ) -> Result<Act> {
        let name = self.name_for(node, weight);
        let rank = x.rank;
        self.emit(node, name, NodeOp::Op(op.into()), &[x], rank)
    }

    fn core(node: &NodeView, e: hasten_core::Error) -> OnnxError {
        OnnxError::core(format!("{} node `{}`", node.op_type(), node.name()), e)
    }

    fn lookup(&self, node: &NodeView, name: &str) -> Result<Option<Val>> {
        if name.is_empty() {
            return Ok(None);
        }
        self.env.get(name).cloned().map(Some).ok_or_else(|| {
            OnnxError::InvalidModel(format!(
                "node `{}` ({}) reads `{name}`, which no earlier node, input or initializer produces \
                 (or which is an output this importer does not compute)",
                node.name(),
                node.op_type()
            ))
        })
    }

    fn node(&mut self, node: &NodeView) -> Result<()> {
        let proto = node.proto;
        match proto.domain() {
            "" | "ai.onnx" => {}
            d => return Err(node.unsupported(format!("operator domain `{d}`"))),
        }
        let inputs: Vec<Option<Val>> = proto
            .input
            .iter()
            .map(|i| self.lookup(node, i))
            .collect::<Result<_>>()?;
        let out_name = proto
            .output
            .first()
            .cloned()
            .ok_or_else(|| node.invalid("no outputs"))?;
        let op = node.op_type();

        if op == "Constant" {
            let t = constant_value(node)?;
            self.env.insert(out_name, Val::Const(t));
            return Ok(());
        }
        let all_const = inputs
            .iter()
            .all(|v| v.as_ref().is_none_or(|v| v.as_const().is_some()));
        if all_const && is_foldable(op) {
            let consts: Vec<Option<&Tensor>> = inputs
                .iter()
                .map(|v| v.as_ref().and_then(Val::as_const))
                .collect();
            if let Some(outs) = fold(node, &consts, self.options.max_folded_elements)? {
                for (name, t) in proto.output.iter().zip(outs) {
                    let v = match op {
                        "DequantizeLinear" => qdq::QConst::of(node, &consts, t)?,
                        _ => Val::Const(t),
                    };
                    self.env.insert(name.clone(), v);
                }
                return Ok(());
            }
        }
        let inputs = self.materialize_fake_quant(node, inputs)?;
        let val = self.map_node(node, &inputs)?;
        self.env.insert(out_name, val);
        Ok(())
    }

    fn reads_once(&self, onnx_name: &str) -> bool {
        self.readers.get(onnx_name).copied().unwrap_or(0) == 1
    }

    #[allow(clippy::too_many_lines)]
    fn map_node(&mut self, node: &NodeView, inputs: &[Option<Val>]) -> Result<Val> {
        let op = node.op_type();
        let input = |i: usize| inputs.get(i).cloned().flatten();
        let act =
            |i: usize| -> Result<Act> {
                match input(i) {
                    Some(Val::Act(a)) => Ok(a),
                    Some(Val::Const(_) | Val::QConst(_)) => Err(node.unsupported(format!(
                        "input {i} is a constant where an activation is expected"
                    ))),
                    Some(Val::Dequantized { node: dq, .. }) => Err(qdq::fake_quant_error(
                        node.opset,
                        &dq,
                        &format!("input {i} of {} node `{}`", node.op_type(), node.name()),
                    )),
                    Some(_) => Err(node
                        .unsupported(format!("input {i} is a partial reshape or quantized value"))),
                    None => Err(node.invalid(format!("missing input {i}"))),
                }
            };
        let konst = |i: usize| -> Result<Option<Tensor>> {
            match input(i) {
                None => Ok(None),
                Some(v) if v.as_const().is_some() => Ok(v.as_const().cloned()),
                Some(_) => Err(node.unsupported(format!(
                    "input {i} must be a constant (an initializer or a foldable subgraph)"
                ))),
            }
        };
        let need_const = |i: usize| -> Result<Tensor> {
            konst(i)?.ok_or_else(|| node.invalid(format!("missing input {i}")))
        };
        let input_name = |i: usize| node.proto.input.get(i).map(String::as_str).unwrap_or("");
        let rank4 = |a: &Act| -> Result<()> {
            if a.rank == 4 {
                Ok(())
            } else {
                Err(node.unsupported(format!("input of rank {} (only NCHW is supported)", a.rank)))
            }
        };
        let unary = |this: &mut Self, o: Op| -> Result<Val> {
            let x = act(0)?;
            Ok(Val::Act(this.emit_op(node, o, &x, None)?))
        };

        match op {
            "Shape" | "Size" => {
                let x = match input(0) {
                    Some(Val::Act(a)) => a,
                    _ => {
                        return Err(
                            node.unsupported("input is neither a constant nor an activation")
                        )
                    }
                };
                let s: Vec<i64> = self.onnx_shape(&x).iter().map(|&d| d as i64).collect();
                if op == "Size" {
                    let n: i64 = s.iter().product();
                    return Ok(Val::Const(Tensor::I64(ndarray::arr0(n).into_dyn())));
                }
                let v = shape_slice_of(node, &s)?;
                let n = v.len();
                Ok(Val::Const(Tensor::I64(
                    ArrayD::from_shape_vec(ndarray::IxDyn(&[n]), v)
                        .map_err(|e| node.invalid(e.to_string()))?,
                )))
            }
            "Identity" | "Dropout" => {
                if op == "Dropout" && node.int_or("training_mode", 0) != 0 {
                    return Err(node.unsupported("training mode"));
                }
                if let Some(Val::Const(t)) = input(2) {
                    if t.to_i64().iter().any(|&v| v != 0) {
                        return Err(node.unsupported("training mode"));
                    }
                }
                match input(0) {
                    Some(v @ Val::Act(_)) => Ok(v),
                    _ => Err(node.unsupported("input is not an activation")),
                }
            }
            "Conv" => match self.qdq_layer(node, inputs)? {
                Some(v) => Ok(v),
                None => self.conv(node, &act(0)?, need_const(1)?, konst(2)?, input_name(1)),
            },
            "BatchNormalization" => {
                let x = act(0)?;
                if node.int_or("training_mode", 0) != 0 {
                    return Err(node.unsupported("training mode"));
                }
                if node
                    .proto
                    .output
                    .iter()
                    .skip(1)
                    .any(|o| !o.is_empty() && self.readers.contains_key(o))
                {
                    return Err(node.unsupported("running statistics outputs are read"));
                }
                let v = |i: usize| -> Result<Array1<f32>> {
                    let t = need_const(i)?;
                    let a = t.to_f32();
                    let n = a.len();
                    a.into_shape_with_order(n)
                        .map_err(|e| node.invalid(e.to_string()))
                };
                let bn = BatchNorm::new(
                    v(1)?,
                    v(2)?,
                    v(3)?,
                    v(4)?,
                    node.float("epsilon").unwrap_or(1e-5),
                )
                .map_err(|e| Self::core(node, e))?;
                Ok(Val::Act(self.emit_op(node, bn, &x, Some(input_name(1)))?))
            }
            "Relu" => unary(self, Relu.into()),
            "Sigmoid" => unary(self, Sigmoid.into()),
            "HardSwish" => unary(self, HardSwish.into()),
            "HardSigmoid" => {
                let h = HardSigmoid::new(
                    node.float("alpha").unwrap_or(0.2),
                    node.float("beta").unwrap_or(0.5),
                )
                .map_err(|e| Self::core(node, e))?;
                unary(self, h.into())
            }
            "Clip" => {
                let bound = |i: usize, attr: &str, default: f32| -> Result<f32> {
                    match konst(i)? {
                        Some(t) if t.len() == 1 => {
                            Ok(t.to_f32().iter().next().copied().unwrap_or(default))
                        }
                        Some(_) => Err(node.invalid("clip bound must be a scalar")),
                        None => Ok(node.float(attr).unwrap_or(default)),
                    }
                };
                let c = Clip::new(
                    bound(1, "min", f32::NEG_INFINITY)?,
                    bound(2, "max", f32::INFINITY)?,
                )
                .map_err(|e| Self::core(node, e))?;
                unary(self, c.into())
            }
            "Softmax" => {
                let x = act(0)?;
                let default = if self.opset >= 13 { -1 } else { 1 };
                let axis = node.int_or("axis", default);
                let a = if axis < 0 { axis + x.rank as i64 } else { axis };
                let spatial_one = x.shape.height == 1 && x.shape.width == 1;
                let ok = a == 1 && (x.rank == 2 || self.opset >= 13 || spatial_one);
                if !ok {
                    return Err(node.unsupported(format!(
                        "softmax over axis {axis} of a rank-{} input",
                        x.rank
                    )));
                }
                Ok(Val::Act(self.emit_op(node, Softmax, &x, None)?))
            }
            "MaxPool" | "AveragePool" => {
                let x = act(0)?;
                rank4(&x)?;
                if node
                    .proto
                    .output
                    .get(1)
                    .is_some_and(|o| self.readers.contains_key(o))
                {
                    return Err(node.unsupported("the indices output"));
                }
                let k = node
                    .usizes("kernel_shape")?
                    .ok_or_else(|| node.invalid("missing kernel_shape"))?;
                let [kh, kw] = k[..] else {
                    return Err(node.unsupported("only 2-D pooling"));
                };
                if node
                    .usizes("dilations")?
                    .is_some_and(|d| d.iter().any(|&v| v != 1))
                {
                    return Err(node.unsupported("dilated pooling"));
                }
                let (sh, sw) = pair(node, "strides")?;
                let padding = self.padding(node, &x, (kh, kw), (sh, sw), (1, 1))?;
                let spec = PoolSpec::new(kh, kw)
                    .with_stride_hw(sh, sw)
                    .with_padding_sides(padding)
                    .with_ceil_mode(node.int_or("ceil_mode", 0) != 0);
                let o: Op = if op == "MaxPool" {
                    if node.int_or("storage_order", 0) != 0 {
                        return Err(node.unsupported("storage_order 1"));
                    }
                    MaxPool::new(spec).map_err(|e| Self::core(node, e))?.into()
                } else {
                    AvgPool::new(spec, node.int_or("count_include_pad", 0) != 0)
                        .map_err(|e| Self::core(node, e))?
                        .into()
                };
                Ok(Val::Act(self.emit_op(node, o, &x, None)?))
            }
            "GlobalAveragePool" => {
                let x = act(0)?;
                rank4(&x)?;
                Ok(Val::Act(self.emit_op(node, GlobalAvgPool, &x, None)?))
            }
            "Flatten" => {
                let x = act(0)?;
                let axis = node.int_or("axis", 1);
                let a = if axis < 0 { axis + x.rank as i64 } else { axis };
                if a != 1 {
                    return Err(node.unsupported(format!("flatten at axis {axis} (only 1)")));
                }
                self.flatten(node, x)
            }
            "Reshape" => self.reshape(node, input(0), need_const(1)?),
            "Transpose" => {
                let perm = node.ints("perm").unwrap_or_default();
                match input(0) {
                    Some(Val::Grouped { act, groups }) if perm == [0, 2, 1, 3, 4] => {
                        Ok(Val::Shuffled { act, groups })
                    }
                    _ => Err(node.unsupported(format!(
                        "transpose {perm:?} of an activation (only the channel-shuffle pattern \
                         Reshape [N, g, C/g, H, W] → Transpose [0, 2, 1, 3, 4] → Reshape)"
                    ))),
                }
            }
            "Concat" => {
                let acts = (0..inputs.len()).map(act).collect::<Result<Vec<_>>>()?;
                let rank = acts.first().map_or(4, |a| a.rank);
                let axis = node
                    .int("axis")
                    .ok_or_else(|| node.invalid("missing axis"))?;
                let a = if axis < 0 { axis + rank as i64 } else { axis };
                if a != 1 || acts.iter().any(|x| x.rank != rank) {
                    return Err(node.unsupported(format!("concat on axis {axis} (only channels)")));
                }
                let name = self.name_for(node, None);
                let refs: Vec<&Act> = acts.iter().collect();
                Ok(Val::Act(self.emit(
                    node,
                    name,
                    NodeOp::Concat,
                    &refs,
                    rank,
                )?))
            }
            "Add" | "Sub" | "Mul" | "Div" => self.binary(node, input(0), input(1)),
            "Sum" => {
                let acts = (0..inputs.len()).map(act).collect::<Result<Vec<_>>>()?;
                match acts.as_slice() {
                    [] => Err(node.invalid("no inputs")),
                    [one] => Ok(Val::Act(one.clone())),
                    [first, rest @ ..] => {
                        if rest.iter().any(|a| a.shape != first.shape) {
                            return Err(
                                node.unsupported("a sum of activations of different shapes")
                            );
                        }
                        let rank = first.rank;
                        let name = self.name_for(node, None);
                        let refs: Vec<&Act> = acts.iter().collect();
                        Ok(Val::Act(self.emit(node, name, NodeOp::Add, &refs, rank)?))
                    }
                }
            }
            "Gather" => {
                let x = act(0)?;
                let idx = need_const(1)?;
                let axis = node.int_or("axis", 0);
                let a = if axis < 0 { axis + x.rank as i64 } else { axis };
                if a != 1 || idx.shape().len() != 1 || idx.is_float() {
                    return Err(node.unsupported(
                        "gather of an activation other than 1-D integer indices on the channel axis",
                    ));
                }
                let c = x.shape.channels as i64;
                let indices = idx
                    .to_i64()
                    .iter()
                    .map(|&i| {
                        let j = if i < 0 { i + c } else { i };
                        usize::try_from(j)
                            .ok()
                            .filter(|&j| j < x.shape.channels)
                            .ok_or_else(|| node.invalid(format!("channel index {i} out of range")))
                    })
                    .collect::<Result<Vec<usize>>>()?;
                let g = ChannelGather::new(indices, x.shape.channels)
                    .map_err(|e| Self::core(node, e))?;
                Ok(Val::Act(self.emit_op(node, g, &x, None)?))
            }
            "Gemm" | "MatMul" => match self.qdq_layer(node, inputs)? {
                Some(v) => Ok(v),
                None => self.gemm(node, &act(0)?, need_const(1)?, konst(2)?, input_name(1)),
            },
            "Pad" => {
                let x = act(0)?;
                rank4(&x)?;
                let mode = node.string("mode").unwrap_or(b"constant");
                if mode != b"constant" {
                    return Err(node.unsupported(format!("mode {}", String::from_utf8_lossy(mode))));
                }
                let (pads, value) = if self.opset >= 11 {
                    let pads = need_const(1)?.to_i64().iter().copied().collect::<Vec<_>>();
                    let value =
                        konst(2)?.map_or(0.0, |t| t.to_f32().iter().next().copied().unwrap_or(0.0));
                    let pads = match konst(3)? {
                        None => pads,
                        Some(axes) => {
                            let mut full = vec![0i64; 8];
                            let axes: Vec<i64> = axes.to_i64().iter().copied().collect();
                            if pads.len() != 2 * axes.len() {
                                return Err(node.invalid("pads and axes lengths disagree"));
                            }
                            for (k, &ax) in axes.iter().enumerate() {
                                let ax = if ax < 0 { ax + 4 } else { ax };
                                if !(0..4).contains(&ax) {
                                    return Err(node.invalid(format!("axis {ax}")));
                                }
                                full[ax as usize] = pads[k];
                                full[ax as usize + 4] = pads[k + axes.len()];
                            }
                            full
                        }
                    };
                    (pads, value)
                } else {
                    (
                        node.ints("pads").unwrap_or_default().to_vec(),
                        node.float("value").unwrap_or(0.0),
                    )
                };
                if pads.len() != 8 {
                    return Err(node.invalid(format!("pads {pads:?} for a rank-4 input")));
                }
                if pads.iter().any(|&p| p < 0)
                    || pads[0] != 0
                    || pads[1] != 0
                    || pads[4] != 0
                    || pads[5] != 0
                {
                    return Err(node.unsupported(format!(
                        "pads {pads:?} (only non-negative spatial padding)"
                    )));
                }
                let u = |v: i64| usize::try_from(v).map_err(|_| node.invalid("pad too large"));
                let padding = Padding {
                    top: u(pads[2])?,
                    left: u(pads[3])?,
                    bottom: u(pads[6])?,
                    right: u(pads[7])?,
                };
                if padding == Padding::default() {
                    return Ok(Val::Act(x));
                }
                let p = Pad::new(padding, value).map_err(|e| Self::core(node, e))?;
                Ok(Val::Act(self.emit_op(node, p, &x, None)?))
            }
            "QuantizeLinear" => {
                let x = act(0)?;
                let params = quant_params(node, &need_const(1)?, konst(2)?)?;
                Ok(Val::Quantized {
                    act: x,
                    params,
                    sole: self.reads_once(input_name(0)),
                })
            }
            "DequantizeLinear" => {
                let Some(Val::Quantized { act, params, sole }) = input(0) else {
                    return Err(node.unsupported(
                        "input 0 is neither a constant nor the output of QuantizeLinear",
                    ));
                };
                if quant_params(node, &need_const(1)?, konst(2)?)? != params {
                    return Err(
                        node.unsupported("scale / zero point differ from its QuantizeLinear")
                    );
                }
                Ok(Val::Dequantized {
                    act,
                    params,
                    sole,
                    node: node.name().to_string(),
                })
            }
            "QLinearConv" => self.qlinear_conv(node, input(0), &konst),
            _ if is_foldable(op) => Err(node
                .unsupported("only foldable on constants, and an input is a runtime activation")),
            _ => Err(node.unsupported("no Hasten equivalent")),
        }
    }

    /// Explicit `pads` or `auto_pad` of a conv or pooling node.
    fn padding(
        &self,
        node: &NodeView,
        x: &Act,
        kernel: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<Padding> {
        let auto = node.string("auto_pad").unwrap_or(b"NOTSET");
        match auto {
            b"NOTSET" => {
                let pads = node.usizes("pads")?.unwrap_or_else(|| vec![0; 4]);
                let [top, left, bottom, right] = pads[..] else {
                    return Err(node.invalid(format!("pads {pads:?} for 2-D")));
                };
                Ok(Padding {
                    top,
                    bottom,
                    left,
                    right,
                })
            }
            b"VALID" => Ok(Padding::default()),
            b"SAME_UPPER" | b"SAME_LOWER" => {
                let total = |input: usize, k: usize, s: usize, d: usize| -> usize {
                    let out = input.div_ceil(s.max(1));
                    let span = (k.max(1) - 1) * d + 1;
                    ((out.saturating_sub(1)) * s + span).saturating_sub(input)
                };
                let th = total(x.shape.height, kernel.0, stride.0, dilation.0);
                let tw = total(x.shape.width, kernel.1, stride.1, dilation.1);
                let upper = auto == b"SAME_UPPER";
                let split = |t: usize| {
                    if upper {
                        (t / 2, t - t / 2)
                    } else {
                        (t - t / 2, t / 2)
                    }
                };
                let (top, bottom) = split(th);
                let (left, right) = split(tw);
                Ok(Padding {
                    top,
                    bottom,
                    left,
                    right,
                })
            }
            other => Err(node.unsupported(format!("auto_pad {}", String::from_utf8_lossy(other)))),
        }
    }

    fn conv(
        &mut self,
        node: &NodeView,
        x: &Act,
        w: Tensor,
        b: Option<Tensor>,
        weight_name: &str,
    ) -> Result<Val> {
        if x.rank != 4 {
            return Err(node.unsupported("input of rank 2"));
        }
        let w = w.to_f32();
        if w.ndim() != 4 {
            return Err(node.unsupported(format!(
                "{}-D convolution (only 2-D)",
                w.ndim().saturating_sub(2)
            )));
        }
        let w: Array4<f32> = w
            .into_dimensionality::<Ix4>()
            .map_err(|e| node.invalid(e.to_string()))?;
        let (kh, kw) = (w.shape()[2], w.shape()[3]);
        if let Some(k) = node.usizes("kernel_shape")? {
            if k != [kh, kw] {
                return Err(node.invalid(format!("kernel_shape {k:?} disagrees with the weight")));
            }
        }
        let stride = pair(node, "strides")?;
        let dilation = pair(node, "dilations")?;
        let groups = node.usize_attr("group", 1)?;
        let mut padding = self.padding(node, x, (kh, kw), stride, dilation)?;
        let bias = b
            .map(|t| {
                let a = t.to_f32();
                let n = a.len();
                a.into_shape_with_order(n)
                    .map_err(|e| node.invalid(e.to_string()))
            })
            .transpose()?;
        // A zero `Pad` read only by this convolution folds into its padding.
        let mut x = x.clone();
        if let Some(&i) = self.def_of.get(&x.name) {
            if let Some(NodeDef {
                op: NodeOp::Op(Op::Pad(p)),
                inputs,
                ..
            }) = &self.defs[i]
            {
                let src = inputs[0].clone();
                let pad_onnx_out = node.proto.input[0].as_str();
                if p.value() == 0.0 && self.reads_once(pad_onnx_out) {
                    let q = p.padding();
                    padding = Padding {
                        top: padding.top + q.top,
                        bottom: padding.bottom + q.bottom,
                        left: padding.left + q.left,
                        right: padding.right + q.right,
                    };
                    let shape = self.shapes[&src];
                    self.defs[i] = None;
                    self.def_of.remove(&x.name);
                    x = Act {
                        name: src,
                        shape,
                        rank: 4,
                    };
                }
            }
        }
        let spec = ConvSpec {
            stride,
            padding,
            dilation,
            groups,
        };
        let conv = ConvLayer::new(
            hasten_core::Conv4d::new(w).map_err(|e| Self::core(node, e))?,
            bias,
            spec,
        )
        .map_err(|e| Self::core(node, e))?;
        Ok(Val::Act(self.emit_op(node, conv, &x, Some(weight_name))?))
    }

    fn gemm(
        &mut self,
        node: &NodeView,
        x: &Act,
        b: Tensor,
        c: Option<Tensor>,
        weight_name: &str,
    ) -> Result<Val> {
        if x.rank != 2 {
            return Err(node.unsupported(format!("input of rank {} (only [N, F])", x.rank)));
        }
        let is_gemm = node.op_type() == "Gemm";
        if is_gemm && node.int_or("transA", 0) != 0 {
            return Err(node.unsupported("transA = 1 on an activation"));
        }
        let b = b.to_f32();
        if b.ndim() != 2 {
            return Err(node.unsupported(format!("a rank-{} weight", b.ndim())));
        }
        let b = b
            .into_dimensionality::<Ix2>()
            .map_err(|e| node.invalid(e.to_string()))?;
        let trans_b = is_gemm && node.int_or("transB", 0) != 0;
        let alpha = if is_gemm {
            node.float("alpha").unwrap_or(1.0)
        } else {
            1.0
        };
        let beta = if is_gemm {
            node.float("beta").unwrap_or(1.0)
        } else {
            1.0
        };
        let mut w: Array2<f32> = if trans_b { b } else { b.reversed_axes() };
        w = w.as_standard_layout().into_owned();
        if alpha != 1.0 {
            w.mapv_inplace(|v| v * alpha);
        }
        let out = w.nrows();
        let bias = match c {
            None => None,
            Some(c) => {
                let c = c.to_f32();
                let v: Vec<f32> = match c.shape() {
                    [] | [1] | [1, 1] => vec![c.iter().next().copied().unwrap_or(0.0); out],
                    [n] | [1, n] if *n == out => c.iter().copied().collect(),
                    s => return Err(node.unsupported(format!("bias of shape {s:?}"))),
                };
                Some(Array1::from(v).mapv(|v| v * beta))
            }
        };
        let lin = LinearLayer::new(w, bias).map_err(|e| Self::core(node, e))?;
        Ok(Val::Act(self.emit_op(node, lin, x, Some(weight_name))?))
    }

    fn flatten(&mut self, node: &NodeView, x: Act) -> Result<Val> {
        if x.rank == 2 || (x.shape.height == 1 && x.shape.width == 1) {
            return Ok(Val::Act(Act { rank: 2, ..x }));
        }
        let mut a = self.emit_op(node, Flatten, &x, None)?;
        a.rank = 2;
        Ok(Val::Act(a))
    }

    fn reshape(&mut self, node: &NodeView, x: Option<Val>, target: Tensor) -> Result<Val> {
        let target: Vec<i64> = target.to_i64().iter().copied().collect();
        let allowzero = node.int_or("allowzero", 0) != 0;
        let n = self.batch();
        match x {
            Some(Val::Act(a)) => {
                let from = self.onnx_shape(&a);
                let to = resolve_reshape(node, &from, &target, allowzero)?;
                let s = a.shape;
                if to == from {
                    return Ok(Val::Act(a));
                }
                if to == [n, s.len()] {
                    return self.flatten(node, a);
                }
                if to == [n, s.len(), 1, 1] && (a.rank == 2 || (s.height == 1 && s.width == 1)) {
                    return Ok(Val::Act(Act { rank: 4, ..a }));
                }
                if a.rank == 4
                    && to.len() == 5
                    && to[0] == n
                    && to[3] == s.height
                    && to[4] == s.width
                    && to[1] * to[2] == s.channels
                {
                    return Ok(Val::Grouped {
                        groups: to[1],
                        act: a,
                    });
                }
                Err(node.unsupported(format!("reshape of an activation from {from:?} to {to:?}")))
            }
            Some(Val::Shuffled { act, groups }) => {
                let s = act.shape;
                let to = resolve_reshape(
                    node,
                    &[n, s.channels / groups, groups, s.height, s.width],
                    &target,
                    allowzero,
                )?;
                if to != [n, s.channels, s.height, s.width] {
                    return Err(
                        node.unsupported(format!("reshape of a shuffled activation to {to:?}"))
                    );
                }
                let sh = ChannelShuffle::new(groups).map_err(|e| Self::core(node, e))?;
                Ok(Val::Act(self.emit_op(node, sh, &act, None)?))
            }
            _ => Err(node.unsupported("input is not an activation")),
        }
    }

    /// `Add`/`Sub`/`Mul`/`Div` with at least one activation.
    fn binary(&mut self, node: &NodeView, a: Option<Val>, b: Option<Val>) -> Result<Val> {
        let op = node.op_type();
        match (a, b) {
            (Some(Val::Act(x)), Some(Val::Act(y))) => {
                let name = self.name_for(node, None);
                match op {
                    "Add" if x.shape == y.shape => {
                        let rank = x.rank.max(y.rank);
                        Ok(Val::Act(self.emit(
                            node,
                            name,
                            NodeOp::Add,
                            &[&x, &y],
                            rank,
                        )?))
                    }
                    "Mul" => {
                        let gate_ok = |g: &Act, v: &Act| {
                            g.shape == v.shape
                                || (g.shape == ActShape::new(v.shape.channels, 1, 1) && g.rank == 4)
                        };
                        let (v, g) = if gate_ok(&y, &x) {
                            (x, y)
                        } else if gate_ok(&x, &y) {
                            (y, x)
                        } else {
                            return Err(node.unsupported(format!(
                                "product of activations of shapes {} and {}",
                                x.shape, y.shape
                            )));
                        };
                        let rank = v.rank;
                        Ok(Val::Act(self.emit(
                            node,
                            name,
                            NodeOp::Mul,
                            &[&v, &g],
                            rank,
                        )?))
                    }
                    _ => Err(node.unsupported(format!(
                        "{op} of two activations of shapes {} and {}",
                        x.shape, y.shape
                    ))),
                }
            }
            (Some(Val::Act(x)), Some(Val::Const(c))) => self.channel_affine(node, x, c, false),
            (Some(Val::Const(c)), Some(Val::Act(x))) if op == "Add" || op == "Mul" => {
                self.channel_affine(node, x, c, true)
            }
            _ => Err(node.unsupported("operands are not activations and constants")),
        }
    }

    /// `x ∘ c` with a constant broadcast per channel, as an exact depthwise
    /// 1×1 convolution (weight 1 and bias `c` for a sum, weight `c` for a
    /// product); a bias after a bias-less linear layer merges into it.
    fn channel_affine(
        &mut self,
        node: &NodeView,
        x: Act,
        c: Tensor,
        _swapped: bool,
    ) -> Result<Val> {
        let op = node.op_type();
        let full = self.onnx_shape(&x);
        let cs = c.shape().to_vec();
        if cs.len() > full.len() {
            return Err(node.unsupported(format!("constant of shape {cs:?} broadcast to {full:?}")));
        }
        let offset = full.len() - cs.len();
        for (i, &d) in cs.iter().enumerate() {
            let axis = i + offset;
            if d != 1 && axis != 1 {
                return Err(node.unsupported(format!(
                    "constant of shape {cs:?} varies along axis {axis} (only per-channel constants)"
                )));
            }
            if d != 1 && d != full[1] {
                return Err(node.invalid(format!(
                    "constant of shape {cs:?} does not broadcast to {full:?}"
                )));
            }
        }
        let channels = x.shape.channels;
        let vals: Vec<f32> = c.to_f32().iter().copied().collect();
        let per: Vec<f32> = if vals.len() == 1 {
            vec![vals[0]; channels]
        } else {
            vals
        };
        let per = Array1::from(per);
        let (weight, bias) = match op {
            "Add" => (Array1::ones(channels), Some(per)),
            "Sub" => (Array1::ones(channels), Some(per.mapv(|v| -v))),
            "Mul" => (per, None),
            _ => (per.mapv(|v| 1.0 / v), None),
        };
        // Bias after a bias-less linear layer or convolution read only here.
        if op == "Add" || op == "Sub" {
            if let (Some(&i), Some(b)) = (self.def_of.get(&x.name), bias.as_ref()) {
                let onnx_in =
                    node.proto.input.iter().find(
                        |n| matches!(self.env.get(*n), Some(Val::Act(a)) if a.name == x.name),
                    );
                if onnx_in.is_some_and(|n| self.reads_once(n)) {
                    if let Some(def) = self.defs[i].as_mut() {
                        let merged: Option<Op> = match &def.op {
                            NodeOp::Op(Op::Linear(l)) if l.bias().is_none() => {
                                LinearLayer::new(l.weight().clone(), Some(b.clone()))
                                    .ok()
                                    .map(Op::from)
                            }
                            NodeOp::Op(Op::Conv(cv)) if cv.bias().is_none() => {
                                ConvLayer::new(cv.weight().clone(), Some(b.clone()), *cv.spec())
                                    .ok()
                                    .map(Op::from)
                            }
                            _ => None,
                        };
                        if let Some(m) = merged {
                            def.op = NodeOp::Op(m);
                            return Ok(Val::Act(x));
                        }
                    }
                }
            }
        }
        let w = weight
            .into_shape_with_order((channels, 1, 1, 1))
            .map_err(|e| node.invalid(e.to_string()))?;
        let conv = ConvLayer::new(
            hasten_core::Conv4d::new(w).map_err(|e| Self::core(node, e))?,
            bias,
            ConvSpec::new().with_groups(channels),
        )
        .map_err(|e| Self::core(node, e))?;
        Ok(Val::Act(self.emit_op(node, conv, &x, None)?))
    }

    fn qlinear_conv(
        &mut self,
        node: &NodeView,
        x: Option<Val>,
        konst: &dyn Fn(usize) -> Result<Option<Tensor>>,
    ) -> Result<Val> {
        let Some(Val::Quantized { act, params, .. }) = x else {
            return Err(node.unsupported("input 0 must come from QuantizeLinear of an activation"));
        };
        let need = |i: usize| konst(i)?.ok_or_else(|| node.invalid(format!("missing input {i}")));
        let xp = quant_params(node, &need(1)?, Some(need(2)?))?;
        if xp != params {
            return Err(node.unsupported("input scale / zero point differ from its QuantizeLinear"));
        }
        let w = need(3)?;
        let Tensor::I8(w) = w else {
            return Err(node.unsupported("weights that are not int8"));
        };
        if w.ndim() != 4 {
            return Err(node.unsupported("only 2-D convolution"));
        }
        let ws = need(4)?.to_f32();
        let wz = need(5)?;
        if wz.to_i64().iter().any(|&z| z != 0) {
            return Err(node.unsupported("asymmetric weights (weight zero point ≠ 0)"));
        }
        let yp = quant_params(node, &need(6)?, Some(need(7)?))?;
        let bias = konst(8)?
            .map(|b| match b {
                Tensor::I32(b) => Ok(b.iter().copied().collect::<Array1<i32>>()),
                _ => Err(node.invalid("bias must be int32")),
            })
            .transpose()?;
        let dims = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        let stride = pair(node, "strides")?;
        let dilation = pair(node, "dilations")?;
        let padding = self.padding(node, &act, (dims[2], dims[3]), stride, dilation)?;
        let spec = ConvSpec {
            stride,
            padding,
            dilation,
            groups: node.usize_attr("group", 1)?,
        };
        let layout = WeightLayout::conv(dims, spec).map_err(|e| Self::core(node, e))?;
        let rows = dims[0];
        let weights = w
            .into_shape_with_order((rows, dims[1] * dims[2] * dims[3]))
            .map_err(|e| node.invalid(e.to_string()))?;
        let scales: Array1<f32> = ws.iter().copied().collect();
        let q = Int8Conv::new(layout, weights, scales, params, bias, Some(yp))
            .map_err(|e| Self::core(node, e))?;
        let out = self.emit_op(node, q, &act, None)?;
        Ok(Val::Quantized {
            act: out,
            params: yp,
            sole: false,
        })
    }
}

fn pair(node: &NodeView, name: &str) -> Result<(usize, usize)> {
    match node.usizes(name)? {
        None => Ok((1, 1)),
        Some(v) => match v[..] {
            [a, b] if a > 0 && b > 0 => Ok((a, b)),
            _ => Err(node.unsupported(format!("{name} {v:?} (two positive values expected)"))),
        },
    }
}

fn quant_params(node: &NodeView, scale: &Tensor, zp: Option<Tensor>) -> Result<QuantParams> {
    if scale.len() != 1 {
        return Err(node.unsupported("per-axis activation quantization"));
    }
    let s = scale.to_f32().iter().next().copied().unwrap_or(0.0);
    let (z, dt) = match zp {
        None => (0, IntType::U8),
        Some(Tensor::U8(z)) if z.len() == 1 => (
            i32::from(z.iter().next().copied().unwrap_or(0)),
            IntType::U8,
        ),
        Some(Tensor::I8(z)) if z.len() == 1 => (
            i32::from(z.iter().next().copied().unwrap_or(0)),
            IntType::I8,
        ),
        Some(_) => return Err(node.unsupported("zero point that is not a uint8 / int8 scalar")),
    };
    QuantParams::new(s, z, dt)
        .map_err(|e| OnnxError::core(format!("{} node `{}`", node.op_type(), node.name()), e))
}

/// The value of a `Constant` node.
fn constant_value(node: &NodeView) -> Result<Tensor> {
    if let Some(t) = node.tensor("value") {
        return t;
    }
    if let Some(v) = node.float("value_float") {
        return Ok(Tensor::F32(ndarray::arr0(v).into_dyn()));
    }
    if let Some(v) = node.int("value_int") {
        return Ok(Tensor::I64(ndarray::arr0(v).into_dyn()));
    }
    if let Some(v) = node
        .floats("value_floats")
        .filter(|_| node.has_attr("value_floats"))
    {
        return Ok(Tensor::F32(Array1::from(v.to_vec()).into_dyn()));
    }
    if let Some(v) = node
        .ints("value_ints")
        .filter(|_| node.has_attr("value_ints"))
    {
        return Ok(Tensor::I64(Array1::from(v.to_vec()).into_dyn()));
    }
    let names: Vec<&str> = node.attr_names().collect();
    Err(node.unsupported(format!("constant given as {names:?}")))
}

//! Graph surgery: replace a node, apply a [`Transform`] to the nodes a
//! [`NodeFilter`] selects, fold inference batch norms into the preceding
//! convolution or linear layer, and remove dead nodes. Every rewrite is
//! all-or-nothing: on error the graph is left as it was.

use ndarray::{Array1, Array2, Array4, Axis};

use super::{Graph, GraphError, NodeDef, NodeFilter, NodeOp, ValueId};
use crate::block::Block;
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::layer::{ConvLayer, Layer, LinearLayer};
use crate::op::{BatchNorm, Op};
use crate::transform::{Report, Transform};
use crate::weight::Conv4d;

/// One node a transform replaced — or one op inside a block node, named
/// `node.index` — with the transform's report.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// The node's name.
    pub node: String,
    /// Costs before and after, and the weight error.
    pub report: Report,
}

/// What [`Graph::apply_transform`] did: a report per replaced node, the
/// selected nodes that hold no layer, and the whole graph's cost before and
/// after.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphReport {
    /// The transform's name.
    pub method: String,
    /// The replaced nodes, in topological order.
    pub nodes: Vec<NodeReport>,
    /// Selected nodes left alone because they hold no convolution or linear
    /// layer (pooling, activations, blocks of other ops, …).
    pub skipped: Vec<String>,
    /// The graph's cost per sample before the transform.
    pub before: Cost,
    /// The graph's cost per sample after it.
    pub after: Cost,
}

impl GraphReport {
    /// Whole-graph `MACs before / MACs after`.
    pub fn mac_speedup(&self) -> f64 {
        self.before.macs as f64 / self.after.macs.max(1) as f64
    }

    /// Whole-graph `weight bytes before / weight bytes after`.
    pub fn compression_ratio(&self) -> f64 {
        self.before.weight_bytes as f64 / self.after.weight_bytes.max(1) as f64
    }
}

impl Graph {
    /// Replaces the op of node `name` by `op`, which must take the same
    /// inputs and produce the same output shape (a [`Block`] from a
    /// transform, say).
    ///
    /// [`Block`]: crate::Block
    pub fn replace(&mut self, name: &str, op: impl Into<NodeOp>) -> Result<()> {
        let index = self.require(name)?;
        let op = op.into();
        let rewrite = |cause: Error| -> Error {
            GraphError::Rewrite {
                node: name.to_string(),
                cause: Box::new(cause),
            }
            .into()
        };
        let node = &self.nodes[index];
        if let Err(expected) = op.check_arity(node.inputs.len()) {
            return Err(rewrite(Error::shape(
                format!("input count of a {} op", op.kind()),
                expected,
                node.inputs.len(),
            )));
        }
        let shape = op.output_shape(&node.input_shapes).map_err(rewrite)?;
        if shape != node.output_shape {
            return Err(rewrite(Error::shape(
                "replacement output",
                node.output_shape,
                shape,
            )));
        }
        self.nodes[index].op = op;
        Ok(())
    }

    /// Applies `transform` to every selected node holding a convolution or
    /// linear layer, replacing it by the transform's block, and to every
    /// convolution or linear op inside a selected [`Block`] node (an earlier
    /// transform's output: Tucker-2 factors, then int8 on each), splicing the
    /// op's replacement into the chain; such an op is reported as
    /// `node.index` (its position in the block, the `state_dict` prefix of its
    /// parameters). Other selected nodes, and blocks holding no such op, are
    /// listed as skipped. A transform error names its node and leaves the
    /// graph unchanged.
    ///
    /// # Errors
    ///
    /// [`GraphError::Rewrite`] naming the node whose transform failed (the
    /// transform's error is its source), and [`crate::Error::Overflow`] when
    /// the graph's cost does not fit in integers.
    ///
    /// # Examples
    ///
    /// The hasten crate's prelude applies Tucker-2 to a ResNet this way; here
    /// a transform of our own replaces every layer by itself:
    ///
    /// ```
    /// use hasten_core::transform::Compressed;
    /// use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, GraphBuilder, Layer, NodeFilter};
    /// use hasten_core::{Report, Result, SeededRng, Transform};
    ///
    /// struct Same;
    /// impl Transform for Same {
    ///     fn name(&self) -> &str {
    ///         "same"
    ///     }
    ///     fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
    ///         let block = Block::single(layer.to_op());
    ///         let report = Report::new("same", layer, &block, input, Some(0.0))?;
    ///         Ok(Compressed { block, report })
    ///     }
    /// }
    ///
    /// let w = SeededRng::new(0).normal_array((4, 2, 3, 3), 0.3);
    /// let mut b = GraphBuilder::new();
    /// let x = b.input("x", ActShape::new(2, 6, 6));
    /// let y = b.op("conv", ConvLayer::from_array(w, ConvSpec::new())?, x);
    /// b.output(y);
    /// let mut graph = b.build()?;
    /// let report = graph.apply_transform(&Same, &NodeFilter::kind("conv"))?;
    /// assert_eq!(report.nodes.len(), 1);
    /// assert_eq!(report.before, report.after);
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    ///
    /// [`Block`]: crate::Block
    pub fn apply_transform(
        &mut self,
        transform: &dyn Transform,
        filter: &NodeFilter,
    ) -> Result<GraphReport> {
        let before = self.cost()?;
        let mut replacements = Vec::new();
        let mut nodes = Vec::new();
        let mut skipped = Vec::new();
        for index in filter.select(self) {
            let node = &self.nodes[index];
            let rewrite = |cause: Error| -> Error {
                GraphError::Rewrite {
                    node: node.name.clone(),
                    cause: Box::new(cause),
                }
                .into()
            };
            let layer = match &node.op {
                NodeOp::Op(op) => layer_of(op),
                _ => None,
            };
            if let Some(layer) = layer {
                let compressed = transform
                    .apply(&layer, node.input_shapes[0])
                    .map_err(rewrite)?;
                replacements.push((index, NodeOp::Block(compressed.block)));
                nodes.push(NodeReport {
                    node: node.name.clone(),
                    report: compressed.report,
                });
                continue;
            }
            let inner = match &node.op {
                NodeOp::Block(block) => {
                    transform_block(transform, block, node.input_shapes[0]).map_err(rewrite)?
                }
                _ => None,
            };
            match inner {
                Some((block, reports)) => {
                    replacements.push((index, NodeOp::Block(block)));
                    nodes.extend(reports.into_iter().map(|(i, report)| NodeReport {
                        node: format!("{}.{i}", node.name),
                        report,
                    }));
                }
                None => skipped.push(node.name.clone()),
            }
        }
        let mut graph = self.clone();
        for (index, op) in replacements {
            let name = graph.nodes[index].name.clone();
            graph.replace(&name, op)?;
        }
        let after = graph.cost()?;
        *self = graph;
        Ok(GraphReport {
            method: transform.name().to_string(),
            nodes,
            skipped,
            before,
            after,
        })
    }

    /// Folds every inference batch norm that is the only reader of a
    /// convolution's (or linear layer's) output into that layer:
    /// `W'[t] = s[t]·W[t]`, `b'[t] = s[t]·(b[t] − μ[t]) + β[t]` with
    /// `s = γ / √(σ² + ε)`, computed in f64. Returns how many were folded.
    pub fn fold_batch_norms(&mut self) -> Result<usize> {
        let mut folds = Vec::new();
        for (j, node) in self.nodes.iter().enumerate() {
            let (NodeOp::Op(Op::BatchNorm(bn)), [ValueId::Node(i)]) = (&node.op, &node.inputs[..])
            else {
                continue;
            };
            let producer = ValueId::Node(*i);
            if self.is_output(producer) || self.consumers(producer) != [j] {
                continue;
            }
            let folded = match &self.nodes[*i].op {
                NodeOp::Op(Op::Conv(c)) => NodeOp::Op(Op::Conv(fold_into_conv(c, bn)?)),
                NodeOp::Op(Op::Linear(l)) => NodeOp::Op(Op::Linear(fold_into_linear(l, bn)?)),
                _ => continue,
            };
            folds.push((*i, j, folded));
        }
        let count = folds.len();
        if count == 0 {
            return Ok(0);
        }
        let (inputs, mut defs, mut outputs) = self.to_defs();
        let mut removed = vec![false; defs.len()];
        for (i, j, folded) in folds {
            defs[i].op = folded;
            let (from, to) = (defs[j].name.clone(), defs[i].name.clone());
            rename_reads(&mut defs, &mut outputs, &from, &to);
            removed[j] = true;
        }
        let defs = keep(defs, &removed);
        *self = Graph::new(inputs, defs, outputs)?;
        Ok(count)
    }

    /// Removes the nodes no graph output depends on; returns how many.
    pub fn remove_dead_nodes(&mut self) -> Result<usize> {
        let mut live = vec![false; self.nodes.len()];
        for &id in &self.outputs {
            if let ValueId::Node(i) = id {
                live[i] = true;
            }
        }
        for i in (0..self.nodes.len()).rev() {
            if live[i] {
                for &id in &self.nodes[i].inputs {
                    if let ValueId::Node(k) = id {
                        live[k] = true;
                    }
                }
            }
        }
        let dead: Vec<bool> = live.iter().map(|&l| !l).collect();
        let count = dead.iter().filter(|&&d| d).count();
        if count > 0 {
            let (inputs, defs, outputs) = self.to_defs();
            *self = Graph::new(inputs, keep(defs, &dead), outputs)?;
        }
        Ok(count)
    }

    /// Removes single-input nodes that compute the identity at inference
    /// (`identity`, `dropout`), rewiring their readers to their input; a
    /// graph output keeps its node. Returns how many were removed.
    pub fn remove_identities(&mut self) -> Result<usize> {
        let (inputs, mut defs, mut outputs) = self.to_defs();
        let mut removed = vec![false; defs.len()];
        for j in 0..defs.len() {
            let is_identity =
                matches!(&defs[j].op, NodeOp::Op(op) if IDENTITY_KINDS.contains(&op.kind()));
            if !is_identity || outputs.contains(&defs[j].name) {
                continue;
            }
            let (from, to) = (defs[j].name.clone(), defs[j].inputs[0].clone());
            rename_reads(&mut defs, &mut outputs, &from, &to);
            removed[j] = true;
        }
        let count = removed.iter().filter(|&&r| r).count();
        if count > 0 {
            *self = Graph::new(inputs, keep(defs, &removed), outputs)?;
        }
        Ok(count)
    }

    /// The index of node `name`, or an error naming it.
    fn require(&self, name: &str) -> Result<usize> {
        self.node_index(name).ok_or_else(|| {
            GraphError::UnknownNode {
                name: name.to_string(),
            }
            .into()
        })
    }
}

/// The convolution or linear layer an op holds.
fn layer_of(op: &Op) -> Option<Layer> {
    match op {
        Op::Conv(c) => Some(Layer::Conv(c.clone())),
        Op::Linear(l) => Some(Layer::Linear(l.clone())),
        _ => None,
    }
}

/// A rewritten block and the report of each op it replaced, by index.
type BlockRewrite = (Block, Vec<(usize, Report)>);

/// `block` with `transform` applied to each of its convolution and linear
/// ops (seeing its input shape inside the chain), each replaced by the ops of
/// its replacement block; with the report of each op by its index. `None`
/// when the block holds no such op.
fn transform_block(
    transform: &dyn Transform,
    block: &Block,
    input: crate::shape::ActShape,
) -> Result<Option<BlockRewrite>> {
    let shapes = block.shapes(input)?;
    let mut ops = Vec::with_capacity(block.ops().len());
    let mut reports = Vec::new();
    for (i, op) in block.ops().iter().enumerate() {
        match layer_of(op) {
            Some(layer) => {
                let compressed = transform.apply(&layer, shapes[i])?;
                ops.extend(compressed.block.into_ops());
                reports.push((i, compressed.report));
            }
            None => ops.push(op.clone()),
        }
    }
    if reports.is_empty() {
        return Ok(None);
    }
    Ok(Some((Block::new(ops)?, reports)))
}

/// Op kinds that compute the identity at inference.
const IDENTITY_KINDS: [&str; 2] = ["identity", "dropout"];

/// Makes every reader of `from` (and every output naming it) read `to`.
fn rename_reads(defs: &mut [NodeDef], outputs: &mut [String], from: &str, to: &str) {
    for def in defs.iter_mut() {
        for input in def.inputs.iter_mut().filter(|i| *i == from) {
            *input = to.to_string();
        }
    }
    for out in outputs.iter_mut().filter(|o| *o == from) {
        *out = to.to_string();
    }
}

/// The definitions not marked `drop`.
fn keep(defs: Vec<NodeDef>, drop: &[bool]) -> Vec<NodeDef> {
    defs.into_iter()
        .zip(drop)
        .filter_map(|(d, &gone)| (!gone).then_some(d))
        .collect()
}

/// Per-channel `(s, s·(b − μ) + β)` of a batch norm after a layer with bias `b`.
fn bn_fold(bn: &BatchNorm, bias: Option<&Array1<f32>>) -> (Vec<f64>, Array1<f32>) {
    let scale: Vec<f64> = bn
        .gamma()
        .iter()
        .zip(bn.var())
        .map(|(&g, &v)| f64::from(g) / (f64::from(v) + f64::from(bn.eps())).sqrt())
        .collect();
    let shift = (0..scale.len())
        .map(|t| {
            let b = bias.map_or(0.0, |b| f64::from(b[t]));
            (scale[t] * (b - f64::from(bn.mean()[t])) + f64::from(bn.beta()[t])) as f32
        })
        .collect();
    (scale, shift)
}

fn fold_into_conv(conv: &ConvLayer, bn: &BatchNorm) -> Result<ConvLayer> {
    let (scale, bias) = bn_fold(bn, conv.bias());
    let mut w: Array4<f32> = conv.weight().array().clone();
    for (t, mut filter) in w.axis_iter_mut(Axis(0)).enumerate() {
        filter.mapv_inplace(|v| (f64::from(v) * scale[t]) as f32);
    }
    ConvLayer::new(Conv4d::new(w)?, Some(bias), *conv.spec())
}

fn fold_into_linear(linear: &LinearLayer, bn: &BatchNorm) -> Result<LinearLayer> {
    let (scale, bias) = bn_fold(bn, linear.bias());
    let mut w: Array2<f32> = linear.weight().clone();
    for (t, mut row) in w.axis_iter_mut(Axis(0)).enumerate() {
        row.mapv_inplace(|v| (f64::from(v) * scale[t]) as f32);
    }
    LinearLayer::new(w, Some(bias))
}

//! A [`GraphBuilder`] that tracks every value's shape as the network is
//! written, so layers can be sized from their inputs (batch-norm widths,
//! `in_features` of a classifier) and a shape problem names its node at once.

use std::collections::HashMap;

use hasten_core::graph::{GraphBuilder, GraphError, Value};
use hasten_core::{
    ActShape, ConvSpec, Error, Flatten, GlobalAvgPool, Graph, Op, Operator, Relu, Result,
};

use crate::config::{BatchNormInit, ModelConfig};
use crate::init;

/// A network under construction.
pub(crate) struct Net {
    builder: GraphBuilder,
    shapes: HashMap<Value, ActShape>,
    seed: u64,
    batch_norm: BatchNormInit,
}

impl Net {
    /// A network with one input named `input` of the config's input shape.
    pub(crate) fn new(config: &ModelConfig) -> Result<(Net, Value)> {
        let shape = config.input_shape()?;
        let mut builder = GraphBuilder::new();
        let x = builder.input("input", shape);
        let net = Net {
            builder,
            shapes: HashMap::from([(x, shape)]),
            seed: config.seed,
            batch_norm: config.batch_norm,
        };
        Ok((net, x))
    }

    /// The per-sample shape of `value`.
    pub(crate) fn shape(&self, value: Value) -> ActShape {
        self.shapes[&value]
    }

    /// Adds a single-input node.
    pub(crate) fn op(&mut self, name: &str, op: impl Into<Op>, x: Value) -> Result<Value> {
        let op = op.into();
        let shape = op
            .output_shape(self.shape(x))
            .map_err(|cause| GraphError::Shape {
                node: name.to_string(),
                kind: op.kind(),
                cause: Box::new(cause),
            })?;
        let y = self.builder.op(name, op, x);
        self.shapes.insert(y, shape);
        Ok(y)
    }

    /// A `k × k` convolution to `out` channels, He-initialised.
    pub(crate) fn conv(
        &mut self,
        name: &str,
        x: Value,
        out: usize,
        k: usize,
        spec: ConvSpec,
        bias: bool,
    ) -> Result<Value> {
        let in_channels = self.shape(x).channels;
        let layer = init::conv(self.seed, name, in_channels, out, (k, k), spec, bias)?;
        self.op(name, layer, x)
    }

    /// A depthwise `k × k` convolution (one filter per channel), no bias.
    pub(crate) fn depthwise(
        &mut self,
        name: &str,
        x: Value,
        k: usize,
        spec: ConvSpec,
    ) -> Result<Value> {
        let c = self.shape(x).channels;
        self.conv(name, x, c, k, spec.with_groups(c), false)
    }

    /// A batch norm over `x`'s channels.
    pub(crate) fn batch_norm(&mut self, name: &str, x: Value) -> Result<Value> {
        let c = self.shape(x).channels;
        let bn = match self.batch_norm {
            BatchNormInit::Identity => init::identity_batch_norm(c)?,
            BatchNormInit::Random => init::random_batch_norm(self.seed, name, c)?,
        };
        self.op(name, bn, x)
    }

    /// A ReLU.
    pub(crate) fn relu(&mut self, name: &str, x: Value) -> Result<Value> {
        self.op(name, Relu, x)
    }

    /// A fully connected layer from all of `x` (`C·H·W` features) to `out`,
    /// He-initialised, with a zero bias.
    pub(crate) fn linear(&mut self, name: &str, x: Value, out: usize) -> Result<Value> {
        let layer = init::linear(self.seed, name, self.shape(x).len(), out)?;
        self.op(name, layer, x)
    }

    /// The element-wise sum of `a` and `b` (a residual connection).
    pub(crate) fn add(&mut self, name: &str, a: Value, b: Value) -> Result<Value> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sa != sb {
            return Err(GraphError::Shape {
                node: name.to_string(),
                kind: "add",
                cause: Box::new(Error::shape("add operand", sa, sb)),
            }
            .into());
        }
        let y = self.builder.add(name, &[a, b]);
        self.shapes.insert(y, sa);
        Ok(y)
    }

    /// The head of ResNet and MobileNet: `avgpool` (global average pool),
    /// `flatten` and the classifier `fc`.
    pub(crate) fn pooled_classifier(&mut self, x: Value, classes: usize) -> Result<Value> {
        let y = self.op("avgpool", GlobalAvgPool, x)?;
        let y = self.op("flatten", Flatten, y)?;
        self.linear("fc", y, classes)
    }

    /// Marks `y` as the only output and validates the graph.
    pub(crate) fn finish(mut self, y: Value) -> Result<Graph> {
        self.builder.output(y);
        self.builder.build()
    }
}

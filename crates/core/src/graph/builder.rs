//! [`GraphBuilder`]: writes a graph the way the network reads —
//! `let y = b.op("conv1", conv, x);` — and validates it once at
//! [`GraphBuilder::build`].

use super::{Graph, NodeDef, NodeOp};
use crate::error::Result;
use crate::op::Op;
use crate::shape::ActShape;

/// A value of a graph under construction: a graph input or a node's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Value(usize);

/// Builds a [`Graph`] node by node. Methods record; [`GraphBuilder::build`]
/// validates everything (names, arities, shapes) and reports the first
/// problem naming its node.
#[derive(Debug, Clone, Default)]
pub struct GraphBuilder {
    names: Vec<String>,
    inputs: Vec<(String, ActShape)>,
    nodes: Vec<NodeDef>,
    outputs: Vec<String>,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a graph input named `name` of per-sample shape `shape`.
    pub fn input(&mut self, name: impl Into<String>, shape: ActShape) -> Value {
        let name = name.into();
        self.inputs.push((name.clone(), shape));
        self.value(name)
    }

    /// Adds a node named `name` computing `op` from `inputs`; returns its output.
    pub fn node(
        &mut self,
        name: impl Into<String>,
        op: impl Into<NodeOp>,
        inputs: &[Value],
    ) -> Value {
        let name = name.into();
        let inputs = inputs.iter().map(|v| self.names[v.0].clone()).collect();
        self.nodes.push(NodeDef {
            name: name.clone(),
            op: op.into(),
            inputs,
        });
        self.value(name)
    }

    /// Adds a single-input node computing `op` (a convolution, pooling,
    /// activation, … or anything convertible into an [`Op`]).
    pub fn op(&mut self, name: impl Into<String>, op: impl Into<Op>, input: Value) -> Value {
        self.node(name, NodeOp::Op(op.into()), &[input])
    }

    /// Adds an element-wise sum of `inputs` (a residual connection).
    pub fn add(&mut self, name: impl Into<String>, inputs: &[Value]) -> Value {
        self.node(name, NodeOp::Add, inputs)
    }

    /// Adds a channel concatenation of `inputs`.
    pub fn concat(&mut self, name: impl Into<String>, inputs: &[Value]) -> Value {
        self.node(name, NodeOp::Concat, inputs)
    }

    /// Adds `x · gate`, the gate of `x`'s shape or `C×1×1` broadcast.
    pub fn mul(&mut self, name: impl Into<String>, x: Value, gate: Value) -> Value {
        self.node(name, NodeOp::Mul, &[x, gate])
    }

    /// Marks `value` as a graph output (in call order).
    pub fn output(&mut self, value: Value) {
        self.outputs.push(self.names[value.0].clone());
    }

    /// Validates and returns the graph.
    ///
    /// # Errors
    ///
    /// A [`GraphError`](super::GraphError) naming the first problem (see
    /// [`Graph::new`]): a duplicate name, an input naming no earlier value, a
    /// wrong number of operands, a node whose op cannot take its inputs'
    /// shapes, an output naming no value, or no output at all.
    ///
    /// # Examples
    ///
    /// ```
    /// use hasten_core::{ActShape, GraphBuilder, GlobalAvgPool};
    ///
    /// let mut b = GraphBuilder::new();
    /// let x = b.input("x", ActShape::new(4, 8, 8));
    /// let y = b.op("pool", GlobalAvgPool, x);
    /// b.output(y);
    /// assert_eq!(b.build()?.output_shapes(), [ActShape::new(4, 1, 1)]);
    ///
    /// // Channels 4 and 2 cannot be added.
    /// let mut b = GraphBuilder::new();
    /// let x = b.input("x", ActShape::new(4, 8, 8));
    /// let z = b.input("z", ActShape::new(2, 8, 8));
    /// let sum = b.add("sum", &[x, z]);
    /// b.output(sum);
    /// assert!(b.build().is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn build(self) -> Result<Graph> {
        Graph::new(self.inputs, self.nodes, self.outputs)
    }

    fn value(&mut self, name: String) -> Value {
        self.names.push(name);
        Value(self.names.len() - 1)
    }
}

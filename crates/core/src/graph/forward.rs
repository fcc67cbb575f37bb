//! The graph's reference forward — every node's reference semantics in
//! topological order — with capture of any value's activations, for
//! calibration and the survey's data-driven methods (asymmetric
//! reconstruction, ThiNet, activation-based pruning criteria).

use std::collections::BTreeMap;

use ndarray::Array4;

use super::{Graph, GraphError, Node, ValueId};
use crate::error::Result;

/// What a traced reference forward returns: the graph outputs and the
/// activations of the values asked for, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The graph outputs, in order.
    pub outputs: Vec<Array4<f32>>,
    /// The captured values (NCHW batches), by value name.
    pub captured: BTreeMap<String, Array4<f32>>,
}

impl Graph {
    /// Checks that `inputs` are one NCHW batch per graph input, of the
    /// declared per-sample shapes and one common, non-zero batch size, which
    /// it returns.
    pub fn check_inputs(&self, inputs: &[&Array4<f32>]) -> Result<usize> {
        if inputs.len() != self.inputs.len() {
            return Err(GraphError::InputCount {
                expected: self.inputs.len(),
                got: inputs.len(),
            }
            .into());
        }
        let batch = inputs.first().map_or(0, |x| x.shape()[0]);
        for (declared, x) in self.inputs.iter().zip(inputs) {
            if x.shape() != declared.shape.batched(batch) || batch == 0 {
                return Err(GraphError::InputShape {
                    input: declared.name.clone(),
                    expected: declared.shape,
                    got: x.shape().to_vec(),
                }
                .into());
            }
        }
        Ok(batch)
    }

    /// Runs every node's reference semantics on `inputs` (one NCHW batch per
    /// graph input) and returns the graph outputs.
    ///
    /// # Errors
    ///
    /// A [`GraphError`] when the number of inputs, their
    /// per-sample shapes or their batch sizes do not match the graph's
    /// declared inputs; [`crate::Error::MemoryLimit`] when an activation
    /// would exceed [`crate::memory::limit`]; a node's own error, naming it.
    ///
    /// # Examples
    ///
    /// ```
    /// use hasten_core::ndarray::Array4;
    /// use hasten_core::{ActShape, GraphBuilder, Relu};
    ///
    /// let mut b = GraphBuilder::new();
    /// let x = b.input("x", ActShape::new(1, 1, 3));
    /// let y = b.op("relu", Relu, x);
    /// let y = b.add("twice", &[y, y]);
    /// b.output(y);
    /// let graph = b.build()?;
    ///
    /// let input = Array4::from_shape_vec((1, 1, 1, 3), vec![-1.0, 0.5, 2.0]).unwrap();
    /// let out = graph.reference_forward(&[&input])?;
    /// assert_eq!(out[0].iter().copied().collect::<Vec<_>>(), [0.0, 1.0, 4.0]);
    /// assert!(graph.reference_forward(&[&Array4::zeros((1, 2, 1, 3))]).is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn reference_forward(&self, inputs: &[&Array4<f32>]) -> Result<Vec<Array4<f32>>> {
        Ok(self.reference_trace(inputs, &[])?.outputs)
    }

    /// As [`Graph::reference_forward`], also returning the activations of the
    /// values named in `capture` (graph inputs or nodes); an unknown name is
    /// an error. Other intermediate activations are freed after their last use.
    pub fn reference_trace(&self, inputs: &[&Array4<f32>], capture: &[&str]) -> Result<Trace> {
        let wanted = capture
            .iter()
            .map(|&name| {
                self.value(name).ok_or_else(|| {
                    GraphError::UnknownNode {
                        name: name.to_string(),
                    }
                    .into()
                })
            })
            .collect::<Result<Vec<ValueId>>>()?;
        let mut captured = BTreeMap::new();
        for &id in &wanted {
            if let ValueId::Input(i) = id {
                captured.insert(self.value_name(id).to_string(), inputs[i].clone());
            }
        }
        let outputs = self.reference_visit(inputs, |node, y| {
            if wanted.contains(&ValueId::Node(node)) {
                captured.insert(self.nodes[node].name.clone(), y.clone());
            }
        })?;
        Ok(Trace { outputs, captured })
    }

    /// Runs the reference forward, calling `visit(node index, activation)`
    /// on every node's output as it is computed, and returns the outputs.
    /// Activations are freed after their last use, so memory stays at the
    /// live set rather than the whole network.
    pub fn reference_visit(
        &self,
        inputs: &[&Array4<f32>],
        mut visit: impl FnMut(usize, &Array4<f32>),
    ) -> Result<Vec<Array4<f32>>> {
        self.check_inputs(inputs)?;
        let last_use = self.last_uses();
        let mut values: Vec<Option<Array4<f32>>> = vec![None; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            let args: Vec<&Array4<f32>> = node
                .inputs
                .iter()
                .map(|&id| match id {
                    ValueId::Input(k) => inputs[k],
                    ValueId::Node(k) => values[k].as_ref().expect("computed and still live"),
                })
                .collect();
            let y = node
                .op
                .reference_forward(&args)
                .map_err(|cause| run_error(node, cause))?;
            visit(i, &y);
            if last_use[i].is_some() || self.is_output(ValueId::Node(i)) {
                values[i] = Some(y);
            }
            for &id in &node.inputs {
                if let ValueId::Node(k) = id {
                    if last_use[k] == Some(i) && !self.is_output(id) {
                        values[k] = None;
                    }
                }
            }
        }
        Ok(self
            .outputs
            .iter()
            .map(|&id| match id {
                ValueId::Input(k) => inputs[k].clone(),
                ValueId::Node(k) => values[k].clone().expect("outputs stay live"),
            })
            .collect())
    }

    /// For each node, the index of the last node that reads its output.
    pub fn last_uses(&self) -> Vec<Option<usize>> {
        let mut last = vec![None; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for &id in &node.inputs {
                if let ValueId::Node(k) = id {
                    last[k] = Some(i);
                }
            }
        }
        last
    }
}

fn run_error(node: &Node, cause: crate::Error) -> crate::Error {
    GraphError::Run {
        node: node.name.clone(),
        kind: node.kind(),
        cause: Box::new(cause),
    }
    .into()
}

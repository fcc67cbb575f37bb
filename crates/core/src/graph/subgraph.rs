//! Cutting one node out of a graph as a graph of its own — how a
//! per-layer profile times each node alone, to compare with the whole
//! network compiled at once.

use super::{Graph, GraphError, NodeDef};
use crate::error::Result;

impl Graph {
    /// The graph of node `name` alone: one input per distinct value it
    /// reads (named and shaped as in this graph), the node, and its output.
    pub fn node_graph(&self, name: &str) -> Result<Graph> {
        let node = self.node(name).ok_or_else(|| GraphError::UnknownNode {
            name: name.to_string(),
        })?;
        let mut inputs: Vec<(String, crate::ActShape)> = Vec::new();
        for &id in &node.inputs {
            let value = self.value_name(id).to_string();
            if !inputs.iter().any(|(n, _)| *n == value) {
                inputs.push((value, self.value_shape(id)));
            }
        }
        let def = NodeDef {
            name: node.name.clone(),
            op: node.op.clone(),
            inputs: node
                .inputs
                .iter()
                .map(|&id| self.value_name(id).to_string())
                .collect(),
        };
        Graph::new(inputs, vec![def], vec![node.name.clone()])
    }
}

//! Building a [`Graph`] from name-based node definitions: name resolution,
//! a stable topological sort that finds cycles, arity checks and shape
//! inference, each failure a [`GraphError`] naming the node.

use std::collections::HashMap;

use super::{Graph, GraphError, GraphInput, Node, NodeOp, ValueId};
use crate::error::{ensure_nonempty, Result};
use crate::shape::ActShape;

/// A node given by name: the unit of [`Graph::new`], where inputs refer to
/// graph inputs or other nodes by name and nodes may come in any order.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDef {
    /// The node's (and its output value's) name.
    pub name: String,
    /// What it computes.
    pub op: NodeOp,
    /// The names of the values it reads, in order.
    pub inputs: Vec<String>,
}

impl NodeDef {
    /// A node named `name` computing `op` from the values named `inputs`.
    pub fn new(name: impl Into<String>, op: impl Into<NodeOp>, inputs: &[&str]) -> Self {
        NodeDef {
            name: name.into(),
            op: op.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Where a name points before sorting.
#[derive(Clone, Copy)]
enum Source {
    Input(usize),
    Def(usize),
}

impl Graph {
    /// Validates and builds a graph from its inputs (name, per-sample shape),
    /// its nodes in any order, and the names of the values it returns.
    ///
    /// Nodes are sorted topologically, keeping the given order where it is
    /// already one. Fails with a [`GraphError`] on duplicate names, a node
    /// reading an unknown value, a cycle, a wrong input count, or an op that
    /// cannot take its input shapes, and on an empty or unknown output list.
    pub fn new(
        inputs: Vec<(String, ActShape)>,
        nodes: Vec<NodeDef>,
        outputs: Vec<String>,
    ) -> Result<Graph> {
        let mut names: HashMap<&str, Source> = HashMap::new();
        for (i, (name, shape)) in inputs.iter().enumerate() {
            ensure_nonempty(
                &format!("graph input `{name}`"),
                &[shape.channels, shape.height, shape.width],
            )?;
            if names.insert(name, Source::Input(i)).is_some() {
                return Err(GraphError::DuplicateName { name: name.clone() }.into());
            }
        }
        for (j, def) in nodes.iter().enumerate() {
            if names.insert(&def.name, Source::Def(j)).is_some() {
                return Err(GraphError::DuplicateName {
                    name: def.name.clone(),
                }
                .into());
            }
        }
        let deps = nodes
            .iter()
            .map(|def| {
                def.inputs
                    .iter()
                    .map(|input| {
                        names.get(input.as_str()).copied().ok_or_else(|| {
                            GraphError::DanglingInput {
                                node: def.name.clone(),
                                input: input.clone(),
                            }
                        })
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let order = topological_order(&nodes, &deps)?;
        let output_ids = resolve_outputs(&names, &outputs)?;

        let mut position = vec![0; nodes.len()];
        for (at, &j) in order.iter().enumerate() {
            position[j] = at;
        }
        let graph_inputs: Vec<GraphInput> = inputs
            .into_iter()
            .map(|(name, shape)| GraphInput { name, shape })
            .collect();
        let mut slots: Vec<Option<NodeDef>> = nodes.into_iter().map(Some).collect();
        let mut built: Vec<Node> = Vec::with_capacity(order.len());
        for &j in &order {
            let def = slots[j].take().expect("each node is placed once");
            let ids: Vec<ValueId> = deps[j]
                .iter()
                .map(|&src| match src {
                    Source::Input(i) => ValueId::Input(i),
                    Source::Def(d) => ValueId::Node(position[d]),
                })
                .collect();
            let shapes: Vec<ActShape> = ids
                .iter()
                .map(|&id| match id {
                    ValueId::Input(i) => graph_inputs[i].shape,
                    ValueId::Node(n) => built[n].output_shape,
                })
                .collect();
            built.push(infer(def, ids, shapes)?);
        }
        Ok(Graph {
            inputs: graph_inputs,
            nodes: built,
            outputs: output_ids
                .into_iter()
                .map(|src| match src {
                    Source::Input(i) => ValueId::Input(i),
                    Source::Def(d) => ValueId::Node(position[d]),
                })
                .collect(),
        })
    }

    /// The graph as name-based definitions: `(inputs, nodes, outputs)`, the
    /// arguments [`Graph::new`] rebuilds it from.
    pub fn to_defs(&self) -> (Vec<(String, ActShape)>, Vec<NodeDef>, Vec<String>) {
        let inputs = self
            .inputs
            .iter()
            .map(|i| (i.name.clone(), i.shape))
            .collect();
        let nodes = self
            .nodes
            .iter()
            .map(|n| NodeDef {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs: n
                    .inputs
                    .iter()
                    .map(|&v| self.value_name(v).to_string())
                    .collect(),
            })
            .collect();
        let outputs = self
            .outputs
            .iter()
            .map(|&v| self.value_name(v).to_string())
            .collect();
        (inputs, nodes, outputs)
    }
}

/// Checks the node's arity and infers its output shape.
fn infer(def: NodeDef, inputs: Vec<ValueId>, input_shapes: Vec<ActShape>) -> Result<Node> {
    let kind = def.op.kind();
    def.op
        .check_arity(inputs.len())
        .map_err(|expected| GraphError::Arity {
            node: def.name.clone(),
            kind,
            expected,
            got: inputs.len(),
        })?;
    let output_shape = def
        .op
        .output_shape(&input_shapes)
        .map_err(|cause| GraphError::Shape {
            node: def.name.clone(),
            kind,
            cause: Box::new(cause),
        })?;
    Ok(Node {
        name: def.name,
        op: def.op,
        inputs,
        input_shapes,
        output_shape,
    })
}

/// Resolves output names; at least one is required.
fn resolve_outputs(
    names: &HashMap<&str, Source>,
    outputs: &[String],
) -> std::result::Result<Vec<Source>, GraphError> {
    if outputs.is_empty() {
        return Err(GraphError::NoOutputs);
    }
    outputs
        .iter()
        .map(|name| {
            names
                .get(name.as_str())
                .copied()
                .ok_or_else(|| GraphError::UnknownOutput { name: name.clone() })
        })
        .collect()
}

/// A depth-first topological order of the definitions (each after the
/// definitions it reads; the given order kept where possible), or the first
/// cycle found. Iterative, so deep graphs cannot overflow the stack.
fn topological_order(
    nodes: &[NodeDef],
    deps: &[Vec<Source>],
) -> std::result::Result<Vec<usize>, GraphError> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..nodes.len() {
        if state[root] != NEW {
            continue;
        }
        state[root] = OPEN;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (v, k) = *top;
            match deps[v].get(k) {
                Some(&Source::Def(d)) => {
                    top.1 += 1;
                    match state[d] {
                        NEW => {
                            state[d] = OPEN;
                            stack.push((d, 0));
                        }
                        OPEN => {
                            let from = stack
                                .iter()
                                .position(|&(s, _)| s == d)
                                .expect("an open node is on the stack");
                            let cycle = stack[from..]
                                .iter()
                                .rev()
                                .map(|&(s, _)| nodes[s].name.clone())
                                .collect();
                            return Err(GraphError::Cycle {
                                node: nodes[d].name.clone(),
                                cycle,
                            });
                        }
                        _ => {}
                    }
                }
                Some(&Source::Input(_)) => top.1 += 1,
                None => {
                    state[v] = DONE;
                    order.push(v);
                    stack.pop();
                }
            }
        }
    }
    Ok(order)
}

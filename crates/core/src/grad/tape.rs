//! Reverse mode over a whole [`Graph`]: [`Tape::forward`] evaluates every
//! node in f64 in topological order and keeps every value; [`Tape::backward`]
//! sweeps the nodes in reverse, summing the gradients of a value read by
//! several nodes (or returned several times), and returns the gradients of
//! the graph inputs and of every trainable parameter by `state_dict` name.

use ndarray::{Array4, ArrayD};

use super::{
    backward, forward, inner_ops, is_trainable, merge, op_mode, op_params, prefix, Mode, OpParams,
    Params,
};
use crate::block::Block;
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphError, NodeOp, ValueId};
use crate::op::Op;

/// The gradients [`Tape::backward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    /// `∂L/∂input` for each graph input, in order.
    pub inputs: Vec<Array4<f64>>,
    /// `∂L/∂θ` for every trainable parameter (zeros for parameters the loss
    /// does not reach), by `state_dict` name.
    pub params: Params,
}

/// A recorded f64 forward of a graph (see the [`grad`](crate::grad) module docs).
#[derive(Debug, Clone)]
pub struct Tape<'g> {
    graph: &'g Graph,
    mode: Mode,
    inputs: Vec<Array4<f64>>,
    /// Per node, the input of each of its inner ops (for merge nodes none)
    /// followed by the node's output.
    stages: Vec<Vec<Array4<f64>>>,
    /// Per node, the parameter values of each inner op.
    params: Vec<Vec<OpParams>>,
    buffers: Params,
}

impl<'g> Tape<'g> {
    /// Runs `graph` in f64 on `inputs` (one NCHW batch per graph input) in
    /// `mode`. Parameter values come from `params` (by `state_dict` name,
    /// e.g. from [`Graph::parameters`] converted to f64) where present and
    /// from the ops themselves otherwise; a name in `params` that belongs to
    /// no op is an error, as is a value of the wrong shape.
    pub fn forward(
        graph: &'g Graph,
        params: &Params,
        inputs: &[Array4<f64>],
        mode: Mode,
    ) -> Result<Self> {
        if inputs.len() != graph.inputs().len() {
            return Err(GraphError::InputCount {
                expected: graph.inputs().len(),
                got: inputs.len(),
            }
            .into());
        }
        let batch = inputs.first().map_or(0, |x| x.shape()[0]);
        for (declared, x) in graph.inputs().iter().zip(inputs) {
            if batch == 0 || x.shape() != declared.shape().batched(batch) {
                return Err(GraphError::InputShape {
                    input: declared.name().to_string(),
                    expected: declared.shape(),
                    got: x.shape().to_vec(),
                }
                .into());
            }
        }
        let mut used = 0usize;
        let mut tape = Tape {
            graph,
            mode,
            inputs: inputs.to_vec(),
            stages: Vec::with_capacity(graph.nodes().len()),
            params: Vec::with_capacity(graph.nodes().len()),
            buffers: Params::new(),
        };
        for (k, node) in graph.nodes().iter().enumerate() {
            let run = |cause: Error| -> Error {
                GraphError::Run {
                    node: node.name().to_string(),
                    kind: node.kind(),
                    cause: Box::new(cause),
                }
                .into()
            };
            let args: Vec<&Array4<f64>> = node.inputs().iter().map(|&id| tape.value(id)).collect();
            let ops = inner_ops(node.op());
            let mut node_params = Vec::with_capacity(ops.len());
            let mut stages = Vec::with_capacity(ops.len() + 1);
            if ops.is_empty() {
                let y = merge::forward(node.op(), &args).map_err(run)?;
                stages.push(y);
            } else {
                let mut x = args[0].clone();
                for (i, op) in ops.iter().enumerate() {
                    let pre = prefix(node.name(), node.op(), i);
                    let mut p = op_params(op);
                    for (suffix, v) in p.iter_mut() {
                        if let Some(given) = params.get(&format!("{pre}.{suffix}")) {
                            *v = given.clone();
                            used += 1;
                        }
                    }
                    let out = forward(op, &x, &p, op_mode(mode, k, i)).map_err(run)?;
                    for (suffix, v) in out.buffers {
                        tape.buffers.insert(format!("{pre}.{suffix}"), v);
                    }
                    stages.push(std::mem::replace(&mut x, out.output));
                    node_params.push(p);
                }
                stages.push(x);
            }
            tape.stages.push(stages);
            tape.params.push(node_params);
        }
        if used != params.len() {
            let known: std::collections::BTreeSet<String> = tape.parameter_names().collect();
            let unknown = params
                .keys()
                .find(|k| !known.contains(*k))
                .cloned()
                .unwrap_or_default();
            return Err(unknown_param(unknown));
        }
        Ok(tape)
    }

    fn parameter_names(&self) -> impl Iterator<Item = String> + '_ {
        self.graph
            .nodes()
            .iter()
            .zip(&self.params)
            .flat_map(|(node, ps)| {
                ps.iter().enumerate().flat_map(move |(i, p)| {
                    let pre = prefix(node.name(), node.op(), i);
                    p.keys().map(move |s| format!("{pre}.{s}"))
                })
            })
    }

    /// The value of a graph input or node.
    pub fn value(&self, id: ValueId) -> &Array4<f64> {
        match id {
            ValueId::Input(i) => &self.inputs[i],
            ValueId::Node(i) => self.stages[i].last().expect("every node has an output"),
        }
    }

    /// The graph outputs, in order.
    pub fn outputs(&self) -> Vec<&Array4<f64>> {
        self.graph
            .outputs()
            .iter()
            .map(|&id| self.value(id))
            .collect()
    }

    /// In training mode, the updated batch-norm running statistics by
    /// `state_dict` name (`bn1.running_mean`, …); empty at inference.
    pub fn buffers(&self) -> &Params {
        &self.buffers
    }

    /// The parameter values used, by `state_dict` name (trainable and buffers).
    pub fn params(&self) -> Params {
        let mut out = Params::new();
        for (node, ps) in self.graph.nodes().iter().zip(&self.params) {
            for (i, p) in ps.iter().enumerate() {
                let pre = prefix(node.name(), node.op(), i);
                for (s, v) in p {
                    out.insert(format!("{pre}.{s}"), v.clone());
                }
            }
        }
        out
    }

    /// Back-propagates `output_grads` (one `∂L/∂output` per graph output,
    /// each of its output's shape) through the recorded forward.
    pub fn backward(&self, output_grads: &[Array4<f64>]) -> Result<Gradients> {
        let g = self.graph;
        if output_grads.len() != g.outputs().len() {
            return Err(Error::shape(
                "output gradients",
                g.outputs().len(),
                output_grads.len(),
            ));
        }
        let mut input_grads: Vec<Option<Array4<f64>>> = vec![None; self.inputs.len()];
        let mut node_grads: Vec<Option<Array4<f64>>> = vec![None; g.nodes().len()];
        let accumulate = |id: ValueId,
                          d: Array4<f64>,
                          inputs: &mut Vec<Option<Array4<f64>>>,
                          nodes: &mut Vec<Option<Array4<f64>>>| {
            let slot = match id {
                ValueId::Input(i) => &mut inputs[i],
                ValueId::Node(i) => &mut nodes[i],
            };
            match slot {
                Some(acc) => *acc += &d,
                None => *slot = Some(d),
            }
        };
        for (&id, d) in g.outputs().iter().zip(output_grads) {
            let v = self.value(id);
            if v.shape() != d.shape() {
                return Err(Error::shape(
                    format!("gradient of output `{}`", g.value_name(id)),
                    format!("{:?}", v.shape()),
                    format!("{:?}", d.shape()),
                ));
            }
            accumulate(id, d.clone(), &mut input_grads, &mut node_grads);
        }
        let mut params = Params::new();
        for (node, ps) in g.nodes().iter().zip(&self.params) {
            for (i, p) in ps.iter().enumerate() {
                let pre = prefix(node.name(), node.op(), i);
                for (s, v) in p.iter().filter(|(s, _)| is_trainable(s)) {
                    params.insert(format!("{pre}.{s}"), ArrayD::zeros(v.raw_dim()));
                }
            }
        }
        for k in (0..g.nodes().len()).rev() {
            let Some(dy) = node_grads[k].take() else {
                continue;
            };
            let node = &g.nodes()[k];
            let run = |cause: Error| -> Error {
                GraphError::Run {
                    node: node.name().to_string(),
                    kind: node.kind(),
                    cause: Box::new(cause),
                }
                .into()
            };
            let ops = inner_ops(node.op());
            let grads = if ops.is_empty() {
                let args: Vec<&Array4<f64>> =
                    node.inputs().iter().map(|&id| self.value(id)).collect();
                merge::backward(node.op(), &args, &dy).map_err(run)?
            } else {
                let mut d = dy;
                for (i, op) in ops.iter().enumerate().rev() {
                    let x = &self.stages[k][i];
                    let out = backward(op, x, &d, &self.params[k][i], op_mode(self.mode, k, i))
                        .map_err(run)?;
                    let pre = prefix(node.name(), node.op(), i);
                    for (s, gp) in out.params {
                        *params.get_mut(&format!("{pre}.{s}")).expect("listed above") += &gp;
                    }
                    d = out.input;
                }
                vec![d]
            };
            for (&id, d) in node.inputs().iter().zip(grads) {
                accumulate(id, d, &mut input_grads, &mut node_grads);
            }
        }
        let inputs = input_grads
            .into_iter()
            .zip(&self.inputs)
            .map(|(d, x)| d.unwrap_or_else(|| Array4::zeros(x.raw_dim())))
            .collect();
        Ok(Gradients { inputs, params })
    }
}

fn unknown_param(name: String) -> Error {
    Error::param(
        "parameter name",
        name,
        "the state_dict name of a parameter of the graph",
    )
}

/// `op` with the parameter values of `p` (by suffix) where given, rebuilt
/// as [`Graph::set_parameters`] rebuilds it.
fn op_with(op: &Op, pre: &str, p: &OpParams) -> Result<Op> {
    let full = op_params(op);
    let mut given = std::collections::BTreeMap::new();
    for (s, v) in p {
        match full.get(s) {
            Some(slot) if slot.shape() == v.shape() => {
                given.insert(s.as_str(), v.mapv(|x| x as f32));
            }
            Some(slot) => {
                return Err(Error::shape(
                    format!("parameter `{pre}.{s}`"),
                    format!("{:?}", slot.shape()),
                    format!("{:?}", v.shape()),
                ))
            }
            None => return Err(unknown_param(format!("{pre}.{s}"))),
        }
    }
    Ok(crate::graph::load::with_given(op, |s| given.get(s))?.unwrap_or_else(|| op.clone()))
}

/// A copy of `graph` whose parameters take the values of `params` (by
/// `state_dict` name, rounded to f32) where given — to write trained
/// weights and updated running statistics back. Errors: a name that
/// belongs to no op, a value of the wrong shape, values an op rejects
/// (non-finite, negative variance).
pub fn graph_with_params(graph: &Graph, params: &Params) -> Result<Graph> {
    let mut out = graph.clone();
    let mut used = 0usize;
    for node in graph.nodes() {
        let ops = inner_ops(node.op());
        let mut changed = false;
        let mut new_ops = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let pre = prefix(node.name(), node.op(), i);
            let mine: OpParams = op_params(op)
                .keys()
                .filter_map(|s| {
                    params
                        .get(&format!("{pre}.{s}"))
                        .map(|v| (s.clone(), v.clone()))
                })
                .collect();
            used += mine.len();
            if mine.is_empty() {
                new_ops.push(op.clone());
            } else {
                changed = true;
                new_ops.push(op_with(op, &pre, &mine)?);
            }
        }
        if changed {
            let new_op = match node.op() {
                NodeOp::Block(_) => NodeOp::Block(Block::new(new_ops)?),
                _ => NodeOp::Op(new_ops.pop().expect("one op")),
            };
            out.replace(node.name(), new_op)?;
        }
    }
    if used != params.len() {
        let names: std::collections::BTreeSet<String> = graph
            .nodes()
            .iter()
            .flat_map(|node| {
                inner_ops(node.op())
                    .iter()
                    .enumerate()
                    .flat_map(move |(i, op)| {
                        let pre = prefix(node.name(), node.op(), i);
                        op_params(op).into_keys().map(move |s| format!("{pre}.{s}"))
                    })
            })
            .collect();
        let unknown = params
            .keys()
            .find(|k| !names.contains(*k))
            .cloned()
            .unwrap_or_default();
        return Err(unknown_param(unknown));
    }
    Ok(out)
}

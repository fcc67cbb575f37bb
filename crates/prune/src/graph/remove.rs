//! Physical removal of channel units from a whole graph (survey section 6.1):
//! every producer loses output rows and biases, every batch norm and depthwise
//! convolution the matching entries, every consumer the matching input
//! columns (column blocks of `h·w` after a flatten). The graph is rebuilt with
//! [`Graph::new`], which re-infers and checks every shape, so the result is a
//! valid graph of smaller dense layers.

use std::collections::BTreeMap;

use hasten_core::graph::{NodeOp, ValueId};
use hasten_core::{Conv4d, ConvLayer, Error, Graph, LinearLayer, Op, Result};
use ndarray::Axis;

use super::groups::{role, ChannelGroups, Role, Slot};
use crate::removal::check_keep;

/// Keeps, for every group index in `keep`, only the listed units (ascending,
/// non-empty, in range) and removes the others from `graph`; groups not in
/// `keep` are left whole. `groups` must be `graph`'s analysis.
///
/// Errors: a group index out of range, a frozen group (the message gives the
/// reason), an empty, unsorted or out-of-range keep list, or a graph other
/// than the analysed one.
pub fn remove_channels(
    graph: &Graph,
    groups: &ChannelGroups,
    keep: &BTreeMap<usize, Vec<usize>>,
) -> Result<Graph> {
    groups.check_graph(graph)?;
    let mut kept: Vec<Vec<bool>> = groups
        .groups()
        .iter()
        .map(|g| vec![true; g.channels])
        .collect();
    for (&g, units) in keep {
        let group = groups
            .groups()
            .get(g)
            .ok_or_else(|| Error::param("channel group", g, format!("< {}", groups.len())))?;
        check_keep(units, group.channels)?;
        if let Some(reason) = &group.frozen {
            if units.len() == group.channels {
                continue;
            }
            return Err(Error::unsupported(
                "channel removal",
                format!("group `{}`, whose channels are {reason}", group.name()),
            ));
        }
        kept[g].fill(false);
        for &u in units {
            kept[g][u] = true;
        }
    }
    let is_kept = |slot: &Slot| slot.is_none_or(|(g, u)| kept[g][u]);
    let kept_of = |slots: &[Slot]| -> Vec<usize> {
        (0..slots.len()).filter(|&c| is_kept(&slots[c])).collect()
    };
    let (inputs, mut defs, outputs) = graph.to_defs();
    for (j, node) in graph.nodes().iter().enumerate() {
        let out = kept_of(&groups.node_slots[j]);
        let input = node.inputs().first().copied();
        let in_slots = input.map_or(&[][..], |v: ValueId| groups.slots(v));
        let ins = kept_of(in_slots);
        let unchanged = out.len() == node.output_shape().channels && ins.len() == in_slots.len();
        if unchanged {
            continue;
        }
        let op = match (role(node.op()), node.op()) {
            (Role::Producer, NodeOp::Op(Op::Conv(c))) => {
                let w = c.weight().array().select(Axis(0), &out);
                let w = w.select(Axis(1), &ins);
                let bias = c.bias().map(|b| b.select(Axis(0), &out));
                NodeOp::Op(ConvLayer::new(Conv4d::new(w)?, bias, *c.spec())?.into())
            }
            (Role::Producer, NodeOp::Op(Op::Linear(l))) => {
                let area = node.input_shapes()[0].area();
                let cols: Vec<usize> = ins.iter().flat_map(|&c| c * area..(c + 1) * area).collect();
                let w = l.weight().select(Axis(0), &out).select(Axis(1), &cols);
                let bias = l.bias().map(|b| b.select(Axis(0), &out));
                NodeOp::Op(LinearLayer::new(w, bias)?.into())
            }
            (Role::Depthwise(_), NodeOp::Op(Op::Conv(c))) => {
                let w = c.weight().array().select(Axis(0), &out);
                let bias = c.bias().map(|b| b.select(Axis(0), &out));
                let spec = c.spec().with_groups(ins.len());
                NodeOp::Op(ConvLayer::new(Conv4d::new(w)?, bias, spec)?.into())
            }
            (Role::BatchNorm, NodeOp::Op(Op::BatchNorm(bn))) => NodeOp::Op(bn.select(&out)?.into()),
            (Role::PassThrough, _) => continue,
            (_, op) => {
                // Barriers freeze their inputs and outputs, so they never
                // reach here; anything else is a bug worth a typed error.
                return Err(Error::unsupported(
                    "channel removal",
                    format!("node `{}` ({})", node.name(), op.kind()),
                ));
            }
        };
        defs[j].op = op;
    }
    Graph::new(inputs, defs, outputs)
}

/// [`remove_channels`] keyed by a producer's node name instead of a group
/// index: for each `(node, units)`, the units of `node`'s group to keep.
/// An unknown node is a [`hasten_core::GraphError::UnknownNode`].
pub fn remove_channels_by_name(
    graph: &Graph,
    groups: &ChannelGroups,
    keep: &[(&str, Vec<usize>)],
) -> Result<Graph> {
    let mut plan = BTreeMap::new();
    for (node, units) in keep {
        let g = groups.group_of(node)?;
        if plan.insert(g, units.clone()).is_some() {
            return Err(Error::param(
                "pruned node",
                *node,
                "one entry per channel group (another listed node shares its group)",
            ));
        }
    }
    remove_channels(graph, groups, &plan)
}

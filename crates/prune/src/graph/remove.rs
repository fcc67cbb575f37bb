//! Physical removal of channel units from a whole graph (survey section 6.1):
//! every producer loses output rows and biases, every batch norm and depthwise
//! convolution the matching entries, every consumer the matching input
//! columns (column blocks of `h·w` after a flatten). The graph is rebuilt with
//! [`Graph::new`], which re-infers and checks every shape, so the result is a
//! valid graph of smaller dense layers.
//!
//! [`remove_channels_compensated`] also replaces each removed channel by its
//! mean on calibration data ([`consumer_input_means`]): every dense consumer
//! adds `Σ W[:, c] · mean(c)` over its removed input channels to its bias
//! (exact for a channel that is constant on the plane and a consumer that
//! reads no padding) — what the network loses otherwise when a removed
//! filter's bias, not its weights, carries its output, as after batch-norm
//! folding.

use std::collections::{BTreeMap, HashMap};

use hasten_core::graph::{NodeOp, ValueId};
use hasten_core::{Conv4d, ConvLayer, Error, Graph, LinearLayer, Op, Result};
use ndarray::{Array1, Array4, Axis};

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
    remove(graph, groups, keep, None)
}

/// The mean of every dense consumer's input on `data` (one NCHW batch per
/// graph input), by consumer node name: per channel over the batch and the
/// plane for a convolution, per element of the flattened sample over the
/// batch for a linear layer — what [`remove_channels_compensated`] puts in
/// place of removed channels.
///
/// Errors: as [`Graph::reference_trace`].
pub fn consumer_input_means(
    graph: &Graph,
    groups: &ChannelGroups,
    data: &[&Array4<f32>],
) -> Result<HashMap<String, Array1<f64>>> {
    groups.check_graph(graph)?;
    let mut consumers: Vec<&str> = groups
        .groups()
        .iter()
        .flat_map(|g| g.consumers.iter().map(String::as_str))
        .collect();
    consumers.sort_unstable();
    consumers.dedup();
    let values: Vec<(&str, &str, bool)> = consumers
        .iter()
        .filter_map(|&name| {
            let node = graph.node(name)?;
            let linear = matches!(node.op(), NodeOp::Op(Op::Linear(_)));
            Some((name, graph.value_name(*node.inputs().first()?), linear))
        })
        .collect();
    let names: Vec<&str> = values.iter().map(|v| v.1).collect();
    let trace = graph.reference_trace(data, &names)?;
    let mut means = HashMap::new();
    for (node, value, linear) in values {
        let x = trace.captured.get(value).ok_or_else(|| {
            Error::unsupported("input means", format!("value `{value}` not captured"))
        })?;
        let (n, c, h, w) = x.dim();
        let mean = if linear {
            let flat = x
                .to_shape((n, c * h * w))
                .map_err(|e| Error::shape("flattened input", format!("{n}x{}", c * h * w), e))?;
            flat.mapv(f64::from).mean_axis(Axis(0))
        } else {
            let per: Vec<f64> = (0..c)
                .map(|ch| {
                    let v = x.index_axis(Axis(1), ch);
                    v.iter().map(|&a| f64::from(a)).sum::<f64>() / (n * h * w).max(1) as f64
                })
                .collect();
            Some(Array1::from(per))
        };
        means.insert(
            node.to_string(),
            mean.ok_or_else(|| Error::shape("input batch", "at least one sample", 0))?,
        );
    }
    Ok(means)
}

/// [`remove_channels`], each removed channel replaced by its mean: every
/// dense consumer of removed channels adds `Σ_c W[:, c] · means[c]` (summed
/// over the kernel for a convolution, over the column block for a linear
/// layer after a flatten) to its bias. `means` is
/// [`consumer_input_means`]'s (a consumer without an entry gets none).
///
/// Errors: as [`remove_channels`]; a mean vector of the wrong length.
pub fn remove_channels_compensated(
    graph: &Graph,
    groups: &ChannelGroups,
    keep: &BTreeMap<usize, Vec<usize>>,
    means: &HashMap<String, Array1<f64>>,
) -> Result<Graph> {
    remove(graph, groups, keep, Some(means))
}

/// `bias` (zeros where absent) plus the contribution of the input columns
/// `removed` of `w` (rows `out` kept, `[T, C, k]` with the kernel or column
/// block flattened into `k` entries per channel) at the values `mean`.
fn compensated_bias(
    node: &str,
    w: ndarray::ArrayView3<f32>,
    bias: Option<&Array1<f32>>,
    out: &[usize],
    removed: &[usize],
    mean: &Array1<f64>,
) -> Result<Array1<f32>> {
    let (_, c, k) = w.dim();
    if mean.len() != c * k && mean.len() != c {
        return Err(Error::shape(
            format!("input means of `{node}`"),
            c,
            mean.len(),
        ));
    }
    let per_entry = mean.len() == c * k;
    Ok(out
        .iter()
        .map(|&t| {
            let extra: f64 = removed
                .iter()
                .map(|&ch| {
                    (0..k)
                        .map(|e| {
                            let m = if per_entry {
                                mean[ch * k + e]
                            } else {
                                mean[ch]
                            };
                            f64::from(w[[t, ch, e]]) * m
                        })
                        .sum::<f64>()
                })
                .sum();
            (f64::from(bias.map_or(0.0, |b| b[t])) + extra) as f32
        })
        .collect())
}

fn remove(
    graph: &Graph,
    groups: &ChannelGroups,
    keep: &BTreeMap<usize, Vec<usize>>,
    means: Option<&HashMap<String, Array1<f64>>>,
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
        let removed: Vec<usize> = (0..in_slots.len())
            .filter(|c| !is_kept(&in_slots[*c]))
            .collect();
        let mean = means
            .and_then(|m| m.get(node.name()))
            .filter(|_| !removed.is_empty());
        let op = match (role(node.op()), node.op()) {
            (Role::Producer, NodeOp::Op(Op::Conv(c))) => {
                let all = c.weight().array();
                let mut bias = c.bias().map(|b| b.select(Axis(0), &out));
                if let Some(mean) = mean {
                    // A producer is a dense convolution (groups = 1).
                    let (t, ch, kh, kw) = all.dim();
                    let flat = all
                        .to_shape((t, ch, kh * kw))
                        .map_err(|e| Error::shape("kernel", format!("{t}x{ch}x{}", kh * kw), e))?;
                    bias = Some(compensated_bias(
                        node.name(),
                        flat.view(),
                        c.bias(),
                        &out,
                        &removed,
                        mean,
                    )?);
                }
                let w = all.select(Axis(0), &out).select(Axis(1), &ins);
                NodeOp::Op(ConvLayer::new(Conv4d::new(w)?, bias, *c.spec())?.into())
            }
            (Role::Producer, NodeOp::Op(Op::Linear(l))) => {
                let area = node.input_shapes()[0].area();
                let cols: Vec<usize> = ins.iter().flat_map(|&c| c * area..(c + 1) * area).collect();
                let mut bias = l.bias().map(|b| b.select(Axis(0), &out));
                if let Some(mean) = mean {
                    let (t, j) = l.weight().dim();
                    let blocks = l
                        .weight()
                        .to_shape((t, j / area.max(1), area))
                        .map_err(|e| Error::shape("column blocks", format!("{t}x{j}"), e))?;
                    bias = Some(compensated_bias(
                        node.name(),
                        blocks.view(),
                        l.bias(),
                        &out,
                        &removed,
                        mean,
                    )?);
                }
                let w = l.weight().select(Axis(0), &out).select(Axis(1), &cols);
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

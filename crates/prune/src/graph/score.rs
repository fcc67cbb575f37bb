//! Importance of each channel unit of each [`ChannelGroup`] (survey section
//! 6.2): a unit's score is the sum, over the producers it ties, of the
//! criterion on that producer's channel — the magnitude of its filter
//! (eq. (14)), or the energy (eq. (15)) or APoZ \[73\] of its output channel on
//! calibration data captured with [`Graph::reference_trace`].

use hasten_core::graph::NodeOp;
use hasten_core::{Conv4d, Error, Graph, Op, Result};
use ndarray::{Array4, Axis};

use super::groups::{ChannelGroup, ChannelGroups};
use crate::criteria::{activation_energy, apoz_scores, magnitude, Norm};
use crate::slice::Slicing;

/// A per-channel criterion for graph pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCriterion {
    /// Norm of each producer filter (or linear row), eq. (14); data-free.
    Magnitude(Norm),
    /// Mean energy of each producer output channel, eq. (15).
    ActivationEnergy,
    /// `1 − APoZ` of each producer output channel (values ≤ 0 count as the
    /// zeros a ReLU would make), Hu et al. \[73\].
    Apoz,
}

impl GroupCriterion {
    /// Whether the criterion needs calibration inputs.
    pub fn needs_data(&self) -> bool {
        !matches!(self, GroupCriterion::Magnitude(_))
    }
}

/// One score per unit of every group of `groups` (`graph`'s analysis),
/// higher = more important. `data` holds one NCHW batch per graph input and
/// is required by the data-driven criteria.
pub fn group_scores(
    graph: &Graph,
    groups: &ChannelGroups,
    criterion: GroupCriterion,
    data: Option<&[&Array4<f32>]>,
) -> Result<Vec<Vec<f64>>> {
    groups.check_graph(graph)?;
    match criterion {
        GroupCriterion::Magnitude(norm) => {
            group_scores_with(graph, groups, |j| filter_magnitude(graph, j, norm))
        }
        GroupCriterion::ActivationEnergy | GroupCriterion::Apoz => {
            let data = data.ok_or_else(|| {
                Error::param(
                    "calibration inputs",
                    "none",
                    "one NCHW batch per graph input for a data-driven criterion",
                )
            })?;
            let names: Vec<&str> = groups
                .groups()
                .iter()
                .flat_map(|g| g.producers.iter().map(String::as_str))
                .collect();
            let trace = graph.reference_trace(data, &names)?;
            group_scores_with(graph, groups, |j| {
                let acts = &trace.captured[graph.nodes()[j].name()];
                match criterion {
                    GroupCriterion::Apoz => apoz_scores(acts),
                    _ => activation_energy(acts),
                }
            })
        }
    }
}

/// One score per unit of every group, from any per-channel criterion of the
/// producers: `scorer(j)` returns one score per output channel of producer
/// node `j` (an index into `graph.nodes()`), e.g. first-order Taylor scores
/// (eq. (17), [`crate::criteria::taylor()`]) from the caller's activations and
/// gradients. Each unit scores the sum over its producers.
pub fn group_scores_with(
    graph: &Graph,
    groups: &ChannelGroups,
    mut scorer: impl FnMut(usize) -> Result<Vec<f64>>,
) -> Result<Vec<Vec<f64>>> {
    groups.check_graph(graph)?;
    let mut per_node: Vec<Option<Vec<f64>>> = vec![None; graph.nodes().len()];
    for g in groups.groups() {
        for &j in &g.producer_nodes {
            let node = &graph.nodes()[j];
            let s = scorer(j)?;
            if s.len() != node.output_shape().channels {
                return Err(Error::shape(
                    format!("channel scores of `{}`", node.name()),
                    node.output_shape().channels,
                    s.len(),
                ));
            }
            hasten_core::error::ensure_finite("channel scores", s.iter())?;
            per_node[j] = Some(s);
        }
    }
    Ok(groups
        .groups()
        .iter()
        .map(|g| unit_sums(g, &per_node))
        .collect())
}

/// Sums the producers' channel scores over each unit of `group`.
fn unit_sums(group: &ChannelGroup, per_node: &[Option<Vec<f64>>]) -> Vec<f64> {
    group
        .units
        .iter()
        .map(|unit| {
            unit.iter()
                .map(|&(j, t)| per_node[j].as_ref().map_or(0.0, |s| s[t]))
                .sum()
        })
        .collect()
}

/// The norm of each filter of producer `j` (a linear layer's rows are
/// `1×1` filters).
fn filter_magnitude(graph: &Graph, j: usize, norm: Norm) -> Result<Vec<f64>> {
    match graph.nodes()[j].op() {
        NodeOp::Op(Op::Conv(c)) => Ok(magnitude(c.weight(), Slicing::Filter, norm)),
        NodeOp::Op(Op::Linear(l)) => {
            let w = l.weight().clone().insert_axis(Axis(2)).insert_axis(Axis(3));
            Ok(magnitude(&Conv4d::new(w)?, Slicing::Filter, norm))
        }
        op => Err(Error::unsupported(
            "filter magnitude",
            format!("node `{}` ({})", graph.nodes()[j].name(), op.kind()),
        )),
    }
}

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
    let producers: Vec<usize> = groups
        .groups()
        .iter()
        .flat_map(|g| g.producer_nodes.iter().copied())
        .collect();
    // Per node index, the producer's per-channel score.
    let mut per_node: Vec<Option<Vec<f64>>> = vec![None; graph.nodes().len()];
    match criterion {
        GroupCriterion::Magnitude(norm) => {
            for &j in &producers {
                per_node[j] = Some(filter_magnitude(graph, j, norm)?);
            }
        }
        GroupCriterion::ActivationEnergy | GroupCriterion::Apoz => {
            let data = data.ok_or_else(|| {
                Error::param(
                    "calibration inputs",
                    "none",
                    "one NCHW batch per graph input for a data-driven criterion",
                )
            })?;
            let names: Vec<&str> = producers.iter().map(|&j| graph.nodes()[j].name()).collect();
            let trace = graph.reference_trace(data, &names)?;
            for (&j, name) in producers.iter().zip(&names) {
                let acts = &trace.captured[*name];
                per_node[j] = Some(match criterion {
                    GroupCriterion::Apoz => apoz_scores(acts)?,
                    _ => activation_energy(acts)?,
                });
            }
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

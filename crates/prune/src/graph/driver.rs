//! The graph pruning driver (survey section 6, "score → remove the least
//! important"): keeps the best-scored units of every prunable
//! [`super::ChannelGroup`] so that a target is met, and physically removes the
//! rest with [`remove_channels`].
//!
//! - [`GraphTarget::PerGroup`] removes the same fraction of every group;
//! - [`GraphTarget::Global`] ranks all units together on per-group
//!   L2-normalised scores (Molchanov et al. \[71\]) and removes that fraction
//!   of all prunable units;
//! - [`GraphTarget::Macs`] removes the smallest common per-group fraction
//!   whose pruned graph has at most `(1 − f)` of the MACs ("half the MACs":
//!   `Macs(0.5)`), measured with [`Graph::cost`] on the pruned graph itself.
//!
//! Kept counts are rounded up to a multiple (8, 16, …; a group's full width
//! also qualifies) and a group never loses every channel. When a MAC target
//! cannot be met the driver prunes as far as it can; the report says what
//! was achieved.

use std::collections::{BTreeMap, HashMap};

use hasten_core::{Cost, Error, Graph, Result};

use super::groups::ChannelGroups;
use super::remove::remove_channels;
use crate::select::{keep_count, l2_normalise, round_up_to, top_k};

/// What to prune, as a fraction removed in `(0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GraphTarget {
    /// This fraction of the units of every prunable group.
    PerGroup(f64),
    /// This fraction of all prunable units, ranked globally.
    Global(f64),
    /// This fraction of the graph's MACs.
    Macs(f64),
}

/// Settings of [`prune_graph`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphPruneConfig {
    /// What to reduce and by how much.
    pub target: GraphTarget,
    /// Kept counts are rounded up to a multiple of this (1 = no rounding).
    pub multiple: usize,
}

/// What happened to one group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupReport {
    /// The group's name (its first producer).
    pub name: String,
    /// The kept units (ascending, numbering of the unpruned graph).
    pub kept: Vec<usize>,
    /// Units before pruning.
    pub total: usize,
    /// MACs per sample of every node the group touches, before.
    pub macs_before: u64,
    /// The same nodes' MACs after.
    pub macs_after: u64,
}

/// What [`prune_graph`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphPruneReport {
    /// One entry per group of the analysis, frozen ones included (whole).
    pub groups: Vec<GroupReport>,
    /// Whole-graph cost per sample before.
    pub before: Cost,
    /// Whole-graph cost per sample after.
    pub after: Cost,
}

impl GraphPruneReport {
    /// Whole-graph `MACs before / MACs after`.
    pub fn mac_speedup(&self) -> f64 {
        self.before.macs as f64 / self.after.macs.max(1) as f64
    }
}

/// Prunes `graph` (analysed as `groups`) by `config`, ranking each group's
/// units by `scores` (one per unit, as [`super::group_scores`] returns).
///
/// # Errors
/// [`Error::InvalidParameter`] for a target outside `(0, 1)` or a multiple of
/// 0, [`Error::ShapeMismatch`] or [`Error::NonFinite`] for scores of the
/// wrong shape or not finite, and an error for a graph other than the
/// analysed one.
///
/// ```
/// use hasten_models::{lenet5, ModelConfig};
/// use hasten_prune::criteria::Norm;
/// use hasten_prune::graph::{group_scores, prune_graph, ChannelGroups, GraphPruneConfig, GraphTarget, GroupCriterion};
///
/// let graph = lenet5(&ModelConfig::mnist())?;
/// let groups = ChannelGroups::analyze(&graph)?;
/// let scores = group_scores(&graph, &groups, GroupCriterion::Magnitude(Norm::L2), None)?;
/// let config = GraphPruneConfig { target: GraphTarget::PerGroup(0.5), multiple: 1 };
/// let (pruned, report) = prune_graph(&graph, &groups, &scores, &config)?;
/// assert_eq!(pruned.output_shapes(), graph.output_shapes());
/// assert!(report.mac_speedup() > 1.5);
/// let bad = GraphPruneConfig { target: GraphTarget::PerGroup(1.0), multiple: 1 };
/// assert!(prune_graph(&graph, &groups, &scores, &bad).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn prune_graph(
    graph: &Graph,
    groups: &ChannelGroups,
    scores: &[Vec<f64>],
    config: &GraphPruneConfig,
) -> Result<(Graph, GraphPruneReport)> {
    let fraction = match config.target {
        GraphTarget::PerGroup(f) | GraphTarget::Global(f) | GraphTarget::Macs(f) => f,
    };
    if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
        return Err(Error::param("pruning target", fraction, "in (0, 1)"));
    }
    if config.multiple == 0 {
        return Err(Error::param("channel multiple", 0, ">= 1"));
    }
    groups.check_graph(graph)?;
    if scores.len() != groups.len() {
        return Err(Error::shape("group scores", groups.len(), scores.len()));
    }
    for (g, (s, group)) in scores.iter().zip(groups.groups()).enumerate() {
        if s.len() != group.channels {
            return Err(Error::shape(
                format!("scores of group {g} (`{}`)", group.name()),
                group.channels,
                s.len(),
            ));
        }
        hasten_core::error::ensure_finite("group scores", s.iter())?;
    }
    let prunable = groups.prunable();
    let sizes: Vec<usize> = groups.groups().iter().map(|g| g.channels).collect();
    let rounded = |g: usize, k: usize| round_up_to(k, config.multiple, sizes[g]);
    let per_group = |p: f64| -> Result<Vec<usize>> {
        prunable
            .iter()
            .map(|&g| rounded(g, keep_count(sizes[g], p)?))
            .collect()
    };
    let plan_for = |counts: &[usize]| -> Result<BTreeMap<usize, Vec<usize>>> {
        prunable
            .iter()
            .zip(counts)
            .map(|(&g, &k)| Ok((g, top_k(&scores[g], k)?)))
            .collect()
    };
    let counts = match config.target {
        GraphTarget::PerGroup(f) => per_group(f)?,
        GraphTarget::Global(f) => global_counts(&prunable, scores, f, &rounded)?,
        GraphTarget::Macs(f) => {
            let goal = (1.0 - f) * graph.cost()?.macs as f64;
            let mut cache: HashMap<Vec<usize>, f64> = HashMap::new();
            let mut macs = |p: f64| -> Result<(f64, Vec<usize>)> {
                let counts = per_group(p)?;
                if let Some(&m) = cache.get(&counts) {
                    return Ok((m, counts));
                }
                let pruned = remove_channels(graph, groups, &plan_for(&counts)?)?;
                let m = pruned.cost()?.macs as f64;
                cache.insert(counts.clone(), m);
                Ok((m, counts))
            };
            // The smallest common fraction whose pruned graph meets the goal.
            let (mut lo, mut hi) = (0.0f64, 1.0 - 1e-9);
            for _ in 0..40 {
                let mid = 0.5 * (lo + hi);
                if macs(mid)?.0 <= goal {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            macs(hi)?.1
        }
    };
    let plan = plan_for(&counts)?;
    let pruned = remove_channels(graph, groups, &plan)?;
    let report = GraphPruneReport {
        groups: groups
            .groups()
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let touched = |net: &Graph| -> Result<u64> {
                    net.nodes()
                        .iter()
                        .filter(|n| group.touches(n.name()))
                        .try_fold(0u64, |acc, n| Ok(acc + n.cost()?.macs))
                };
                Ok(GroupReport {
                    name: group.name().to_string(),
                    kept: plan
                        .get(&g)
                        .cloned()
                        .unwrap_or_else(|| (0..group.channels).collect()),
                    total: group.channels,
                    macs_before: touched(graph)?,
                    macs_after: touched(&pruned)?,
                })
            })
            .collect::<Result<_>>()?,
        before: graph.cost()?,
        after: pruned.cost()?,
    };
    Ok((pruned, report))
}

/// Global ranking: removes units in increasing order of L2-normalised score
/// (never a group's last unit) until `fraction` of all prunable units are
/// gone, then rounds each group's count up to the multiple.
fn global_counts(
    prunable: &[usize],
    scores: &[Vec<f64>],
    fraction: f64,
    rounded: &dyn Fn(usize, usize) -> Result<usize>,
) -> Result<Vec<usize>> {
    let mut cand: Vec<(f64, usize)> = Vec::new();
    for (slot, &g) in prunable.iter().enumerate() {
        cand.extend(l2_normalise(&scores[g]).into_iter().map(|s| (s, slot)));
    }
    cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut counts: Vec<usize> = prunable.iter().map(|&g| scores[g].len()).collect();
    let goal = (fraction * cand.len() as f64).floor() as usize;
    let mut removed = 0;
    for &(_, slot) in &cand {
        if removed >= goal {
            break;
        }
        if counts[slot] > 1 {
            counts[slot] -= 1;
            removed += 1;
        }
    }
    prunable
        .iter()
        .zip(&counts)
        .map(|(&g, &k)| rounded(g, k))
        .collect()
}

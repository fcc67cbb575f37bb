//! The graph-level step [`Method::PruneChannels`]: dependency-aware channel
//! pruning (`hasten_prune::graph`) restricted to the channel groups whose
//! producers a step selects, reported per node like a per-layer transform.

use hasten_core::graph::{GraphReport, NodeFilter, NodeReport};
use hasten_core::{Graph, Report};
use hasten_prune::criteria::Norm;
use hasten_prune::graph::{
    consumer_input_means, group_scores, prune_graph, remove_channels_compensated, ChannelGroups,
    GraphPruneConfig, GraphTarget, GroupCriterion,
};

use hasten_core::ndarray::Array4;

use super::method::{ChannelCriterion, Method, PruneTarget};

/// Prunes the channel groups of `graph` one of whose producers `filter`
/// selects, as `method` (a [`Method::PruneChannels`]) says; the activation
/// criteria score the channels on `calibration` (one NCHW batch for the
/// graph's single input), which they require, and so does `compensate`
/// (removed channels replaced by their means there). Every node whose
/// MACs, parameters or weight bytes changed gets a row (activations and
/// pooling, which only carry fewer channels, get none); the weight error is not defined for removed
/// channels and stays `None`. Errors are messages for the step's error.
pub(super) fn prune_channels(
    graph: &Graph,
    filter: &NodeFilter,
    method: &Method,
    calibration: Option<&Array4<f32>>,
) -> std::result::Result<(Graph, GraphReport), String> {
    let Method::PruneChannels {
        target,
        fraction,
        multiple,
        criterion,
        compensate,
    } = method
    else {
        return Err(format!("{} is not a graph-level method", method.name()));
    };
    let err = |e: hasten_core::Error| e.to_string();
    let selected: Vec<&str> = filter
        .select(graph)
        .into_iter()
        .map(|i| graph.nodes()[i].name())
        .collect();
    let mut groups = ChannelGroups::analyze(graph).map_err(err)?;
    let prunable = groups.freeze_unless(
        |g| g.producers.iter().any(|p| selected.contains(&p.as_str())),
        "no producer selected by the recipe step",
    );
    if prunable == 0 {
        return Err(format!(
            "the selection ({filter}) ties no prunable channel group \
             (channels reaching the graph's output or unsupported ops cannot be removed)"
        ));
    }
    let criterion = match criterion {
        ChannelCriterion::L1 => GroupCriterion::Magnitude(Norm::L1),
        ChannelCriterion::L2 => GroupCriterion::Magnitude(Norm::L2),
        ChannelCriterion::Energy => GroupCriterion::ActivationEnergy,
        ChannelCriterion::Apoz => GroupCriterion::Apoz,
    };
    let data = match (criterion.needs_data(), calibration) {
        (true, None) => {
            return Err(
                "the activation criteria (energy, apoz) score channels on calibration data, \
                 and none was given"
                    .into(),
            )
        }
        (true, Some(batch)) => Some([batch]),
        (false, _) => None,
    };
    let scores = group_scores(
        graph,
        &groups,
        criterion,
        data.as_ref().map(|d| d.as_slice()),
    )
    .map_err(err)?;
    let config = GraphPruneConfig {
        target: match target {
            PruneTarget::Macs => GraphTarget::Macs(*fraction),
            PruneTarget::PerGroup => GraphTarget::PerGroup(*fraction),
            PruneTarget::Global => GraphTarget::Global(*fraction),
        },
        multiple: *multiple,
    };
    let (mut pruned, pruning) = prune_graph(graph, &groups, &scores, &config).map_err(err)?;
    if *compensate {
        let batch = calibration.ok_or(
            "compensate replaces removed channels by their means on calibration data, \
             and none was given",
        )?;
        let means = consumer_input_means(graph, &groups, &[batch]).map_err(err)?;
        let keep = pruning
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.kept.len() < g.total)
            .map(|(i, g)| (i, g.kept.clone()))
            .collect();
        pruned = remove_channels_compensated(graph, &groups, &keep, &means).map_err(err)?;
    }
    let mut nodes = Vec::new();
    for old in graph.nodes() {
        let new = pruned
            .node(old.name())
            .ok_or_else(|| format!("node {} lost in pruning", old.name()))?;
        let (before, after) = (old.cost().map_err(err)?, new.cost().map_err(err)?);
        let counted = |c: &hasten_core::Cost| (c.macs, c.params, c.weight_bytes);
        if counted(&before) != counted(&after) {
            nodes.push(NodeReport {
                node: old.name().to_string(),
                report: Report {
                    method: method.name().to_string(),
                    input: new
                        .input_shapes()
                        .first()
                        .copied()
                        .ok_or_else(|| format!("node {} has no input", new.name()))?,
                    before,
                    after,
                    weight_error: None,
                },
            });
        }
    }
    Ok((
        pruned,
        GraphReport {
            method: method.name().to_string(),
            nodes,
            skipped: Vec::new(),
            before: pruning.before,
            after: pruning.after,
        },
    ))
}

//! The data-driven decomposition step: asymmetric reconstruction (Zhang et
//! al. \[23\], survey section 2). The selected convolutions are
//! approximated one after another in topological order; each is fitted on
//! patches of the input the *already approximated* graph feeds it and on the
//! *original* graph's responses at the same positions, so earlier errors are
//! compensated rather than accumulated.

use hasten_core::graph::{GraphReport, NodeFilter, NodeOp};
use hasten_core::ndarray::Array4;
use hasten_core::{Graph, Op};
use hasten_tensor_decomp::asymmetric::{layer_responses, sample_patches};
use hasten_tensor_decomp::{AsymmetricReconstruction, RankSpec};

use super::selection::plain_layers;

/// Asymmetric reconstruction of every plain convolution `filter` selects,
/// at `rank`, each from `samples` patches (seeded positions) of its input
/// on `batch`; `nonlinear` fits the ReLU-aware solution. Other nodes are
/// skipped; a block an earlier step produced is an error. Errors are
/// messages for the step's error.
pub(super) fn asymmetric(
    graph: &Graph,
    filter: &NodeFilter,
    batch: &Array4<f32>,
    rank: RankSpec,
    nonlinear: bool,
    samples: usize,
    seed: u64,
) -> std::result::Result<(Graph, GraphReport), String> {
    let err = |e: hasten_core::Error| e.to_string();
    let (nodes, skipped) = plain_layers(
        graph,
        filter,
        |kind| kind == "conv",
        "asymmetric reconstruction fits plain convolutions",
        "convolution to reconstruct",
    )?;
    let convs: Vec<_> = nodes
        .into_iter()
        .filter_map(|node| match node.op() {
            NodeOp::Op(Op::Conv(layer)) => Some((node, layer)),
            _ => None,
        })
        .collect();
    let inputs: Vec<&str> = convs
        .iter()
        .map(|(n, _)| graph.value_name(n.inputs()[0]))
        .collect();
    let original = graph.reference_trace(&[batch], &inputs).map_err(err)?;
    let before = graph.cost().map_err(err)?;
    let mut next = graph.clone();
    let mut nodes = Vec::with_capacity(convs.len());
    for ((node, layer), input) in convs.iter().zip(&inputs) {
        let x = &original.captured[*input];
        let patches = sample_patches(layer, x, samples, seed).map_err(err)?;
        let targets = layer_responses(layer, patches.view()).map_err(err)?;
        let approximated = if nodes.is_empty() {
            patches
        } else {
            let trace = next.reference_trace(&[batch], &[input]).map_err(err)?;
            sample_patches(layer, &trace.captured[*input], samples, seed).map_err(err)?
        };
        let transform =
            AsymmetricReconstruction::new(rank, approximated, targets).nonlinear(nonlinear);
        let name = node.name().to_string();
        let only = NodeFilter::predicate(&format!("name {name}"), move |n| n.name() == name);
        let report = next.apply_transform(&transform, &only).map_err(err)?;
        nodes.extend(report.nodes);
    }
    let after = next.cost().map_err(err)?;
    Ok((
        next,
        GraphReport {
            method: "asymmetric".into(),
            nodes,
            skipped,
            before,
            after,
        },
    ))
}

//! Planted structure in the model zoo's networks: channels set to exact zeros
//! (filters, biases and the batch-norm `γ`, `β` of every node the group lists)
//! are removed, and the pruned graph computes what the planted one does.

use std::collections::BTreeMap;

use hasten_core::{Graph, SeededRng};
use hasten_models::{by_name, small_mobilenet, ModelConfig};

use super::support::{batch, complement, forward_error, plant};
use crate::criteria::Norm;
use crate::graph::{
    group_scores, prune_graph, remove_channels, ChannelGroups, GraphPruneConfig, GraphTarget,
    GroupCriterion,
};

fn model(name: &str) -> Graph {
    let config = ModelConfig::mnist().with_seed(3);
    let config = if name == "lenet5" {
        config
    } else {
        config.with_random_batch_norm()
    };
    by_name(name, &config).unwrap()
}

#[test]
fn planted_zero_channels_are_removed_exactly() {
    for name in ["resnet8", "small_vgg", "small_mobilenet", "lenet5"] {
        let g = model(name);
        let groups = ChannelGroups::analyze(&g).unwrap();
        assert!(!groups.prunable().is_empty(), "{name}");
        let mut plan = BTreeMap::new();
        let mut zeros: Vec<(&str, Vec<usize>)> = Vec::new();
        for gi in groups.prunable() {
            let group = &groups.groups()[gi];
            let drop: Vec<usize> = (0..group.channels).filter(|u| u % 3 == 1).collect();
            // No concatenations in these networks: every unit is one channel
            // index `t`, the same in every producer, batch norm and depthwise
            // convolution of the group.
            for u in 0..group.channels {
                assert!(
                    group.unit(u).unwrap().iter().all(|&(_, t)| t == u),
                    "{name}"
                );
            }
            for node in group.producers.iter().chain(&group.channel_wise) {
                zeros.push((node.as_str(), drop.clone()));
            }
            plan.insert(gi, complement(&drop, group.channels));
        }
        let pruned = remove_channels(&g, &groups, &plan).unwrap();
        let planted = plant(&g, &zeros);
        let x = batch(&mut SeededRng::new(1), g.inputs()[0].shape(), 2);
        let err = forward_error(&planted, &pruned, &x);
        assert!(err < 1e-5, "{name}: relative error {err}");
        assert!(
            forward_error(&g, &planted, &x) > 1e-3,
            "{name}: planting changed nothing"
        );
        let (before, after) = (g.cost().unwrap(), pruned.cost().unwrap());
        assert!(
            after.macs < before.macs && after.params < before.params,
            "{name}"
        );
    }
}

#[test]
fn resnet8_groups_follow_its_residual_stages() {
    let g = model("resnet8");
    let groups = ChannelGroups::analyze(&g).unwrap();
    let stage1 = &groups.groups()[groups.group_of("conv1").unwrap()];
    assert_eq!(stage1.producers, ["conv1", "layer1.0.conv2"]);
    let stage2 = groups.group_of("layer2.0.conv2").unwrap();
    assert_eq!(groups.group_of("layer2.0.downsample.0").unwrap(), stage2);
    assert!(groups.groups()[stage2]
        .channel_wise
        .contains(&"layer2.0.downsample.1".to_string()));
    assert_ne!(groups.group_of("layer1.0.conv1").unwrap(), stage2);
    let fc = &groups.groups()[groups.group_of("fc").unwrap()];
    assert!(fc.frozen.is_some());
}

#[test]
fn halving_every_group_of_small_mobilenet_costs_what_the_half_width_network_costs() {
    let g = small_mobilenet(&ModelConfig::mnist()).unwrap();
    let half = small_mobilenet(&ModelConfig::mnist().with_width_multiplier(0.5)).unwrap();
    let groups = ChannelGroups::analyze(&g).unwrap();
    let scores = group_scores(&g, &groups, GroupCriterion::Magnitude(Norm::L1), None).unwrap();
    let config = GraphPruneConfig {
        target: GraphTarget::PerGroup(0.5),
        multiple: 8,
    };
    let (pruned, report) = prune_graph(&g, &groups, &scores, &config).unwrap();
    assert_eq!(pruned.cost().unwrap(), half.cost().unwrap());
    for (a, b) in pruned.nodes().iter().zip(half.nodes()) {
        assert_eq!((a.name(), a.output_shape()), (b.name(), b.output_shape()));
    }
    assert_eq!(report.after, half.cost().unwrap());
}

#[test]
fn half_the_macs_of_resnet8() {
    let g = model("resnet8");
    let groups = ChannelGroups::analyze(&g).unwrap();
    let scores = group_scores(&g, &groups, GroupCriterion::Magnitude(Norm::L2), None).unwrap();
    let config = GraphPruneConfig {
        target: GraphTarget::Macs(0.5),
        multiple: 4,
    };
    let (pruned, report) = prune_graph(&g, &groups, &scores, &config).unwrap();
    let before = g.cost().unwrap().macs as f64;
    assert!(pruned.cost().unwrap().macs as f64 <= 0.5 * before);
    assert!(report.mac_speedup() >= 2.0);
    for g in groups.prunable() {
        let group = &report.groups[g];
        assert!(
            !group.kept.is_empty() && group.kept.len() % 4 == 0,
            "{}",
            group.name
        );
    }
    let fc = &report.groups[groups.group_of("fc").unwrap()];
    assert_eq!(fc.kept.len(), fc.total, "the logits are never pruned");
    // The pruned network still runs.
    let x = batch(&mut SeededRng::new(2), g.inputs()[0].shape(), 1);
    assert_eq!(
        pruned.reference_forward(&[&x]).unwrap()[0].shape(),
        &[1, 10, 1, 1]
    );
}

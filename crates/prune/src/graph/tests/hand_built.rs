//! Each kind of channel tie on a small hand-built graph: the analysis finds
//! the expected groups, removal equals the graph with the removed channels
//! planted as exact zeros, and the pruned graph equals (forward and cost) the
//! smaller graph built by hand.

use std::collections::BTreeMap;

use hasten_core::graph::{GraphBuilder, GraphError};
use hasten_core::{
    ActShape, Conv4d, ConvLayer, ConvSpec, Error, Flatten, GlobalAvgPool, Graph, LinearLayer, Relu,
    SeededRng, Sigmoid,
};
use ndarray::Axis;
use proptest::prelude::*;

use super::support::{batch, bn, complement, conv, forward_error, plant};
use crate::criteria::Norm;
use crate::graph::{
    group_scores, group_scores_with, prune_graph, remove_channels, remove_channels_by_name,
    ChannelGroups, GraphPruneConfig, GraphTarget, GroupCriterion,
};

/// Output channels `rows` and input channels `cols` of a convolution.
fn slice_conv(c: &ConvLayer, rows: &[usize], cols: &[usize]) -> ConvLayer {
    let w = c
        .weight()
        .array()
        .select(Axis(0), rows)
        .select(Axis(1), cols);
    let b = c.bias().map(|b| b.select(Axis(0), rows));
    ConvLayer::new(Conv4d::new(w).unwrap(), b, *c.spec()).unwrap()
}

fn conv_of(g: &Graph, name: &str) -> ConvLayer {
    match g.node(name).unwrap().op().as_op() {
        Some(hasten_core::Op::Conv(c)) => c.clone(),
        _ => panic!("{name} is not a convolution"),
    }
}

/// `input → conv1 → relu1 → conv2 → add(relu1, conv2) → relu2 → head`.
fn residual(seed: u64) -> Graph {
    let mut rng = SeededRng::new(seed);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 6, 6));
    let a = b.op("conv1", conv(&mut rng, 8, 3), x);
    let a = b.op("relu1", Relu, a);
    let r = b.op("conv2", conv(&mut rng, 8, 8), a);
    let s = b.add("add", &[a, r]);
    let s = b.op("relu2", Relu, s);
    let y = b.op("head", conv(&mut rng, 4, 8), s);
    b.output(y);
    b.build().unwrap()
}

#[test]
fn residual_add_ties_both_producers() {
    let g = residual(1);
    let groups = ChannelGroups::analyze(&g).unwrap();
    assert_eq!(groups.len(), 2);
    let g0 = &groups.groups()[0];
    assert_eq!(g0.producers, ["conv1", "conv2"]);
    assert_eq!(g0.consumers, ["conv2", "head"]);
    assert_eq!(g0.pass_through, ["relu1", "add", "relu2"]);
    assert_eq!(g0.channels, 8);
    assert_eq!(g0.frozen, None);
    assert_eq!(g0.unit(3).unwrap(), [("conv1", 3), ("conv2", 3)]);
    assert!(groups.groups()[1]
        .frozen
        .as_ref()
        .unwrap()
        .contains("graph output `head`"));
    assert_eq!(groups.prunable(), [0]);

    let keep = vec![0, 2, 5];
    let pruned = remove_channels_by_name(&g, &groups, &[("conv2", keep.clone())]).unwrap();
    // Truth 1: the full graph with the other channels planted as zeros.
    let drop = complement(&keep, 8);
    let planted = plant(&g, &[("conv1", drop.clone()), ("conv2", drop)]);
    let x = batch(&mut SeededRng::new(9), ActShape::new(3, 6, 6), 2);
    assert!(forward_error(&planted, &pruned, &x) < 1e-5);
    assert!(
        forward_error(&g, &planted, &x) > 1e-2,
        "planting changed the function"
    );
    // Truth 2: the smaller graph built by hand — same forward, same cost.
    let mut b = GraphBuilder::new();
    let i = b.input("input", ActShape::new(3, 6, 6));
    let a = b.op(
        "conv1",
        slice_conv(&conv_of(&g, "conv1"), &keep, &[0, 1, 2]),
        i,
    );
    let a = b.op("relu1", Relu, a);
    let r = b.op("conv2", slice_conv(&conv_of(&g, "conv2"), &keep, &keep), a);
    let s = b.add("add", &[a, r]);
    let s = b.op("relu2", Relu, s);
    let y = b.op(
        "head",
        slice_conv(&conv_of(&g, "head"), &[0, 1, 2, 3], &keep),
        s,
    );
    b.output(y);
    let by_hand = b.build().unwrap();
    assert_eq!(pruned, by_hand);
    assert_eq!(pruned.cost().unwrap(), by_hand.cost().unwrap());
    assert!(pruned.cost().unwrap().macs < g.cost().unwrap().macs);
}

#[test]
fn concat_maps_each_input_to_its_slice() {
    let mut rng = SeededRng::new(2);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 6, 6));
    let a = b.op("a", conv(&mut rng, 4, 3), x);
    let c = b.op("b", conv(&mut rng, 6, 3), x);
    let cat = b.concat("cat", &[a, c]);
    let r = b.op("relu", Relu, cat);
    let y = b.op("head", conv(&mut rng, 5, 10), r);
    b.output(y);
    let g = b.build().unwrap();
    let groups = ChannelGroups::analyze(&g).unwrap();
    assert_eq!(groups.prunable(), [0, 1]);
    assert_eq!(groups.groups()[0].producers, ["a"]);
    assert_eq!(groups.groups()[1].producers, ["b"]);
    assert_eq!(groups.groups()[1].consumers, ["head"]);

    let (ka, kb) = (vec![1, 3], vec![0, 2, 4]);
    let pruned =
        remove_channels_by_name(&g, &groups, &[("a", ka.clone()), ("b", kb.clone())]).unwrap();
    let planted = plant(&g, &[("a", complement(&ka, 4)), ("b", complement(&kb, 6))]);
    let x = batch(&mut rng, ActShape::new(3, 6, 6), 2);
    assert!(forward_error(&planted, &pruned, &x) < 1e-5);
    // The head keeps columns 1, 3 of `a` and 4 + {0, 2, 4} of `b`.
    let head = slice_conv(&conv_of(&g, "head"), &[0, 1, 2, 3, 4], &[1, 3, 4, 6, 8]);
    assert_eq!(conv_of(&pruned, "head"), head);
    let mut b = GraphBuilder::new();
    let i = b.input("input", ActShape::new(3, 6, 6));
    let a = b.op("a", slice_conv(&conv_of(&g, "a"), &ka, &[0, 1, 2]), i);
    let c = b.op("b", slice_conv(&conv_of(&g, "b"), &kb, &[0, 1, 2]), i);
    let cat = b.concat("cat", &[a, c]);
    let r = b.op("relu", Relu, cat);
    let y = b.op("head", head, r);
    b.output(y);
    assert_eq!(pruned.cost().unwrap(), b.build().unwrap().cost().unwrap());
}

#[test]
fn concat_added_to_a_wide_value_ties_each_slice() {
    let mut rng = SeededRng::new(3);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 5, 5));
    let a = b.op("a", conv(&mut rng, 4, 3), x);
    let c = b.op("b", conv(&mut rng, 4, 3), x);
    let cat = b.concat("cat", &[a, c]);
    let w = b.op("c", conv(&mut rng, 8, 3), x);
    let s = b.add("add", &[cat, w]);
    let y = b.op("head", conv(&mut rng, 2, 8), s);
    b.output(y);
    let g = b.build().unwrap();
    let groups = ChannelGroups::analyze(&g).unwrap();
    let g0 = &groups.groups()[0];
    assert_eq!(g0.producers, ["a", "b", "c"]);
    assert_eq!(g0.channels, 8);
    assert_eq!(g0.unit(5).unwrap(), [("b", 1), ("c", 5)]);
    let pruned = remove_channels_by_name(&g, &groups, &[("c", vec![0, 5])]).unwrap();
    assert_eq!(conv_of(&pruned, "a").out_channels(), 1);
    assert_eq!(conv_of(&pruned, "b").out_channels(), 1);
    let planted = plant(
        &g,
        &[
            ("a", vec![1, 2, 3]),
            ("b", vec![0, 2, 3]),
            ("c", vec![1, 2, 3, 4, 6, 7]),
        ],
    );
    let x = batch(&mut rng, ActShape::new(3, 5, 5), 2);
    assert!(forward_error(&planted, &pruned, &x) < 1e-5);
}

/// `conv1 → bn1 → relu → depthwise (multiplier m) → bn2 → relu → pw`.
fn depthwise(m: usize) -> Graph {
    let mut rng = SeededRng::new(4);
    let dw = ConvLayer::new(
        Conv4d::new(rng.normal_array((8 * m, 1, 3, 3), 0.3)).unwrap(),
        Some(rng.normal_array(8 * m, 0.3)),
        ConvSpec::new().with_padding(1).with_groups(8),
    )
    .unwrap();
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 6, 6));
    let y = b.op("conv1", conv(&mut rng, 8, 3), x);
    let y = b.op("bn1", bn(&mut rng, 8), y);
    let y = b.op("relu1", Relu, y);
    let y = b.op("dw", dw, y);
    let y = b.op("bn2", bn(&mut rng, 8 * m), y);
    let y = b.op("relu2", Relu, y);
    let y = b.op("pw", conv(&mut rng, 4, 8 * m), y);
    b.output(y);
    b.build().unwrap()
}

#[test]
fn depthwise_convolutions_follow_their_input() {
    for m in [1, 2] {
        let g = depthwise(m);
        let groups = ChannelGroups::analyze(&g).unwrap();
        let g0 = &groups.groups()[0];
        assert_eq!(g0.producers, ["conv1"]);
        assert_eq!(g0.channel_wise, ["bn1", "dw", "bn2"]);
        assert_eq!(g0.consumers, ["pw"]);
        let keep = vec![1, 2, 6];
        let drop = complement(&keep, 8);
        let drop_m: Vec<usize> = drop.iter().flat_map(|&c| c * m..(c + 1) * m).collect();
        let pruned = remove_channels_by_name(&g, &groups, &[("conv1", keep)]).unwrap();
        let dw = conv_of(&pruned, "dw");
        assert_eq!((dw.spec().groups, dw.out_channels()), (3, 3 * m));
        let planted = plant(
            &g,
            &[
                ("conv1", drop.clone()),
                ("bn1", drop),
                ("dw", drop_m.clone()),
                ("bn2", drop_m),
            ],
        );
        let x = batch(&mut SeededRng::new(5), ActShape::new(3, 6, 6), 2);
        assert!(forward_error(&planted, &pruned, &x) < 1e-5, "m = {m}");
        assert!(forward_error(&g, &planted, &x) > 1e-2);
    }
}

#[test]
fn squeeze_excitation_gate_is_tied_to_its_input() {
    let mut rng = SeededRng::new(6);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 6, 6));
    let a = b.op("conv1", conv(&mut rng, 8, 3), x);
    let a = b.op("relu", Relu, a);
    let s = b.op("pool", GlobalAvgPool, a);
    let fc1 = LinearLayer::new(
        rng.normal_array((2, 8), 0.5),
        Some(rng.normal_array(2, 0.5)),
    );
    let s = b.op("fc1", fc1.unwrap(), s);
    let s = b.op("fc1.relu", Relu, s);
    let fc2 = LinearLayer::new(
        rng.normal_array((8, 2), 0.5),
        Some(rng.normal_array(8, 0.5)),
    );
    let s = b.op("fc2", fc2.unwrap(), s);
    let s = b.op("gate", Sigmoid, s);
    let y = b.mul("scale", a, s);
    let y = b.op("head", conv(&mut rng, 4, 8), y);
    b.output(y);
    let g = b.build().unwrap();
    let groups = ChannelGroups::analyze(&g).unwrap();
    let g0 = &groups.groups()[0];
    assert_eq!(g0.producers, ["conv1", "fc2"]);
    assert_eq!(g0.consumers, ["fc1", "head"]);
    assert_eq!(groups.groups()[1].producers, ["fc1"]);
    assert_eq!(groups.groups()[1].consumers, ["fc2"]);
    let keep = vec![0, 3, 4, 7];
    let pruned = remove_channels_by_name(&g, &groups, &[("conv1", keep.clone())]).unwrap();
    assert_eq!(pruned.node("fc2").unwrap().output_shape().channels, 4);
    // A zero channel of x is zero after the gate, whatever the gate says.
    let planted = plant(&g, &[("conv1", complement(&keep, 8))]);
    let x = batch(&mut rng, ActShape::new(3, 6, 6), 2);
    assert!(forward_error(&planted, &pruned, &x) < 1e-5);
}

#[test]
fn flatten_linear_loses_column_blocks() {
    for flatten in [true, false] {
        let mut rng = SeededRng::new(7);
        let mut b = GraphBuilder::new();
        let x = b.input("input", ActShape::new(3, 4, 4));
        let y = b.op("conv1", conv(&mut rng, 4, 3), x);
        let mut y = b.op("relu", Relu, y);
        if flatten {
            y = b.op("flatten", Flatten, y);
        }
        let fc = LinearLayer::new(
            rng.normal_array((5, 64), 0.3),
            Some(rng.normal_array(5, 0.3)),
        );
        let y = b.op("fc", fc.unwrap(), y);
        b.output(y);
        let g = b.build().unwrap();
        let groups = ChannelGroups::analyze(&g).unwrap();
        assert_eq!(groups.groups()[0].consumers, ["fc"]);
        let pruned = remove_channels_by_name(&g, &groups, &[("conv1", vec![0, 2])]).unwrap();
        let Some(hasten_core::Op::Linear(before)) = g.node("fc").unwrap().op().as_op() else {
            unreachable!()
        };
        let Some(hasten_core::Op::Linear(after)) = pruned.node("fc").unwrap().op().as_op() else {
            unreachable!()
        };
        let cols: Vec<usize> = (0..16).chain(32..48).collect();
        assert_eq!(after.weight(), before.weight().select(Axis(1), &cols));
        let planted = plant(&g, &[("conv1", vec![1, 3])]);
        let x = batch(&mut rng, ActShape::new(3, 4, 4), 2);
        assert!(
            forward_error(&planted, &pruned, &x) < 1e-5,
            "flatten = {flatten}"
        );
    }
}

#[test]
fn grouped_convolutions_freeze_their_input_with_a_clear_error() {
    let mut rng = SeededRng::new(8);
    let grouped = ConvLayer::new(
        Conv4d::new(rng.normal_array((4, 4, 3, 3), 0.3)).unwrap(),
        None,
        ConvSpec::new().with_padding(1).with_groups(2),
    )
    .unwrap();
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 6, 6));
    let y = b.op("conv1", conv(&mut rng, 8, 3), x);
    let y = b.op("grouped", grouped, y);
    let y = b.op("head", conv(&mut rng, 2, 4), y);
    b.output(y);
    let g = b.build().unwrap();
    let groups = ChannelGroups::analyze(&g).unwrap();
    let reason = groups.groups()[0].frozen.clone().unwrap();
    assert!(
        reason.contains("grouped convolution `grouped` (2 groups"),
        "{reason}"
    );
    let err = remove_channels_by_name(&g, &groups, &[("conv1", vec![0])]).unwrap_err();
    assert!(matches!(&err, Error::Unsupported { what, .. } if what.contains("grouped")));
    // The driver leaves frozen groups whole.
    assert_eq!(groups.prunable(), Vec::<usize>::new());
}

#[test]
fn bad_input_is_a_typed_error() {
    let g = residual(10);
    let groups = ChannelGroups::analyze(&g).unwrap();
    let scores = group_scores(&g, &groups, GroupCriterion::Magnitude(Norm::L2), None).unwrap();
    let config = |target| GraphPruneConfig {
        target,
        multiple: 1,
    };
    for bad in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
        for target in [
            GraphTarget::PerGroup(bad),
            GraphTarget::Global(bad),
            GraphTarget::Macs(bad),
        ] {
            let err = prune_graph(&g, &groups, &scores, &config(target)).unwrap_err();
            assert!(matches!(err, Error::InvalidParameter { .. }), "{target:?}");
        }
    }
    let zero_multiple = GraphPruneConfig {
        target: GraphTarget::PerGroup(0.5),
        multiple: 0,
    };
    assert!(prune_graph(&g, &groups, &scores, &zero_multiple).is_err());
    let short = vec![scores[0][..3].to_vec(), scores[1].clone()];
    let err = prune_graph(&g, &groups, &short, &config(GraphTarget::PerGroup(0.5)));
    assert!(matches!(err, Err(Error::ShapeMismatch { .. })));
    let mut nan = scores.clone();
    nan[0][1] = f64::NAN;
    assert!(prune_graph(&g, &groups, &nan, &config(GraphTarget::PerGroup(0.5))).is_err());

    assert_eq!(
        groups.group_of("nope").unwrap_err(),
        Error::Graph(GraphError::UnknownNode {
            name: "nope".into()
        })
    );
    assert!(matches!(
        remove_channels_by_name(&g, &groups, &[("nope", vec![0])]),
        Err(Error::Graph(GraphError::UnknownNode { .. }))
    ));
    assert!(matches!(
        groups.group_of("relu1"),
        Err(Error::InvalidParameter { .. })
    ));
    for keep in [vec![], vec![3, 1], vec![8]] {
        let plan = BTreeMap::from([(0, keep)]);
        assert!(matches!(
            remove_channels(&g, &groups, &plan),
            Err(Error::InvalidParameter { .. })
        ));
    }
    let plan = BTreeMap::from([(7, vec![0])]);
    assert!(remove_channels(&g, &groups, &plan).is_err());
    // Groups of another graph are refused.
    let other = depthwise(1);
    assert!(remove_channels(&other, &groups, &BTreeMap::new()).is_err());
    // Same names, other widths: refused, not a panic on an out-of-range index.
    let mut rng = SeededRng::new(16);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 6, 6));
    let a = b.op("conv1", conv(&mut rng, 4, 3), x);
    let a = b.op("relu1", Relu, a);
    let r = b.op("conv2", conv(&mut rng, 4, 4), a);
    let s = b.add("add", &[a, r]);
    let s = b.op("relu2", Relu, s);
    let y = b.op("head", conv(&mut rng, 4, 4), s);
    b.output(y);
    let narrow = b.build().unwrap();
    let plan = BTreeMap::from([(0, vec![0, 7])]);
    assert!(matches!(
        remove_channels(&narrow, &groups, &plan),
        Err(Error::InvalidParameter { .. })
    ));
    // Two names of one group, and a data-driven criterion without data.
    let twice = [("conv1", vec![0]), ("conv2", vec![1])];
    assert!(remove_channels_by_name(&g, &groups, &twice).is_err());
    assert!(group_scores(&g, &groups, GroupCriterion::ActivationEnergy, None).is_err());
}

#[test]
fn magnitude_scores_sum_over_tied_producers() {
    let g = residual(11);
    let groups = ChannelGroups::analyze(&g).unwrap();
    let scores = group_scores(&g, &groups, GroupCriterion::Magnitude(Norm::L1), None).unwrap();
    let l1 = |c: &ConvLayer, t: usize| -> f64 {
        c.weight()
            .array()
            .index_axis(Axis(0), t)
            .iter()
            .map(|v| f64::from(v.abs()))
            .sum()
    };
    let (c1, c2) = (conv_of(&g, "conv1"), conv_of(&g, "conv2"));
    for t in 0..8 {
        let expected = l1(&c1, t) + l1(&c2, t);
        assert!((scores[0][t] - expected).abs() < 1e-9 * expected);
    }
    // Activation energy: the mean over samples of Σ a² of each producer channel.
    let x = batch(&mut SeededRng::new(12), ActShape::new(3, 6, 6), 3);
    let energy = group_scores(&g, &groups, GroupCriterion::ActivationEnergy, Some(&[&x])).unwrap();
    let trace = g.reference_trace(&[&x], &["conv1", "conv2"]).unwrap();
    let e = |name: &str, t: usize| -> f64 {
        trace.captured[name]
            .index_axis(Axis(1), t)
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            / 3.0
    };
    for t in 0..8 {
        let expected = e("conv1", t) + e("conv2", t);
        assert!((energy[0][t] - expected).abs() < 1e-9 * expected);
    }
}

#[test]
fn caller_scores_are_summed_per_unit() {
    let g = residual(14);
    let groups = ChannelGroups::analyze(&g).unwrap();
    let conv2 = g.node_index("conv2").unwrap();
    let scores = group_scores_with(&g, &groups, |j| {
        let n = g.nodes()[j].output_shape().channels;
        let scale = if j == conv2 { 10.0 } else { 1.0 };
        Ok((0..n).map(|t| scale * t as f64).collect())
    })
    .unwrap();
    assert_eq!(
        scores[0],
        (0..8).map(|t| 11.0 * t as f64).collect::<Vec<_>>()
    );
    let short = group_scores_with(&g, &groups, |_| Ok(vec![1.0; 3]));
    assert!(matches!(short, Err(Error::ShapeMismatch { .. })));
}

#[test]
fn driver_keeps_the_best_units_rounded_to_the_multiple() {
    let g = residual(13);
    let groups = ChannelGroups::analyze(&g).unwrap();
    let scores = vec![vec![5.0, 1.0, 7.0, 2.0, 8.0, 3.0, 6.0, 4.0], vec![1.0; 4]];
    let run = |target, multiple| {
        prune_graph(&g, &groups, &scores, &GraphPruneConfig { target, multiple }).unwrap()
    };
    let (pruned, report) = run(GraphTarget::PerGroup(0.5), 1);
    assert_eq!(report.groups[0].kept, [0, 2, 4, 6]);
    assert_eq!(report.groups[1].kept, [0, 1, 2, 3]);
    assert_eq!(report.after, pruned.cost().unwrap());
    assert!(report.groups[0].macs_after < report.groups[0].macs_before);
    // Rounding 8 − ⌊0.7·8⌋ = 3 up to a multiple of 4.
    let (_, report) = run(GraphTarget::PerGroup(0.7), 4);
    assert_eq!(report.groups[0].kept, [0, 2, 4, 6]);
    let (_, report) = run(GraphTarget::Global(0.99), 1);
    assert_eq!(report.groups[0].kept, [4], "never to zero");
    // Half the MACs: met, and the next larger common width would not meet it.
    let (pruned, report) = run(GraphTarget::Macs(0.5), 1);
    assert!(pruned.cost().unwrap().macs as f64 <= 0.5 * g.cost().unwrap().macs as f64);
    let k = report.groups[0].kept.len();
    let wider = remove_channels(
        &g,
        &groups,
        &BTreeMap::from([(0, crate::select::top_k(&scores[0], k + 1).unwrap())]),
    )
    .unwrap();
    assert!(wider.cost().unwrap().macs as f64 > 0.5 * g.cost().unwrap().macs as f64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_channel_subsets_of_a_residual_graph(
        mask in proptest::collection::vec(any::<bool>(), 8),
        seed in 0u64..1000,
    ) {
        let keep: Vec<usize> = (0..8).filter(|&i| mask[i]).collect();
        let g = residual(seed);
        let groups = ChannelGroups::analyze(&g).unwrap();
        let result = remove_channels(&g, &groups, &BTreeMap::from([(0, keep.clone())]));
        prop_assert_eq!(result.is_ok(), !keep.is_empty());
        prop_assume!(!keep.is_empty());
        let pruned = result.unwrap();
        let drop = complement(&keep, 8);
        let planted = plant(&g, &[("conv1", drop.clone()), ("conv2", drop)]);
        let x = batch(&mut SeededRng::new(seed + 1), ActShape::new(3, 6, 6), 1);
        prop_assert!(forward_error(&planted, &pruned, &x) < 1e-5);
        prop_assert_eq!(pruned.node("add").unwrap().output_shape().channels, keep.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_keep_plans_never_panic(
        group in 0usize..3,
        keep in proptest::collection::vec(0usize..10, 0..10),
    ) {
        let g = residual(15);
        let groups = ChannelGroups::analyze(&g).unwrap();
        // Group 0 is conv1/conv2 (8 channels); group 1, the head, is frozen
        // and only keeps everything.
        let valid = match group {
            0 => !keep.is_empty()
                && keep.iter().all(|&k| k < 8)
                && keep.windows(2).all(|w| w[0] < w[1]),
            1 => keep == [0, 1, 2, 3],
            _ => false,
        };
        let result = remove_channels(&g, &groups, &BTreeMap::from([(group, keep)]));
        prop_assert_eq!(result.is_ok(), valid);
    }
}

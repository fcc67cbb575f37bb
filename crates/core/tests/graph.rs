//! The whole-network graph: construction errors name their node, the
//! reference forward equals the ops composed by hand, the multi-input ops
//! equal index-by-index loops, surgery keeps the function the graph computes
//! (batch-norm folding within 1e-5), and a random node order sorts to the
//! same graph.

use hasten_core::graph::{GraphBuilder, NodeDef, NodeFilter, NodeOp, ValueId};
use hasten_core::ndarray::{Array1, Array2, Array4};
use hasten_core::{
    relative_error, ActShape, BatchNorm, Block, Compressed, ConvLayer, ConvSpec, Error, Graph,
    GraphError, Layer, LinearLayer, Op, Operator, Relu, Result, SeededRng, Transform,
};
use proptest::prelude::*;

fn conv(rng: &mut SeededRng, t: usize, c: usize, k: usize, spec: ConvSpec) -> ConvLayer {
    ConvLayer::from_array(rng.normal_array((t, c, k, k), 0.3), spec).unwrap()
}

fn random_bn(rng: &mut SeededRng, c: usize) -> BatchNorm {
    let pos = |rng: &mut SeededRng| Array1::from_shape_fn(c, |_| rng.uniform_in(0.5, 2.0) as f32);
    let gamma = pos(rng);
    let var = pos(rng);
    BatchNorm::new(
        gamma,
        rng.normal_array(c, 0.5),
        rng.normal_array(c, 0.5),
        var,
        1e-5,
    )
    .unwrap()
}

/// A residual unit with a squeeze–excitation style gate and a concat.
fn residual_graph(rng: &mut SeededRng) -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(4, 7, 7));
    let y = b.op(
        "conv1",
        conv(rng, 4, 4, 3, ConvSpec::new().with_padding(1)),
        x,
    );
    let y = b.op("bn1", random_bn(rng, 4), y);
    let y = b.op("relu1", Relu, y);
    let gate = b.op("gate", conv(rng, 4, 4, 7, ConvSpec::new()), y);
    let y = b.mul("se", y, gate);
    let y = b.add("add", &[y, x]);
    let z = b.concat("cat", &[y, x]);
    b.output(z);
    b.build().unwrap()
}

fn graph_error(e: Error) -> GraphError {
    match e {
        Error::Graph(g) => g,
        other => panic!("expected a graph error, got {other}"),
    }
}

#[test]
fn reference_forward_equals_the_ops_composed_by_hand() {
    let mut rng = SeededRng::new(1);
    let g = residual_graph(&mut rng);
    let x = rng.normal_array((2, 4, 7, 7), 1.0);
    let out = g.reference_forward(&[&x]).unwrap();

    let op = |name: &str| g.node(name).unwrap().op().as_op().unwrap().clone();
    let y = op("conv1").reference_forward(&x).unwrap();
    let y = op("bn1").reference_forward(&y).unwrap();
    let y = op("relu1").reference_forward(&y).unwrap();
    let gate = op("gate").reference_forward(&y).unwrap();
    let mut expected = Array4::<f32>::zeros((2, 8, 7, 7));
    for n in 0..2 {
        for c in 0..4 {
            for i in 0..7 {
                for j in 0..7 {
                    let v = y[[n, c, i, j]] * gate[[n, c, 0, 0]] + x[[n, c, i, j]];
                    expected[[n, c, i, j]] = v;
                    expected[[n, c + 4, i, j]] = x[[n, c, i, j]];
                }
            }
        }
    }
    assert_eq!(out.len(), 1);
    assert!(relative_error(&out[0], &expected) < 1e-6);
    assert_eq!(g.output_shapes(), vec![ActShape::new(8, 7, 7)]);
}

#[test]
fn trace_captures_any_value() {
    let mut rng = SeededRng::new(2);
    let g = residual_graph(&mut rng);
    let x = rng.normal_array((1, 4, 7, 7), 1.0);
    let trace = g
        .reference_trace(&[&x], &["relu1", "input", "cat"])
        .unwrap();
    assert_eq!(trace.captured.len(), 3);
    assert_eq!(trace.captured["input"], x);
    assert_eq!(trace.captured["cat"], trace.outputs[0]);
    let op = |name: &str| g.node(name).unwrap().op().as_op().unwrap().clone();
    let relu1 = op("relu1")
        .reference_forward(
            &op("bn1")
                .reference_forward(&op("conv1").reference_forward(&x).unwrap())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(trace.captured["relu1"], relu1);
    let err = graph_error(g.reference_trace(&[&x], &["nope"]).unwrap_err());
    assert_eq!(
        err,
        GraphError::UnknownNode {
            name: "nope".into()
        }
    );
}

#[test]
fn multi_input_ops_equal_index_loops() {
    let mut rng = SeededRng::new(3);
    let mut b = GraphBuilder::new();
    let a = b.input("a", ActShape::new(3, 2, 5));
    let c = b.input("c", ActShape::new(3, 2, 5));
    let d = b.input("d", ActShape::new(2, 2, 5));
    let s = b.add("sum", &[a, c, a]);
    let m = b.mul("prod", s, c);
    let k = b.concat("cat", &[d, m, d]);
    b.output(k);
    b.output(s);
    let g = b.build().unwrap();
    let (xa, xc, xd) = (
        rng.normal_array((2, 3, 2, 5), 1.0),
        rng.normal_array((2, 3, 2, 5), 1.0),
        rng.normal_array((2, 2, 2, 5), 1.0),
    );
    let out = g.reference_forward(&[&xa, &xc, &xd]).unwrap();
    assert_eq!(out[0].shape(), &[2, 7, 2, 5]);
    for n in 0..2 {
        for i in 0..2 {
            for j in 0..5 {
                for ch in 0..3 {
                    let sum = xa[[n, ch, i, j]] + xc[[n, ch, i, j]] + xa[[n, ch, i, j]];
                    assert!((out[1][[n, ch, i, j]] - sum).abs() <= 1e-6 * sum.abs().max(1.0));
                    let prod = out[1][[n, ch, i, j]] * xc[[n, ch, i, j]];
                    assert_eq!(out[0][[n, 2 + ch, i, j]], prod);
                }
                for ch in 0..2 {
                    assert_eq!(out[0][[n, ch, i, j]], xd[[n, ch, i, j]]);
                    assert_eq!(out[0][[n, 5 + ch, i, j]], xd[[n, ch, i, j]]);
                }
            }
        }
    }
}

#[test]
fn nan_and_infinity_propagate_through_the_merge_ops() {
    let mut b = GraphBuilder::new();
    let a = b.input("a", ActShape::new(2, 1, 2));
    let g = b.input("g", ActShape::new(2, 1, 1));
    let s = b.add("sum", &[a, a]);
    let m = b.mul("gate", s, g);
    let k = b.concat("cat", &[m, a]);
    b.output(k);
    let graph = b.build().unwrap();
    let xa = Array4::from_shape_vec((1, 2, 1, 2), vec![f32::NAN, 1.0, f32::INFINITY, 2.0]).unwrap();
    let xg = Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, 0.0]).unwrap();
    let y = &graph.reference_forward(&[&xa, &xg]).unwrap()[0];
    assert!(y[[0, 0, 0, 0]].is_nan());
    assert_eq!(y[[0, 0, 0, 1]], 2.0);
    // ∞ · 0 is NaN in IEEE arithmetic.
    assert!(y[[0, 1, 0, 0]].is_nan());
    assert_eq!(y[[0, 1, 0, 1]], 0.0);
    assert!(y[[0, 2, 0, 0]].is_nan());
    assert_eq!(y[[0, 3, 0, 0]], f32::INFINITY);
}

#[test]
fn construction_errors_name_the_node() {
    let mut rng = SeededRng::new(4);
    let s = ActShape::new(2, 5, 5);
    let relu = || NodeOp::Op(Relu.into());
    let build = |nodes: Vec<NodeDef>, outputs: &[&str]| {
        Graph::new(
            vec![("x".into(), s)],
            nodes,
            outputs.iter().map(|o| o.to_string()).collect(),
        )
        .map_err(graph_error)
    };
    assert_eq!(
        build(vec![NodeDef::new("x", relu(), &["x"])], &["x"]).unwrap_err(),
        GraphError::DuplicateName { name: "x".into() }
    );
    assert_eq!(
        build(vec![NodeDef::new("r", relu(), &["y"])], &["r"]).unwrap_err(),
        GraphError::DanglingInput {
            node: "r".into(),
            input: "y".into()
        }
    );
    let cycle = build(
        vec![
            NodeDef::new("a", relu(), &["c"]),
            NodeDef::new("b", relu(), &["a"]),
            NodeDef::new("c", relu(), &["b"]),
        ],
        &["c"],
    )
    .unwrap_err();
    match &cycle {
        GraphError::Cycle { cycle, .. } => {
            let mut sorted = cycle.clone();
            sorted.sort();
            assert_eq!(sorted, ["a", "b", "c"]);
        }
        other => panic!("expected a cycle, got {other}"),
    }
    assert!(cycle.to_string().contains("cycle"), "{cycle}");
    assert_eq!(
        build(vec![NodeDef::new("sum", NodeOp::Add, &["x"])], &["sum"]).unwrap_err(),
        GraphError::Arity {
            node: "sum".into(),
            kind: "add",
            expected: "2 or more",
            got: 1
        }
    );
    let wrong = conv(&mut rng, 3, 3, 3, ConvSpec::new());
    let err = build(
        vec![NodeDef::new("conv", Op::Conv(wrong), &["x"])],
        &["conv"],
    )
    .unwrap_err();
    assert!(
        matches!(&err, GraphError::Shape { node, kind: "conv", .. } if node == "conv"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("node `conv` (conv) cannot take its inputs"),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(build(vec![], &[]).unwrap_err(), GraphError::NoOutputs);
    assert_eq!(
        build(vec![], &["y"]).unwrap_err(),
        GraphError::UnknownOutput { name: "y".into() }
    );
    let mismatched = build(
        vec![
            NodeDef::new("sum", NodeOp::Add, &["x", "r"]),
            NodeDef::new(
                "r",
                Op::Conv(conv(&mut rng, 2, 2, 3, ConvSpec::new())),
                &["x"],
            ),
        ],
        &["sum"],
    )
    .unwrap_err();
    assert!(matches!(mismatched, GraphError::Shape { ref node, .. } if node == "sum"));
}

#[test]
fn run_rejects_bad_input_arrays() {
    let mut rng = SeededRng::new(5);
    let g = residual_graph(&mut rng);
    let good = rng.normal_array((2, 4, 7, 7), 1.0);
    let bad = rng.normal_array((2, 4, 7, 6), 1.0);
    let empty = Array4::<f32>::zeros((0, 4, 7, 7));
    assert_eq!(
        graph_error(g.reference_forward(&[]).unwrap_err()),
        GraphError::InputCount {
            expected: 1,
            got: 0
        }
    );
    assert_eq!(
        graph_error(g.reference_forward(&[&good, &good]).unwrap_err()),
        GraphError::InputCount {
            expected: 1,
            got: 2
        }
    );
    for x in [&bad, &empty] {
        let err = graph_error(g.reference_forward(&[x]).unwrap_err());
        assert!(
            matches!(err, GraphError::InputShape { ref input, .. } if input == "input"),
            "{err}"
        );
    }
}

#[test]
fn batch_norm_folding_is_exact_within_1e_5() {
    let mut rng = SeededRng::new(6);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 9, 9));
    let mut c1 = conv(&mut rng, 6, 3, 3, ConvSpec::new().with_stride(2));
    c1 = ConvLayer::new(
        c1.weight().clone(),
        Some(rng.normal_array(6, 1.0)),
        *c1.spec(),
    )
    .unwrap();
    let y = b.op("conv1", c1, x);
    let y = b.op("bn1", random_bn(&mut rng, 6), y);
    let y = b.op("relu", Relu, y);
    // A conv read twice keeps its batch norm.
    let z = b.op("conv2", conv(&mut rng, 6, 6, 1, ConvSpec::new()), y);
    let zb = b.op("bn2", random_bn(&mut rng, 6), z);
    let y = b.add("add", &[zb, z]);
    let fc = LinearLayer::new(rng.normal_array((5, 6 * 4 * 4), 0.2), None).unwrap();
    let y = b.op("fc", fc, y);
    let y = b.op("bn3", random_bn(&mut rng, 5), y);
    b.output(y);
    let mut g = b.build().unwrap();
    let x = rng.normal_array((3, 3, 9, 9), 1.0);
    let before = g.reference_forward(&[&x]).unwrap().remove(0);
    assert_eq!(g.fold_batch_norms().unwrap(), 2);
    assert!(g.node("bn1").is_none() && g.node("bn3").is_none());
    assert!(g.node("bn2").is_some());
    assert_eq!(g.fold_batch_norms().unwrap(), 0);
    let after = g.reference_forward(&[&x]).unwrap().remove(0);
    let err = relative_error(&after, &before);
    assert!(err < 1e-5, "relative error {err}");
    let names: Vec<String> = g.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "bn2.weight",
            "bn2.bias",
            "bn2.running_mean",
            "bn2.running_var",
            "fc.weight",
            "fc.bias"
        ]
    );
    // The output name moved to the layer the last batch norm folded into.
    assert_eq!(g.value_name(g.outputs()[0]), "fc");
}

#[test]
fn dead_nodes_are_removed() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 3, 3));
    let r = b.op("r", Relu, x);
    let dead = b.op("dead", Relu, r);
    b.op("dead2", Relu, dead);
    let s = b.add("s", &[r, x]);
    b.output(s);
    let mut g = b.build().unwrap();
    assert_eq!(g.remove_dead_nodes().unwrap(), 2);
    let names: Vec<&str> = g.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(names, ["r", "s"]);
    assert_eq!(g.remove_dead_nodes().unwrap(), 0);
}

#[test]
fn identities_are_bypassed_except_at_an_output() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 3, 3));
    let i = b.op("id", hasten_core::Identity, x);
    let d = b.op("drop", hasten_core::Dropout::new(0.5).unwrap(), i);
    let r = b.op("r", Relu, d);
    let s = b.add("s", &[r, d]);
    let out = b.op("last", hasten_core::Identity, s);
    b.output(out);
    let mut g = b.build().unwrap();
    let x = Array4::from_shape_fn((1, 2, 3, 3), |(_, c, i, j)| (c + i) as f32 - j as f32);
    let before = g.reference_forward(&[&x]).unwrap();
    assert_eq!(g.remove_identities().unwrap(), 2);
    let names: Vec<&str> = g.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(names, ["r", "s", "last"]);
    assert_eq!(
        g.node("s").unwrap().inputs(),
        [ValueId::Node(0), ValueId::Input(0)]
    );
    assert_eq!(g.reference_forward(&[&x]).unwrap(), before);
}

/// An exact rewrite of a layer into two ops (a conv with doubled weights and
/// a batch norm halving them), or an error on linear layers.
struct DoubleThenHalve;

impl Transform for DoubleThenHalve {
    fn name(&self) -> &str {
        "double-then-halve"
    }
    fn apply(&self, layer: &Layer, input: ActShape) -> Result<Compressed> {
        let Layer::Conv(c) = layer else {
            return Err(Error::unsupported("double-then-halve", "linear layers"));
        };
        let doubled = c.with_weight(hasten_core::Conv4d::new(c.weight().array() * 2.0)?)?;
        let t = c.out_channels();
        let half = BatchNorm::new(
            Array1::from_elem(t, 0.5),
            Array1::zeros(t),
            Array1::zeros(t),
            Array1::from_elem(t, 1.0 - 1e-6),
            1e-6,
        )?;
        let block = Block::new(vec![doubled.into(), half.into()])?;
        Compressed::new("double-then-halve", layer, block, input, Some(0.0))
    }
}

#[test]
fn transforms_apply_to_the_selected_nodes() {
    let mut rng = SeededRng::new(7);
    let mut g = residual_graph(&mut rng);
    let x = rng.normal_array((2, 4, 7, 7), 1.0);
    let before = g.reference_forward(&[&x]).unwrap().remove(0);
    let cost_before = g.cost().unwrap();
    let filter = NodeFilter::name("conv*").or(NodeFilter::kind("relu"));
    let report = g.apply_transform(&DoubleThenHalve, &filter).unwrap();
    assert_eq!(report.method, "double-then-halve");
    assert_eq!(report.nodes.len(), 1);
    assert_eq!(report.nodes[0].node, "conv1");
    assert_eq!(report.skipped, ["relu1"]);
    assert_eq!(report.before, cost_before);
    assert_eq!(report.after, g.cost().unwrap());
    assert!(report.after.params > report.before.params);
    assert_eq!(g.node("conv1").unwrap().kind(), "block");
    assert_eq!(g.node("gate").unwrap().kind(), "conv");
    let after = g.reference_forward(&[&x]).unwrap().remove(0);
    assert!(relative_error(&after, &before) < 1e-5);

    // A failing transform names the node and leaves the graph unchanged.
    let mut b = GraphBuilder::new();
    let i = b.input("x", ActShape::flat(4));
    let fc = b.op(
        "fc",
        LinearLayer::new(Array2::ones((2, 4)), None).unwrap(),
        i,
    );
    b.output(fc);
    let mut g = b.build().unwrap();
    let copy = g.clone();
    let err = graph_error(
        g.apply_transform(&DoubleThenHalve, &NodeFilter::all())
            .unwrap_err(),
    );
    assert!(
        matches!(&err, GraphError::Rewrite { node, .. } if node == "fc"),
        "{err}"
    );
    assert_eq!(g, copy);
}

#[test]
fn transforms_compose_inside_blocks() {
    let mut rng = SeededRng::new(9);
    let mut g = residual_graph(&mut rng);
    let x = rng.normal_array((2, 4, 7, 7), 1.0);
    let before = g.reference_forward(&[&x]).unwrap().remove(0);
    let conv1 = NodeFilter::name("conv1");
    g.apply_transform(&DoubleThenHalve, &conv1).unwrap();
    let NodeOp::Block(first) = g.node("conv1").unwrap().op().clone() else {
        panic!("conv1 is a block");
    };
    // Again on the block: its convolution (op 0) becomes conv ×2 → BN ½,
    // spliced in before the block's own BN ½.
    let report = g.apply_transform(&DoubleThenHalve, &conv1).unwrap();
    assert_eq!(report.nodes.len(), 1);
    assert_eq!(report.nodes[0].node, "conv1.0");
    assert!(report.skipped.is_empty());
    assert_eq!(report.after, g.cost().unwrap());
    let NodeOp::Block(second) = g.node("conv1").unwrap().op().clone() else {
        panic!("conv1 is a block");
    };
    let kinds: Vec<&str> = second.ops().iter().map(|o| o.kind()).collect();
    assert_eq!(kinds, ["conv", "batch_norm", "batch_norm"]);
    let by_hand = DoubleThenHalve
        .apply(
            &Layer::Conv(match &first.ops()[0] {
                Op::Conv(c) => c.clone(),
                _ => panic!("op 0 is the doubled conv"),
            }),
            ActShape::new(4, 7, 7),
        )
        .unwrap();
    assert_eq!(second.ops()[..2], by_hand.block.ops()[..]);
    assert_eq!(second.ops()[2], first.ops()[1]);
    let after = g.reference_forward(&[&x]).unwrap().remove(0);
    assert!(relative_error(&after, &before) < 1e-5);
    // A block of ops the transform does not touch is skipped.
    let mut b = GraphBuilder::new();
    let i = b.input("x", ActShape::new(2, 3, 3));
    let relus = b.op("relus", Relu, i);
    b.output(relus);
    let mut h = b.build().unwrap();
    h.replace("relus", Block::new(vec![Relu.into(), Relu.into()]).unwrap())
        .unwrap();
    let report = h
        .apply_transform(&DoubleThenHalve, &NodeFilter::all())
        .unwrap();
    assert_eq!(report.skipped, ["relus"]);
}

#[test]
fn filters_select_by_name_kind_and_position() {
    let mut rng = SeededRng::new(8);
    let g = residual_graph(&mut rng);
    let names = |f: NodeFilter| -> Vec<String> {
        f.select(&g)
            .into_iter()
            .map(|i| g.nodes()[i].name().to_string())
            .collect()
    };
    assert_eq!(names(NodeFilter::kind("conv")), ["conv1", "gate"]);
    assert_eq!(names(NodeFilter::kind("conv").except_first(1)), ["gate"]);
    assert_eq!(names(NodeFilter::kind("conv").except_last(1)), ["conv1"]);
    assert_eq!(names(NodeFilter::name("*1")), ["conv1", "bn1", "relu1"]);
    assert_eq!(names(!NodeFilter::kind("conv")).len(), g.nodes().len() - 2);
    assert_eq!(
        names(NodeFilter::predicate("wide", |n| n.output_shape().channels > 4)),
        ["cat"]
    );
    assert_eq!(
        names(NodeFilter::all().and(NodeFilter::kind("add"))),
        ["add"]
    );
}

#[test]
fn replace_checks_the_output_shape() {
    let mut rng = SeededRng::new(9);
    let mut g = residual_graph(&mut rng);
    let same = conv(&mut rng, 4, 4, 1, ConvSpec::new());
    g.replace("conv1", Block::single(same)).unwrap();
    let narrower = conv(&mut rng, 3, 4, 1, ConvSpec::new());
    let err = graph_error(g.replace("conv1", Block::single(narrower)).unwrap_err());
    assert!(
        matches!(&err, GraphError::Rewrite { node, .. } if node == "conv1"),
        "{err}"
    );
    assert!(matches!(
        graph_error(g.replace("nope", NodeOp::Add).unwrap_err()),
        GraphError::UnknownNode { .. }
    ));
    let err = graph_error(g.replace("relu1", NodeOp::Add).unwrap_err());
    assert!(matches!(err, GraphError::Rewrite { .. }));
}

#[test]
fn a_node_cut_out_computes_what_it_computed_in_the_graph() {
    let mut rng = SeededRng::new(11);
    let g = residual_graph(&mut rng);
    let x = rng.normal_array((2, 4, 7, 7), 1.0);
    let trace = g.reference_trace(&[&x], &["relu1", "gate", "se"]).unwrap();
    let se = g.node_graph("se").unwrap();
    assert_eq!(se.inputs().len(), 2);
    assert_eq!(se.nodes().len(), 1);
    let out = se
        .reference_forward(&[&trace.captured["relu1"], &trace.captured["gate"]])
        .unwrap();
    assert_eq!(out[0], trace.captured["se"]);
    // A value read twice becomes one input.
    let mut b = GraphBuilder::new();
    let i = b.input("i", ActShape::new(1, 2, 2));
    let twice = b.add("twice", &[i, i]);
    b.output(twice);
    let g2 = b.build().unwrap();
    assert_eq!(g2.node_graph("twice").unwrap().inputs().len(), 1);
    assert!(matches!(
        graph_error(g.node_graph("nope").unwrap_err()),
        GraphError::UnknownNode { .. }
    ));
}

#[test]
fn summary_rows_sum_to_the_graph_cost() {
    let mut rng = SeededRng::new(10);
    let g = residual_graph(&mut rng);
    let summary = g.summary().unwrap();
    assert_eq!(summary.rows.len(), g.nodes().len());
    assert_eq!(summary.total, g.cost().unwrap());
    // conv1: 4·4·9 MACs per output pixel on 7×7; bn1: one per element;
    // gate: 4·4·49 on 1×1; mul: one per element.
    assert_eq!(
        summary.total.macs,
        4 * 4 * 9 * 49 + 4 * 49 + 4 * 4 * 49 + 4 * 49
    );
    let text = summary.to_string();
    assert!(
        text.contains("conv1") && text.contains("total") && text.contains("8×7×7"),
        "{text}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any order of the same node definitions builds a graph computing the
    /// same outputs, with every node after the nodes it reads.
    #[test]
    fn node_order_does_not_matter(seed in 0u64..1000, perm_seed in 0u64..1000) {
        let mut rng = SeededRng::new(seed);
        let g = residual_graph(&mut rng);
        let (inputs, mut defs, outputs) = g.to_defs();
        let mut prng = SeededRng::new(perm_seed);
        for i in (1..defs.len()).rev() {
            defs.swap(i, prng.below(i + 1));
        }
        let shuffled = Graph::new(inputs, defs, outputs).unwrap();
        for (i, node) in shuffled.nodes().iter().enumerate() {
            for &input in node.inputs() {
                if let ValueId::Node(k) = input {
                    prop_assert!(k < i);
                }
            }
        }
        let x = rng.normal_array((1, 4, 7, 7), 1.0);
        prop_assert_eq!(shuffled.reference_forward(&[&x]).unwrap(), g.reference_forward(&[&x]).unwrap());
    }
}

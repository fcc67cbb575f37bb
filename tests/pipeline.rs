//! The whole-network pipeline: composition of steps inside blocks against
//! the transforms applied by hand, the compressed graph's fast plan against
//! its reference forward, the report's totals against the graph's cost and
//! the per-node rows, and the order of transforms and fine-tunings in the
//! gradual and one-shot modes.

mod common;

use common::FAST_TOL;
use hasten::core::graph::NodeOp;
use hasten::core::ndarray::Array4;
use hasten::core::{relative_error, Graph, Layer, Op, SeededRng, Transform};
use hasten::fastconv::{Plan, PlanOptions};
use hasten::models::{lenet5, resnet8, small_mobilenet, small_vgg, ModelConfig};
use hasten::pipeline::{compress, compress_calibrated, Event, FineTuneData, PipelineError, Recipe};
use hasten::quant::{activation_params, Granularity, Int8Quantize};
use hasten::train::data::{ImageSet, Splits};

fn assert_plan_matches_reference(g: &Graph, batch: usize) {
    let s = g.inputs()[0].shape();
    let x: Array4<f32> = SeededRng::new(3).normal_array(s.batched(batch), 1.0);
    let reference = g.reference_forward(&[&x]).unwrap().remove(0);
    let mut plan = Plan::for_graph(g, batch, PlanOptions::default()).unwrap();
    let fast = plan.run(&x).unwrap().to_owned();
    let err = relative_error(&reference, &fast);
    assert!(err < FAST_TOL, "plan vs reference {err:e}");
}

fn block_ops(g: &Graph, node: &str) -> Vec<Op> {
    match g.node(node).unwrap().op() {
        NodeOp::Block(b) => b.ops().to_vec(),
        other => panic!("{node} holds {}", other.kind()),
    }
}

#[test]
fn tucker2_then_int8_equals_int8_on_each_factor_by_hand() {
    let g = lenet5(&ModelConfig::mnist()).unwrap();
    let tucker = Recipe::from_toml(
        r#"
        latency = { batches = [] }
        [[steps]]
        select = { names = ["conv2"] }
        method = { name = "tucker2", ranks = [4, 3] }
        "#,
    )
    .unwrap();
    let (factored, _) = compress(&g, &tucker, None).unwrap();
    let recipe = Recipe::from_toml(
        r#"
        latency = { batches = [] }
        [[steps]]
        select = { names = ["conv2"] }
        method = { name = "tucker2", ranks = [4, 3] }
        [[steps]]
        select = { kinds = ["conv"], except_first = 1 }
        method = { name = "int8", input_range = [-2.0, 6.0], granularity = "per-channel" }
        "#,
    )
    .unwrap();
    let (both, report) = compress(&g, &recipe, None).unwrap();

    // By hand: int8 on each Tucker factor, at the shape it sees in the chain.
    let int8 = Int8Quantize::new(
        activation_params(-2.0, 6.0, hasten::core::IntType::U8).unwrap(),
        None,
        Granularity::PerChannel,
    );
    let factors = block_ops(&factored, "conv2");
    assert_eq!(factors.len(), 3, "1×1, core, 1×1");
    let NodeOp::Block(block) = factored.node("conv2").unwrap().op() else {
        unreachable!()
    };
    let shapes = block
        .shapes(factored.node("conv2").unwrap().input_shapes()[0])
        .unwrap();
    let mut expected = Vec::new();
    for (op, &shape) in factors.iter().zip(&shapes) {
        let Op::Conv(c) = op else {
            panic!("Tucker factors are convolutions")
        };
        let compressed = int8.apply(&Layer::Conv(c.clone()), shape).unwrap();
        expected.extend(compressed.block.into_ops());
    }
    assert_eq!(block_ops(&both, "conv2"), expected);
    let rows: Vec<&str> = report.nodes.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(rows, ["conv2", "conv2.0", "conv2.1", "conv2.2"]);
    assert_eq!(report.steps[1].skipped, Vec::<String>::new());
    assert_eq!(both.node("conv1").unwrap().kind(), "conv", "spared");
    assert_plan_matches_reference(&both, 2);
}

#[test]
fn report_totals_equal_the_graph_cost_and_the_rows() {
    let g = resnet8(&ModelConfig::mnist()).unwrap();
    let recipe = Recipe::from_toml(
        r#"
        latency = { batches = [1], runs = 1 }
        [[steps]]
        select = { names = ["layer*.conv*"] }
        method = { name = "tucker2", rank = { speedup = 2.0 } }
        [[steps]]
        select = { kinds = ["linear"] }
        method = { name = "kmeans", k = 16, granularity = "per-channel" }
        [[steps]]
        select = { names = ["layer3.*"], kinds = ["conv"] }
        method = { name = "fixed-point", bits = 8 }
        "#,
    )
    .unwrap();
    let (c, report) = compress(&g, &recipe, None).unwrap();
    assert_eq!(report.before, g.cost().unwrap().into());
    assert_eq!(report.after, c.cost().unwrap().into());
    assert!(report.mac_speedup() > 1.2, "{}", report.mac_speedup());
    // Each step changes the graph's cost by the sum of its rows' changes.
    let mut offset = 0;
    for (i, s) in report.steps.iter().enumerate() {
        let rows: Vec<_> = report
            .nodes
            .iter()
            .skip(offset)
            .take_while(|r| r.method == report.nodes[offset].method)
            .collect();
        offset += rows.len();
        let delta = |f: fn(&hasten::pipeline::Costs) -> u64| -> i128 {
            rows.iter()
                .map(|r| f(&r.after) as i128 - f(&r.before) as i128)
                .sum()
        };
        assert_eq!(
            s.after.macs as i128 - s.before.macs as i128,
            delta(|c| c.macs),
            "step {i}"
        );
        assert_eq!(
            s.after.weight_bytes as i128 - s.before.weight_bytes as i128,
            delta(|c| c.weight_bytes),
            "step {i}"
        );
        assert_eq!(
            s.after.params as i128 - s.before.params as i128,
            delta(|c| c.params),
            "step {i}"
        );
    }
    assert_eq!(offset, report.nodes.len());
    assert_eq!(report.steps[2].before, report.steps[1].after);
    assert_eq!(report.latency.len(), 1);
    assert!(report.latency[0].original_ms > 0.0 && report.latency[0].compressed_ms > 0.0);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["after"]["macs"], report.after.macs);
    let table = report.to_string();
    assert!(table.contains("layer3.0.conv1.1"), "{table}");
    assert_plan_matches_reference(&c, 2);
}

fn tiny_data() -> FineTuneData {
    let mut rng = SeededRng::new(4);
    let set = |n: usize, rng: &mut SeededRng| {
        let images = rng.uniform_array((n, 1, 28, 28), 0.0, 1.0);
        let labels = (0..n).map(|i| i % 10).collect();
        ImageSet::new(images, labels, 10).unwrap()
    };
    Splits {
        train: set(32, &mut rng),
        test: set(16, &mut rng),
    }
}

fn events(mode: &str, second: &str) -> (Vec<Event>, Vec<String>, Graph) {
    let g = lenet5(&ModelConfig::mnist()).unwrap();
    let recipe = Recipe::from_toml(&format!(
        r#"
        mode = "{mode}"
        fine_tune = {{ epochs = 1, lr = 0.01, batch = 16 }}
        latency = {{ batches = [] }}
        [[steps]]
        select = {{ names = ["fc1"] }}
        method = {{ name = "svd", rank = 8 }}
        [[steps]]
        select = {{ names = ["fc2"] }}
        method = {second}
        "#
    ))
    .unwrap();
    let (c, report) = compress(&g, &recipe, Some(&tiny_data())).unwrap();
    assert!(report.accuracy_before.is_some() && report.accuracy_after.is_some());
    (report.events, report.notes, c)
}

#[test]
fn gradual_and_one_shot_order_transforms_and_fine_tuning() {
    use Event::{FineTune, Transform};
    let svd = r#"{ name = "svd", rank = 8 }"#;
    let int8 = r#"{ name = "int8", input_range = [0.0, 4.0] }"#;
    let xnor = r#"{ name = "binarize", kind = "xnor-net" }"#;
    // int8 and XNOR-Net ops train through their straight-through backward,
    // like SVD: nothing is skipped and nothing needs a note.
    let mut tuned = None;
    for method in [svd, int8, xnor] {
        let (e, notes, _) = events("one-shot", method);
        assert_eq!(e, [Transform(1), Transform(2), FineTune(2)]);
        assert!(notes.is_empty(), "{notes:?}");
        let (e, notes, g) = events("gradual", method);
        assert_eq!(e, [Transform(1), FineTune(1), Transform(2), FineTune(2)]);
        assert!(notes.is_empty(), "{notes:?}");
        tuned = Some(g);
    }
    let tuned = tuned.unwrap();
    // Fine-tuning changed the weights the later step quantized.
    let untuned = {
        let recipe = Recipe::from_toml(&format!(
            "latency = {{ batches = [] }}\n[[steps]]\nselect = {{ names = [\"fc1\"] }}\nmethod = {svd}\n[[steps]]\nselect = {{ names = [\"fc2\"] }}\nmethod = {xnor}\n"
        ))
        .unwrap();
        compress(&lenet5(&ModelConfig::mnist()).unwrap(), &recipe, None)
            .unwrap()
            .0
    };
    assert_ne!(block_ops(&tuned, "fc2"), block_ops(&untuned, "fc2"));
}

#[test]
fn selections_that_match_nothing_name_the_step() {
    let g = lenet5(&ModelConfig::mnist()).unwrap();
    let run = |select: &str| {
        let recipe = Recipe::from_toml(&format!(
            "[[steps]]\nmethod = {{ name = \"svd\", rank = 2 }}\n[[steps]]\nselect = {select}\nmethod = {{ name = \"svd\", rank = 2 }}\n"
        ))
        .unwrap();
        compress(&g, &recipe, None).unwrap_err()
    };
    match run(r#"{ names = ["nope*"] }"#) {
        PipelineError::Step { step, message, .. } => {
            assert_eq!(step, 2);
            assert!(message.contains("matches no node"), "{message}");
        }
        other => panic!("{other}"),
    }
    match run(r#"{ kinds = ["relu"] }"#) {
        PipelineError::Step { step, message, .. } => {
            assert_eq!(step, 2);
            assert!(message.contains("no convolution or linear"), "{message}");
        }
        other => panic!("{other}"),
    }
    // A rank above a layer's bound fails when applied, naming step and node.
    let recipe = Recipe::from_toml(
        "[[steps]]\nselect = { names = [\"fc3\"] }\nmethod = { name = \"svd\", rank = 500 }\n",
    )
    .unwrap();
    let err = compress(&g, &recipe, None).unwrap_err();
    assert!(
        matches!(err, PipelineError::Transform { step: 1, .. }),
        "{err}"
    );
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(&err).map_or(String::new(), |s| s.to_string())
    );
    assert!(chain.contains("fc3"), "{chain}");
}

#[test]
fn shipped_recipes_parse_and_compress_lenet5() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let recipe = Recipe::from_path(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(!recipe.steps.is_empty());
        count += 1;
    }
    assert!(count >= 3, "{count} recipes");
    let mut recipe = Recipe::from_path(&dir.join("lenet5-svd.toml")).unwrap();
    recipe.latency.batches.clear();
    let g = lenet5(&ModelConfig::mnist()).unwrap();
    let (c, report) = compress(&g, &recipe, None).unwrap();
    assert_eq!(report.nodes.len(), 2);
    assert!(report.notes[0].contains("no data"), "{:?}", report.notes);
    assert!(c.cost().unwrap().params < g.cost().unwrap().params);
    assert_plan_matches_reference(&c, 1);
}

/// `kmeans` with 16 centroids per channel on every layer of the small VGG
/// and the small MobileNet, whose first convolution has 9 weights per
/// filter: the step runs, that layer is kept exactly (each weight its own
/// centroid) and the compressed graph's plan matches its reference.
#[test]
fn kmeans_per_channel_keeps_filters_of_at_most_k_weights_exactly() {
    let recipe = Recipe::from_toml(
        r#"
        latency = { batches = [] }
        [[steps]]
        method = { name = "kmeans", k = 16, granularity = "per-channel" }
        "#,
    )
    .unwrap();
    for (g, first) in [
        (small_vgg(&ModelConfig::mnist()).unwrap(), "features.0"),
        (small_mobilenet(&ModelConfig::mnist()).unwrap(), "model.0.0"),
    ] {
        let (c, report) = compress(&g, &recipe, None).unwrap();
        let row = report.nodes.iter().find(|r| r.node == first).unwrap();
        assert_eq!(row.weight_error, Some(0.0), "{first}");
        let Op::CodebookConv(q) = &block_ops(&c, first)[0] else {
            panic!("{first} is not a codebook conv")
        };
        let NodeOp::Op(Op::Conv(original)) = g.node(first).unwrap().op() else {
            panic!("{first} is not a convolution")
        };
        let w = original.weight().array();
        assert_eq!(q.dequantized().as_slice(), w.as_slice(), "{first}");
        assert_plan_matches_reference(&c, 1);
    }
}

/// A `prune-channels` step equals the graph pruning driver called by hand
/// (same groups, L1 scores, target and multiple), its rows add up to the
/// step's change, a later step composes on the pruned graph, and a
/// selection restricts pruning to the groups it ties.
#[test]
fn prune_channels_step_equals_the_driver_and_composes() {
    use hasten::prune::criteria::Norm;
    use hasten::prune::graph::{
        group_scores, prune_graph, ChannelGroups, GraphPruneConfig, GraphTarget, GroupCriterion,
    };
    let g = resnet8(&ModelConfig::mnist().with_random_batch_norm()).unwrap();
    let recipe = Recipe::from_toml(
        r#"
        latency = { batches = [] }
        [[steps]]
        method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 4 }
        [[steps]]
        select = { names = ["layer*.conv*"] }
        method = { name = "tucker2", rank = { speedup = 1.5 } }
        "#,
    )
    .unwrap();
    let (c, report) = compress(&g, &recipe, None).unwrap();

    let groups = ChannelGroups::analyze(&g).unwrap();
    let scores = group_scores(&g, &groups, GroupCriterion::Magnitude(Norm::L1), None).unwrap();
    let config = GraphPruneConfig {
        target: GraphTarget::Macs(0.5),
        multiple: 4,
    };
    let (by_hand, pruning) = prune_graph(&g, &groups, &scores, &config).unwrap();
    let step = &report.steps[0];
    assert_eq!(step.before, g.cost().unwrap().into());
    assert_eq!(step.after, by_hand.cost().unwrap().into());
    assert_eq!(step.after, pruning.after.into());
    assert!(
        step.before.macs as f64 >= 1.9 * step.after.macs as f64,
        "half the MACs: {} → {}",
        step.before.macs,
        step.after.macs
    );
    let rows: Vec<_> = report
        .nodes
        .iter()
        .filter(|r| r.method == "prune-channels")
        .collect();
    let delta: i128 = rows
        .iter()
        .map(|r| r.after.macs as i128 - r.before.macs as i128)
        .sum();
    assert_eq!(step.after.macs as i128 - step.before.macs as i128, delta);
    // The second step saw the pruned graph.
    assert_eq!(report.steps[1].before, step.after);
    assert_eq!(report.after, c.cost().unwrap().into());
    assert_plan_matches_reference(&c, 2);

    // The shipped recipe: half the MACs by pruning, then Tucker-2.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let mut shipped = Recipe::from_path(&dir.join("resnet-half-macs.toml")).unwrap();
    shipped.latency.batches.clear();
    let (c, report) = compress(&g, &shipped, None).unwrap();
    assert!(report.mac_speedup() > 2.0, "{}", report.mac_speedup());
    assert_plan_matches_reference(&c, 1);

    // The gradual LeNet-5 recipe: cuts of at least 30 % and 25 % of the
    // current MACs (whole channels: a cut may overshoot) leave at most half
    // of the original (0.7 · 0.75 = 0.525 asked, rounded down by channels).
    let mut gradual = Recipe::from_path(&dir.join("lenet5-prune-half.toml")).unwrap();
    gradual.latency.batches.clear();
    let lenet = lenet5(&ModelConfig::mnist()).unwrap();
    let (c, report) = compress(&lenet, &gradual, None).unwrap();
    assert_eq!(report.steps.len(), 2);
    assert!(report.mac_speedup() >= 2.0, "{}", report.mac_speedup());
    for (s, asked) in report.steps.iter().zip([0.7, 0.75]) {
        let kept = s.after.macs as f64 / s.before.macs as f64;
        assert!(kept <= asked, "step {}: {kept}", s.step);
    }
    assert_plan_matches_reference(&c, 1);

    // Restricted to layer1: only the groups tied to layer1's producers
    // shrink; layer3's convolutions keep their widths.
    let restricted = Recipe::from_toml(
        r#"
        latency = { batches = [] }
        [[steps]]
        select = { names = ["layer1.*"] }
        method = { name = "prune-channels", target = "per-group", fraction = 0.5, multiple = 1 }
        "#,
    )
    .unwrap();
    let (r, report) = compress(&g, &restricted, None).unwrap();
    assert!(report.nodes.iter().any(|n| n.node.starts_with("layer1.")));
    for node in g.nodes().iter().filter(|n| n.name().starts_with("layer3.")) {
        assert_eq!(
            r.node(node.name()).unwrap().output_shape(),
            node.output_shape(),
            "{}",
            node.name()
        );
    }
}

/// The int8 op of a node quantized by a one-op block.
fn int8_input(g: &Graph, node: &str) -> hasten::core::QuantParams {
    match block_ops(g, node).as_slice() {
        [Op::Int8Conv(op)] => *op.input_params(),
        other => panic!("{node}: {} ops", other.len()),
    }
}

/// An int8 step without a fixed range calibrates each layer on the data:
/// the first layer's range is the batch's own min/max (closed form), every
/// other layer's the min/max of its input as the reference forward traces
/// it; a percentile clips the range; without data the step is an error.
#[test]
fn int8_calibrated_ranges_are_the_traced_min_max() {
    let g = lenet5(&ModelConfig::mnist().with_seed(3)).unwrap();
    let batch = SeededRng::new(8).normal_array((6, 1, 28, 28), 1.5);
    let recipe = |rule: &str| {
        Recipe::from_toml(&format!(
            "latency = {{ batches = [] }}\n[[steps]]\nmethod = {{ name = \"int8\"{rule} }}\n"
        ))
        .unwrap()
    };
    let (c, report) = compress_calibrated(&g, &recipe(""), None, Some(&batch)).unwrap();
    let range = |x: &Array4<f32>| {
        x.iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            })
    };
    let u8 = hasten::core::IntType::U8;
    let (lo, hi) = range(&batch);
    assert_eq!(
        int8_input(&c, "conv1"),
        activation_params(lo, hi, u8).unwrap()
    );
    let layers = ["conv1", "conv2", "fc1", "fc2", "fc3"];
    let inputs: Vec<&str> = layers
        .iter()
        .map(|n| g.value_name(g.node(n).unwrap().inputs()[0]))
        .collect();
    let trace = g.reference_trace(&[&batch], &inputs).unwrap();
    for (layer, input) in layers.iter().zip(&inputs) {
        let (lo, hi) = range(&trace.captured[*input]);
        assert_eq!(
            int8_input(&c, layer),
            activation_params(lo, hi, u8).unwrap(),
            "{layer}"
        );
    }
    assert_eq!(report.nodes.len(), layers.len());

    let (clipped, _) = compress_calibrated(
        &g,
        &recipe(", calibrate = { percentile = 99.0 }"),
        None,
        Some(&batch),
    )
    .unwrap();
    assert!(int8_input(&clipped, "conv1").scale() < int8_input(&c, "conv1").scale());

    let err = compress(&g, &recipe(""), None).unwrap_err();
    assert!(err.to_string().contains("calibration data"), "{err}");
    for bad in [
        ", calibrate = { percentile = 40.0 }",
        ", calibrate = \"min-max\", input_range = [0.0, 1.0]",
    ] {
        let text = format!("[[steps]]\nmethod = {{ name = \"int8\"{bad} }}\n");
        assert!(Recipe::from_toml(&text).is_err(), "{bad}");
    }
}

/// Calibrated int8 after Tucker-2: each factor of the block gets the
/// min/max of its own input — the block's traced input run through the
/// float factors before it, by hand — signed as asked, and the report
/// names the factors `node.i`.
#[test]
fn int8_calibrates_each_factor_inside_a_block() {
    let g = lenet5(&ModelConfig::mnist().with_seed(3)).unwrap();
    let batch = SeededRng::new(8).normal_array((6, 1, 28, 28), 1.5);
    let tucker = r#"latency = { batches = [] }
[[steps]]
select = { names = ["conv2"] }
method = { name = "tucker2", rank = 3 }
"#;
    let recipe = Recipe::from_toml(&format!(
        r#"{tucker}[[steps]]
select = {{ names = ["conv2", "fc1"] }}
method = {{ name = "int8", signed = true }}
"#
    ))
    .unwrap();
    let tucker = Recipe::from_toml(tucker).unwrap();
    let (t, _) = compress(&g, &tucker, None).unwrap();
    let (c, report) = compress_calibrated(&g, &recipe, None, Some(&batch)).unwrap();
    let factors = block_ops(&t, "conv2");
    assert_eq!(factors.len(), 3);
    let input = t.value_name(t.node("conv2").unwrap().inputs()[0]);
    let trace = t.reference_trace(&[&batch], &[input]).unwrap();
    let mut x = trace.captured[input].clone();
    let i8 = hasten::core::IntType::I8;
    let ops = block_ops(&c, "conv2");
    assert_eq!(ops.len(), 3);
    for (i, (factor, op)) in factors.iter().zip(&ops).enumerate() {
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let Op::Int8Conv(q) = op else {
            panic!("factor {i} is not int8")
        };
        assert_eq!(
            *q.input_params(),
            activation_params(lo, hi, i8).unwrap(),
            "{i}"
        );
        x = hasten::core::Operator::reference_forward(factor, &x).unwrap();
    }
    // The three factors see different ranges.
    let scales: Vec<f32> = ops
        .iter()
        .map(|op| match op {
            Op::Int8Conv(q) => q.input_params().scale(),
            _ => unreachable!(),
        })
        .collect();
    assert!(
        scales[0] != scales[1] && scales[1] != scales[2],
        "{scales:?}"
    );
    let names: Vec<&str> = report.nodes.iter().map(|n| n.node.as_str()).collect();
    assert!(
        names.ends_with(&["conv2.0", "conv2.1", "conv2.2", "fc1"]),
        "{names:?}"
    );
}

/// A range that cannot be calibrated (the selected layer's captured input
/// holds a NaN) is a step error naming the node and the value it captured.
#[test]
fn int8_calibration_failure_names_the_node() {
    let g = lenet5(&ModelConfig::mnist().with_seed(3)).unwrap();
    let mut batch = SeededRng::new(8).normal_array((2, 1, 28, 28), 1.0);
    batch[[1, 0, 14, 14]] = f32::NAN;
    let recipe = Recipe::from_toml(
        "latency = { batches = [] }\n[[steps]]\nselect = { names = [\"conv2\"] }\n\
         method = { name = \"int8\" }\n",
    )
    .unwrap();
    let err = compress_calibrated(&g, &recipe, None, Some(&batch)).unwrap_err();
    let input = g.value_name(g.node("conv2").unwrap().inputs()[0]);
    let message = err.to_string();
    assert!(
        message.contains("`conv2`") && message.contains(&format!("`{input}`")),
        "{message}"
    );
}

/// Planted case: labels are the float network's own predictions; a fixed
/// range far wider than the activations (a step of ~16 where they are a few
/// units) rounds most of them to zero, while int8 calibrated on the inputs
/// keeps the predictions at least as well, and nearly all of them.
#[test]
fn int8_calibrated_on_data_beats_a_wrong_fixed_range() {
    let g = lenet5(&ModelConfig::mnist().with_seed(5)).unwrap();
    let images = SeededRng::new(9).normal_array((64, 1, 28, 28), 3.0);
    let logits = g.reference_forward(&[&images]).unwrap().remove(0);
    let labels: Vec<usize> = logits
        .outer_iter()
        .map(|row| {
            let row: Vec<f32> = row.iter().copied().collect();
            (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap()
        })
        .collect();
    let set = ImageSet::new(images.clone(), labels, 10).unwrap();
    let data = Splits {
        train: set.clone(),
        test: set,
    };
    let int8 = |method: &str| {
        let recipe = Recipe::from_toml(&format!(
            "latency = {{ batches = [] }}\n[[steps]]\nmethod = {method}\n"
        ))
        .unwrap();
        let (c, report) = compress(&g, &recipe, Some(&data)).unwrap();
        assert_eq!(report.accuracy_before, Some(1.0), "planted labels");
        (c, report.accuracy_after.unwrap())
    };
    let (_, calibrated) = int8("{ name = \"int8\" }");
    let (_, wrong) = int8("{ name = \"int8\", input_range = [-2000.0, 2000.0] }");
    assert!(
        calibrated >= wrong,
        "calibrated {calibrated}, wrong {wrong}"
    );
    assert!(calibrated >= 0.9, "calibrated {calibrated}");
    assert!(wrong < 0.9, "the wrong range must hurt: {wrong}");
}

/// A `prune-channels` step by an activation criterion equals the driver
/// scoring the same calibration batch by hand, and is an error without one.
#[test]
fn prune_channels_by_activation_energy_and_apoz_use_the_calibration_batch() {
    use hasten::prune::graph::{
        group_scores, prune_graph, ChannelGroups, GraphPruneConfig, GraphTarget, GroupCriterion,
    };
    let g = resnet8(&ModelConfig::mnist().with_random_batch_norm()).unwrap();
    let batch = SeededRng::new(2).normal_array((4, 1, 28, 28), 1.0);
    for (name, criterion) in [
        ("energy", GroupCriterion::ActivationEnergy),
        ("apoz", GroupCriterion::Apoz),
    ] {
        let recipe = Recipe::from_toml(&format!(
            "latency = {{ batches = [] }}\n[[steps]]\nmethod = {{ name = \"prune-channels\", \
             target = \"per-group\", fraction = 0.5, multiple = 1, criterion = \"{name}\" }}\n"
        ))
        .unwrap();
        let (c, _) = compress_calibrated(&g, &recipe, None, Some(&batch)).unwrap();
        let groups = ChannelGroups::analyze(&g).unwrap();
        let scores = group_scores(&g, &groups, criterion, Some(&[&batch])).unwrap();
        let config = GraphPruneConfig {
            target: GraphTarget::PerGroup(0.5),
            multiple: 1,
        };
        let (by_hand, _) = prune_graph(&g, &groups, &scores, &config).unwrap();
        let x = SeededRng::new(6).normal_array((2, 1, 28, 28), 1.0);
        assert_eq!(
            c.reference_forward(&[&x]).unwrap(),
            by_hand.reference_forward(&[&x]).unwrap(),
            "{name}"
        );
        let err = compress(&g, &recipe, None).unwrap_err();
        assert!(
            err.to_string().contains("calibration data"),
            "{name}: {err}"
        );
    }
}

/// Planted case: LeNet-5 whose `conv2` filters have rank 4. An
/// `asymmetric` step of rank 4 fitted on calibration data reproduces the
/// network (the reduced-rank regression is exact); rank 2 cannot; without
/// data the step is an error.
#[test]
fn asymmetric_step_recovers_a_planted_low_rank_layer() {
    use hasten::core::{Conv4d, ConvLayer};
    let mut g = lenet5(&ModelConfig::mnist().with_seed(2)).unwrap();
    let NodeOp::Op(Op::Conv(conv2)) = g.node("conv2").unwrap().op().clone() else {
        panic!("conv2 is a convolution")
    };
    let mut rng = SeededRng::new(12);
    let a: hasten::core::ndarray::Array2<f32> = rng.normal_array((16, 4), 0.3);
    let b: hasten::core::ndarray::Array2<f32> = rng.normal_array((4, 150), 0.3);
    let weight = a.dot(&b).into_shape_with_order((16, 6, 5, 5)).unwrap();
    let planted = ConvLayer::new(
        Conv4d::new(weight).unwrap(),
        conv2.bias().cloned(),
        *conv2.spec(),
    )
    .unwrap();
    g.replace("conv2", NodeOp::Op(Op::Conv(planted))).unwrap();
    let batch = SeededRng::new(13).normal_array((8, 1, 28, 28), 1.0);
    let x = SeededRng::new(14).normal_array((4, 1, 28, 28), 1.0);
    let truth = g.reference_forward(&[&x]).unwrap().remove(0);
    let error = |rank: usize| {
        let recipe = Recipe::from_toml(&format!(
            "latency = {{ batches = [] }}\n[[steps]]\nselect = {{ names = [\"conv2\"] }}\n\
             method = {{ name = \"asymmetric\", rank = {rank}, samples = 400 }}\n"
        ))
        .unwrap();
        let (c, report) = compress_calibrated(&g, &recipe, None, Some(&batch)).unwrap();
        assert_eq!(report.nodes.len(), 1);
        assert_eq!(block_ops(&c, "conv2").len(), 2, "k×k then 1×1");
        relative_error(&truth, &c.reference_forward(&[&x]).unwrap()[0])
    };
    assert!(error(4) < 1e-4, "rank 4: {:e}", error(4));
    assert!(error(2) > 1e-2, "rank 2: {:e}", error(2));
    let recipe =
        Recipe::from_toml("[[steps]]\nmethod = { name = \"asymmetric\", rank = 4 }\n").unwrap();
    let err = compress(&g, &recipe, None).unwrap_err();
    assert!(err.to_string().contains("calibration data"), "{err}");
}

/// A `prune-channels` step with `compensate = true` equals the driver's
/// channels removed by hand with their means on the same calibration
/// batch put back, differs from the step without it, and is an error
/// without calibration data.
#[test]
fn prune_channels_compensate_puts_back_the_calibration_means() {
    use hasten::prune::criteria::Norm;
    use hasten::prune::graph::{
        consumer_input_means, group_scores, prune_graph, remove_channels_compensated,
        ChannelGroups, GraphPruneConfig, GraphTarget, GroupCriterion,
    };
    let g = resnet8(&ModelConfig::mnist().with_random_batch_norm()).unwrap();
    let batch = SeededRng::new(2).normal_array((4, 1, 28, 28), 1.0);
    let recipe = |compensate: bool| {
        Recipe::from_toml(&format!(
            "latency = {{ batches = [] }}\n[[steps]]\nmethod = {{ name = \"prune-channels\", \
             target = \"per-group\", fraction = 0.25, multiple = 1, compensate = {compensate} }}\n"
        ))
        .unwrap()
    };
    let (c, _) = compress_calibrated(&g, &recipe(true), None, Some(&batch)).unwrap();
    let (plain, _) = compress_calibrated(&g, &recipe(false), None, Some(&batch)).unwrap();

    let groups = ChannelGroups::analyze(&g).unwrap();
    let scores = group_scores(&g, &groups, GroupCriterion::Magnitude(Norm::L1), None).unwrap();
    let config = GraphPruneConfig {
        target: GraphTarget::PerGroup(0.25),
        multiple: 1,
    };
    let (_, pruning) = prune_graph(&g, &groups, &scores, &config).unwrap();
    let keep = pruning
        .groups
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kept.len() < r.total)
        .map(|(i, r)| (i, r.kept.clone()))
        .collect();
    let means = consumer_input_means(&g, &groups, &[&batch]).unwrap();
    let by_hand = remove_channels_compensated(&g, &groups, &keep, &means).unwrap();
    let x = SeededRng::new(6).normal_array((2, 1, 28, 28), 1.0);
    let y = c.reference_forward(&[&x]).unwrap();
    assert_eq!(y, by_hand.reference_forward(&[&x]).unwrap());
    assert_ne!(y, plain.reference_forward(&[&x]).unwrap());
    // The same MACs; consumers without a bias gain one.
    assert_eq!(c.cost().unwrap().macs, plain.cost().unwrap().macs);
    let err = compress(&g, &recipe(true), None).unwrap_err();
    assert!(err.to_string().contains("calibration data"), "{err}");
}

/// The shipped small-VGG low-rank recipes (CP three-way and Tucker-2, each
/// asking 4× fewer MACs per 3×3 convolution but the first): they decompose
/// exactly `features.3`, `.7` and `.10`, each block at most a quarter of
/// its layer's MACs (counted on the original graph), CP as `1×1`, one
/// `3×3` depthwise, `1×1`; the fine-tuning they ask for is distilled (CP's
/// factors at a tenth of the rate); the plans match the reference forward.
#[test]
fn shipped_small_vgg_low_rank_recipes_cut_each_layer_fourfold() {
    let g = small_vgg(&ModelConfig::mnist()).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    for (file, factor_lr) in [
        ("small-vgg-cp4.toml", Some(0.1)),
        ("small-vgg-tucker4.toml", None),
    ] {
        let mut recipe = Recipe::from_path(&dir.join(file)).unwrap();
        let tune = recipe.fine_tune.expect("fine-tuning");
        assert_eq!(tune.factor_lr_scale, factor_lr, "{file}");
        assert!(tune.distill.is_some(), "{file}");
        recipe.latency.batches.clear();
        let (c, _) = compress(&g, &recipe, None).unwrap();
        let blocks: Vec<&str> = c
            .nodes()
            .iter()
            .filter(|n| matches!(n.op(), NodeOp::Block(_)))
            .map(|n| n.name())
            .collect();
        assert_eq!(
            blocks,
            ["features.3", "features.7", "features.10"],
            "{file}"
        );
        for name in blocks {
            let input = [g.value_shape(g.node(name).unwrap().inputs()[0])];
            let before = g.node(name).unwrap().op().cost(&input).unwrap().macs;
            let after = c.node(name).unwrap().op().cost(&input).unwrap().macs;
            assert!(4 * after <= before, "{file} {name}: {before} → {after}");
            let ops = block_ops(&c, name);
            assert_eq!(ops.len(), 3, "{file} {name}");
            if file.contains("cp") {
                let Op::Conv(core) = &ops[1] else {
                    panic!("{name}: the CP core is a convolution")
                };
                let [r, per_group, kh, kw] = core.weight().dims();
                assert_eq!((per_group, kh, kw), (1, 3, 3), "{name}");
                assert_eq!(core.spec().groups, r, "{name}: depthwise");
            }
        }
        assert_plan_matches_reference(&c, 1);
    }
}

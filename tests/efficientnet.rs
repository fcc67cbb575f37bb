//! The pretrained EfficientNet-Lite0 (`shared/models/efficientnet_lite0`,
//! skipped with a message when absent) through the pipeline: filter pruning
//! of a quarter of its MACs — channels tied by residual `Add`s and
//! depthwise convolutions removed together — and int8 of its dense layers
//! calibrated on two photos; each compressed graph's fast plan must agree
//! with its reference forward on a photo it was not calibrated on.

#[allow(dead_code)]
#[path = "../examples/common/efficientnet_photos.rs"]
mod efficientnet_photos;

use efficientnet_photos::{layers, model_dir, Photos};
use hasten::core::ndarray::s;
use hasten::core::{relative_error, Graph};
use hasten::fastconv::{Plan, PlanOptions};
use hasten::onnx::{import_file, ImportOptions};
use hasten::pipeline::{compress_calibrated, Recipe};

/// `graph`'s fast plan and reference forward on `x`, and their relative
/// difference.
fn plan_vs_reference(graph: &Graph, x: &hasten::core::ndarray::Array4<f32>) -> f64 {
    let reference = graph.reference_forward(&[x]).unwrap().remove(0);
    let mut plan = Plan::for_graph(graph, 1, PlanOptions::default()).unwrap();
    let fast = plan.run(x).unwrap().to_owned();
    relative_error(&reference, &fast)
}

#[test]
#[ignore = "several minutes in a debug build: `cargo test --release --test efficientnet -- --ignored`"]
fn pruned_and_int8_efficientnet_plans_match_reference() {
    let dir = model_dir();
    if !dir.join("model.onnx").exists() {
        eprintln!(
            "EfficientNet-Lite0 not found in {} (set HASTEN_MODELS_DIR): skipped",
            dir.display()
        );
        return;
    }
    let photos = Photos::load(&dir).unwrap();
    let graph = import_file(dir.join("model.onnx"), &ImportOptions::default()).unwrap();
    let x = photos.inputs.slice(s![10..11, .., .., ..]).to_owned();
    let macs = graph.cost().unwrap().macs as f64;

    let prune = Recipe::from_toml(
        r#"latency = { batches = [] }
[[steps]]
method = { name = "prune-channels", target = "macs", fraction = 0.25, multiple = 8, criterion = "l1" }"#,
    )
    .unwrap();
    let (pruned, _) = compress_calibrated(&graph, &prune, None, None).unwrap();
    let ratio = pruned.cost().unwrap().macs as f64 / macs;
    assert!((0.6..=0.75).contains(&ratio), "MACs kept {ratio}");
    assert_eq!(pruned.output_shapes(), graph.output_shapes());
    let e = plan_vs_reference(&pruned, &x);
    assert!(e < 1e-5, "pruned: plan vs reference {e:.2e}");

    // Int8 of the first and the last layer, whose inputs (the photo, the
    // pooled features) come from no other quantized layer: the plan's
    // exact integer steps equal the reference.
    let (_, dense) = layers(&graph);
    let calibration = photos.inputs.slice(s![0..2, .., .., ..]).to_owned();
    let int8 = |names: Vec<String>| {
        let mut recipe = Recipe::from_toml(
            r#"latency = { batches = [] }
[[steps]]
method = { name = "int8", granularity = "per-channel" }"#,
        )
        .unwrap();
        recipe.steps[0].select.names = names;
        compress_calibrated(&graph, &recipe, None, Some(&calibration)).unwrap()
    };
    let ends = vec![dense[0].clone(), dense[dense.len() - 1].clone()];
    let (quantized, report) = int8(ends);
    assert_eq!(report.nodes.len(), 2);
    let e = plan_vs_reference(&quantized, &x);
    assert!(e < 1e-5, "int8 first and last: plan vs reference {e:.2e}");

    // Every dense layer: the plan's f32 ops (depthwise, adds) round
    // differently from the reference's, which flips the odd input code of
    // the next int8 layer at a rounding tie (about 4e-5 at the output for one
    // layer alone); over 34 layers that compounds, but stays well below
    // int8's own error against f32 (8e-2 on these photos), with the same
    // top-1 class.
    let (quantized, report) = int8(dense.clone());
    assert_eq!(report.nodes.len(), dense.len());
    let e = plan_vs_reference(&quantized, &x);
    assert!(e < 4e-2, "int8: plan vs reference {e:.2e}");
    let top1 = |y: &hasten::core::ndarray::Array4<f32>| {
        y.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    let reference = quantized.reference_forward(&[&x]).unwrap().remove(0);
    let mut plan = Plan::for_graph(&quantized, 1, PlanOptions::default()).unwrap();
    assert_eq!(top1(&plan.run(&x).unwrap().to_owned()), top1(&reference));
}

//! Training inside recipes: quantization-aware fine-tuning (`fine_tune.qat`)
//! against post-training quantization, with the frozen packed ops holding
//! exactly the trained `q(W)`; distillation from the original network
//! (`fine_tune.distill`) against the teacher–student trainer run by hand;
//! batch-norm recalibration after a pruning step against the closed-form
//! batch statistics.

use std::sync::Arc;

use hasten::core::graph::NodeOp;
use hasten::core::ndarray::{s, Array1, Array2, Array4, Axis};
use hasten::core::op::{BatchNorm, Flatten, Relu};
use hasten::core::{
    ActShape, ConvLayer, ConvSpec, Graph, GraphBuilder, LinearLayer, NodeFilter, Op, SeededRng,
};
use hasten::pipeline::{compress, Event, FineTuneData, Recipe};
use hasten::qat::{Int8Weights, QatQuantizer, QuantAwareTraining};
use hasten::teacher_student::{DistillSettings, DistillTrainer};
use hasten::train::data::{ImageSet, Splits};
use hasten::train::optim::{Adam, Sgd};
use hasten::train::schedule::Constant;
use hasten::train::{evaluate, FakeQuant, TrainConfig, Trainer, WeightQuantizer};

/// flatten → fc1 (16 → 24) → ReLU → fc2 (24 → 4), on 1×4×4 images.
fn mlp(seed: u64) -> Graph {
    let mut rng = SeededRng::new(seed);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(1, 4, 4));
    let f = b.op("flatten", Flatten, x);
    let fc1 = LinearLayer::new(rng.normal_array((24, 16), 0.3), Some(Array1::zeros(24)));
    let h = b.op("fc1", fc1.unwrap(), f);
    let h = b.op("relu", Relu, h);
    let fc2 = LinearLayer::new(rng.normal_array((4, 24), 0.3), Some(Array1::zeros(4)));
    let y = b.op("fc2", fc2.unwrap(), h);
    b.output(y);
    b.build().unwrap()
}

/// Planted task: Gaussian 1×4×4 images labelled by the arg-max of a fixed
/// random linear map to 4 classes.
fn planted(n: usize, seed: u64) -> ImageSet {
    let teacher: Array2<f32> = SeededRng::new(77).normal_array((4, 16), 1.0);
    let x: Array4<f32> = SeededRng::new(seed).normal_array((n, 1, 4, 4), 1.0);
    let labels = (0..n)
        .map(|i| {
            let v = x
                .slice(s![i, .., .., ..])
                .iter()
                .copied()
                .collect::<Array1<f32>>();
            let z = teacher.dot(&v);
            (0..4).fold(0, |b, k| if z[k] > z[b] { k } else { b })
        })
        .collect();
    ImageSet::new(x, labels, 4).unwrap()
}

fn data() -> FineTuneData {
    Splits {
        train: planted(512, 1),
        test: planted(1000, 2),
    }
}

/// The MLP trained in float on the planted task.
fn trained_mlp(data: &FineTuneData) -> Graph {
    let config = TrainConfig {
        epochs: 20,
        batch_size: 32,
        seed: 3,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(mlp(5), Adam::new(), Constant::new(0.01).unwrap(), config).unwrap();
    t.fit(&data.train, &data.test, |_| {}).unwrap();
    t.graph().unwrap()
}

/// A one-step recipe: `method` (a TOML table) on `node`, then the QAT
/// fine-tuning that [`qat_by_hand`] repeats by hand.
fn qat_recipe(node: &str, method: &str) -> Recipe {
    Recipe::from_toml(&format!(
        "fine_tune = {{ epochs = 2, lr = 0.01, batch = 32, qat = true }}\n\
         latency = {{ batches = [] }}\n\
         [[steps]]\n\
         select = {{ names = [\"{node}\"] }}\n\
         method = {method}\n"
    ))
    .unwrap()
}

/// The shadow weights of `node` after the recipes' QAT fine-tuning
/// (`epochs = 2, lr = 0.01, batch = 32`, SGD momentum 0.9) run by hand with
/// the fake quantizer `q` on that node alone.
fn qat_by_hand(
    float: &Graph,
    data: &FineTuneData,
    node: &str,
    q: Arc<dyn WeightQuantizer>,
) -> hasten::core::ndarray::ArrayD<f32> {
    let config = TrainConfig {
        epochs: 2,
        batch_size: 32,
        ..TrainConfig::default()
    };
    let fq = FakeQuant::select(float, &NodeFilter::name(node), q).unwrap();
    let mut t = Trainer::new(
        float.clone(),
        Sgd::new(0.9).unwrap(),
        Constant::new(0.01).unwrap(),
        config,
    )
    .unwrap()
    .with_fake_quant(fq)
    .unwrap();
    t.fit(&data.train, &data.test, |_| {}).unwrap();
    t.params().get(&format!("{node}.weight")).unwrap().clone()
}

/// The frozen node's packed weights, dequantized, as `[out, in]`.
fn packed_weights(g: &Graph, node: &str) -> Array2<f32> {
    let op = match g.node(node).unwrap().op() {
        NodeOp::Block(b) => b.ops()[0].clone(),
        NodeOp::Op(op) => op.clone(),
        other => panic!("{node}: {}", other.kind()),
    };
    match op {
        Op::BinaryConv(b) => b.dequantized(),
        Op::TernaryConv(t) => t.dequantized(),
        Op::FixedPointConv(f) => f.dequantized(),
        Op::Int8Conv(q) => {
            let w = q.weights();
            Array2::from_shape_fn(w.dim(), |(t, j)| f32::from(w[[t, j]]) * q.weight_scale(t))
        }
        other => panic!("{node}: {}", other.kind()),
    }
}

const QAT_RECIPE: &str = r#"
    mode = "gradual"
    fine_tune = { epochs = 6, lr = 0.02, batch = 32, qat = QAT }
    latency = { batches = [] }
    [[steps]]
    select = { names = ["fc1"] }
    method = { name = "binarize" }
    [[steps]]
    select = { names = ["fc2"] }
    method = { name = "ternarize", granularity = "per-channel" }
"#;

/// QAT in a recipe beats post-training quantization whose fine-tuning can
/// only move the packed ops' scales and biases (the same recipe without
/// `qat`), and beats fine-tune-then-quantize by at least 5 points (one run:
/// float 90.0 %, PTQ with its scales fine-tuned 79.1 %, fine-tuned then
/// quantized 70.1 %, QAT 80.1 %); freezing keeps exactly the `q(W)` of the
/// training: the frozen ops equal the quantizers applied to the weights
/// of the same quantization-aware run made by hand with the trainer.
#[test]
fn qat_in_a_recipe_beats_post_training_quantization_and_freezes_the_trained_weights() {
    let data = data();
    let float = trained_mlp(&data);
    let float_acc = evaluate(&float, &data.test, 256).unwrap();
    let run = |qat: bool| {
        let recipe = Recipe::from_toml(&QAT_RECIPE.replace("QAT", &qat.to_string())).unwrap();
        compress(&float, &recipe, Some(&data)).unwrap()
    };
    let (ptq, ptq_report) = run(false);
    let (qat, report) = run(true);
    use Event::{FineTune, Freeze, Transform};
    assert_eq!(
        ptq_report.events,
        [Transform(1), FineTune(1), Transform(2), FineTune(2)]
    );
    assert_eq!(
        report.events,
        [
            Transform(1),
            FineTune(1),
            Transform(2),
            FineTune(2),
            Freeze(1),
            Freeze(2)
        ]
    );
    let ptq_acc = evaluate(&ptq, &data.test, 256).unwrap();
    let qat_acc = evaluate(&qat, &data.test, 256).unwrap();
    assert_eq!(report.accuracy_after, Some(qat_acc));
    // Fine-tune in float, then quantize (what one-shot mode does without qat).
    let tuned_then_quantized = {
        let config = TrainConfig {
            epochs: 12,
            batch_size: 32,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(
            float.clone(),
            Sgd::new(0.9).unwrap(),
            Constant::new(0.02).unwrap(),
            config,
        )
        .unwrap();
        t.fit(&data.train, &data.test, |_| {}).unwrap();
        let recipe = Recipe::from_toml(&QAT_RECIPE.replace("QAT", "false")).unwrap();
        let g = compress(&t.graph().unwrap(), &recipe, None).unwrap().0;
        evaluate(&g, &data.test, 256).unwrap()
    };
    assert!(
        qat_acc > ptq_acc && qat_acc >= tuned_then_quantized + 0.05,
        "float {float_acc}, PTQ {ptq_acc}, fine-tuned then quantized {tuned_then_quantized}, QAT {qat_acc}"
    );

    // The same quantization-aware run by hand: step 1's fine-tuning with fc1
    // fake-quantized, then step 2's with fc1 and fc2 fake-quantized.
    let by_hand = |graph: Graph, rules: &[(&str, QatQuantizer)]| {
        let config = TrainConfig {
            epochs: 6,
            batch_size: 32,
            eval_batch_size: 256,
            ..TrainConfig::default()
        };
        let qat = rules
            .iter()
            .fold(QuantAwareTraining::new(), |q, (node, rule)| {
                q.quantize(NodeFilter::name(node), *rule)
            });
        let fq = qat.fake_quant(&graph).unwrap();
        let mut t = Trainer::new(
            graph,
            Sgd::new(0.9).unwrap(),
            Constant::new(0.02).unwrap(),
            config,
        )
        .unwrap()
        .with_fake_quant(fq)
        .unwrap();
        t.fit(&data.train, &data.test, |_| {}).unwrap();
        t.graph().unwrap()
    };
    let (binary, ternary) = (QatQuantizer::binary(), QatQuantizer::Ternary);
    let shadow = by_hand(float.clone(), &[("fc1", binary)]);
    let shadow = by_hand(shadow, &[("fc1", binary), ("fc2", ternary)]);
    for (node, q) in [("fc1", binary), ("fc2", ternary)] {
        let w = shadow
            .parameters()
            .into_iter()
            .find(|(n, _)| *n == format!("{node}.weight"))
            .unwrap()
            .1;
        let got = packed_weights(&qat, node);
        assert_eq!(got.into_dyn(), q.quantize(&w).unwrap(), "{node}");
    }
}

/// An int8 step trained quantization-aware freezes into int8 ops whose
/// weights are the trained network's 8-bit `q(W)`, bit for bit, and a
/// quantizer without a fake quantizer is refused when `qat` is on.
#[test]
fn int8_qat_freezes_exact_weights_and_unsupported_quantizers_are_refused() {
    let data = data();
    let float = trained_mlp(&data);
    let recipe = qat_recipe(
        "fc2",
        r#"{ name = "int8", input_range = [0.0, 8.0], granularity = "per-channel" }"#,
    );
    let (g, report) = compress(&float, &recipe, Some(&data)).unwrap();
    assert!(
        report.events.contains(&Event::Freeze(1)),
        "{:?}",
        report.events
    );
    // The shadow weights: the same run by hand.
    let q = Int8Weights { per_channel: true };
    let w = qat_by_hand(&float, &data, "fc2", Arc::new(q));
    assert_eq!(
        packed_weights(&g, "fc2").into_dyn(),
        q.quantize(&w).unwrap()
    );

    for method in [
        r#"{ name = "kmeans", k = 4 }"#,
        r#"{ name = "binarize", kind = "xnor-net" }"#,
        r#"{ name = "fixed-point", bits = 4, affine = true }"#,
    ] {
        let err = Recipe::from_toml(&format!(
            "fine_tune = {{ epochs = 1, lr = 0.01, qat = true }}\n[[steps]]\nmethod = {method}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("qat"), "{err}");
    }
    // Without qat the same steps are fine.
    Recipe::from_toml(
        "fine_tune = { epochs = 1, lr = 0.01 }\n[[steps]]\nmethod = { name = \"kmeans\", k = 4 }\n",
    )
    .unwrap();
}

/// A DoReFa step trained quantization-aware (formerly refused) freezes into
/// the k-bit op whose weights are the trained shadow weights' DoReFa `q(W)`
/// (the same run by hand, bit for bit), and training moved them away from
/// the untrained quantization.
#[test]
fn dorefa_qat_in_a_recipe_freezes_the_trained_quantized_weights() {
    let data = data();
    let float = trained_mlp(&data);
    let recipe = qat_recipe("fc1", r#"{ name = "dorefa", bits = 2 }"#);
    let (g, report) = compress(&float, &recipe, Some(&data)).unwrap();
    assert!(
        report.events.contains(&Event::Freeze(1)),
        "{:?}",
        report.events
    );
    let q = QatQuantizer::DoReFa { bits: 2 };
    let w = qat_by_hand(&float, &data, "fc1", Arc::new(q));
    let frozen = packed_weights(&g, "fc1").into_dyn();
    assert_eq!(frozen, q.quantize(&w).unwrap());
    let before = float
        .parameters()
        .into_iter()
        .find(|(n, _)| *n == "fc1.weight")
        .unwrap()
        .1;
    assert_ne!(frozen, q.quantize(&before).unwrap());
}

/// `fine_tune.distill` trains the compressed student on the original
/// network's soft targets: its result is bit-identical to the
/// teacher–student trainer run by hand with the original as teacher and
/// the same settings, and differs from fine-tuning on the labels.
#[test]
fn distillation_in_a_recipe_uses_the_original_network_as_teacher() {
    let data = data();
    let float = trained_mlp(&data);
    let recipe = |distill: &str| {
        Recipe::from_toml(&format!(
            r#"
            fine_tune = {{ epochs = 2, lr = 0.02, batch = 32 {distill} }}
            latency = {{ batches = [] }}
            [[steps]]
            select = {{ names = ["fc1"] }}
            method = {{ name = "svd", rank = 3 }}
            "#
        ))
        .unwrap()
    };
    let (distilled, _) = compress(
        &float,
        &recipe(", distill = { temperature = 3.0, weight = 0.7 }"),
        Some(&data),
    )
    .unwrap();
    let (labelled, _) = compress(&float, &recipe(""), Some(&data)).unwrap();
    let (student, _) = compress(&float, &recipe(""), None).unwrap();
    let config = TrainConfig {
        epochs: 2,
        batch_size: 32,
        eval_batch_size: 256,
        ..TrainConfig::default()
    };
    let mut by_hand = DistillTrainer::new(
        student,
        float.clone(),
        DistillSettings::new(3.0, 0.7).unwrap(),
        Sgd::new(0.9).unwrap(),
        Constant::new(0.02).unwrap(),
        config,
    )
    .unwrap();
    by_hand.fit(&data.train, &data.test, |_| {}).unwrap();
    let by_hand = by_hand.student().unwrap();
    assert_eq!(distilled.parameters(), by_hand.parameters());
    assert_ne!(distilled.parameters(), labelled.parameters());
    let bad = Recipe::from_toml(
        "fine_tune = { epochs = 1, lr = 0.01, distill = { temperature = 0.0, weight = 0.5 } }\n[[steps]]\nmethod = { name = \"svd\", rank = 2 }\n",
    );
    assert!(bad.unwrap_err().to_string().contains("temperature"));
}

/// conv(2 → 16, 3×3, pad 1) → bn → ReLU → conv(16 → 8) → ReLU → flatten →
/// linear, the batch norm holding stale statistics (mean 0, variance 1).
fn bn_net() -> Graph {
    let mut rng = SeededRng::new(8);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 4, 4));
    let conv = |rng: &mut SeededRng, t, c| {
        ConvLayer::from_array(
            rng.normal_array((t, c, 3, 3), 0.5),
            ConvSpec::new().with_padding(1),
        )
        .unwrap()
    };
    let y = b.op("conv1", conv(&mut rng, 16, 2), x);
    let bn = BatchNorm::new(
        Array1::from_elem(16, 1.0),
        Array1::from_elem(16, 0.1),
        Array1::zeros(16),
        Array1::ones(16),
        1e-5,
    )
    .unwrap();
    let y = b.op("bn1", bn, y);
    let y = b.op("relu1", Relu, y);
    let y = b.op("conv2", conv(&mut rng, 8, 16), y);
    let y = b.op("relu2", Relu, y);
    let y = b.op("flatten", Flatten, y);
    let fc = LinearLayer::new(rng.normal_array((3, 128), 0.1), None).unwrap();
    let y = b.op("fc", fc, y);
    b.output(y);
    b.build().unwrap()
}

/// After a channel-pruning step the batch norm's running mean and variance
/// are the averages over `recalibrate_bn` batches of 64 of the per-channel
/// batch mean and unbiased batch variance of its input, computed here from
/// the pruned graph's traced activations (the closed form of a cumulative
/// running average).
#[test]
fn bn_statistics_after_a_pruning_step_are_the_closed_form_batch_averages() {
    let mut rng = SeededRng::new(12);
    let images: Array4<f32> = rng.normal_array((200, 2, 4, 4), 1.0);
    let labels = (0..200).map(|i| i % 3).collect();
    let train = ImageSet::new(images.clone(), labels, 3).unwrap();
    let data = Splits {
        test: train.clone(),
        train,
    };
    let recipe = |batches: usize| {
        Recipe::from_toml(&format!(
            r#"
            recalibrate_bn = {batches}
            latency = {{ batches = [] }}
            [[steps]]
            select = {{ names = ["conv1"] }}
            method = {{ name = "prune-channels", target = "per-group", fraction = 0.5, multiple = 1 }}
            "#
        ))
        .unwrap()
    };
    let (stale, report) = compress(&bn_net(), &recipe(0), Some(&data)).unwrap();
    assert!(!report.events.contains(&Event::RecalibrateBn(1)));
    let (g, report) = compress(&bn_net(), &recipe(3), Some(&data)).unwrap();
    assert!(report.events.contains(&Event::RecalibrateBn(1)));
    let param = |g: &Graph, name: &str| {
        g.parameters()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1
    };
    let kept = param(&stale, "conv1.weight").shape()[0];
    assert_eq!(kept, 8);
    // Closed form on the pruned (stale) graph: bn1's input is conv1's output.
    let (mut mean, mut var) = (Array1::<f64>::zeros(kept), Array1::<f64>::zeros(kept));
    for k in 0..3 {
        let x = images
            .slice(s![64 * k..64 * (k + 1), .., .., ..])
            .to_owned();
        let trace = stale.reference_trace(&[&x], &["conv1"]).unwrap();
        let u = trace.captured["conv1"].mapv(f64::from);
        for c in 0..kept {
            let v = u.index_axis(Axis(1), c);
            let m = v.mean().unwrap();
            mean[c] += m / 3.0;
            var[c] += v.mapv(|a| (a - m).powi(2)).sum() / (v.len() - 1) as f64 / 3.0;
        }
    }
    for (name, want) in [("bn1.running_mean", &mean), ("bn1.running_var", &var)] {
        let got = param(&g, name);
        assert_eq!(got.len(), kept);
        for (&a, &b) in got.iter().zip(want.iter()) {
            let a = f64::from(a);
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{name}: {a} vs {b}"
            );
        }
    }
    // The stale graph kept the old statistics, which the data contradict.
    assert!(param(&stale, "bn1.running_var").iter().all(|&v| v == 1.0));
    assert!(var.iter().any(|&v| (v - 1.0).abs() > 0.1));
}

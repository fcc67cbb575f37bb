//! The pieces of `examples/qat_fashion.rs` on a Fashion-MNIST slice: int8
//! quantization-aware training of weights and activations on the small
//! ResNet (`hasten::qat::Int8Qat`). Freezing produces `Int8Conv` ops whose
//! input quantization and dequantized weights are exactly those of the
//! fake-quantized training forward, and whose outputs match the training
//! layer's up to f32 summation; fine-tuning lowers the loss.

use std::path::Path;

use hasten::core::grad::{inner_ops, Mode};
use hasten::core::graph::NodeOp;
use hasten::core::ndarray::{s, Array4};
use hasten::core::op::Op;
use hasten::core::{Graph, IntType, NodeFilter};
use hasten::models::{resnet8, ModelConfig};
use hasten::qat::Int8Qat;
use hasten::quant::Calibration;
use hasten::train::data::{load_mnist, mnist_present, ImageSet};
use hasten::train::optim::Adam;
use hasten::train::schedule::Constant;
use hasten::train::{ParamStore, TrainConfig, Trainer};

/// The first `n` training images of Fashion-MNIST, normalised; `None` (with
/// a message) when the data set is absent.
fn slice(n: usize) -> Option<ImageSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    if !mnist_present(&dir) {
        eprintln!(
            "skipped: Fashion-MNIST not in {} (scripts/fetch-datasets.sh)",
            dir.display()
        );
        return None;
    }
    let train = load_mnist(&dir).unwrap().train.head(n);
    Some(train.normalized(&[0.2860], &[0.3530]).unwrap())
}

fn calibrated(graph: &Graph, data: &ImageSet) -> Int8Qat {
    let batch = data.images().slice(s![..64, .., .., ..]).to_owned();
    Int8Qat::calibrate(
        graph,
        &NodeFilter::all(),
        &batch,
        Calibration::MinMax,
        IntType::U8,
        true,
    )
    .unwrap()
}

#[test]
fn frozen_int8_ops_are_the_fake_quantized_layers() {
    let Some(data) = slice(64) else { return };
    let graph = resnet8(&ModelConfig::mnist().with_random_batch_norm()).unwrap();
    let int8 = calibrated(&graph, &data);
    assert_eq!(
        int8.layers().len(),
        10,
        "7 convolutions, 2 shortcuts, the head"
    );
    let training = int8.training_graph(&graph).unwrap();
    // The forward the trainer runs: Ŵ = q(W) in every block.
    let fake = int8
        .fake_quant()
        .unwrap()
        .quantized_graph(&training, &ParamStore::from_graph(&training))
        .unwrap();
    let frozen = int8.freeze(&training).unwrap();
    let inputs: Vec<&str> = int8
        .layers()
        .iter()
        .map(|(name, _)| frozen.value_name(frozen.node(name).unwrap().inputs()[0]))
        .collect();
    let x = data.images().slice(s![..8, .., .., ..]).to_owned();
    let trace = frozen.reference_trace(&[&x], &inputs).unwrap();
    for ((name, params), input) in int8.layers().iter().zip(&inputs) {
        let ops = match fake.node(name).unwrap().op() {
            NodeOp::Block(b) => b.ops().to_vec(),
            other => panic!("{name}: {}", other.kind()),
        };
        let (Op::Int8Conv(q), layer) = (&ops[0], &ops[1]) else {
            panic!("{name}: not [quantize_dequantize, layer]")
        };
        let [Op::Int8Conv(op)] = inner_ops(frozen.node(name).unwrap().op()) else {
            panic!("{name} is not an Int8Conv once frozen");
        };
        // The same input quantization, bit for bit.
        assert_eq!(q.input_params(), params);
        assert_eq!(op.input_params(), params);
        // The same weights: the int8 codes times their scales are Ŵ.
        let w_hat = match layer {
            Op::Conv(c) => c.weight().array().clone().into_dyn(),
            Op::Linear(l) => l.weight().clone().into_dyn(),
            other => panic!("{name}: {}", other.kind()),
        };
        let rows = op.weights().nrows();
        let w_hat = w_hat
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((rows, op.weights().ncols()))
            .unwrap();
        for ((t, j), &v) in op.weights().indexed_iter() {
            let dequantized = f32::from(v) * op.weight_scale(t);
            assert_eq!(dequantized.to_bits(), w_hat[[t, j]].to_bits(), "{name}");
        }
        // The same layer output, up to f32 summation and the bias rounded
        // to the accumulator's unit s_in·s_w.
        let xin = &trace.captured[*input];
        let y_fake = match fake.node(name).unwrap().op() {
            NodeOp::Block(b) => b.reference_forward(xin).unwrap(),
            _ => unreachable!(),
        };
        let y_int = hasten::core::op::Operator::reference_forward(op, xin).unwrap();
        let scale = y_int.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let unit = (0..rows)
            .map(|t| params.scale() * op.weight_scale(t))
            .fold(0.0f32, f32::max);
        let err = y_fake
            .iter()
            .zip(&y_int)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            err <= 1e-5 * scale + 0.5 * unit,
            "{name}: {err} (outputs up to {scale})"
        );
        assert!(scale > 0.0, "{name}: a non-trivial output");
    }
}

/// The training loss on a fixed batch, the graph in inference mode.
fn loss<O, S>(trainer: &mut Trainer<O, S>, x: &Array4<f32>, labels: &[usize]) -> f32
where
    O: hasten::train::optim::Optimizer,
    S: hasten::train::schedule::Schedule,
{
    trainer.batch_grads(x, labels, Mode::Eval).unwrap().loss
}

/// Three epochs of int8 QAT of `graph` on `data` (Adam, lr 1e-3, batch
/// 32), asserting that the loss on the first 64 images falls below 0.8× its
/// starting value; returns the trainer and those 64 images.
fn fine_tune_lowers_the_loss(
    graph: &Graph,
    int8: &Int8Qat,
    data: &ImageSet,
) -> (Trainer<Adam, Constant>, Array4<f32>) {
    let training = int8.training_graph(graph).unwrap();
    let config = TrainConfig {
        epochs: 3,
        batch_size: 32,
        eval_batch_size: 64,
        seed: 5,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(training, Adam::new(), Constant::new(1e-3).unwrap(), config)
        .unwrap()
        .with_fake_quant(int8.fake_quant().unwrap())
        .unwrap();
    let x = data.images().slice(s![..64, .., .., ..]).to_owned();
    let labels = &data.labels()[..64];
    let before = loss(&mut trainer, &x, labels);
    trainer.fit(data, &data.head(64), |_| {}).unwrap();
    let after = loss(&mut trainer, &x, labels);
    assert!(after < 0.8 * before, "loss {before} → {after}");
    (trainer, x)
}

#[test]
fn int8_quantization_aware_fine_tuning_lowers_the_loss() {
    let Some(data) = slice(128) else { return };
    let graph = resnet8(&ModelConfig::mnist().with_seed(3)).unwrap();
    let int8 = calibrated(&graph, &data);
    let (trainer, _) = fine_tune_lowers_the_loss(&graph, &int8, &data);
    // The frozen network still computes what the fake-quantized one does:
    // its accuracy on the slice is within one image of the trainer's.
    let frozen = int8.freeze(&trainer.graph().unwrap()).unwrap();
    let fake = hasten::train::evaluate(&trainer.forward_graph().unwrap(), &data, 64).unwrap();
    let real = hasten::train::evaluate(&frozen, &data, 64).unwrap();
    assert!(
        (fake - real).abs() <= 1.0 / 128.0 + 1e-9,
        "{fake} vs {real}"
    );
}

/// A small classifier `conv 3×3 → ReLU → flatten → linear` on `[2, 4, 4]`
/// inputs uniform in `[0, 1]`, labelled by its own float arg-max (planted:
/// the float network is exact, every loss comes from quantization).
fn planted() -> (Graph, ImageSet) {
    use hasten::core::{ActShape, ConvLayer, ConvSpec, GraphBuilder, LinearLayer, Relu, SeededRng};
    let mut rng = SeededRng::new(21);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 4, 4));
    let conv = ConvLayer::from_array(
        rng.normal_array((4, 2, 3, 3), 0.6),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let y = b.op("conv", conv, x);
    let y = b.op("relu", Relu, y);
    let y = b.op("flatten", hasten::core::Flatten, y);
    let fc = LinearLayer::new(rng.normal_array((10, 64), 0.6), None).unwrap();
    let y = b.op("fc", fc, y);
    b.output(y);
    let graph = b.build().unwrap();
    let images = Array4::from_shape_simple_fn([256, 2, 4, 4], || rng.uniform() as f32);
    let logits = graph.reference_forward(&[&images]).unwrap().remove(0);
    let labels = (0..256)
        .map(|n| {
            let row = logits.slice(s![n, .., 0, 0]);
            (0..10).fold(0, |best, k| if row[k] > row[best] { k } else { best })
        })
        .collect();
    (graph, ImageSet::new(images, labels, 10).unwrap())
}

#[test]
fn learned_ranges_shrink_a_ten_times_too_wide_range_and_freeze_exactly() {
    let (graph, data) = planted();
    // Calibrated on ten times the data: every range is 10× too wide.
    let wide = data.images().slice(s![..64, .., .., ..]).mapv(|v| 10.0 * v);
    let int8 = Int8Qat::calibrate(
        &graph,
        &NodeFilter::all(),
        &wide,
        Calibration::MinMax,
        IntType::U8,
        true,
    )
    .unwrap()
    .learn_ranges(true);
    let s0 = int8.layers()[0].1.scale();
    let data_max = data.images().iter().fold(0.0f32, |m, &v| m.max(v));
    assert!((s0 - 10.0 * data_max / 255.0).abs() < 1e-3 * s0, "{s0}");
    let training = int8.training_graph(&graph).unwrap();
    let config = TrainConfig {
        epochs: 20,
        batch_size: 32,
        eval_batch_size: 64,
        seed: 7,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(training, Adam::new(), Constant::new(1e-3).unwrap(), config)
        .unwrap()
        .with_fake_quant(int8.fake_quant().unwrap())
        .unwrap();
    assert!(trainer.params().is_trainable("conv.0.scale"));
    let x = data.images().to_owned();
    let before = loss(&mut trainer, &x, data.labels());
    trainer.fit(&data, &data.head(64), |_| {}).unwrap();
    let after = loss(&mut trainer, &x, data.labels());
    let s1 = trainer.params().get("conv.0.scale").unwrap()[[0]];
    eprintln!(
        "input scale {s0} → {s1} (data max / 255 = {}), loss {before} → {after}",
        data_max / 255.0
    );
    assert!(s1 < 0.5 * s0, "the input step size {s0} → {s1}");
    assert!(after < before, "loss {before} → {after}");
    // For the trained weights, the learned step sizes beat the calibrated
    // ones: putting the initial scales back raises the loss.
    let mut reset = trainer.clone();
    for (name, p) in int8.layers() {
        let slot = reset
            .params_mut()
            .get_mut(&format!("{name}.0.scale"))
            .unwrap();
        slot[[0]] = p.scale();
    }
    let with_initial = loss(&mut reset, &x, data.labels());
    eprintln!("trained weights with the initial scales: loss {with_initial}");
    assert!(
        after < with_initial,
        "learned {after}, initial {with_initial}"
    );
    // The frozen ops quantize with the learned scales, bit for bit: the
    // codes of every layer's input are those of the training forward.
    let frozen = int8.freeze(&trainer.graph().unwrap()).unwrap();
    let fake = trainer.forward_graph().unwrap();
    codes_are_the_training_forwards(&int8, trainer.params(), &fake, &frozen, &x);
}

/// Every frozen layer's input quantization is the trained block's (the
/// store's learned `scale`, bit for bit), and on the training forward's
/// input of the layer its codes dequantize to the block quantizer's
/// output exactly.
fn codes_are_the_training_forwards(
    int8: &Int8Qat,
    store: &ParamStore,
    fake: &Graph,
    frozen: &Graph,
    x: &Array4<f32>,
) {
    let inputs: Vec<&str> = int8
        .layers()
        .iter()
        .map(|(name, _)| fake.value_name(fake.node(name).unwrap().inputs()[0]))
        .collect();
    let trace = fake.reference_trace(&[x], &inputs).unwrap();
    for ((name, calibrated), input) in int8.layers().iter().zip(&inputs) {
        let NodeOp::Block(b) = fake.node(name).unwrap().op() else {
            panic!("{name}: not a block")
        };
        let Op::Int8Conv(q) = &b.ops()[0] else {
            panic!("{name}: no quantizer")
        };
        let [Op::Int8Conv(op)] = inner_ops(frozen.node(name).unwrap().op()) else {
            panic!("{name} is not an Int8Conv once frozen");
        };
        let learned = store.get(&format!("{name}.0.scale")).unwrap()[[0]];
        assert_eq!(q.input_params().scale().to_bits(), learned.to_bits());
        assert_eq!(op.input_params(), q.input_params(), "{name}");
        assert_ne!(
            op.input_params(),
            calibrated,
            "{name}: the scale was trained"
        );
        let xin = &trace.captured[*input];
        let seen = hasten::core::op::Operator::reference_forward(q, xin).unwrap();
        let p = op.input_params();
        for (code, y) in op.quantize_input(xin).iter().zip(&seen) {
            assert_eq!(p.dequantize(*code).to_bits(), y.to_bits(), "{name}");
        }
    }
}

#[test]
fn learned_ranges_fine_tune_on_a_fashion_slice() {
    let Some(data) = slice(128) else { return };
    let graph = resnet8(&ModelConfig::mnist().with_seed(3)).unwrap();
    let int8 = calibrated(&graph, &data).learn_ranges(true);
    let (trainer, x) = fine_tune_lowers_the_loss(&graph, &int8, &data);
    let frozen = int8.freeze(&trainer.graph().unwrap()).unwrap();
    let fake = trainer.forward_graph().unwrap();
    codes_are_the_training_forwards(&int8, trainer.params(), &fake, &frozen, &x);
    let fake_acc = hasten::train::evaluate(&fake, &data, 64).unwrap();
    let real = hasten::train::evaluate(&frozen, &data, 64).unwrap();
    assert!(
        (fake_acc - real).abs() <= 1.0 / 128.0 + 1e-9,
        "{fake_acc} vs {real}"
    );
}

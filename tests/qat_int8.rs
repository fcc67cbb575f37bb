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

#[test]
fn int8_quantization_aware_fine_tuning_lowers_the_loss() {
    let Some(data) = slice(128) else { return };
    let graph = resnet8(&ModelConfig::mnist().with_seed(3)).unwrap();
    let int8 = calibrated(&graph, &data);
    let training = int8.training_graph(&graph).unwrap();
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
    trainer.fit(&data, &data.head(64), |_| {}).unwrap();
    let after = loss(&mut trainer, &x, labels);
    assert!(after < 0.8 * before, "loss {before} → {after}");
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

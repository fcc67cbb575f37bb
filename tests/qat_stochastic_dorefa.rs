//! Quantization-aware training with BinaryConnect's stochastic binarization
//! (survey eq. (3), (6)–(7)) and DoReFa-Net k-bit weights: the draws are
//! unbiased for the hard sigmoid (binomial bound) and seeded by
//! (seed, step, parameter) alone; the straight-through gradients are the
//! clipped identity and the derivative of DoReFa's `tanh` normalisation
//! (central differences in f64); small training runs lower the loss and
//! are bit-identical for a seed.

use hasten::core::ndarray::{Array1, ArrayD};
use hasten::core::op::{Flatten, Relu};
use hasten::core::{
    ActShape, Conv4d, ConvLayer, ConvSpec, Graph, GraphBuilder, LinearLayer, NodeFilter, SeededRng,
};
use hasten::qat::{QatQuantizer, QuantAwareTraining};
use hasten::quant::dorefa::dorefa_weight_smooth;
use hasten::train::data::ImageSet;
use hasten::train::optim::Adam;
use hasten::train::schedule::Constant;
use hasten::train::{EpochStats, ParamStore, TrainConfig, Trainer, WeightQuantizer};

/// conv(1→4, 3×3, pad 1) → ReLU → flatten → linear(4·4·4 → 2), on 1×4×4
/// images.
fn net(seed: u64) -> Graph {
    let mut rng = SeededRng::new(seed);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(1, 4, 4));
    let c = ConvLayer::new(
        Conv4d::new(rng.normal_array((4, 1, 3, 3), 0.3)).unwrap(),
        Some(rng.normal_array(4, 0.1)),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let y = b.op("conv", c, x);
    let y = b.op("relu", Relu, y);
    let y = b.op("flat", Flatten, y);
    let fc = LinearLayer::new(rng.normal_array((2, 64), 0.05), Some(Array1::zeros(2)));
    let y = b.op("fc", fc.unwrap(), y);
    b.output(y);
    b.build().unwrap()
}

/// 1×4×4 Gaussian images, class 1 where the left half's sum exceeds the
/// right half's (a linear rule).
fn planted(n: usize, seed: u64) -> ImageSet {
    let x = SeededRng::new(seed).normal_array((n, 1, 4, 4), 1.0);
    let labels = x
        .outer_iter()
        .map(|im| {
            let d: f32 = im
                .indexed_iter()
                .map(|((_, _, j), &v)| if j < 2 { v } else { -v })
                .sum();
            usize::from(d > 0.0)
        })
        .collect();
    ImageSet::new(x, labels, 2).unwrap()
}

/// The epochs of a quantization-aware run of `net(1)` with `quantizer` on
/// every layer, and the trainer's final shadow weights.
fn train(quantizer: QatQuantizer, epochs: usize, seed: u64) -> (Vec<EpochStats>, ParamStore) {
    let graph = net(1);
    let qat = QuantAwareTraining::new().quantize(NodeFilter::all(), quantizer);
    let config = TrainConfig {
        epochs,
        batch_size: 32,
        eval_batch_size: 256,
        seed,
        ..TrainConfig::default()
    };
    let fq = qat.fake_quant(&graph).unwrap();
    let mut t = Trainer::new(graph, Adam::new(), Constant::new(0.01).unwrap(), config)
        .unwrap()
        .with_fake_quant(fq)
        .unwrap();
    let history = t.fit(&planted(1024, 2), &planted(512, 3), |_| {}).unwrap();
    (history, t.params().clone())
}

/// `σ(w) = clip((w + 1)/2, 0, 1)`, eq. (3)'s hard sigmoid.
fn sigma(w: f64) -> f64 {
    ((w + 1.0) / 2.0).clamp(0.0, 1.0)
}

#[test]
fn stochastic_draws_are_unbiased_and_seeded_by_step_and_parameter() {
    let values = [-1.4f32, -0.7, -0.2, 0.0, 0.35, 0.8, 1.0, 2.0];
    let cols = 500;
    let w = ArrayD::from_shape_fn(vec![values.len(), cols], |ix| values[ix[0]]);
    let q = QatQuantizer::StochasticBinary { seed: 11 };
    let steps = 40u64;
    let mut sums = vec![0.0f64; values.len()];
    for step in 0..steps {
        let d = q.quantize_train(&w, step, "fc.weight").unwrap();
        assert!(d.iter().all(|&v| v == 1.0 || v == -1.0));
        for (r, row) in d.outer_iter().enumerate() {
            sums[r] += row.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
    }
    let n = (steps as usize * cols) as f64;
    for (&v, sum) in values.iter().zip(&sums) {
        // E[w_b] = 2σ(w) − 1; a ±1 draw has variance 1 − m²: 5 standard
        // errors of the mean.
        let m = 2.0 * sigma(f64::from(v)) - 1.0;
        let bound = 5.0 * ((1.0 - m * m) / n).sqrt() + 1e-12;
        assert!(
            (sum / n - m).abs() <= bound,
            "w {v}: mean {} vs {m}",
            sum / n
        );
    }
    // One draw per (seed, step, parameter): repeatable, and fresh when any
    // of them changes.
    let a = q.quantize_train(&w, 3, "fc.weight").unwrap();
    assert_eq!(a, q.quantize_train(&w, 3, "fc.weight").unwrap());
    assert_ne!(a, q.quantize_train(&w, 4, "fc.weight").unwrap());
    assert_ne!(a, q.quantize_train(&w, 3, "conv.weight").unwrap());
    let other = QatQuantizer::StochasticBinary { seed: 12 };
    assert_ne!(a, other.quantize_train(&w, 3, "fc.weight").unwrap());
    // Evaluation and freezing: the deterministic sign, unit scale.
    let det = q.quantize(&w).unwrap();
    for (x, y) in w.iter().zip(det.iter()) {
        assert_eq!(*y, if *x >= 0.0 { 1.0 } else { -1.0 }, "{x}");
    }
}

#[test]
fn stochastic_binary_gradient_is_the_clipped_straight_through() {
    let w = ArrayD::from_shape_vec(vec![2, 3], vec![-1.5, -1.0, -0.3, 0.2, 1.0, 1.01]).unwrap();
    let g = ArrayD::from_shape_vec(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let q = QatQuantizer::StochasticBinary { seed: 0 };
    assert_eq!(q.clip(), Some(1.0));
    let got = q.backward(&w, &g).unwrap();
    assert_eq!(got.as_slice().unwrap(), &[0.0, 2.0, 3.0, 4.0, 5.0, 0.0]);
    assert!(q.backward(&w, &ArrayD::zeros(vec![3, 2])).is_err());
}

#[test]
fn stochastic_binary_training_lowers_the_loss_and_is_bit_identical_per_seed() {
    let q = QatQuantizer::StochasticBinary { seed: 5 };
    let (history, params) = train(q, 6, 7);
    let losses: Vec<f64> = history.iter().map(|e| e.loss).collect();
    let accuracy: Vec<f64> = history.iter().map(|e| e.test_accuracy).collect();
    assert!(
        losses[losses.len() - 1] < 0.8 * losses[0],
        "losses {losses:?}, test accuracy {accuracy:?}"
    );
    // The deterministic (frozen) network learned the rule.
    assert!(
        accuracy[accuracy.len() - 1] >= 0.8,
        "losses {losses:?}, test accuracy {accuracy:?}"
    );
    for (name, v, _) in params.iter() {
        if name.ends_with(".weight") {
            assert!(v.iter().all(|x| x.abs() <= 1.0), "{name}");
        }
    }
    // Same seeds: bit-identical; another draw seed: other weights.
    let (again, same) = train(q, 6, 7);
    assert_eq!(again.iter().map(|e| e.loss).collect::<Vec<_>>(), losses);
    for (name, v, _) in params.iter() {
        assert_eq!(same.get(name).unwrap(), v, "{name}");
    }
    let (_, other) = train(QatQuantizer::StochasticBinary { seed: 6 }, 6, 7);
    assert_ne!(other.get("fc.weight"), params.get("fc.weight"));
}

#[test]
fn dorefa_gradient_is_the_derivative_of_the_tanh_normalisation() {
    // L(W) = Σ c ⊙ f(W), f DoReFa's smooth part over the whole layer: the
    // straight-through gradient of ∂L/∂Ŵ = c is ∇L, by central differences.
    let mut rng = SeededRng::new(21);
    let w: ArrayD<f32> = rng.normal_array((3, 2, 3, 3), 0.8).into_dyn();
    let c: ArrayD<f32> = rng.normal_array((3, 2, 3, 3), 1.0).into_dyn();
    let q = QatQuantizer::DoReFa { bits: 3 };
    let got = q.backward(&w, &c).unwrap();
    let w64: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    let c64: Vec<f64> = c.iter().map(|&v| f64::from(v)).collect();
    let loss = |w: &[f64]| -> f64 {
        dorefa_weight_smooth(w)
            .iter()
            .zip(&c64)
            .map(|(f, c)| f * c)
            .sum()
    };
    let h = 1e-6;
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (k, g) in got.iter().enumerate() {
        let (mut p, mut m) = (w64.clone(), w64.clone());
        p[k] += h;
        m[k] -= h;
        let want = (loss(&p) - loss(&m)) / (2.0 * h);
        diff += (f64::from(*g) - want).powi(2);
        norm += want * want;
    }
    assert!(norm > 1e-6);
    assert!(
        (diff / norm).sqrt() < 1e-5,
        "relative error {}",
        (diff / norm).sqrt()
    );
    // Not the plain straight-through gradient.
    assert_ne!(got, c);
    assert!(q.backward(&w, &ArrayD::zeros(vec![3, 18])).is_err());
    assert!(QatQuantizer::DoReFa { bits: 0 }.transform().is_err());
}

#[test]
fn dorefa_training_lowers_the_loss() {
    let (history, _) = train(QatQuantizer::DoReFa { bits: 2 }, 6, 7);
    let losses: Vec<f64> = history.iter().map(|e| e.loss).collect();
    let accuracy: Vec<f64> = history.iter().map(|e| e.test_accuracy).collect();
    assert!(
        losses[losses.len() - 1] < 0.8 * losses[0] && accuracy[accuracy.len() - 1] >= 0.8,
        "losses {losses:?}, test accuracy {accuracy:?}"
    );
}

#[test]
fn dorefa_activations_are_the_k_bit_clipped_inputs_and_freeze_keeps_the_forward() {
    use hasten::qat::DoReFaQat;
    use hasten::quant::dorefa::dorefa_activation;
    let graph = net(3);
    let qat = DoReFaQat::new(&graph, &NodeFilter::name("fc"), 3, 2).unwrap();
    let training = qat.training_graph(&graph).unwrap();
    let fq = qat.fake_quant().unwrap();
    let store = ParamStore::from_graph(&training);
    let fake = fq.quantized_graph(&training, &store).unwrap();
    // Truth by hand: fc(quantize_2(clip(h, 0, 1))) with DoReFa's 3-bit Ŵ,
    // h the float network's traced input of fc (ReLU outputs, many above 1).
    let x = SeededRng::new(4).normal_array((5, 1, 4, 4), 2.0);
    let h_name = graph.value_name(graph.node("fc").unwrap().inputs()[0]);
    let trace = graph.reference_trace(&[&x], &[h_name]).unwrap();
    let h = trace.captured[h_name].as_standard_layout().into_owned();
    assert!(h.iter().any(|&v| v > 1.0) && h.iter().any(|&v| v > 0.0 && v < 1.0));
    let a = dorefa_activation(h.as_slice().unwrap(), 2).unwrap();
    let (w, b) = {
        let p = graph.parameters();
        let get = |n: &str| p.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        (get("fc.weight"), get("fc.bias"))
    };
    let wq = QatQuantizer::DoReFa { bits: 3 }.quantize(&w).unwrap();
    let got = fake.reference_forward(&[&x]).unwrap().remove(0);
    for n in 0..5 {
        for t in 0..2 {
            let want: f32 = (0..64).map(|j| wq[[t, j]] * a[n * 64 + j]).sum::<f32>() + b[[t]];
            let y = got[[n, t, 0, 0]];
            assert!(
                (y - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{y} vs {want}"
            );
        }
    }
    // Freezing keeps the activation quantizer and stores Ŵ in a k-bit op.
    let frozen = qat.freeze(&training).unwrap();
    let ops = match frozen.node("fc").unwrap().op() {
        hasten::core::NodeOp::Block(b) => b.ops().to_vec(),
        other => panic!("{}", other.kind()),
    };
    assert!(matches!(
        ops.as_slice(),
        [
            hasten::core::Op::Clip(_),
            hasten::core::Op::Int8Conv(_),
            hasten::core::Op::FixedPointConv(_)
        ]
    ));
    let f = frozen.reference_forward(&[&x]).unwrap().remove(0);
    for (p, r) in got.iter().zip(f.iter()) {
        assert!((p - r).abs() <= 1e-5 * p.abs().max(1.0), "{p} vs {r}");
    }
    // Bad setups.
    assert!(DoReFaQat::new(&graph, &NodeFilter::name("fc"), 3, 9).is_err());
    assert!(DoReFaQat::new(&graph, &NodeFilter::name("fc"), 0, 2).is_err());
    assert!(DoReFaQat::new(&graph, &NodeFilter::name("relu"), 3, 2).is_err());
    assert!(qat.freeze(&graph).is_err());
}

#[test]
fn dorefa_weights_and_activations_train() {
    use hasten::qat::DoReFaQat;
    let graph = net(1);
    let qat = DoReFaQat::new(&graph, &NodeFilter::name("fc"), 2, 2).unwrap();
    let training = qat.training_graph(&graph).unwrap();
    let config = TrainConfig {
        epochs: 6,
        batch_size: 32,
        eval_batch_size: 256,
        seed: 7,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(training, Adam::new(), Constant::new(0.01).unwrap(), config)
        .unwrap()
        .with_fake_quant(qat.fake_quant().unwrap())
        .unwrap();
    let test = planted(512, 3);
    let history = t.fit(&planted(1024, 2), &test, |_| {}).unwrap();
    let losses: Vec<f64> = history.iter().map(|e| e.loss).collect();
    let accuracy: Vec<f64> = history.iter().map(|e| e.test_accuracy).collect();
    assert!(
        losses[losses.len() - 1] < 0.8 * losses[0] && accuracy[accuracy.len() - 1] >= 0.8,
        "losses {losses:?}, test accuracy {accuracy:?}"
    );
    let frozen = qat.freeze(&t.graph().unwrap()).unwrap();
    let frozen_accuracy = hasten::train::evaluate(&frozen, &test, 256).unwrap();
    assert!(
        (frozen_accuracy - accuracy[accuracy.len() - 1]).abs() <= 1.0 / 512.0,
        "{frozen_accuracy} vs {accuracy:?}"
    );
}

#[test]
fn shadow_rescaling_sets_max_one_and_keeps_the_function_under_batch_norm() {
    use hasten::core::ndarray::Array4;
    use hasten::models::{resnet8, ModelConfig};
    let graph = resnet8(&ModelConfig::mnist().with_random_batch_norm()).unwrap();
    let qat = QuantAwareTraining::new().quantize(
        NodeFilter::kind("conv").except_first(1),
        QatQuantizer::StochasticBinary { seed: 1 },
    );
    let (scaled, factors) = qat.rescale_shadow_weights(&graph).unwrap();
    assert_eq!(factors.len(), 8, "7 convolutions but the stem, 2 shortcuts");
    let before: std::collections::BTreeMap<_, _> = graph.parameters().into_iter().collect();
    let after: std::collections::BTreeMap<_, _> = scaled.parameters().into_iter().collect();
    for (name, a) in &factors {
        let w = &after[&format!("{name}.weight")];
        let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((max - 1.0).abs() < 1e-6, "{name}: max |W| = {max}");
        let w0 = &before[&format!("{name}.weight")];
        let max0 = w0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((a * max0 - 1.0).abs() < 1e-6, "{name}: a = {a}");
    }
    // The same function in inference mode (batch norm's ε aside).
    let x: Array4<f32> = SeededRng::new(3).normal_array((4, 1, 28, 28), 1.0);
    let y0 = graph.reference_forward(&[&x]).unwrap().remove(0);
    let y1 = scaled.reference_forward(&[&x]).unwrap().remove(0);
    let peak = y0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = y0
        .iter()
        .zip(&y1)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-3 * peak, "{err} of {peak}");
    // The linear head has no batch norm after it: refused.
    let head =
        QuantAwareTraining::new().quantize(NodeFilter::kind("linear"), QatQuantizer::binary());
    assert!(head.rescale_shadow_weights(&graph).is_err());
    assert!(QuantAwareTraining::new()
        .rescale_shadow_weights(&graph)
        .is_err());
}

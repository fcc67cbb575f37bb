//! Quantization-aware training (`hasten::qat`): the fake quantizers are the
//! `hasten-quant` transforms (closed forms of eq. (8), int8 and TWN), the
//! straight-through gradient is the reference gradient of the dense network
//! at the quantized weights masked by the clip region, freezing reproduces
//! the trained network's forward, and a tiny binary-weight network learns a
//! planted linearly separable task.

use std::sync::Arc;

use hasten::core::grad::loss::softmax_cross_entropy;
use hasten::core::grad::{Mode, Tape};
use hasten::core::ndarray::{Array2, Array4, ArrayD, Axis};
use hasten::core::op::{Flatten, Relu};
use hasten::core::{
    ActShape, Conv4d, ConvLayer, ConvSpec, Graph, GraphBuilder, Layer, LinearLayer, NodeFilter, Op,
    SeededRng, Transform,
};
use hasten::fastconv::{Plan, PlanOptions};
use hasten::qat::{QatQuantizer, QuantAwareTraining};
use hasten::train::data::ImageSet;
use hasten::train::optim::Adam;
use hasten::train::schedule::{Constant, Cosine};
use hasten::train::{
    evaluate, FakeQuant, ParamStore, TrainConfig, TrainTape, Trainer, WeightQuantizer,
};

const QUANTIZERS: [QatQuantizer; 10] = [
    QatQuantizer::Binary { clip: Some(1.0) },
    QatQuantizer::Sign { clip: Some(1.0) },
    QatQuantizer::Ternary,
    QatQuantizer::TernaryPerTensor,
    QatQuantizer::FixedPoint { bits: 8 },
    QatQuantizer::FixedPoint { bits: 3 },
    QatQuantizer::FixedPointPerTensor { bits: 4 },
    QatQuantizer::StochasticBinary { seed: 3 },
    QatQuantizer::DoReFa { bits: 4 },
    QatQuantizer::DoReFa { bits: 1 },
];

/// conv(1→8, 3×3, pad 1) → ReLU → conv(8→8, 3×3, stride 2) → ReLU →
/// flatten → linear(8·2·2 → 2), on 1×6×6 images.
fn net(seed: u64) -> Graph {
    let mut rng = SeededRng::new(seed);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(1, 6, 6));
    let c1 = ConvLayer::new(
        Conv4d::new(rng.normal_array((8, 1, 3, 3), 0.5)).unwrap(),
        Some(rng.normal_array(8, 0.1)),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let y = b.op("conv1", c1, x);
    let y = b.op("relu1", Relu, y);
    let c2 = ConvLayer::new(
        Conv4d::new(rng.normal_array((8, 8, 3, 3), 0.3)).unwrap(),
        None,
        ConvSpec::new().with_stride(2),
    )
    .unwrap();
    let y = b.op("conv2", c2, y);
    let y = b.op("relu2", Relu, y);
    let y = b.op("flat", Flatten, y);
    let fc = LinearLayer::new(
        rng.normal_array((2, 32), 0.3),
        Some(rng.normal_array(2, 0.1)),
    );
    let y = b.op("fc", fc.unwrap(), y);
    b.output(y);
    b.build().unwrap()
}

/// The dequantized weight of the single packed op of a transform's block.
fn packed_weight(t: &dyn Transform, layer: &Layer) -> Array2<f32> {
    let c = t.apply(layer, ActShape::new(4, 6, 6)).unwrap();
    match &c.block.ops()[0] {
        Op::BinaryConv(o) => o.dequantized(),
        Op::TernaryConv(o) => o.dequantized(),
        Op::FixedPointConv(o) => o.dequantized(),
        other => panic!("unexpected op {other:?}"),
    }
}

#[test]
fn fake_quantizers_are_the_packed_ops_weights() {
    let mut rng = SeededRng::new(1);
    let w = rng.normal_array((5, 4, 3, 3), 0.4);
    let layer: Layer = ConvLayer::new(Conv4d::new(w.clone()).unwrap(), None, ConvSpec::new())
        .unwrap()
        .into();
    let wd = w.clone().into_dyn();
    for q in QUANTIZERS {
        let fake = q.quantize(&wd).unwrap();
        let packed = packed_weight(q.transform().unwrap().as_ref(), &layer);
        assert_eq!(fake.shape(), wd.shape());
        assert_eq!(
            fake.as_standard_layout().as_slice().unwrap(),
            packed.as_slice().unwrap(),
            "{q:?}"
        );
    }
    // Closed forms. Binary (eq. (8)): α_t·sign(W_t), α_t = mean |W_t|.
    let b = QatQuantizer::binary().quantize(&wd).unwrap();
    for t in 0..5 {
        let row = w.index_axis(Axis(0), t);
        let alpha = row.iter().map(|v| f64::from(v.abs())).sum::<f64>() / 36.0;
        for (x, y) in row.iter().zip(b.index_axis(Axis(0), t).iter()) {
            let want = if *x >= 0.0 { alpha } else { -alpha };
            assert!((f64::from(*y) - want).abs() <= 1e-6 * alpha);
        }
    }
    // Int8: multiples of s_t = max |W_t| / 127, |q| ≤ 127, error ≤ s_t / 2
    // (plus rounding), the largest weight exact up to rounding.
    let q8 = QatQuantizer::int8().quantize(&wd).unwrap();
    for t in 0..5 {
        let row = w.index_axis(Axis(0), t);
        let max = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let s = max / 127.0;
        for (x, y) in row.iter().zip(q8.index_axis(Axis(0), t).iter()) {
            let code = y / s;
            assert!((code - code.round()).abs() < 1e-3 && code.round().abs() <= 127.0);
            assert!((x - y).abs() <= 0.5 * s + 1e-6);
        }
    }
    // Ternary: at most three values per filter, {−α, 0, α}.
    let t3 = QatQuantizer::Ternary.quantize(&wd).unwrap();
    for t in 0..5 {
        let row = t3.index_axis(Axis(0), t);
        let alpha = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(alpha > 0.0);
        assert!(row.iter().all(|&v| v == 0.0 || v.abs() == alpha));
    }
    // Bad input is a typed error.
    assert!(QatQuantizer::int8()
        .quantize(&ArrayD::zeros(vec![3]))
        .is_err());
    assert!(QatQuantizer::int8()
        .quantize(&ArrayD::zeros(vec![0, 4]))
        .is_err());
    assert!(QatQuantizer::FixedPoint { bits: 1 }.quantize(&wd).is_err());
    let mut nan = wd.clone();
    nan[[0, 0, 0, 0]] = f32::NAN;
    assert!(QatQuantizer::binary().quantize(&nan).is_err());
}

#[test]
fn ste_gradient_is_the_reference_gradient_at_the_quantized_weights_masked() {
    let graph = net(2);
    let mut shadow = ParamStore::from_graph(&graph);
    // Some conv1 weights outside the binary clip region |W| ≤ 1.
    shadow
        .get_mut("conv1.weight")
        .unwrap()
        .iter_mut()
        .step_by(3)
        .for_each(|v| *v *= 4.0);
    let qat = QuantAwareTraining::new()
        .quantize(NodeFilter::kind("conv"), QatQuantizer::binary())
        .quantize(NodeFilter::name("fc"), QatQuantizer::int8());
    let fq = qat.fake_quant(&graph).unwrap();
    assert_eq!(fq.len(), 3);
    let mut rng = SeededRng::new(3);
    let x = rng.normal_array((6, 1, 6, 6), 1.0);
    let labels = [0, 1, 1, 0, 1, 0];

    let quantized = fq.forward_store(&shadow).unwrap();
    let tape =
        TrainTape::forward(&graph, &quantized, std::slice::from_ref(&x), Mode::Eval).unwrap();
    let loss = softmax_cross_entropy(tape.outputs()[0].view(), &labels, 0.0).unwrap();
    let mut grads = tape.backward(&[loss.grad]).unwrap().params;
    fq.straight_through(&shadow, &mut grads).unwrap();

    // Truth: the f64 reference backward of the dense network at Ŵ.
    let reference = Tape::forward(
        &graph,
        &quantized.to_f64(),
        &[x.mapv(f64::from)],
        Mode::Eval,
    )
    .unwrap();
    let l64 = softmax_cross_entropy(reference.outputs()[0].view(), &labels, 0.0).unwrap();
    let g64 = reference.backward(&[l64.grad]).unwrap().params;
    let mut masked = 0;
    for (name, limit) in [
        ("conv1.weight", 1.0f32),
        ("conv2.weight", 1.0),
        ("fc.weight", f32::INFINITY),
        ("conv1.bias", f32::INFINITY),
    ] {
        let w = shadow.get(name).unwrap();
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for ((&a, &r), &wv) in grads[name].iter().zip(g64[name].iter()).zip(w.iter()) {
            let want = if wv.abs() <= limit { r } else { 0.0 };
            if wv.abs() > limit {
                masked += 1;
                assert_eq!(a, 0.0, "{name}");
                assert!(
                    r != 0.0,
                    "{name}: a masked weight whose gradient is 0 tests nothing"
                );
            }
            diff += (f64::from(a) - want).powi(2);
            norm += want * want;
        }
        assert!(norm > 1e-8, "{name}: vanishing gradient");
        assert!(
            (diff / norm).sqrt() < 1e-4,
            "{name}: relative error {}",
            (diff / norm).sqrt()
        );
    }
    assert!(masked > 0);
}

/// Samples of the planted task: 1×6×6 Gaussian images, class 1 where the
/// left half's sum exceeds the right half's by more than a margin, class 0
/// where it falls short by more than the margin (a linear rule; images
/// within the margin, |d| < 3 with d of standard deviation 6, are
/// redrawn).
fn planted(n: usize, seed: u64) -> ImageSet {
    let mut rng = SeededRng::new(seed);
    let mut images = Array4::<f32>::zeros((n, 1, 6, 6));
    let mut labels = Vec::with_capacity(n);
    for mut slot in images.outer_iter_mut() {
        loop {
            let im: hasten::core::ndarray::Array3<f32> = rng.normal_array((1, 6, 6), 1.0);
            let d: f32 = im
                .indexed_iter()
                .map(|((_, _, j), &v)| if j < 3 { v } else { -v })
                .sum();
            if d.abs() >= 3.0 {
                slot.assign(&im);
                labels.push(usize::from(d > 0.0));
                break;
            }
        }
    }
    ImageSet::new(images, labels, 2).unwrap()
}

#[test]
fn binary_weights_learn_a_planted_task_and_freeze_into_binary_ops() {
    let graph = net(4);
    let (train, test) = (planted(2048, 5), planted(256, 6));
    let qat = QuantAwareTraining::new().quantize(NodeFilter::all(), QatQuantizer::binary());
    let config = TrainConfig {
        epochs: 15,
        batch_size: 64,
        eval_batch_size: 128,
        seed: 9,
        ..TrainConfig::default()
    };
    let fq = qat.fake_quant(&graph).unwrap();
    let untrained = evaluate(
        &fq.quantized_graph(&graph, &ParamStore::from_graph(&graph))
            .unwrap(),
        &test,
        128,
    )
    .unwrap();
    let mut trainer = Trainer::new(
        graph,
        Adam::new(),
        Cosine::new(0.01, 0.0, 15 * 32).unwrap(),
        config,
    )
    .unwrap()
    .with_fake_quant(fq)
    .unwrap();
    let history = trainer.fit(&train, &test, |_| {}).unwrap();
    let accuracy = history.last().unwrap().test_accuracy;
    let curve: Vec<f64> = history.iter().map(|e| e.test_accuracy).collect();
    let losses: Vec<f64> = history.iter().map(|e| e.loss).collect();
    assert!(
        accuracy >= 0.95,
        "binary-weight test accuracy {accuracy} (untrained {untrained}): {curve:?} {losses:?}"
    );
    // The shadow weights stay in BinaryConnect's clip range.
    for (name, v, _) in trainer.params().iter() {
        if name.ends_with(".weight") {
            assert!(v.iter().all(|x| x.abs() <= 1.0), "{name}");
        }
    }

    // Freeze: every layer becomes a binary op holding Ŵ, the reference
    // forward equals the trained (fake-quantized) network's, and the fast
    // plan of the frozen graph scores the accuracy the trainer measured.
    let (frozen, reports) = qat.freeze(&trainer.graph().unwrap()).unwrap();
    assert_eq!(reports[0].nodes.len(), 3);
    for name in ["conv1", "conv2", "fc"] {
        let node = frozen.node(name).unwrap();
        assert_eq!(node.kind(), "block");
        let ops = match node.op() {
            hasten::core::NodeOp::Block(b) => b.ops(),
            _ => unreachable!(),
        };
        assert!(matches!(ops, [Op::BinaryConv(_)]), "{name}");
    }
    let trained = trainer.forward_graph().unwrap();
    let x = test
        .images()
        .slice(hasten::core::ndarray::s![..16, .., .., ..])
        .to_owned();
    let a = trained.reference_forward(&[&x]).unwrap().remove(0);
    let b = frozen.reference_forward(&[&x]).unwrap().remove(0);
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (p, q) in a.iter().zip(b.iter()) {
        assert!((p - q).abs() <= 1e-5 * scale, "{p} vs {q}");
    }
    let mut plan = Plan::for_graph(&frozen, 16, PlanOptions::default()).unwrap();
    let fast = plan.run(&x).unwrap().to_owned();
    for (p, q) in fast.iter().zip(b.iter()) {
        assert!((p - q).abs() <= 1e-4 * scale, "{p} vs {q}");
    }
    let frozen_accuracy = evaluate(&frozen, &test, 128).unwrap();
    assert!(
        (frozen_accuracy - accuracy).abs() <= 1.0 / 256.0,
        "{frozen_accuracy} vs {accuracy}"
    );
}

#[test]
fn freeze_reproduces_the_quantized_forward_for_every_quantizer() {
    for (k, q) in QUANTIZERS.into_iter().enumerate() {
        let graph = net(10 + k as u64);
        let qat = QuantAwareTraining::new()
            .quantize(NodeFilter::kind("conv"), q)
            .quantize(NodeFilter::kind("linear"), QatQuantizer::int8());
        let fq = qat.fake_quant(&graph).unwrap();
        let shadow = ParamStore::from_graph(&graph);
        let fake = fq.quantized_graph(&graph, &shadow).unwrap();
        let (frozen, reports) = qat.freeze(&graph).unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].nodes.len(), 2);
        assert_eq!(reports[1].nodes.len(), 1);
        let x = SeededRng::new(20).normal_array((3, 1, 6, 6), 1.0);
        let a = fake.reference_forward(&[&x]).unwrap().remove(0);
        let b = frozen.reference_forward(&[&x]).unwrap().remove(0);
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (p, r) in a.iter().zip(b.iter()) {
            assert!((p - r).abs() <= 1e-5 * scale, "{q:?}: {p} vs {r}");
        }
    }
}

#[test]
fn later_rules_win_and_bad_setups_are_errors() {
    let graph = net(30);
    let qat = QuantAwareTraining::new()
        .quantize(NodeFilter::all(), QatQuantizer::Ternary)
        .quantize(NodeFilter::name("conv2"), QatQuantizer::binary());
    let fq = qat.fake_quant(&graph).unwrap();
    let by_name: Vec<(String, String)> = fq
        .entries()
        .map(|(n, q)| (n.to_string(), q.name()))
        .collect();
    let binary = QatQuantizer::binary().name();
    let ternary = QatQuantizer::Ternary.name();
    assert_eq!(
        by_name,
        [
            ("conv1.weight".to_string(), ternary.clone()),
            ("conv2.weight".to_string(), binary),
            ("fc.weight".to_string(), ternary),
        ]
    );
    let (frozen, _) = qat.freeze(&graph).unwrap();
    let kind = |n: &str| match frozen.node(n).unwrap().op() {
        hasten::core::NodeOp::Block(b) => b.ops()[0].kind(),
        _ => "dense",
    };
    assert_eq!(kind("conv1"), "ternary_conv");
    assert_eq!(kind("conv2"), "binary_conv");
    assert_eq!(kind("fc"), "ternary_conv");

    assert!(QuantAwareTraining::new().fake_quant(&graph).is_err());
    assert!(QuantAwareTraining::new().freeze(&graph).is_err());
    let relu_only =
        QuantAwareTraining::new().quantize(NodeFilter::kind("relu"), QatQuantizer::int8());
    assert!(relu_only.fake_quant(&graph).is_err());
    let bad_bits = QuantAwareTraining::new()
        .quantize(NodeFilter::all(), QatQuantizer::FixedPoint { bits: 40 });
    assert!(bad_bits.fake_quant(&graph).is_err());
    assert!(bad_bits.freeze(&graph).is_err());
    let bad_clip = QuantAwareTraining::new()
        .quantize(NodeFilter::all(), QatQuantizer::Binary { clip: Some(-1.0) });
    assert!(bad_clip.fake_quant(&graph).is_err());
    // A fake quantization naming a parameter the graph lacks.
    let mut fq = FakeQuant::new();
    fq.insert("nope.weight", Arc::new(QatQuantizer::int8()))
        .unwrap();
    let t = Trainer::new(
        graph,
        Adam::new(),
        Constant::new(0.01).unwrap(),
        TrainConfig::default(),
    )
    .unwrap();
    assert!(t.with_fake_quant(fq).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn quantizers_never_panic(
        dims in proptest::collection::vec(0usize..4, 1..6),
        values in proptest::collection::vec(proptest::num::f32::ANY, 0..200),
        bits in 0u32..20,
        clip in proptest::num::f32::ANY,
    ) {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| values.get(i).copied().unwrap_or(0.5)).collect();
        let w = ArrayD::from_shape_vec(dims.clone(), data).unwrap();
        for q in [
            QatQuantizer::Binary { clip: Some(clip) },
            QatQuantizer::Ternary,
            QatQuantizer::FixedPoint { bits },
        ] {
            if let Ok(out) = q.quantize(&w) {
                proptest::prop_assert_eq!(out.shape(), w.shape());
                proptest::prop_assert!(out.iter().all(|v| v.is_finite()));
            }
            let mut fq = FakeQuant::new();
            let _ = fq.insert("w", Arc::new(q));
        }
    }
}

/// The property above once drew a 3-bit fixed-point row of `1.7e38`: its
/// scale times the top code overflowed f32 and the fake-quantized weight
/// read infinity. Such a range is now an error.
#[test]
fn weights_too_large_for_their_fixed_point_codes_are_an_error() {
    let w = ArrayD::from_shape_vec(vec![2, 1], vec![1.738_818_7e38_f32, 0.0]).unwrap();
    assert!(QatQuantizer::FixedPoint { bits: 3 }.quantize(&w).is_err());
    for q in [
        QatQuantizer::Binary { clip: Some(0.0) },
        QatQuantizer::Ternary,
    ] {
        let out = q.quantize(&w).unwrap();
        assert!(out.iter().all(|v| v.is_finite()), "{q:?}: {out}");
    }
}

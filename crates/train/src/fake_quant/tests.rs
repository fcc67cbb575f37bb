use super::*;
use crate::tape::TrainTape;
use hasten_core::grad::check::numeric_grad;
use hasten_core::grad::loss::softmax_cross_entropy;
use hasten_core::grad::{Mode, Params, Tape};
use hasten_core::graph::GraphBuilder;
use hasten_core::op::{Flatten, Relu};
use hasten_core::{ActShape, Conv4d, ConvLayer, ConvSpec, LinearLayer, SeededRng};
use ndarray::{Array4, ArrayD, Axis};

/// `α_t · sign(W_t)` per output filter, `α_t = mean |W_t|` (eq. (8)), with
/// BinaryConnect's clip region `|W| ≤ 1`.
#[derive(Debug)]
struct SignScale;

impl WeightQuantizer for SignScale {
    fn name(&self) -> String {
        "α·sign(W)".into()
    }

    fn quantize(&self, w: &ArrayD<f32>) -> hasten_core::Result<ArrayD<f32>> {
        let mut out = w.clone();
        for mut row in out.axis_iter_mut(Axis(0)) {
            let alpha = row.iter().map(|v| v.abs()).sum::<f32>() / row.len() as f32;
            row.mapv_inplace(|v| if v >= 0.0 { alpha } else { -alpha });
        }
        Ok(out)
    }

    fn clip(&self) -> Option<f32> {
        Some(1.0)
    }
}

/// Rounding to multiples of 0.25, no clip region (a plain STE).
#[derive(Debug)]
struct Round;

impl WeightQuantizer for Round {
    fn name(&self) -> String {
        "round to 1/4".into()
    }

    fn quantize(&self, w: &ArrayD<f32>) -> hasten_core::Result<ArrayD<f32>> {
        Ok(w.mapv(|v| (v * 4.0).round() / 4.0))
    }
}

/// A quantizer that (wrongly) flattens the weight.
#[derive(Debug)]
struct Flattening;

impl WeightQuantizer for Flattening {
    fn name(&self) -> String {
        "flatten".into()
    }

    fn quantize(&self, w: &ArrayD<f32>) -> hasten_core::Result<ArrayD<f32>> {
        Ok(w.clone().into_shape_with_order(vec![w.len()]).unwrap())
    }
}

/// conv(2→3, 3×3, pad 1) → ReLU → flatten → linear(3·4·4 → 4).
fn net(rng: &mut SeededRng) -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 4, 4));
    let w = rng.normal_array((3, 2, 3, 3), 0.6);
    let conv = ConvLayer::new(
        Conv4d::new(w).unwrap(),
        Some(rng.normal_array(3, 0.1)),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let y = b.op("conv", conv, x);
    let y = b.op("relu", Relu, y);
    let y = b.op("flat", Flatten, y);
    let fc = LinearLayer::new(rng.normal_array((4, 48), 0.3), None).unwrap();
    let y = b.op("fc", fc, y);
    b.output(y);
    b.build().unwrap()
}

fn both_layers() -> FakeQuant {
    let mut fq = FakeQuant::new();
    fq.insert("conv.weight", Arc::new(SignScale)).unwrap();
    fq.insert("fc.weight", Arc::new(Round)).unwrap();
    fq
}

/// The f64 reference loss of `graph` with the parameters `params`.
fn reference_loss(graph: &Graph, params: &Params, x: &Array4<f64>, labels: &[usize]) -> f64 {
    let tape = Tape::forward(graph, params, std::slice::from_ref(x), Mode::Eval).unwrap();
    softmax_cross_entropy(tape.outputs()[0].view(), labels, 0.0)
        .unwrap()
        .value
}

#[test]
fn ste_gradient_is_the_dense_gradient_at_the_quantized_weights_masked_by_the_clip_region() {
    let mut rng = SeededRng::new(11);
    let graph = net(&mut rng);
    let mut shadow = ParamStore::from_graph(&graph);
    // Push a few conv weights out of the clip region |W| ≤ 1.
    let w = shadow.get_mut("conv.weight").unwrap();
    for (k, v) in w.iter_mut().enumerate() {
        if k % 5 == 0 {
            *v = if *v >= 0.0 { 1.5 } else { -1.25 };
        }
    }
    let fq = both_layers();
    let x = rng.normal_array((5, 2, 4, 4), 1.0);
    let labels = [0, 3, 1, 2, 3];

    let quantized = fq.forward_store(&shadow).unwrap();
    let tape =
        TrainTape::forward(&graph, &quantized, std::slice::from_ref(&x), Mode::Eval).unwrap();
    let loss = softmax_cross_entropy(tape.outputs()[0].view(), &labels, 0.0).unwrap();
    let mut grads = tape.backward(&[loss.grad]).unwrap().params;
    fq.straight_through(&shadow, &mut grads).unwrap();

    // Truth: central differences of the f64 reference loss of the dense
    // network at Ŵ, with respect to each quantized weight, then the mask.
    let x64 = x.mapv(f64::from);
    let at_quantized = quantized.to_f64();
    for (name, limit) in [("conv.weight", 1.0f32), ("fc.weight", f32::INFINITY)] {
        let mut numeric = numeric_grad(&at_quantized[name], |v| {
            let mut p = at_quantized.clone();
            p.insert(name.to_string(), v.clone());
            reference_loss(&graph, &p, &x64, &labels)
        });
        let w = shadow.get(name).unwrap();
        let mut masked = 0;
        for (g, &wv) in numeric.iter_mut().zip(w.iter()) {
            if wv.abs() > limit {
                assert!(
                    g.abs() > 0.0,
                    "a masked weight with a zero gradient tests nothing"
                );
                *g = 0.0;
                masked += 1;
            }
        }
        assert_eq!(masked > 0, limit.is_finite(), "{name}");
        let analytic = &grads[name];
        let diff: f64 = numeric
            .iter()
            .zip(analytic.iter())
            .map(|(a, &b)| (a - f64::from(b)).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = numeric.iter().map(|a| a * a).sum::<f64>().sqrt();
        assert!(norm > 1e-3, "{name}: vanishing gradient");
        // f32 forward and backward against f64 differences.
        assert!(diff / norm < 1e-4, "{name}: relative error {}", diff / norm);
        for (&a, &wv) in analytic.iter().zip(w.iter()) {
            if wv.abs() > limit {
                assert_eq!(a, 0.0);
            }
        }
    }
    // The bias is not quantized: its gradient is the plain one.
    assert!(grads["conv.bias"].iter().any(|&g| g != 0.0));
}

#[test]
fn forward_store_replaces_only_the_selected_weights() {
    let mut rng = SeededRng::new(3);
    let graph = net(&mut rng);
    let shadow = ParamStore::from_graph(&graph);
    let fq = FakeQuant::select(&graph, &NodeFilter::kind("conv"), Arc::new(SignScale)).unwrap();
    assert_eq!(
        fq.entries().map(|(n, _)| n).collect::<Vec<_>>(),
        ["conv.weight"]
    );
    let q = fq.forward_store(&shadow).unwrap();
    let w = shadow.get("conv.weight").unwrap();
    let wq = q.get("conv.weight").unwrap();
    for t in 0..3 {
        let row = w.index_axis(Axis(0), t);
        let alpha = row.iter().map(|v| v.abs()).sum::<f32>() / row.len() as f32;
        for (a, b) in row.iter().zip(wq.index_axis(Axis(0), t).iter()) {
            assert_eq!(*b, if *a >= 0.0 { alpha } else { -alpha });
        }
    }
    for name in ["conv.bias", "fc.weight"] {
        assert_eq!(q.get(name), shadow.get(name));
    }
    // The quantized graph holds Ŵ.
    let g = fq.quantized_graph(&graph, &shadow).unwrap();
    assert_eq!(ParamStore::from_graph(&g).get("conv.weight"), Some(wq));
}

#[test]
fn clip_shadow_clips_only_quantizers_with_a_limit() {
    let mut rng = SeededRng::new(4);
    let graph = net(&mut rng);
    let mut shadow = ParamStore::from_graph(&graph);
    shadow.get_mut("conv.weight").unwrap()[[0, 0, 0, 0]] = 3.0;
    shadow.get_mut("fc.weight").unwrap()[[0, 0]] = -3.0;
    both_layers().clip_shadow(&mut shadow).unwrap();
    assert_eq!(shadow.get("conv.weight").unwrap()[[0, 0, 0, 0]], 1.0);
    assert_eq!(shadow.get("fc.weight").unwrap()[[0, 0]], -3.0);
    assert!(shadow
        .get("conv.weight")
        .unwrap()
        .iter()
        .all(|v| v.abs() <= 1.0));
}

#[test]
fn bad_setups_are_typed_errors() {
    let mut rng = SeededRng::new(5);
    let graph = net(&mut rng);
    let shadow = ParamStore::from_graph(&graph);
    // No conv or linear node selected.
    assert!(FakeQuant::select(&graph, &NodeFilter::kind("relu"), Arc::new(Round)).is_err());
    // A name the store does not hold, or a buffer-like unknown.
    let mut fq = FakeQuant::new();
    fq.insert("nope.weight", Arc::new(Round)).unwrap();
    assert!(fq.forward_store(&shadow).is_err());
    assert!(fq.check(&shadow).is_err());
    // A quantizer changing the shape.
    let mut fq = FakeQuant::new();
    fq.insert("fc.weight", Arc::new(Flattening)).unwrap();
    assert!(fq.forward_store(&shadow).is_err());
    // A gradient of the wrong shape.
    let mut grads = Grads::new();
    grads.insert("conv.weight".into(), ArrayD::zeros(vec![2]));
    assert!(both_layers().straight_through(&shadow, &mut grads).is_err());
}

#[test]
fn the_trainer_evaluates_and_trains_through_the_quantized_weights() {
    use crate::data::ImageSet;
    use crate::optim::Sgd;
    use crate::schedule::Constant;
    use crate::{TrainConfig, Trainer};

    let mut rng = SeededRng::new(6);
    let graph = net(&mut rng);
    let fq = both_layers();
    let config = TrainConfig {
        epochs: 1,
        batch_size: 4,
        eval_batch_size: 4,
        ..TrainConfig::default()
    };
    let trainer = Trainer::new(
        graph.clone(),
        Sgd::new(0.0).unwrap(),
        Constant::new(0.05).unwrap(),
        config,
    )
    .unwrap()
    .with_fake_quant(fq.clone())
    .unwrap();
    let fg = trainer.forward_graph().unwrap();
    let expected = fq.forward_store(trainer.params()).unwrap();
    assert_eq!(
        ParamStore::from_graph(&fg).get("conv.weight"),
        expected.get("conv.weight")
    );
    // One step on one full batch: the shadow weights move by
    // −lr · STE(∂L/∂Ŵ) and are then clipped where the quantizer clips.
    let x = rng.normal_array((4, 2, 4, 4), 1.0);
    let labels = vec![1, 0, 3, 2];
    let data = ImageSet::new(x.clone(), labels.clone(), 4).unwrap();
    let mut t = trainer.clone();
    t.fit(&data, &data, |_| {}).unwrap();
    assert_eq!(t.steps(), 1);
    let tape = TrainTape::forward(&graph, &expected, std::slice::from_ref(&x), Mode::Eval).unwrap();
    let loss = softmax_cross_entropy(tape.outputs()[0].view(), &labels, 0.0).unwrap();
    let mut g = tape.backward(&[loss.grad]).unwrap().params;
    fq.straight_through(trainer.params(), &mut g).unwrap();
    for (name, limit) in [("conv.weight", 1.0f32), ("fc.weight", f32::INFINITY)] {
        let before = trainer.params().get(name).unwrap();
        let after = t.params().get(name).unwrap();
        assert!(before.iter().zip(after.iter()).any(|(a, b)| a != b));
        for ((&b, &a), &gi) in before.iter().zip(after.iter()).zip(g[name].iter()) {
            let want = (b - 0.05 * gi).clamp(-limit, limit);
            // The loader's sample order changes only the summation order.
            assert!(
                (a - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{name}: {a} vs {want}"
            );
        }
    }
    assert!(t
        .params()
        .get("conv.weight")
        .unwrap()
        .iter()
        .all(|v| v.abs() <= 1.0));
    assert!(trainer
        .params()
        .get("conv.weight")
        .unwrap()
        .iter()
        .any(|v| v.abs() > 1.0));
    // Unknown parameters are rejected when the fake quantization is set.
    let mut bad = FakeQuant::new();
    bad.insert("x.weight", Arc::new(Round)).unwrap();
    assert!(trainer.clone().with_fake_quant(bad).is_err());
}

/// Adds the step to every weight in training (a per-step draw stand-in);
/// its own backward doubles the gradient.
#[derive(Debug)]
struct StepShift;

impl WeightQuantizer for StepShift {
    fn name(&self) -> String {
        "W + step".into()
    }

    fn quantize(&self, w: &ArrayD<f32>) -> hasten_core::Result<ArrayD<f32>> {
        Ok(w.clone())
    }

    fn quantize_train(
        &self,
        w: &ArrayD<f32>,
        step: u64,
        name: &str,
    ) -> hasten_core::Result<ArrayD<f32>> {
        assert_eq!(name, "fc.weight");
        Ok(w.mapv(|v| v + step as f32))
    }

    fn backward(&self, _: &ArrayD<f32>, g: &ArrayD<f32>) -> hasten_core::Result<ArrayD<f32>> {
        Ok(g.mapv(|v| 2.0 * v))
    }
}

#[test]
fn training_forward_and_backward_are_the_quantizers_own() {
    let graph = net(&mut SeededRng::new(2));
    let shadow = ParamStore::from_graph(&graph);
    let mut fq = FakeQuant::new();
    fq.insert("fc.weight", Arc::new(StepShift)).unwrap();
    let w = shadow.get("fc.weight").unwrap();
    // Evaluation: `quantize`; step s of training: `quantize_train`.
    assert_eq!(fq.forward_store(&shadow).unwrap().get("fc.weight"), Some(w));
    let trained = fq.training_store(&shadow, 3).unwrap();
    assert_eq!(trained.get("fc.weight").unwrap(), &w.mapv(|v| v + 3.0));
    assert_eq!(trained.get("conv.weight"), shadow.get("conv.weight"));
    // The gradient goes through the quantizer's backward.
    let mut grads = Grads::new();
    grads.insert("fc.weight".into(), w.mapv(|_| 1.5));
    fq.straight_through(&shadow, &mut grads).unwrap();
    assert!(grads["fc.weight"].iter().all(|&g| g == 3.0));
    // The default backward: the clipped identity of `clip`.
    let g = ArrayD::from_shape_vec(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
    let wc = ArrayD::from_shape_vec(vec![3], vec![0.5, -1.5, 1.0]).unwrap();
    assert_eq!(
        SignScale.backward(&wc, &g).unwrap().as_slice().unwrap(),
        &[1.0, 0.0, 3.0]
    );
    assert_eq!(Round.backward(&wc, &g).unwrap(), g);
    assert!(SignScale.backward(&wc, &ArrayD::zeros(vec![2])).is_err());
}

//! Fine-tuning a compressed graph with `hasten_train`'s [`Trainer`] (SGD
//! with momentum at a constant rate) — on the labels, or distilled from the
//! original network (survey §7, [`DistillLoss`]), optionally
//! quantization-aware ([`FakeQuant`], eq. (5)) — and the check of whether a
//! graph can be fine-tuned at all. The compressed ops train their stored
//! values (sparse values, centroids, scales, TT cores; see
//! `hasten_core::grad`; int8 and XNOR-Net convolutions pass their input
//! gradient straight through). Every op of the IR now has a backward, so
//! the check finds nothing; it stays the one place that would name an op
//! without one.

use hasten_core::grad::{has_backward, inner_ops, prefix};
use hasten_core::graph::{op_parameters, NodeOp};
use hasten_core::op::Op;
use hasten_core::Graph;
use hasten_train::optim::Sgd;
use hasten_train::schedule::Constant;
use hasten_train::{FakeQuant, Loss, LrScales, TrainConfig, Trainer};

use super::error::Result;
use super::recipe::FineTune;
use crate::teacher_student::{DistillLoss, DistillSettings};

/// The training and test splits fine-tuning and evaluation use, already
/// normalised as the network expects.
pub type FineTuneData = hasten_train::data::Splits;

/// Test batch size of the evaluations.
pub(crate) const EVAL_BATCH: usize = 256;

/// The first node holding an op without a backward, if any.
pub(crate) fn untrainable(graph: &Graph) -> Option<&str> {
    first_untrainable_op(graph).map(|(node, _)| node)
}

/// The first node holding an op without a backward (which cannot be
/// trained) and that op's kind, if any — `None` for every graph of the
/// current IR, XNOR-Net convolutions included.
pub fn first_untrainable_op(graph: &Graph) -> Option<(&str, &'static str)> {
    graph.nodes().iter().find_map(|n| {
        inner_ops(n.op())
            .iter()
            .find(|op| !has_backward(op))
            .map(|op| (n.name(), op.kind()))
    })
}

/// The learning-rate multipliers of a fine-tuning of `graph`: the
/// fixed-point step sizes and offsets scaled so that their steps are those
/// of the weights they set ([`LrScales::fixed_point_projected`]), and
/// `settings.factor_lr_scale` for the weights and biases of the factors of
/// decomposed layers — the convolutions and linear layers of a block
/// holding two or more (CP, Tucker-2, SVD, separable filters, asymmetric
/// reconstruction; survey section 2).
///
/// # Errors
/// A negative or non-finite `factor_lr_scale`.
pub fn fine_tune_lr_scales(graph: &Graph, settings: &FineTune) -> Result<LrScales> {
    let mut scales = LrScales::fixed_point_projected(graph);
    let Some(factor) = settings.factor_lr_scale else {
        return Ok(scales);
    };
    for node in graph.nodes() {
        let NodeOp::Block(b) = node.op() else {
            continue;
        };
        let dense = |op: &Op| matches!(op, Op::Conv(_) | Op::Linear(_));
        if b.ops().iter().filter(|op| dense(op)).count() < 2 {
            continue;
        }
        for (i, op) in b.ops().iter().enumerate().filter(|(_, op)| dense(op)) {
            let pre = prefix(node.name(), node.op(), i);
            for (suffix, _) in op_parameters(op) {
                scales.set(format!("{pre}.{suffix}"), factor)?;
            }
        }
    }
    Ok(scales)
}

/// `graph` after `settings.epochs` epochs on `data.train` (each parameter at
/// its [`fine_tune_lr_scales`] multiple of the rate) — distilled from
/// `teacher` when the settings say so, with `fake_quant`'s weights
/// quantized in the forward if given (the result then holds the
/// full-precision shadow weights, for the caller to freeze).
pub(crate) fn fine_tune(
    graph: Graph,
    settings: &FineTune,
    data: &FineTuneData,
    teacher: &Graph,
    fake_quant: Option<FakeQuant>,
) -> Result<Graph> {
    let config = TrainConfig {
        epochs: settings.epochs,
        batch_size: settings.batch,
        eval_batch_size: EVAL_BATCH,
        ..TrainConfig::default()
    };
    let scales = fine_tune_lr_scales(&graph, settings)?;
    let mut trainer = Trainer::new(
        graph,
        Sgd::new(settings.momentum)?,
        Constant::new(settings.lr)?,
        config,
    )?
    .with_lr_scales(scales)?;
    if let Some(fq) = fake_quant {
        trainer = trainer.with_fake_quant(fq)?;
    }
    match settings.distill {
        None => fit(trainer, data),
        Some(d) => {
            let loss = DistillLoss::new(
                &trainer.graph()?,
                teacher.clone(),
                DistillSettings::new(d.temperature, d.weight)?,
            )?;
            fit(trainer.with_loss(loss)?, data)
        }
    }
}

/// The trainer's graph after its epochs.
fn fit<L: Loss>(mut trainer: Trainer<Sgd, Constant, L>, data: &FineTuneData) -> Result<Graph> {
    trainer.fit(&data.train, &data.test, |_| {})?;
    Ok(trainer.graph()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::NodeFilter;
    use hasten_models::{lenet5, ModelConfig};
    use hasten_quant::{Binarize, FixedPoint, Granularity, Mode};
    use hasten_tensor_decomp::Tucker2;

    fn settings(factor_lr_scale: Option<f32>) -> FineTune {
        let mut s = crate::pipeline::Recipe::from_toml(
            "fine_tune = { epochs = 1, lr = 0.01 }\n[[steps]]\nmethod = { name = \"svd\", rank = 2 }",
        )
        .unwrap()
        .fine_tune
        .unwrap();
        s.factor_lr_scale = factor_lr_scale;
        s
    }

    #[test]
    fn fixed_point_steps_are_scaled_by_the_squared_norm_of_their_jacobian() {
        let mut g = lenet5(&ModelConfig::mnist()).unwrap();
        let fp = FixedPoint::new(4, Mode::Symmetric, Granularity::PerChannel).unwrap();
        g.apply_transform(&fp, &NodeFilter::name("conv2")).unwrap();
        let scales = fine_tune_lr_scales(&g, &settings(None)).unwrap();
        let [Op::FixedPointConv(f)] = inner_ops(g.node("conv2").unwrap().op()) else {
            panic!("conv2 is not fixed-point");
        };
        // The codes recovered from the dequantized weights, u = (w − o) / s:
        // ∂w/∂scale = u, ∂w/∂offset = 1, 16 filters of 6·5·5 weights.
        let w = f.dequantized();
        let mut sum_u2 = 0.0f64;
        for ((t, _), &v) in w.indexed_iter() {
            let u = f64::from((v - f.offsets()[t]) / f.scales()[t]).round();
            assert!((0.0..=15.0).contains(&u));
            sum_u2 += u * u;
        }
        let want = 16.0 / sum_u2;
        assert!((f64::from(scales.get("conv2.0.scales")) - want).abs() < 1e-6 * want);
        assert_eq!(scales.get("conv2.0.offsets"), 1.0 / 150.0);
        assert_eq!(scales.len(), 2, "nothing else is scaled");
        assert_eq!(scales.get("conv2.0.bias"), 1.0);
    }

    #[test]
    fn the_factor_rate_reaches_every_factor_of_a_decomposed_layer_only() {
        let mut g = lenet5(&ModelConfig::mnist()).unwrap();
        assert!(fine_tune_lr_scales(&g, &settings(Some(0.1)))
            .unwrap()
            .is_empty());
        g.apply_transform(&Tucker2::with_ranks(4, 3), &NodeFilter::name("conv2"))
            .unwrap();
        let scales = fine_tune_lr_scales(&g, &settings(Some(0.1))).unwrap();
        let factors: Vec<String> = g
            .parameters()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("conv2."))
            .collect();
        assert!(factors.len() >= 3, "{factors:?}");
        for (name, _) in g.parameters() {
            let want = if factors.contains(&name) { 0.1 } else { 1.0 };
            assert_eq!(scales.get(&name), want, "{name}");
        }
        assert!(fine_tune_lr_scales(&g, &settings(None)).unwrap().is_empty());
        let mut bad = settings(Some(-1.0));
        assert!(fine_tune_lr_scales(&g, &bad).is_err());
        bad.factor_lr_scale = Some(f32::NAN);
        assert!(fine_tune_lr_scales(&g, &bad).is_err());
        let recipe = "fine_tune = { epochs = 1, lr = 0.01, factor_lr_scale = SCALE }\n[[steps]]\nmethod = { name = \"svd\", rank = 2 }";
        assert!(crate::pipeline::Recipe::from_toml(&recipe.replace("SCALE", "0.0")).is_ok());
        assert!(crate::pipeline::Recipe::from_toml(&recipe.replace("SCALE", "-0.5")).is_err());
    }

    #[test]
    fn binary_and_xnor_graphs_have_no_untrainable_op() {
        let mut g = lenet5(&ModelConfig::mnist()).unwrap();
        assert_eq!(first_untrainable_op(&g), None);
        // Binary weights train their scales; XNOR inputs pass their
        // gradient straight through.
        g.apply_transform(&Binarize::binary_weights(), &NodeFilter::name("fc1"))
            .unwrap();
        g.apply_transform(&Binarize::xnor_net(), &NodeFilter::name("fc2"))
            .unwrap();
        let kinds: Vec<_> = ["fc1", "fc2"]
            .iter()
            .flat_map(|n| {
                inner_ops(g.node(n).unwrap().op())
                    .iter()
                    .map(|op| op.kind())
            })
            .collect();
        assert!(
            kinds.contains(&"xnor_conv") && kinds.contains(&"binary_conv"),
            "{kinds:?}"
        );
        assert_eq!(first_untrainable_op(&g), None);
        assert_eq!(untrainable(&g), None);
    }
}

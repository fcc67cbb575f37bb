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

use hasten_core::grad::{has_backward, inner_ops};
use hasten_core::Graph;
use hasten_train::optim::Sgd;
use hasten_train::schedule::Constant;
use hasten_train::{FakeQuant, Loss, TrainConfig, Trainer};

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

/// `graph` after `settings.epochs` epochs on `data.train` — distilled from
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
    let mut trainer = Trainer::new(
        graph,
        Sgd::new(settings.momentum)?,
        Constant::new(settings.lr)?,
        config,
    )?;
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
    use hasten_quant::Binarize;

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

//! Fine-tuning a compressed graph with `hasten_train`'s [`Trainer`] (SGD
//! with momentum at a constant rate) — on the labels, or distilled from the
//! original network (survey §7, [`DistillLoss`]), optionally
//! quantization-aware ([`FakeQuant`], eq. (5)) — and the check of whether a
//! graph can be fine-tuned at all. The compressed ops train their stored
//! values (sparse values, centroids, scales, TT cores; see
//! `hasten_core::grad`; int8 convolutions pass their input gradient straight
//! through); only XNOR-Net convolutions have no backward.

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

/// The first node holding an op without a backward (an XNOR-Net
/// convolution, which cannot be trained) and that op's kind, if any.
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
    fn the_first_op_without_a_backward_is_named_with_its_kind() {
        let mut g = lenet5(&ModelConfig::mnist()).unwrap();
        assert_eq!(first_untrainable_op(&g), None);
        // Binary weights train their scales; XNOR inputs have no backward.
        g.apply_transform(&Binarize::binary_weights(), &NodeFilter::name("fc1"))
            .unwrap();
        assert_eq!(first_untrainable_op(&g), None);
        g.apply_transform(&Binarize::xnor_net(), &NodeFilter::name("fc2"))
            .unwrap();
        let (node, kind) = first_untrainable_op(&g).unwrap();
        assert_eq!(node, "fc2");
        let op = inner_ops(g.node("fc2").unwrap().op())
            .iter()
            .find(|op| !has_backward(op))
            .unwrap();
        assert_eq!(kind, op.kind());
        assert_ne!(kind, "linear");
        assert_eq!(untrainable(&g), Some("fc2"));
    }
}

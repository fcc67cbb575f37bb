//! Fine-tuning a compressed graph with `hasten_train`'s [`Trainer`] (SGD
//! with momentum at a constant rate), and the check of whether a graph can
//! be fine-tuned at all: quantized, packed and sparse ops have no backward.

use hasten_core::grad::{has_backward, inner_ops};
use hasten_core::Graph;
use hasten_train::optim::Sgd;
use hasten_train::schedule::Constant;
use hasten_train::{TrainConfig, Trainer};

use super::error::Result;
use super::recipe::FineTune;

/// The training and test splits fine-tuning and evaluation use, already
/// normalised as the network expects.
pub type FineTuneData = hasten_train::data::Splits;

/// Test batch size of the evaluations.
pub(crate) const EVAL_BATCH: usize = 256;

/// The first node holding an op without a backward, if any.
pub(crate) fn untrainable(graph: &Graph) -> Option<&str> {
    graph
        .nodes()
        .iter()
        .find(|n| inner_ops(n.op()).iter().any(|op| !has_backward(op)))
        .map(|n| n.name())
}

/// `graph` after `settings.epochs` epochs on `data.train`.
pub(crate) fn fine_tune(graph: Graph, settings: &FineTune, data: &FineTuneData) -> Result<Graph> {
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
    trainer.fit(&data.train, &data.test, |_| {})?;
    Ok(trainer.graph()?)
}

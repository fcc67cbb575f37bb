//! Fine-tuning a compressed graph with `hasten_train`'s [`Trainer`] (SGD
//! with momentum at a constant rate), and the check of whether a graph can
//! be fine-tuned at all. The compressed ops train their stored values
//! (sparse values, centroids, scales, TT cores; see `hasten_core::grad`);
//! only int8 and XNOR-Net convolutions have no backward.

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
    first_untrainable_op(graph).map(|(node, _)| node)
}

/// The first node holding an op without a backward (an int8 or XNOR-Net
/// convolution, which cannot be trained) and that op's kind, if any.
pub fn first_untrainable_op(graph: &Graph) -> Option<(&str, &'static str)> {
    graph.nodes().iter().find_map(|n| {
        inner_ops(n.op())
            .iter()
            .find(|op| !has_backward(op))
            .map(|op| (n.name(), op.kind()))
    })
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

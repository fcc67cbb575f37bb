//! [`Loss`]: the training objective of a [`Trainer`](crate::Trainer) — by
//! default softmax cross-entropy against the labels ([`CrossEntropy`]); a
//! custom loss sees the logits and, for losses on intermediate features
//! (the FitNets hint of survey eq. (21)), named values of the graph
//! ([`Loss::taps`]), and may own trainable parameters of its own (a hint
//! regressor) that the trainer's optimizer updates with the network's.

use hasten_core::grad::loss::softmax_cross_entropy;
use hasten_core::graph::NodeDef;
use hasten_core::Graph;
use ndarray::{Array4, ArrayD};

use crate::error::{Result, TrainError};
use crate::params::{Grads, ParamStore};

/// What a [`Loss`] sees of one training batch.
#[derive(Debug, Clone, Copy)]
pub struct LossInput<'a> {
    /// The batch input, NCHW.
    pub x: &'a Array4<f32>,
    /// The labels, one per sample.
    pub labels: &'a [usize],
    /// The graph's output (logits `[N, K, 1, 1]`), then the values
    /// [`Loss::taps`] names, in that order.
    pub outputs: &'a [&'a Array4<f32>],
    /// The number of optimizer steps taken before this batch.
    pub step: usize,
}

/// A loss value and its gradients.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The batch loss.
    pub value: f32,
    /// `∂L/∂output` for every entry of [`LossInput::outputs`], each of its
    /// shape.
    pub output_grads: Vec<Array4<f32>>,
    /// `∂L/∂θ` for the loss's own parameters ([`Loss::params`]).
    pub param_grads: Grads,
}

/// A training objective on a classifier's logits and, optionally, on
/// intermediate values of the graph.
pub trait Loss {
    /// Names of graph values (node outputs or inputs) the loss needs besides
    /// the logits; they follow the logits in [`LossInput::outputs`].
    fn taps(&self) -> Vec<String> {
        Vec::new()
    }

    /// The loss's own trainable parameters and their initial values (their
    /// names must not be the graph's). The trainer keeps them in its store,
    /// updates them with the optimizer and leaves them out of the graph.
    fn params(&self) -> Vec<(String, ArrayD<f32>)> {
        Vec::new()
    }

    /// The loss of one batch and its gradients. `params` holds the current
    /// parameters (the loss may re-initialise its own, e.g. fit them on the
    /// first batch).
    fn evaluate(&mut self, input: &LossInput<'_>, params: &mut ParamStore) -> Result<LossOutput>;
}

/// Softmax cross-entropy of the logits against the labels, with label
/// smoothing in `[0, 1)`: the [`Trainer`](crate::Trainer)'s default loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossEntropy {
    /// Label smoothing.
    pub smoothing: f32,
}

impl Loss for CrossEntropy {
    fn evaluate(&mut self, input: &LossInput<'_>, _: &mut ParamStore) -> Result<LossOutput> {
        let loss = softmax_cross_entropy(input.outputs[0].view(), input.labels, self.smoothing)?;
        Ok(LossOutput {
            value: loss.value,
            output_grads: vec![loss.grad],
            param_grads: Grads::new(),
        })
    }
}

/// `graph` with the values named `extra` appended to its outputs (the
/// graph itself when `extra` is empty). Errors: a name that is not a value
/// of the graph.
pub fn with_extra_outputs(graph: &Graph, extra: &[String]) -> Result<Graph> {
    if extra.is_empty() {
        return Ok(graph.clone());
    }
    if let Some(bad) = extra.iter().find(|e| graph.value(e).is_none()) {
        return Err(TrainError::invalid(
            "tapped value",
            bad,
            "a value of the graph",
        ));
    }
    let (inputs, nodes, mut outputs): (_, Vec<NodeDef>, Vec<String>) = graph.to_defs();
    outputs.extend(extra.iter().cloned());
    Ok(Graph::new(inputs, nodes, outputs)?)
}

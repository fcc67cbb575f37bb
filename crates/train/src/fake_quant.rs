//! [`FakeQuant`]: quantization-aware training with full-precision "shadow"
//! weights and the straight-through estimator — the loop of survey eq. (5)
//! (Anwar et al. \[53\]; BinaryConnect \[54\], eq. (6)–(7); XNOR-Net \[59\]
//! eq. (8); DoReFa \[61\]) run by the [`Trainer`](crate::Trainer).
//!
//! The parameter store keeps the full-precision weights `W`. Each training
//! step
//! 1. runs the forward with `Ŵ = q(W)` for every selected weight
//!    ([`FakeQuant::training_store`]; `q` is a [`WeightQuantizer`], whose
//!    training draw may depend on the step and the parameter, as
//!    BinaryConnect's stochastic binarization, eq. (3));
//! 2. back-propagates to `∂L/∂Ŵ` and passes it straight through to `W`
//!    ([`FakeQuant::straight_through`], [`WeightQuantizer::backward`]): by
//!    default masked by the quantizer's clip region `|W| ≤ limit`
//!    (`hasten_core::grad::ste`), or through the derivative of a smooth
//!    normalisation (DoReFa's `tanh`);
//! 3. updates `W` with the optimizer and clips it into `[−limit, limit]`
//!    ([`FakeQuant::clip_shadow`]).
//!
//! The quantizers themselves are supplied by the caller (the `hasten` crate
//! implements [`WeightQuantizer`] with `hasten-quant`'s transforms, so the
//! quantization math exists once and the trained network freezes into the
//! real packed ops).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use hasten_core::grad::{prefix, ste};
use hasten_core::graph::{Graph, NodeFilter, NodeOp};
use hasten_core::op::Op;
use ndarray::ArrayD;

use crate::error::{Result, TrainError};
use crate::params::{Grads, ParamStore};

/// A weight quantizer `Ŵ = q(W)` for quantization-aware training.
pub trait WeightQuantizer: fmt::Debug + Send + Sync {
    /// A short description, e.g. `binary α·sign(W)`.
    fn name(&self) -> String;

    /// `q(W)` of one layer's weight — a convolution's `[T, C/g, kh, kw]` or
    /// a linear layer's `[out, in]` — as a tensor of the same shape.
    fn quantize(&self, weight: &ArrayD<f32>) -> hasten_core::Result<ArrayD<f32>>;

    /// The clip region of the straight-through estimator: gradients pass
    /// where `|W| ≤ limit` and `W` is clipped into `[−limit, limit]` after
    /// each step (BinaryConnect: 1); `None` passes every gradient.
    fn clip(&self) -> Option<f32> {
        None
    }

    /// `q(W)` in the forward of training step `step` for parameter `name`:
    /// [`WeightQuantizer::quantize`] unless the quantizer draws afresh each
    /// step (stochastic binarization); a draw must depend only on its
    /// arguments and the quantizer, so that runs are bit-identical.
    fn quantize_train(
        &self,
        weight: &ArrayD<f32>,
        step: u64,
        name: &str,
    ) -> hasten_core::Result<ArrayD<f32>> {
        let _ = (step, name);
        self.quantize(weight)
    }

    /// The straight-through `∂L/∂W` from `∂L/∂Ŵ` (`grad`, `weight`'s shape):
    /// by default `grad` where `|W| ≤ limit` of [`WeightQuantizer::clip`]
    /// and 0 elsewhere, `grad` itself without a clip region.
    fn backward(
        &self,
        weight: &ArrayD<f32>,
        grad: &ArrayD<f32>,
    ) -> hasten_core::Result<ArrayD<f32>> {
        match self.clip() {
            Some(limit) => clipped_straight_through(weight, grad, limit),
            None => Ok(grad.clone()),
        }
    }
}

/// `grad` where `|weight| ≤ limit`, 0 elsewhere (`hasten_core::grad::ste`),
/// in `weight`'s shape; a shape mismatch is an error.
pub fn clipped_straight_through(
    weight: &ArrayD<f32>,
    grad: &ArrayD<f32>,
    limit: f32,
) -> hasten_core::Result<ArrayD<f32>> {
    if grad.shape() != weight.shape() {
        return Err(hasten_core::Error::shape(
            "straight-through gradient",
            format!("{:?}", weight.shape()),
            format!("{:?}", grad.shape()),
        ));
    }
    let (ws, gs) = (weight.as_standard_layout(), grad.as_standard_layout());
    let masked = ste::straight_through(
        ws.as_slice().expect("standard"),
        gs.as_slice().expect("standard"),
        limit,
    )?;
    Ok(ArrayD::from_shape_vec(weight.raw_dim(), masked).expect("same length"))
}

/// Which weights are fake-quantized, and how; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct FakeQuant {
    entries: BTreeMap<String, Arc<dyn WeightQuantizer>>,
}

impl FakeQuant {
    /// No quantized weights.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes the weight of every convolution and linear node of `graph`
    /// that `filter` selects with `quantizer` (other selected nodes are
    /// skipped, as by `Graph::apply_transform`). Selecting no such node is
    /// an error.
    pub fn select(
        graph: &Graph,
        filter: &NodeFilter,
        quantizer: Arc<dyn WeightQuantizer>,
    ) -> Result<Self> {
        let mut fq = FakeQuant::new();
        for index in filter.select(graph) {
            let node = &graph.nodes()[index];
            if let NodeOp::Op(Op::Conv(_) | Op::Linear(_)) = node.op() {
                let name = format!("{}.weight", prefix(node.name(), node.op(), 0));
                fq.insert(name, Arc::clone(&quantizer))?;
            }
        }
        if fq.is_empty() {
            return Err(TrainError::invalid(
                "fake-quantization filter",
                filter,
                "a filter selecting at least one convolution or linear node",
            ));
        }
        Ok(fq)
    }

    /// Quantizes parameter `name` with `quantizer` (replacing an earlier
    /// choice); a clip limit that is not finite and positive is an error.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        quantizer: Arc<dyn WeightQuantizer>,
    ) -> Result<()> {
        let name = name.into();
        if let Some(l) = quantizer.clip() {
            if !(l.is_finite() && l > 0.0) {
                return Err(TrainError::param(
                    &name,
                    format!(
                        "clip limit {l} of `{}`: expected finite and > 0",
                        quantizer.name()
                    ),
                ));
            }
        }
        self.entries.insert(name, quantizer);
        Ok(())
    }

    /// Adds every entry of `other` (its choices win).
    pub fn extend(&mut self, other: FakeQuant) {
        self.entries.extend(other.entries);
    }

    /// The quantized parameters and their quantizers, in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Arc<dyn WeightQuantizer>)> {
        self.entries.iter().map(|(k, q)| (k.as_str(), q))
    }

    /// The number of quantized parameters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no parameter is quantized.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks that every quantized parameter is a trainable value of `store`.
    pub fn check(&self, store: &ParamStore) -> Result<()> {
        for name in self.entries.keys() {
            if !store.is_trainable(name) {
                return Err(TrainError::param(
                    name,
                    "fake-quantized but not a trainable parameter of the store",
                ));
            }
        }
        Ok(())
    }

    /// A copy of `shadow` whose selected weights are replaced by the
    /// evaluation forward's `Ŵ = q(W)` ([`WeightQuantizer::quantize`], what
    /// the network freezes into). A missing weight, a quantizer error, a
    /// changed shape or a non-finite `Ŵ` is an error.
    pub fn forward_store(&self, shadow: &ParamStore) -> Result<ParamStore> {
        self.quantized_store(shadow, |q, w, _| q.quantize(w))
    }

    /// Step 1: as [`FakeQuant::forward_store`] with the training forward's
    /// `Ŵ` of step `step` ([`WeightQuantizer::quantize_train`]).
    pub fn training_store(&self, shadow: &ParamStore, step: u64) -> Result<ParamStore> {
        self.quantized_store(shadow, |q, w, name| q.quantize_train(w, step, name))
    }

    fn quantized_store(
        &self,
        shadow: &ParamStore,
        quantize: impl Fn(&dyn WeightQuantizer, &ArrayD<f32>, &str) -> hasten_core::Result<ArrayD<f32>>,
    ) -> Result<ParamStore> {
        self.check(shadow)?;
        let mut store = shadow.clone();
        for (name, q) in &self.entries {
            let w = shadow.get(name).expect("checked above");
            let wq = quantize(q.as_ref(), w, name)?;
            if wq.shape() != w.shape() {
                return Err(TrainError::param(
                    name,
                    format!(
                        "`{}` changed the shape {:?} into {:?}",
                        q.name(),
                        w.shape(),
                        wq.shape()
                    ),
                ));
            }
            store.insert(name.clone(), wq, true)?;
        }
        Ok(store)
    }

    /// Step 2: turns `∂L/∂Ŵ` in `grads` into the straight-through `∂L/∂W`
    /// of each quantizer ([`WeightQuantizer::backward`]).
    pub fn straight_through(&self, shadow: &ParamStore, grads: &mut Grads) -> Result<()> {
        self.check(shadow)?;
        for (name, q) in &self.entries {
            let Some(g) = grads.get_mut(name) else {
                continue;
            };
            let w = shadow.get(name).expect("checked above");
            if g.shape() != w.shape() {
                return Err(TrainError::param(
                    name,
                    format!("gradient shape {:?}, weight {:?}", g.shape(), w.shape()),
                ));
            }
            *g = q.backward(w, g)?;
            if g.shape() != w.shape() {
                return Err(TrainError::param(
                    name,
                    format!(
                        "`{}` returned a gradient of shape {:?}",
                        q.name(),
                        g.shape()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Step 3: clips every selected weight with a clip limit into
    /// `[−limit, limit]`.
    pub fn clip_shadow(&self, shadow: &mut ParamStore) -> Result<()> {
        self.check(shadow)?;
        for (name, q) in &self.entries {
            let Some(limit) = q.clip() else { continue };
            let w = shadow.get_mut(name).expect("checked above");
            let mut v = w.as_standard_layout().into_owned();
            ste::clip_weights(v.as_slice_mut().expect("standard"), limit)?;
            *w = v;
        }
        Ok(())
    }

    /// A copy of `graph` holding the forward weights `Ŵ` of `shadow` (and
    /// its other values as they are): the network the training steps run.
    pub fn quantized_graph(&self, graph: &Graph, shadow: &ParamStore) -> Result<Graph> {
        self.forward_store(shadow)?.apply_to(graph)
    }
}

#[cfg(test)]
mod tests;

//! [`Trainer`]: epochs of mini-batch training of a graph classifier, with
//! per-epoch evaluation, a learning-rate schedule and early stopping.
//!
//! Each step collates a batch with the seeded [`Loader`], runs the f32
//! [`TrainTape`] in training mode, takes the loss — softmax cross-entropy
//! against the labels, or any [`Loss`] given with [`Trainer::with_loss`]
//! (e.g. distillation, survey eq. (19)–(21)) — back-propagates, optionally clips the gradient norm, updates the
//! parameters with the optimizer at the schedule's rate and stores the new
//! batch-norm running statistics. Evaluation writes the parameters back into
//! the graph and runs it through a `hasten_fastconv` [`Plan`] in inference
//! mode. For a seed and thread count, a run is bit-identical.
//!
//! With [`Trainer::with_fake_quant`] the run is quantization-aware (survey
//! eq. (5)): the store holds full-precision weights, each step's forward and
//! every evaluation use their quantized values, and the gradients pass
//! straight through (see [`FakeQuant`]).

use std::path::Path;
use std::time::Instant;

use hasten_core::grad::Mode;
use hasten_core::{Graph, SeededRng};
use hasten_fastconv::{Plan, PlanOptions};
use ndarray::{s, Array4};

use crate::checkpoint::Checkpoint;
use crate::data::{Augment, Dataset, Loader};
use crate::error::{Result, TrainError};
use crate::fake_quant::FakeQuant;
use crate::loss::{with_extra_outputs, CrossEntropy, Loss, LossInput};
use crate::lr_scale::LrScales;
use crate::optim::{clip_grad_norm, Optimizer};
use crate::params::{Grads, ParamStore};
use crate::schedule::Schedule;
use crate::tape::TrainTape;

/// The settings of a [`Trainer`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The number of epochs (≥ 1).
    pub epochs: usize,
    /// Training batch size (≥ 1; the last, smaller batch of an epoch is kept).
    pub batch_size: usize,
    /// Evaluation batch size (≥ 1).
    pub eval_batch_size: usize,
    /// Seed of the shuffling, augmentations and dropout masks.
    pub seed: u64,
    /// Batch-norm running-average momentum, in `[0, 1]`.
    pub bn_momentum: f64,
    /// Label smoothing of the default cross-entropy loss, in `[0, 1)`.
    pub label_smoothing: f32,
    /// Clip the global gradient norm to this value, if set.
    pub clip_norm: Option<f32>,
    /// Stop when the test accuracy has not improved for this many epochs,
    /// and restore the best parameters, if set (≥ 1).
    pub patience: Option<usize>,
    /// Augmentations of the training samples.
    pub augment: Augment,
}

impl Default for TrainConfig {
    /// 10 epochs of batch 128, evaluation batch 500, seed 0, batch-norm
    /// momentum 0.1, no smoothing, clipping or early stopping.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 128,
            eval_batch_size: 500,
            seed: 0,
            bn_momentum: hasten_core::grad::BN_DEFAULT_MOMENTUM,
            label_smoothing: 0.0,
            clip_norm: None,
            patience: None,
            augment: Augment::default(),
        }
    }
}

/// What one epoch of [`Trainer::fit`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    /// The epoch, from 0.
    pub epoch: usize,
    /// Mean training loss over the epoch's samples.
    pub loss: f64,
    /// Top-1 accuracy on the training batches as they were trained, in `[0, 1]`.
    pub train_accuracy: f64,
    /// Top-1 accuracy on the test set after the epoch, in `[0, 1]`.
    pub test_accuracy: f64,
    /// Training throughput (images per second, training steps only).
    pub images_per_sec: f64,
    /// Wall time of the training steps of the epoch, in seconds.
    pub seconds: f64,
    /// Wall time of the evaluation, in seconds.
    pub eval_seconds: f64,
    /// The learning rate of the epoch's last step.
    pub lr: f32,
}

/// One line: epoch (from 1), loss, train and test accuracy, throughput,
/// training and evaluation seconds, learning rate.
///
/// ```
/// use hasten_train::EpochStats;
///
/// let e = EpochStats {
///     epoch: 0, loss: 0.5, train_accuracy: 0.9, test_accuracy: 0.925,
///     images_per_sec: 640.0, seconds: 93.75, eval_seconds: 2.5, lr: 0.1,
/// };
/// assert_eq!(
///     e.to_string(),
///     "epoch  1  loss 0.5000  train  90.00 %  test  92.50 %      640 images/s    93.8 s (+2.5 s eval)  lr 0.1000"
/// );
/// ```
impl std::fmt::Display for EpochStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {:>2}  loss {:.4}  train {:6.2} %  test {:6.2} %  {:7.0} images/s  {:6.1} s (+{:.1} s eval)  lr {:.4}",
            self.epoch + 1,
            self.loss,
            100.0 * self.train_accuracy,
            100.0 * self.test_accuracy,
            self.images_per_sec,
            self.seconds,
            self.eval_seconds,
            self.lr
        )
    }
}

/// Trains a single-input, single-output classifier graph whose output is
/// logits `[N, K, 1, 1]` on the loss `L`; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Trainer<O, S, L = CrossEntropy> {
    graph: Graph,
    /// The graph with the loss's tapped values as further outputs.
    tapped: Graph,
    store: ParamStore,
    optimizer: O,
    schedule: S,
    config: TrainConfig,
    step: usize,
    epoch: usize,
    fake_quant: Option<FakeQuant>,
    lr_scales: LrScales,
    loss: L,
}

/// What one batch of [`Trainer::batch_grads`] computed.
#[derive(Debug, Clone)]
pub struct BatchGrads {
    /// The batch loss.
    pub loss: f32,
    /// The logits `[N, K, 1, 1]`.
    pub logits: Array4<f32>,
    /// `∂L/∂θ` for every trainable value of [`Trainer::params`] (the
    /// loss's own parameters included; straight-through to the
    /// full-precision weights in a quantization-aware run).
    pub grads: Grads,
    /// The batch-norm running statistics after the batch.
    pub buffers: Grads,
}

/// The number of samples whose arg-max logit (`logits` `[N, K, 1, 1]`) is
/// their label.
pub fn top1_hits(logits: &Array4<f32>, labels: &[usize]) -> usize {
    labels
        .iter()
        .enumerate()
        .filter(|&(n, &l)| {
            let row = logits.slice(s![n, .., 0, 0]);
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            best == l
        })
        .count()
}

impl<O: Optimizer, S: Schedule> Trainer<O, S> {
    /// A trainer starting from the graph's own parameter values, with the
    /// softmax cross-entropy loss.
    ///
    /// Errors: a graph with other than one input and one output, or an
    /// invalid setting (zero epochs or batch sizes, a momentum outside
    /// `[0, 1]`, a smoothing outside `[0, 1)`, a zero patience, a
    /// non-positive clipping norm).
    pub fn new(graph: Graph, optimizer: O, schedule: S, config: TrainConfig) -> Result<Self> {
        if graph.inputs().len() != 1 || graph.outputs().len() != 1 {
            return Err(TrainError::invalid(
                "graph inputs / outputs",
                format!("{} / {}", graph.inputs().len(), graph.outputs().len()),
                "one input and one output",
            ));
        }
        if config.epochs == 0 {
            return Err(TrainError::invalid("epochs", 0, ">= 1"));
        }
        if config.batch_size == 0 || config.eval_batch_size == 0 {
            return Err(TrainError::invalid("batch size", 0, ">= 1"));
        }
        if !(0.0..=1.0).contains(&config.bn_momentum) {
            return Err(TrainError::invalid(
                "batch-norm momentum",
                config.bn_momentum,
                "in [0, 1]",
            ));
        }
        if !(0.0..1.0).contains(&config.label_smoothing) {
            return Err(TrainError::invalid(
                "label smoothing",
                config.label_smoothing,
                "in [0, 1)",
            ));
        }
        if config.patience == Some(0) {
            return Err(TrainError::invalid("patience", 0, ">= 1"));
        }
        if let Some(c) = config.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(TrainError::invalid("clip norm", c, "finite and > 0"));
            }
        }
        let store = ParamStore::from_graph(&graph);
        let smoothing = config.label_smoothing;
        Ok(Trainer {
            tapped: graph.clone(),
            graph,
            store,
            optimizer,
            schedule,
            config,
            step: 0,
            epoch: 0,
            fake_quant: None,
            lr_scales: LrScales::new(),
            loss: CrossEntropy { smoothing },
        })
    }

    /// The same trainer with the loss `loss` instead of cross-entropy: its
    /// tapped values become further outputs of the training forward and its
    /// own parameters join the store (trained, checkpointed, left out of
    /// [`Trainer::graph`]).
    ///
    /// Errors: a tapped name that is not a value of the graph, a loss
    /// parameter named like one of the graph's or holding a non-finite value.
    pub fn with_loss<L: Loss>(self, loss: L) -> Result<Trainer<O, S, L>> {
        let tapped = with_extra_outputs(&self.graph, &loss.taps())?;
        let mut store = self.store;
        for (name, value) in loss.params() {
            if store.get(&name).is_some() {
                return Err(TrainError::param(
                    &name,
                    "a loss parameter named like a value of the graph",
                ));
            }
            store.insert(name, value, true)?;
        }
        Ok(Trainer {
            graph: self.graph,
            tapped,
            store,
            optimizer: self.optimizer,
            schedule: self.schedule,
            config: self.config,
            step: self.step,
            epoch: self.epoch,
            fake_quant: self.fake_quant,
            lr_scales: self.lr_scales,
            loss,
        })
    }
}

impl<O: Optimizer, S: Schedule, L: Loss> Trainer<O, S, L> {
    /// The loss.
    pub fn loss(&self) -> &L {
        &self.loss
    }

    /// Makes the training quantization-aware: the weights `fake_quant`
    /// selects are quantized in every forward (training and evaluation),
    /// their gradients pass straight through and they are clipped after
    /// each step. Errors: a selected name that is not a trainable parameter
    /// of the graph.
    pub fn with_fake_quant(mut self, fake_quant: FakeQuant) -> Result<Self> {
        fake_quant.check(&self.store)?;
        self.fake_quant = Some(fake_quant);
        Ok(self)
    }

    /// Per-parameter learning-rate multipliers: each gradient is scaled by
    /// its parameter's before every step (after clipping). Errors: a name
    /// that is not a trainable parameter.
    pub fn with_lr_scales(mut self, scales: LrScales) -> Result<Self> {
        scales.check(&self.store)?;
        self.lr_scales = scales;
        Ok(self)
    }

    /// The fake quantization of a quantization-aware run.
    pub fn fake_quant(&self) -> Option<&FakeQuant> {
        self.fake_quant.as_ref()
    }

    /// The current parameters and buffers (and the loss's own parameters).
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// The current parameters and buffers, mutably (to set values, e.g. for
    /// a finite-difference check of [`Trainer::batch_grads`]).
    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The number of optimizer steps taken.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// The number of epochs completed; [`Trainer::fit`] goes on from there.
    pub fn epochs_done(&self) -> usize {
        self.epoch
    }

    /// A checkpoint of the run: parameters, buffers, optimizer state,
    /// epochs and steps.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            store: self.store.clone(),
            optimizer: self.optimizer.state(),
            epoch: self.epoch,
            step: self.step,
        }
    }

    /// Writes [`Trainer::checkpoint`] to `path` as safetensors.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        self.checkpoint().save(path)
    }

    /// Continues the run of `checkpoint`: a trainer built like the one that
    /// wrote it (same graph, optimizer kind, schedule and settings) then
    /// trains the remaining epochs exactly as the uninterrupted run would
    /// have. Errors (nothing changed then): a value the graph does not
    /// have, a missing one, another shape or kind (parameter or buffer), an
    /// optimizer state of another optimizer, more epochs than configured.
    pub fn restore(&mut self, checkpoint: Checkpoint) -> Result<()> {
        if checkpoint.epoch > self.config.epochs {
            return Err(TrainError::invalid(
                "checkpoint epoch",
                checkpoint.epoch,
                "at most the configured epochs",
            ));
        }
        for (name, v, trainable) in self.store.iter() {
            match checkpoint.store.get(name) {
                None => return Err(TrainError::param(name, "missing from the checkpoint")),
                Some(c) if c.shape() != v.shape() => {
                    return Err(TrainError::param(
                        name,
                        format!("checkpoint shape {:?}, graph {:?}", c.shape(), v.shape()),
                    ))
                }
                Some(_) if checkpoint.store.is_trainable(name) != trainable => {
                    return Err(TrainError::param(
                        name,
                        "a parameter in one, a buffer in the other",
                    ))
                }
                Some(_) => {}
            }
        }
        if checkpoint.store.len() != self.store.len() {
            let extra = checkpoint
                .store
                .iter()
                .find(|(n, _, _)| self.store.get(n).is_none())
                .map_or(String::new(), |(n, _, _)| n.to_string());
            return Err(TrainError::param(&extra, "not a value of the graph"));
        }
        if let Some(fq) = &self.fake_quant {
            fq.check(&checkpoint.store)?;
        }
        self.optimizer.load_state(&checkpoint.optimizer)?;
        self.store = checkpoint.store;
        self.epoch = checkpoint.epoch;
        self.step = checkpoint.step;
        Ok(())
    }

    /// [`Trainer::restore`] from a checkpoint file.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        self.restore(Checkpoint::load(path)?)
    }

    /// The store without the loss's own parameters.
    fn graph_store(&self) -> ParamStore {
        let mut store = self.store.clone();
        for (name, _) in self.loss.params() {
            store.remove(&name);
        }
        store
    }

    /// A copy of the graph holding the current parameters (in a
    /// quantization-aware run, the full-precision weights).
    pub fn graph(&self) -> Result<Graph> {
        self.graph_store().apply_to(&self.graph)
    }

    /// A copy of the graph holding the weights the forward uses: the
    /// quantized ones in a quantization-aware run, the same as
    /// [`Trainer::graph`] otherwise.
    pub fn forward_graph(&self) -> Result<Graph> {
        match &self.fake_quant {
            Some(fq) => fq.quantized_graph(&self.graph, &self.graph_store()),
            None => self.graph(),
        }
    }

    /// The loss of the batch `x` with `labels` and its gradients, the graph
    /// run in `mode`, without updating anything but the loss's own state.
    pub fn batch_grads(
        &mut self,
        x: &Array4<f32>,
        labels: &[usize],
        mode: Mode,
    ) -> Result<BatchGrads> {
        let quantized = match &self.fake_quant {
            Some(fq) => Some(fq.training_store(&self.store, self.step as u64)?),
            None => None,
        };
        let tape = TrainTape::forward(
            &self.tapped,
            quantized.as_ref().unwrap_or(&self.store),
            std::slice::from_ref(x),
            mode,
        )?;
        let outputs = tape.outputs();
        let out = self.loss.evaluate(
            &LossInput {
                x,
                labels,
                outputs: &outputs,
                step: self.step,
            },
            &mut self.store,
        )?;
        let mut grads = tape.backward(&out.output_grads)?.params;
        if let Some(fq) = &self.fake_quant {
            fq.straight_through(&self.store, &mut grads)?;
        }
        grads.extend(out.param_grads);
        Ok(BatchGrads {
            loss: out.value,
            logits: outputs[0].clone(),
            grads,
            buffers: tape.buffers().clone(),
        })
    }

    /// One epoch (number `epoch`) over `data`; returns the mean loss, the
    /// training accuracy, the sample count and the learning rate of the
    /// last step.
    fn train_epoch<D: Dataset + ?Sized>(
        &mut self,
        data: &D,
        epoch: usize,
    ) -> Result<(f64, f64, usize, f32)> {
        let loader = Loader::new(data.len(), self.config.batch_size)?.shuffled(self.config.seed);
        let (mut loss_sum, mut hits, mut seen, mut lr) = (0.0f64, 0usize, 0usize, 0.0f32);
        let augment = self.config.augment.clone();
        loader.for_each_prefetched(data, &augment, epoch, 2, |x, labels| {
            let mode = Mode::Train {
                seed: SeededRng::new(self.config.seed)
                    .fork(1 << 40 | self.step as u64)
                    .next_u64(),
                momentum: self.config.bn_momentum,
            };
            let BatchGrads {
                loss,
                logits,
                mut grads,
                buffers,
            } = self.batch_grads(&x, &labels, mode)?;
            hits += top1_hits(&logits, &labels);
            if let Some(c) = self.config.clip_norm {
                clip_grad_norm(&mut grads, c)?;
            }
            self.lr_scales.apply(&mut grads);
            lr = self.schedule.lr(self.step);
            self.optimizer.step(&mut self.store, &grads, lr)?;
            if let Some(fq) = &self.fake_quant {
                fq.clip_shadow(&mut self.store)?;
            }
            for (name, v) in buffers {
                match self.store.get_mut(&name) {
                    Some(slot) => *slot = v,
                    None => self.store.insert(name, v, false)?,
                }
            }
            loss_sum += f64::from(loss) * labels.len() as f64;
            seen += labels.len();
            self.step += 1;
            Ok(())
        })?;
        Ok((
            loss_sum / seen.max(1) as f64,
            hits as f64 / seen.max(1) as f64,
            seen,
            lr,
        ))
    }

    /// Top-1 accuracy on `data` with the current parameters (quantized in a
    /// quantization-aware run), the graph run by a fast plan in inference
    /// mode.
    pub fn evaluate<D: Dataset + ?Sized>(&self, data: &D) -> Result<f64> {
        evaluate(&self.forward_graph()?, data, self.config.eval_batch_size)
    }

    /// Trains the configured epochs not done yet ([`Trainer::epochs_done`]
    /// onwards) on `train`, evaluating on `test` after each and calling
    /// `on_epoch` with its statistics; stops early on the patience
    /// (restoring the parameters of the best epoch of this call). Returns
    /// the history of this call.
    pub fn fit<D: Dataset + ?Sized, T: Dataset + ?Sized>(
        &mut self,
        train: &D,
        test: &T,
        mut on_epoch: impl FnMut(&EpochStats),
    ) -> Result<Vec<EpochStats>> {
        if train.is_empty() || test.is_empty() {
            return Err(TrainError::invalid(
                "data set size",
                0,
                "at least one training and one test sample",
            ));
        }
        let mut history = Vec::with_capacity(self.config.epochs);
        let mut best: Option<(f64, usize, ParamStore)> = None;
        for epoch in self.epoch..self.config.epochs {
            let start = Instant::now();
            let (loss, train_accuracy, seen, lr) = self.train_epoch(train, epoch)?;
            self.epoch = epoch + 1;
            let seconds = start.elapsed().as_secs_f64();
            let eval_start = Instant::now();
            let test_accuracy = self.evaluate(test)?;
            let stats = EpochStats {
                epoch,
                loss,
                train_accuracy,
                test_accuracy,
                images_per_sec: seen as f64 / seconds.max(1e-9),
                seconds,
                eval_seconds: eval_start.elapsed().as_secs_f64(),
                lr,
            };
            on_epoch(&stats);
            history.push(stats);
            if let Some(patience) = self.config.patience {
                match &best {
                    Some((acc, _, _)) if test_accuracy <= *acc => {}
                    _ => best = Some((test_accuracy, epoch, self.store.clone())),
                }
                let (_, best_epoch, _) = best.as_ref().expect("set above");
                if epoch - best_epoch >= patience {
                    break;
                }
            }
        }
        if let Some((_, _, store)) = best {
            self.store = store;
        }
        Ok(history)
    }
}

/// Top-1 accuracy of the classifier `graph` (logits `[N, K, 1, 1]`) on
/// `data`, run by `hasten_fastconv` plans of batch `batch` (and one for the
/// remainder) in inference mode.
pub fn evaluate<D: Dataset + ?Sized>(graph: &Graph, data: &D, batch: usize) -> Result<f64> {
    if data.is_empty() {
        return Err(TrainError::invalid("data set size", 0, ">= 1"));
    }
    if batch == 0 {
        return Err(TrainError::invalid("batch size", 0, ">= 1"));
    }
    let loader = Loader::new(data.len(), batch)?;
    let mut plans: Vec<(usize, Plan)> = Vec::new();
    let mut hits = 0usize;
    for indices in loader.batches(0) {
        let (x, labels) = loader.collate(data, &indices, &Augment::default(), 0)?;
        let n = labels.len();
        let k = match plans.iter().position(|(b, _)| *b == n) {
            Some(k) => k,
            None => {
                plans.push((n, Plan::for_graph(graph, n, PlanOptions::default())?));
                plans.len() - 1
            }
        };
        let y = plans[k].1.run(&x)?;
        let logits = y.to_owned();
        if logits.shape()[0] != n || logits.shape()[2] != 1 || logits.shape()[3] != 1 {
            return Err(TrainError::invalid(
                "classifier output shape",
                format!("{:?}", logits.shape()),
                "[N, K, 1, 1]",
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= logits.shape()[1]) {
            return Err(TrainError::invalid(
                "label",
                bad,
                "< the classifier's output count",
            ));
        }
        hits += top1_hits(&logits, &labels);
    }
    Ok(hits as f64 / data.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageSet;
    use crate::optim::{Adam, Sgd};
    use crate::schedule::Constant;
    use hasten_core::op::{Flatten, Relu};
    use hasten_core::{ActShape, GraphBuilder, LinearLayer};

    /// Two classes of 1×4×4 images separated by the sign of a fixed
    /// direction, with a margin.
    fn separable(n: usize, seed: u64) -> ImageSet {
        let mut rng = SeededRng::new(seed);
        let dir: Array4<f32> = SeededRng::new(99).normal_array((1, 1, 4, 4), 1.0);
        let mut images = Array4::<f32>::zeros((n, 1, 4, 4));
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = i % 2;
            let mut x: Array4<f32> = rng.normal_array((1, 1, 4, 4), 1.0);
            let proj = (&x * &dir).sum() / (&dir * &dir).sum();
            let target = if label == 1 { 1.0 } else { -1.0 };
            x += &(&dir * (target - proj));
            images.slice_mut(s![i..i + 1, .., .., ..]).assign(&x);
            labels.push(label);
        }
        ImageSet::new(images, labels, 2).unwrap()
    }

    fn mlp() -> Graph {
        let mut rng = SeededRng::new(3);
        let mut b = GraphBuilder::new();
        let x = b.input("x", ActShape::new(1, 4, 4));
        let f = b.op("flatten", Flatten, x);
        let h = b.op(
            "fc1",
            LinearLayer::new(
                rng.normal_array((8, 16), 0.3),
                Some(ndarray::Array1::zeros(8)),
            )
            .unwrap(),
            f,
        );
        let h = b.op("relu", Relu, h);
        let y = b.op(
            "fc2",
            LinearLayer::new(
                rng.normal_array((2, 8), 0.3),
                Some(ndarray::Array1::zeros(2)),
            )
            .unwrap(),
            h,
        );
        b.output(y);
        b.build().unwrap()
    }

    fn config(epochs: usize) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: 16,
            eval_batch_size: 50,
            seed: 4,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn separable_data_reaches_full_accuracy() {
        let (train, test) = (separable(200, 1), separable(70, 2));
        let mut trainer = Trainer::new(
            mlp(),
            Sgd::new(0.9).unwrap(),
            Constant::new(0.05).unwrap(),
            config(5),
        )
        .unwrap();
        let mut calls = 0;
        let history = trainer.fit(&train, &test, |_| calls += 1).unwrap();
        assert_eq!(calls, 5);
        let last = history.last().unwrap();
        assert_eq!(last.test_accuracy, 1.0, "{history:?}");
        assert!(last.loss < history[0].loss);
        assert_eq!(trainer.steps(), 5 * 200usize.div_ceil(16));
        assert_eq!(trainer.evaluate(&test).unwrap(), 1.0);
    }

    #[test]
    fn runs_are_deterministic_for_a_seed() {
        let (train, test) = (separable(100, 5), separable(30, 6));
        let run = |seed: u64| {
            let mut t = Trainer::new(
                mlp(),
                Adam::new(),
                Constant::new(0.01).unwrap(),
                TrainConfig { seed, ..config(2) },
            )
            .unwrap();
            let h = t.fit(&train, &test, |_| {}).unwrap();
            (
                t.params().clone(),
                h.iter().map(|e| e.loss).collect::<Vec<_>>(),
            )
        };
        let (a, la) = run(1);
        let (b, lb) = run(1);
        assert_eq!(a, b);
        assert_eq!(la, lb);
        let (c, _) = run(2);
        assert_ne!(a, c);
    }

    #[test]
    fn runs_are_bit_identical_across_thread_counts() {
        let (train, test) = (separable(100, 9), separable(30, 10));
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut t = Trainer::new(
                        mlp(),
                        Sgd::new(0.9).unwrap(),
                        Constant::new(0.05).unwrap(),
                        TrainConfig {
                            augment: Augment::new().random_crop(1),
                            ..config(2)
                        },
                    )
                    .unwrap();
                    let h = t.fit(&train, &test, |_| {}).unwrap();
                    (
                        t.params().clone(),
                        h.iter().map(|e| e.loss).collect::<Vec<_>>(),
                    )
                })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn a_resumed_run_is_bit_identical_to_an_uninterrupted_one() {
        let (train, test) = (separable(100, 11), separable(30, 12));
        let trainer = |epochs: usize| {
            Trainer::new(
                mlp(),
                Adam::new(),
                Constant::new(0.01).unwrap(),
                config(epochs),
            )
            .unwrap()
        };
        let mut whole = trainer(3);
        let h = whole.fit(&train, &test, |_| {}).unwrap();
        let mut first = trainer(1);
        first.fit(&train, &test, |_| {}).unwrap();
        let path = std::env::temp_dir().join(format!(
            "hasten-train-checkpoint-{}.safetensors",
            std::process::id()
        ));
        first.save_checkpoint(&path).unwrap();
        let mut rest = trainer(3);
        rest.resume(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((rest.epochs_done(), rest.steps()), (1, first.steps()));
        let h2 = rest.fit(&train, &test, |_| {}).unwrap();
        assert_eq!(h2.len(), 2);
        assert_eq!(rest.params(), whole.params());
        assert_eq!(rest.steps(), whole.steps());
        assert_eq!(h2[1].loss, h[2].loss);
        // Without the optimizer state the run differs (the test can fail).
        let mut cold = trainer(3);
        let mut c = first.checkpoint();
        c.optimizer = Adam::new().state();
        cold.restore(c).unwrap();
        cold.fit(&train, &test, |_| {}).unwrap();
        assert_ne!(cold.params(), whole.params());
        // Checkpoints that do not fit are errors and change nothing.
        let mut t = trainer(3);
        let mut c = first.checkpoint();
        c.epoch = 4;
        assert!(t.restore(c).is_err());
        let mut c = first.checkpoint();
        c.optimizer = Sgd::new(0.9).unwrap().state();
        c.optimizer
            .insert("w.momentum_buffer".into(), ndarray::ArrayD::zeros(vec![1]));
        assert!(t.restore(c).is_err());
        let mut c = first.checkpoint();
        c.store
            .insert("extra", ndarray::ArrayD::zeros(vec![1]), true)
            .unwrap();
        assert!(t.restore(c).is_err());
        assert_eq!(t.epochs_done(), 0);
        assert_eq!(t.params(), trainer(3).params());
    }

    /// Cross-entropy plus `p · ½‖relu‖²/N` on the tapped hidden layer, `p`
    /// a parameter of the loss: exercises taps, loss parameters and their
    /// gradients.
    #[derive(Debug, Clone)]
    struct PenalisedHidden;

    impl Loss for PenalisedHidden {
        fn taps(&self) -> Vec<String> {
            vec!["relu".into()]
        }

        fn params(&self) -> Vec<(String, ndarray::ArrayD<f32>)> {
            vec![("penalty".into(), ndarray::arr1(&[0.3f32]).into_dyn())]
        }

        fn evaluate(
            &mut self,
            input: &LossInput<'_>,
            params: &mut ParamStore,
        ) -> Result<crate::loss::LossOutput> {
            let mut out = CrossEntropy { smoothing: 0.0 }.evaluate(input, params)?;
            let p = params.get("penalty").unwrap()[[0]];
            let h = input.outputs[1];
            let n = input.labels.len() as f32;
            let energy = h.iter().map(|v| v * v).sum::<f32>() / (2.0 * n);
            out.value += p * energy;
            out.output_grads.push(h.mapv(|v| p * v / n));
            out.param_grads
                .insert("penalty".into(), ndarray::arr1(&[energy]).into_dyn());
            Ok(out)
        }
    }

    #[test]
    fn a_custom_loss_with_taps_and_parameters_matches_finite_differences() {
        let (train, test) = (separable(40, 13), separable(20, 14));
        let mut t = Trainer::new(
            mlp(),
            Sgd::new(0.9).unwrap(),
            Constant::new(0.05).unwrap(),
            config(2),
        )
        .unwrap()
        .with_loss(PenalisedHidden)
        .unwrap();
        let (x, labels) = {
            let loader = Loader::new(train.len(), 8).unwrap();
            loader
                .collate(&train, &loader.batches(0)[0], &Augment::default(), 0)
                .unwrap()
        };
        let analytic = t.batch_grads(&x, &labels, Mode::Eval).unwrap();
        for name in ["fc1.weight", "fc2.bias", "penalty"] {
            let base = t.params().get(name).unwrap().clone();
            let h = 1e-2f32;
            let mut numeric = base.mapv(|_| 0.0f64);
            for i in 0..base.len() {
                let mut at = |d: f32| {
                    let mut p = base.clone();
                    p.as_slice_mut().unwrap()[i] += d;
                    *t.params_mut().get_mut(name).unwrap() = p;
                    f64::from(t.batch_grads(&x, &labels, Mode::Eval).unwrap().loss)
                };
                numeric.as_slice_mut().unwrap()[i] = (at(h) - at(-h)) / (2.0 * f64::from(h));
            }
            *t.params_mut().get_mut(name).unwrap() = base;
            let got = analytic.grads[name].mapv(f64::from);
            let err = hasten_core::grad::check::relative_error(&got, &numeric);
            assert!(err < 1e-3, "{name}: relative error {err:e}");
            assert!(numeric.iter().any(|g| g.abs() > 1e-4), "{name}: vanishing");
        }
        // The loss parameter trains with the network but stays out of the graph.
        t.fit(&train, &test, |_| {}).unwrap();
        assert_ne!(t.params().get("penalty").unwrap()[[0]], 0.3);
        assert!(t
            .graph()
            .unwrap()
            .parameters()
            .iter()
            .all(|(n, _)| n != "penalty"));
        // Cross-entropy given explicitly is the default run, bit for bit.
        let run = |explicit: bool| {
            let t = Trainer::new(
                mlp(),
                Sgd::new(0.9).unwrap(),
                Constant::new(0.05).unwrap(),
                config(2),
            )
            .unwrap();
            let mut t = if explicit {
                t.with_loss(CrossEntropy { smoothing: 0.0 }).unwrap()
            } else {
                t
            };
            t.fit(&train, &test, |_| {}).unwrap();
            t.params().clone()
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn bad_taps_and_clashing_loss_parameters_are_errors() {
        #[derive(Debug)]
        struct Named(&'static str, &'static str);
        impl Loss for Named {
            fn taps(&self) -> Vec<String> {
                vec![self.0.into()]
            }
            fn params(&self) -> Vec<(String, ndarray::ArrayD<f32>)> {
                vec![(self.1.into(), ndarray::ArrayD::zeros(vec![1]))]
            }
            fn evaluate(
                &mut self,
                _: &LossInput<'_>,
                _: &mut ParamStore,
            ) -> Result<crate::loss::LossOutput> {
                unreachable!("never trained")
            }
        }
        let make = || {
            Trainer::new(
                mlp(),
                Sgd::new(0.9).unwrap(),
                Constant::new(0.05).unwrap(),
                config(1),
            )
            .unwrap()
        };
        assert!(make().with_loss(Named("relu", "own")).is_ok());
        assert!(make().with_loss(Named("nope", "own")).is_err());
        assert!(make().with_loss(Named("relu", "fc1.weight")).is_err());
    }

    #[test]
    fn early_stopping_and_bad_settings() {
        let (train, test) = (separable(64, 7), separable(20, 8));
        let mut t = Trainer::new(
            mlp(),
            Sgd::new(0.0).unwrap(),
            Constant::new(0.0).unwrap(),
            TrainConfig {
                patience: Some(2),
                ..config(10)
            },
        )
        .unwrap();
        // A zero learning rate never improves: stop after 1 + patience epochs.
        assert_eq!(t.fit(&train, &test, |_| {}).unwrap().len(), 3);
        let bad = |c: TrainConfig| {
            Trainer::new(
                mlp(),
                Sgd::new(0.0).unwrap(),
                Constant::new(0.1).unwrap(),
                c,
            )
            .is_err()
        };
        assert!(bad(config(0)));
        assert!(bad(TrainConfig {
            batch_size: 0,
            ..config(1)
        }));
        assert!(bad(TrainConfig {
            label_smoothing: 1.0,
            ..config(1)
        }));
        assert!(bad(TrainConfig {
            patience: Some(0),
            ..config(1)
        }));
        assert!(bad(TrainConfig {
            clip_norm: Some(-1.0),
            ..config(1)
        }));
        // Labels beyond the classifier's outputs are a typed error.
        let wide = ImageSet::new(Array4::zeros((4, 1, 4, 4)), vec![0, 1, 2, 3], 4).unwrap();
        assert!(t.evaluate(&wide).is_err());
    }
}

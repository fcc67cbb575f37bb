//! [`compress`]: a [`Recipe`] applied to a whole network. Each step's
//! transform goes through `Graph::apply_transform` (which also reaches the
//! ops inside blocks an earlier step produced); fine-tuning runs after every
//! step (gradual) or once after the last (one-shot). Int8 convolutions train
//! through their straight-through backward; ops without a backward (XNOR-Net
//! convolutions, binary activations) cannot be fine-tuned: one-shot mode then
//! fine-tunes just before the step that introduces them and applies that
//! step to the fine-tuned weights; gradual mode skips the fine-tuning with a
//! note. Nothing is skipped silently. Data-driven steps (int8 without a
//! fixed range, asymmetric reconstruction, channel pruning by activations)
//! run on calibration inputs:
//! the caller's, or the first training images of the data.
//!
//! With `fine_tune.qat`, a weight-quantizer step is held back (*pending*):
//! every fine-tuning from then on trains its layers with fake-quantized
//! weights (survey eq. (5)) — so later fine-tunings can still run, the
//! layers having a backward — and at the end the step is applied to the
//! trained full-precision weights ("frozen"), so the packed ops hold
//! exactly the `q(W)` the training ended with. Accuracies in the report are
//! those of the graph with the pending steps applied. With `fine_tune.distill`
//! the original network is the teacher. After each step, batch norms get
//! running statistics re-estimated on training data (`recalibrate_bn`).

use std::sync::Arc;

use hasten_core::grad::inner_ops;
use hasten_core::ndarray::Array4;
use hasten_core::op::Op;
use hasten_core::Graph;
use hasten_train::{evaluate, recalibrate_batch_norm, FakeQuant, WeightQuantizer};

use super::asymmetric::asymmetric;
use super::calibration::{calibrated_int8, calibration_batch};
use super::channel_pruning::prune_channels;
use super::error::{PipelineError, Result};
use super::fine_tune::{fine_tune, untrainable, FineTuneData, EVAL_BATCH};
use super::latency::measure_latency;
use super::method::Method;
use super::recipe::{FineTune, Mode, Recipe};
use super::report::{CompressionReport, Event, NodeRow, StepReport};

/// Test accuracy of `graph`, where data is given.
fn accuracy(graph: &Graph, data: Option<&FineTuneData>) -> Result<Option<f64>> {
    Ok(data
        .map(|d| evaluate(graph, &d.test, EVAL_BATCH))
        .transpose()?)
}

/// Applies step `index` of `recipe` to a copy of `graph`, calibrating on
/// `calibration` where the step needs data.
fn apply_step(
    graph: &Graph,
    recipe: &Recipe,
    index: usize,
    calibration: Option<&Array4<f32>>,
) -> Result<(Graph, hasten_core::graph::GraphReport)> {
    let step = &recipe.steps[index];
    let method = step.method.name().to_string();
    let fail = |message: String| PipelineError::Step {
        step: index + 1,
        method: method.clone(),
        message,
    };
    let filter = step.select.filter();
    if filter.select(graph).is_empty() {
        return Err(fail(format!("the selection ({filter}) matches no node")));
    }
    match &step.method {
        Method::PruneChannels { .. } => {
            return prune_channels(graph, &filter, &step.method, calibration).map_err(fail)
        }
        Method::Asymmetric {
            rank,
            nonlinear,
            samples,
            seed,
        } => {
            let batch = calibration
                .ok_or_else(|| fail("no calibration data to fit the reconstruction on".into()))?;
            return asymmetric(
                graph,
                &filter,
                batch,
                rank.spec(),
                *nonlinear,
                *samples,
                *seed,
            )
            .map_err(fail);
        }
        Method::Int8 {
            input_range: None,
            calibrate,
            signed,
            granularity,
        } => {
            let batch = calibration.ok_or_else(|| {
                fail("no input_range, and no calibration data to calibrate one on".into())
            })?;
            return calibrated_int8(
                graph,
                &filter,
                batch,
                calibrate.unwrap_or_default(),
                *signed,
                *granularity,
            )
            .map_err(fail);
        }
        _ => {}
    }
    let transform = step.method.transform().map_err(fail)?;
    let mut next = graph.clone();
    let report = next
        .apply_transform(transform.as_ref(), &filter)
        .map_err(|source| PipelineError::Transform {
            step: index + 1,
            method: method.clone(),
            source,
        })?;
    if report.nodes.is_empty() {
        return Err(fail(format!(
            "the selection ({filter}) holds no convolution or linear layer (only {})",
            report.skipped.join(", ")
        )));
    }
    Ok((next, report))
}

/// A quantizer step waiting for the fine-tuning that trains it
/// quantization-aware.
struct Pending {
    /// The step, from 0.
    index: usize,
    /// Its fake quantizer.
    quantizer: Arc<dyn WeightQuantizer>,
    /// The nodes it quantizes.
    nodes: Vec<String>,
}

/// What the compression run carries besides the graph.
struct Run<'a> {
    recipe: &'a Recipe,
    data: Option<&'a FineTuneData>,
    calibration: Option<&'a Array4<f32>>,
    /// The original network: the teacher of distillation.
    original: &'a Graph,
    pending: Vec<Pending>,
    report: CompressionReport,
}

impl Run<'_> {
    /// Fine-tunes `graph` after step `step` (from 1) when it can be —
    /// quantization-aware for the pending steps — recording the event, the
    /// accuracy and, when it cannot, a note.
    fn fine_tune_after(
        &mut self,
        graph: Graph,
        step: usize,
        settings: &FineTune,
        data: &FineTuneData,
    ) -> Result<Graph> {
        if let Some(node) = untrainable(&graph) {
            self.report.events.push(Event::FineTuneSkipped(step));
            self.report.notes.push(format!(
                "fine-tuning after step {step} skipped: node {node} holds ops without a backward"
            ));
            return Ok(graph);
        }
        let fake_quant = if self.pending.is_empty() {
            None
        } else {
            let mut fq = FakeQuant::new();
            for p in &self.pending {
                let filter = self.recipe.steps[p.index].select.filter();
                fq.extend(FakeQuant::select(
                    &graph,
                    &filter,
                    Arc::clone(&p.quantizer),
                )?);
            }
            Some(fq)
        };
        let graph = fine_tune(graph, settings, data, self.original, fake_quant)?;
        self.report.events.push(Event::FineTune(step));
        self.report.steps[step - 1].accuracy_after_fine_tune =
            accuracy(&self.frozen(&graph)?, Some(data))?;
        Ok(graph)
    }

    /// `graph` with the pending quantizer steps applied to its weights.
    fn frozen(&self, graph: &Graph) -> Result<Graph> {
        let mut graph = graph.clone();
        for p in &self.pending {
            (graph, _) = apply_step(&graph, self.recipe, p.index, self.calibration)?;
        }
        Ok(graph)
    }

    /// Applies the pending quantizer steps to `graph`'s weights, for good.
    fn freeze(&mut self, graph: Graph) -> Result<Graph> {
        let graph = self.frozen(&graph)?;
        for p in std::mem::take(&mut self.pending) {
            self.report.events.push(Event::Freeze(p.index + 1));
        }
        Ok(graph)
    }

    /// `graph` with its batch-norm statistics re-estimated on
    /// `recalibrate_bn` training batches, where there are data, batch norms
    /// and a backward-capable forward (the training tape) for every op.
    fn recalibrate(&mut self, graph: Graph, step: usize) -> Result<Graph> {
        let batches = self.recipe.recalibrate_bn;
        let has_bn = graph.nodes().iter().any(|n| {
            inner_ops(n.op())
                .iter()
                .any(|op| matches!(op, Op::BatchNorm(_)))
        });
        let Some(data) = self.data.filter(|_| batches > 0 && has_bn) else {
            return Ok(graph);
        };
        if let Some(node) = untrainable(&graph) {
            self.report.notes.push(format!(
                "batch-norm recalibration after step {step} skipped: node {node} holds ops \
                 the training forward does not run"
            ));
            return Ok(graph);
        }
        let graph = recalibrate_batch_norm(&graph, &data.train, RECALIBRATION_BATCH, batches, 0)?;
        self.report.events.push(Event::RecalibrateBn(step));
        Ok(graph)
    }
}

/// Batch size of the batch-norm recalibration.
pub(crate) const RECALIBRATION_BATCH: usize = 64;

/// Compresses `graph` by `recipe`; with `data`, measures accuracy,
/// fine-tunes and calibrates the data-driven steps on the first
/// `recipe.calibration.samples` training images. Returns the compressed
/// graph and its report.
///
/// # Errors
/// [`PipelineError::Invalid`] or [`PipelineError::Step`] naming the step for
/// a bad recipe setting, an unknown method or bad parameter, a selection that
/// matches no node or no layer, or a data-driven step without data;
/// [`PipelineError::Transform`] naming the node whose transform failed;
/// [`PipelineError::Train`] when fine-tuning or evaluation fails.
///
/// ```
/// use hasten::models::{lenet5, ModelConfig};
/// use hasten::pipeline::{compress, Recipe};
///
/// let graph = lenet5(&ModelConfig::mnist())?;
/// let recipe = Recipe::from_toml(r#"
///     latency = { batches = [] }
///     [[steps]]
///     select = { kinds = ["conv"], except_first = 1 }
///     method = { name = "tucker2", rank = { energy = 0.8 } }
/// "#)?;
/// let (small, report) = compress(&graph, &recipe, None)?;
/// assert!(report.mac_speedup() > 1.0);
/// assert_eq!(small.output_shapes(), graph.output_shapes());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn compress(
    graph: &Graph,
    recipe: &Recipe,
    data: Option<&FineTuneData>,
) -> Result<(Graph, CompressionReport)> {
    let batch = data.map(|d| calibration_batch(d, &recipe.calibration));
    compress_calibrated(graph, recipe, data, batch.as_ref())
}

/// As [`compress`], with the calibration inputs of the data-driven steps
/// given by the caller: one NCHW batch for the graph's single input,
/// normalised as the network expects (`None`: such steps are errors).
///
/// # Errors
/// As [`compress`].
pub fn compress_calibrated(
    graph: &Graph,
    recipe: &Recipe,
    data: Option<&FineTuneData>,
    calibration: Option<&Array4<f32>>,
) -> Result<(Graph, CompressionReport)> {
    recipe.check()?;
    let report = CompressionReport {
        mode: recipe.mode,
        nodes: Vec::new(),
        steps: Vec::new(),
        events: Vec::new(),
        before: graph.cost()?.into(),
        after: graph.cost()?.into(),
        accuracy_before: accuracy(graph, data)?,
        accuracy_after: None,
        latency: Vec::new(),
        cpu: crate::bench::cpu_model(),
        notes: Vec::new(),
    };
    let mut run = Run {
        recipe,
        data,
        calibration,
        original: graph,
        pending: Vec::new(),
        report,
    };
    let one_shot = recipe.fine_tune.filter(|f| f.epochs > 0);
    let mut g = graph.clone();
    for index in 0..recipe.steps.len() {
        let step = index + 1;
        let method = recipe.steps[index].method.name();
        let filter = recipe.steps[index].select.filter();
        let selected: Vec<&str> = filter
            .select(&g)
            .into_iter()
            .map(|i| g.nodes()[i].name())
            .collect();
        if let Some((p, node)) = run.pending.iter().find_map(|p| {
            p.nodes
                .iter()
                .find(|n| selected.contains(&n.as_str()))
                .map(|n| (p.index + 1, n))
        }) {
            return Err(PipelineError::Step {
                step,
                method: method.to_string(),
                message: format!(
                    "selects node {node}, which step {p} quantizes quantization-aware at the \
                     next fine-tuning; transform it before the quantizer step"
                ),
            });
        }
        let qat = match (data, recipe.qat_for(index)) {
            (Some(_), true) => recipe.steps[index]
                .method
                .qat_quantizer()
                .map_err(|message| PipelineError::Step {
                    step,
                    method: method.to_string(),
                    message,
                })?,
            _ => None,
        };
        let (mut next, mut applied) = apply_step(&g, recipe, index, calibration)?;
        if let (Mode::OneShot, Some(data), Some(settings), None) =
            (recipe.mode, data, &one_shot, &qat)
        {
            let owed = index > 0
                && !run
                    .report
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::FineTune(_)));
            if owed && untrainable(&g).is_none() && untrainable(&next).is_some() {
                g = run.fine_tune_after(g, index, settings, data)?;
                run.report.notes.push(format!(
                    "one-shot fine-tuning ran before step {step} ({method}), whose ops have no backward"
                ));
                (next, applied) = apply_step(&g, recipe, index, calibration)?;
            }
        }
        let accuracy_after_transform = match data {
            Some(_) => accuracy(&run.frozen(&next)?, data)?,
            None => None,
        };
        let held_back = qat.is_some();
        match qat {
            // The layers stay full-precision until the fine-tuning freezes
            // them; the report's costs and accuracy are those of the
            // post-training quantized graph.
            Some(quantizer) => run.pending.push(Pending {
                index,
                quantizer,
                nodes: applied.nodes.iter().map(|n| n.node.clone()).collect(),
            }),
            None => g = next,
        }
        run.report.events.push(Event::Transform(step));
        run.report
            .nodes
            .extend(applied.nodes.into_iter().map(|n| NodeRow {
                node: n.node,
                method: method.to_string(),
                before: n.report.before.into(),
                after: n.report.after.into(),
                weight_error: n.report.weight_error,
            }));
        run.report.steps.push(StepReport {
            step,
            method: method.to_string(),
            selection: filter.to_string(),
            skipped: applied.skipped,
            before: applied.before.into(),
            after: applied.after.into(),
            accuracy_after_transform,
            accuracy_after_fine_tune: None,
        });
        if !held_back {
            g = run.recalibrate(g, step)?;
        }
        if let (Mode::Gradual, Some(data), Some(settings)) =
            (recipe.mode, data, recipe.fine_tune_for(index))
        {
            g = run.fine_tune_after(g, step, &settings, data)?;
        }
    }
    let last = recipe.steps.len();
    if let (Mode::OneShot, Some(data), Some(settings)) = (recipe.mode, data, &one_shot) {
        if !run
            .report
            .events
            .iter()
            .any(|e| matches!(e, Event::FineTune(_)))
        {
            g = run.fine_tune_after(g, last, settings, data)?;
        }
    }
    g = run.freeze(g)?;
    let mut report = run.report;
    let wants_tuning = one_shot.is_some() || (0..last).any(|i| recipe.fine_tune_for(i).is_some());
    if data.is_none() && wants_tuning {
        report
            .notes
            .push("no data given: fine-tuning and accuracy skipped".into());
    }
    report.after = g.cost()?.into();
    report.accuracy_after = accuracy(&g, data)?;
    report.latency = measure_latency(graph, &g, &recipe.latency)?;
    if report.latency.is_empty() && !recipe.latency.batches.is_empty() {
        report.notes.push(format!(
            "latency not measured: the graph has {} inputs (timing takes one)",
            graph.inputs().len()
        ));
    }
    Ok((g, report))
}

//! [`compress`]: a [`Recipe`] applied to a whole network. Each step's
//! transform goes through `Graph::apply_transform` (which also reaches the
//! ops inside blocks an earlier step produced); fine-tuning runs after every
//! step (gradual) or once after the last (one-shot). Ops without a backward
//! (int8 and XNOR-Net convolutions) cannot be fine-tuned: one-shot mode then
//! fine-tunes just before the step that introduces them and applies that
//! step to the fine-tuned weights; gradual mode skips the fine-tuning with a
//! note. Nothing is skipped silently. Data-driven steps (int8 without a
//! fixed range, asymmetric reconstruction, channel pruning by activations)
//! run on calibration inputs:
//! the caller's, or the first training images of the data.

use hasten_core::ndarray::Array4;
use hasten_core::Graph;
use hasten_train::evaluate;

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

/// Fine-tunes `graph` after step `step` (from 1) when it can be, recording
/// the event, the accuracy and, when it cannot, a note.
fn fine_tune_after(
    graph: Graph,
    step: usize,
    settings: &FineTune,
    data: &FineTuneData,
    report: &mut CompressionReport,
) -> Result<Graph> {
    if let Some(node) = untrainable(&graph) {
        report.events.push(Event::FineTuneSkipped(step));
        report.notes.push(format!(
            "fine-tuning after step {step} skipped: node {node} holds ops without a backward"
        ));
        return Ok(graph);
    }
    let graph = fine_tune(graph, settings, data)?;
    report.events.push(Event::FineTune(step));
    report.steps[step - 1].accuracy_after_fine_tune = accuracy(&graph, Some(data))?;
    Ok(graph)
}

/// Compresses `graph` by `recipe`; with `data`, measures accuracy,
/// fine-tunes and calibrates the data-driven steps on the first
/// `recipe.calibration.samples` training images. Returns the compressed
/// graph and its report.
///
/// Errors name the step: an unknown method or bad parameter, a selection
/// that matches no node or no layer, a transform that fails on a node, a
/// data-driven step without data.
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
pub fn compress_calibrated(
    graph: &Graph,
    recipe: &Recipe,
    data: Option<&FineTuneData>,
    calibration: Option<&Array4<f32>>,
) -> Result<(Graph, CompressionReport)> {
    recipe.check()?;
    let mut report = CompressionReport {
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
    let one_shot = recipe.fine_tune.filter(|f| f.epochs > 0);
    let mut g = graph.clone();
    for index in 0..recipe.steps.len() {
        let step = index + 1;
        let (mut next, mut applied) = apply_step(&g, recipe, index, calibration)?;
        if let (Mode::OneShot, Some(data), Some(settings)) = (recipe.mode, data, &one_shot) {
            let owed = index > 0
                && !report
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::FineTune(_)));
            if owed && untrainable(&g).is_none() && untrainable(&next).is_some() {
                g = fine_tune_after(g, index, settings, data, &mut report)?;
                report.notes.push(format!(
                    "one-shot fine-tuning ran before step {step} ({}), whose ops have no backward",
                    recipe.steps[index].method.name()
                ));
                (next, applied) = apply_step(&g, recipe, index, calibration)?;
            }
        }
        g = next;
        report.events.push(Event::Transform(step));
        let method = recipe.steps[index].method.name();
        report
            .nodes
            .extend(applied.nodes.into_iter().map(|n| NodeRow {
                node: n.node,
                method: method.to_string(),
                before: n.report.before.into(),
                after: n.report.after.into(),
                weight_error: n.report.weight_error,
            }));
        report.steps.push(StepReport {
            step,
            method: method.to_string(),
            selection: recipe.steps[index].select.filter().to_string(),
            skipped: applied.skipped,
            before: applied.before.into(),
            after: applied.after.into(),
            accuracy_after_transform: accuracy(&g, data)?,
            accuracy_after_fine_tune: None,
        });
        if let (Mode::Gradual, Some(data), Some(settings)) =
            (recipe.mode, data, recipe.fine_tune_for(index))
        {
            g = fine_tune_after(g, step, &settings, data, &mut report)?;
        }
    }
    let last = recipe.steps.len();
    if let (Mode::OneShot, Some(data), Some(settings)) = (recipe.mode, data, &one_shot) {
        if !report
            .events
            .iter()
            .any(|e| matches!(e, Event::FineTune(_)))
        {
            g = fine_tune_after(g, last, settings, data, &mut report)?;
        }
    }
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

//! The MODEL argument every subcommand takes: an ONNX file or a built-in
//! architecture, with optional trained weights; and the checks and plan
//! compilation the subcommands share.

use std::path::{Path, PathBuf};

use hasten_core::{ActShape, Graph};
use hasten_fastconv::{Plan, PlanOptions};
use hasten_onnx::ImportOptions;

use crate::error::{fail, Context, Result};

#[derive(clap::Args)]
pub(crate) struct ModelArgs {
    /// An .onnx file or a built-in architecture (lenet5, resnet18, …).
    pub(crate) model: String,
    /// Trained weights (safetensors, npy or npz, PyTorch state_dict names).
    #[arg(long, value_name = "FILE")]
    pub(crate) weights: Option<PathBuf>,
}

/// Where a model comes from.
pub(crate) enum Source {
    /// An ONNX file.
    Onnx(PathBuf),
    /// A built-in architecture.
    Builtin(&'static hasten_models::Architecture),
}

pub(crate) fn source(model: &str) -> Result<Source> {
    let path = Path::new(model);
    if path.is_file() {
        return Ok(Source::Onnx(path.to_path_buf()));
    }
    if let Some(arch) = hasten_models::architecture(model) {
        return Ok(Source::Builtin(arch));
    }
    let known: Vec<&str> = hasten_models::ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect();
    if path.extension().is_some() || model.contains(std::path::MAIN_SEPARATOR) {
        Err(fail(format!("{model}: no such file")))
    } else {
        Err(fail(format!(
            "{model}: neither a file nor a built-in architecture ({})",
            known.join(", ")
        )))
    }
}

/// Loads the model; `batch` is the batch size ONNX shapes are folded for.
pub(crate) fn load(args: &ModelArgs, batch: usize) -> Result<Graph> {
    let mut graph = match source(&args.model)? {
        Source::Onnx(path) => hasten_onnx::import_file(
            &path,
            &ImportOptions::default().with_batch_size(batch.max(1)),
        )
        .context(|| format!("cannot import {}", path.display()))?,
        Source::Builtin(arch) => (arch.build)(&(arch.default_config)())
            .context(|| format!("cannot build {}", arch.name))?,
    };
    if let Some(w) = &args.weights {
        hasten_onnx::weights::load_weights(&mut graph, w)
            .context(|| format!("cannot load weights {}", w.display()))?;
    }
    Ok(graph)
}

pub(crate) fn single_input(graph: &Graph) -> Result<ActShape> {
    match graph.inputs() {
        [one] => Ok(one.shape()),
        many => Err(fail(format!(
            "the model has {} inputs; this command takes models with one",
            many.len()
        ))),
    }
}

pub(crate) fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(fail("--batch must be at least 1"));
    }
    Ok(())
}

pub(crate) fn compile(graph: &Graph, batch: usize) -> Result<Plan> {
    Plan::for_graph(graph, batch, PlanOptions::default())
        .context(|| format!("cannot compile a plan for batch {batch}"))
}

pub(crate) fn check_shape(expected: ActShape, got: &[usize], what: &str) -> Result<()> {
    if got[1..] != [expected.channels, expected.height, expected.width] {
        return Err(fail(format!(
            "{what}: samples are {}×{}×{}, the model takes {expected}",
            got[1], got[2], got[3]
        )));
    }
    if got[0] == 0 {
        return Err(fail(format!("{what}: the batch is empty")));
    }
    Ok(())
}

/// Checks `--mean` and `--std`.
pub(crate) fn check_normalization(mean: f32, std: f32) -> Result<()> {
    if !(std.is_finite() && std > 0.0 && mean.is_finite()) {
        return Err(fail(format!(
            "--mean {mean} --std {std}: need a finite mean and a positive std"
        )));
    }
    Ok(())
}

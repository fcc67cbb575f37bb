//! `hasten train` and `hasten finetune`: a model trained on an MNIST-format
//! IDX data set by `hasten_train`'s [`Trainer`] (Adam on a cosine schedule),
//! from freshly drawn weights (`train`) or from its own (`finetune`, e.g.
//! after `hasten compress`); prints each epoch's loss and test accuracy,
//! optionally writes a checkpoint, and exports the trained network to ONNX.
//! `finetune --recalibrate-bn N` first re-estimates the batch-norm running
//! statistics on N training batches.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hasten_train::optim::Adam;
use hasten_train::schedule::Cosine;
use hasten_train::{evaluate, recalibrate_batch_norm, EpochStats, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::compress::load_data;
use crate::error::{fail, Context, Result};
use crate::model::{check_batch, check_shape, load, single_input, ModelArgs};

/// The settings `train` and `finetune` share.
pub(crate) struct TrainArgs {
    /// MNIST-format directory (train-* and t10k-* IDX files).
    pub(crate) data: PathBuf,
    /// Epochs, ≥ 1.
    pub(crate) epochs: usize,
    /// Peak learning rate of the cosine schedule.
    pub(crate) lr: f32,
    /// Training batch size.
    pub(crate) batch: usize,
    /// Pixel normalisation.
    pub(crate) mean: f32,
    /// Pixel normalisation.
    pub(crate) std: f32,
    /// Seed of the shuffling (and of the fresh weights of `train`).
    pub(crate) seed: u64,
    /// Train on only the first K samples.
    pub(crate) train_limit: Option<usize>,
    /// Where to write the final checkpoint.
    pub(crate) checkpoint: Option<PathBuf>,
    /// Where to write the trained model.
    pub(crate) output: PathBuf,
    /// Batch-norm recalibration batches before training (0: none).
    pub(crate) recalibrate_bn: usize,
}

/// Trains `args.model`; `fresh` re-draws its weights first.
pub(crate) fn train(model: &ModelArgs, args: &TrainArgs, fresh: bool) -> Result<()> {
    check_batch(args.batch)?;
    if args.epochs == 0 {
        return Err(fail("--epochs must be at least 1"));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(fail(format!("--lr {}: need a finite rate > 0", args.lr)));
    }
    let mut graph = load(model, 1)?;
    let shape = single_input(&graph)?;
    if let Some((node, kind)) = hasten::pipeline::first_untrainable_op(&graph) {
        return Err(fail(format!(
            "cannot train the model: node `{node}` holds a `{kind}` op, which has no backward"
        )));
    }
    if fresh {
        hasten_models::reinitialize(&mut graph, args.seed)
            .context(|| "cannot initialise the weights".into())?;
    }
    let data = load_data(&args.data, args.mean, args.std, args.train_limit)?;
    check_shape(shape, data.train.images().shape(), "the training images")?;
    if args.recalibrate_bn > 0 {
        graph = recalibrate_batch_norm(
            &graph,
            &data.train,
            args.batch,
            args.recalibrate_bn,
            args.seed,
        )
        .context(|| "cannot recalibrate the batch norms".into())?;
        let acc = evaluate(&graph, &data.test, 256)
            .context(|| "cannot evaluate the recalibrated model".into())?;
        println!(
            "batch norms recalibrated on {} batches of {}: test {:.2} %",
            args.recalibrate_bn,
            args.batch,
            100.0 * acc
        );
    }
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        eval_batch_size: 256,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let steps = args.epochs * data.train.labels().len().div_ceil(args.batch);
    let schedule = Cosine::new(args.lr, 0.0, steps).context(|| "bad schedule".into())?;
    let mut trainer = Trainer::new(graph, Adam::new(), schedule, config)
        .context(|| "cannot train the model".into())?;
    println!(
        "{} {} on {} training / {} test images: {} epochs, batch {}, Adam, lr {} (cosine)",
        if fresh { "training" } else { "fine-tuning" },
        model.model,
        data.train.labels().len(),
        data.test.labels().len(),
        args.epochs,
        args.batch,
        args.lr
    );
    let bar = ProgressBar::new(args.epochs as u64);
    if !std::io::stdout().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{bar:40} epoch {pos}/{len} {elapsed} {msg}") {
        bar.set_style(style);
    }
    let print = |e: &EpochStats| {
        let line = format!(
            "epoch {:>3}  loss {:.4}  train {:6.2} %  test {:6.2} %  {:6.0} images/s",
            e.epoch + 1,
            e.loss,
            100.0 * e.train_accuracy,
            100.0 * e.test_accuracy,
            e.images_per_sec
        );
        // A hidden bar (output not a terminal) prints nothing itself.
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
        bar.set_message(format!("test {:.2} %", 100.0 * e.test_accuracy));
        bar.inc(1);
    };
    trainer
        .fit(&data.train, &data.test, print)
        .context(|| "training failed".into())?;
    bar.finish_and_clear();
    if let Some(c) = &args.checkpoint {
        trainer
            .save_checkpoint(c)
            .context(|| format!("cannot write the checkpoint {}", c.display()))?;
        println!("wrote checkpoint {}", c.display());
    }
    let trained = trainer
        .graph()
        .context(|| "cannot collect the weights".into())?;
    export(&trained, &args.output)?;
    println!("wrote {}", args.output.display());
    Ok(())
}

fn export(graph: &hasten_core::Graph, output: &Path) -> Result<()> {
    hasten_onnx::export_file(graph, output)
        .context(|| format!("cannot export {}", output.display()))
}

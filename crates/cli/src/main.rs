//! # hasten-cli
//!
//! The `hasten` command. Every subcommand takes a MODEL: an ONNX file
//! (imported with `hasten-onnx`) or the name of a built-in architecture of
//! `hasten-models` (`lenet5`, `resnet18`, …, with seeded weights; `--weights`
//! loads trained ones from safetensors, npy or npz by `state_dict` name).
//!
//! - `hasten inspect MODEL [--plan]` prints the per-node table (op, output
//!   shape, MACs, parameters) and totals, and with `--plan` the steps of the
//!   compiled fast plan.
//! - `hasten run MODEL --input X.npy --output Y.npy` runs an NCHW float32
//!   batch through the fast plan and writes the first output as npy.
//! - `hasten bench MODEL [--batch N] [--threads T] [--runs R] [--compare-ort]`
//!   prints the median and minimum latency of the plan, the CPU model and the
//!   instruction set; `--compare-ort` also times onnxruntime on the same
//!   ONNX model through `scripts/ort_bench.py`.
//! - `hasten eval MODEL --data DIR [--mean M --std S] [--batch N] [--limit K]`
//!   prints the top-1 accuracy on the MNIST-format IDX test set in DIR.
//! - `hasten compress MODEL --recipe R.toml|R.json [--data DIR --mean M --std S]
//!   -o OUT.onnx [--report OUT.json]` compresses the model by the recipe
//!   (`hasten::pipeline`), fine-tuning and measuring accuracy on the
//!   MNIST-format data in DIR when given, prints the report, and exports the
//!   compressed network to ONNX.
//! - `hasten train MODEL --data DIR --epochs E --lr LR [--batch B] [--mean M
//!   --std S] [--checkpoint C.safetensors] -o OUT.onnx` trains the model from
//!   freshly drawn weights on the MNIST-format data in DIR (Adam, cosine
//!   schedule), printing each epoch's loss and test accuracy, and exports it;
//!   `hasten finetune` does the same starting from the model's own weights.
//!
//! Failures print one line, `hasten: <error>: <cause>: …`, and exit with
//! status 1; usage errors exit with status 2.

mod commands;
mod error;
mod model;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{bench, compress, eval, inspect, run_model, train, TrainArgs};
use crate::error::Result;
use crate::model::ModelArgs;

#[derive(Parser)]
#[command(
    name = "hasten",
    version,
    about = "Inspect, run, benchmark, evaluate, compress and train CNNs on Hasten's fast kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the per-node table (op, output shape, MACs, params) and totals.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
        /// Also print the steps of the compiled fast plan.
        #[arg(long)]
        plan: bool,
        /// Batch size of the plan printed with --plan.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Run an NCHW float32 batch (npy) through the fast plan.
    Run {
        #[command(flatten)]
        model: ModelArgs,
        /// The input batch, N×C×H×W float32 .npy.
        #[arg(long, value_name = "X.npy")]
        input: PathBuf,
        /// Where to write the (first) output as .npy.
        #[arg(long, value_name = "Y.npy")]
        output: PathBuf,
    },
    /// Time the fast plan (median latency in ms).
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Samples per batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Threads (default: every core).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed runs, after one warm-up run.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Also time onnxruntime on the same ONNX model.
        #[arg(long)]
        compare_ort: bool,
    },
    /// Top-1 accuracy on an MNIST-format IDX test set.
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        /// Directory with t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz].
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Mean subtracted from the [0, 1] pixels.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        mean: f32,
        /// Standard deviation the pixels are divided by.
        #[arg(long, default_value_t = 1.0)]
        std: f32,
        /// Samples per batch.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Evaluate only the first K samples.
        #[arg(long, value_name = "K")]
        limit: Option<usize>,
    },
    /// Compress the model by a recipe, fine-tune, report and export to ONNX.
    Compress {
        #[command(flatten)]
        model: ModelArgs,
        /// The recipe: TOML, or JSON for a .json file.
        #[arg(long, value_name = "R.toml|R.json")]
        recipe: PathBuf,
        /// MNIST-format directory (train-* and t10k-* IDX files) for
        /// fine-tuning and accuracy.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Mean subtracted from the [0, 1] pixels.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        mean: f32,
        /// Standard deviation the pixels are divided by.
        #[arg(long, default_value_t = 1.0)]
        std: f32,
        /// Fine-tune on only the first K training samples.
        #[arg(long, value_name = "K")]
        train_limit: Option<usize>,
        /// Where to write the compressed model.
        #[arg(short = 'o', long, value_name = "OUT.onnx")]
        output: PathBuf,
        /// Where to write the report as JSON.
        #[arg(long, value_name = "OUT.json")]
        report: Option<PathBuf>,
        /// Where to write the compressed graph's dense parameters
        /// (safetensors, or npz for a .npz file), under `state_dict` names;
        /// a block's op `i` of node `n` as `n.i.weight`, `n.i.bias`.
        #[arg(long, value_name = "OUT.safetensors")]
        weights_out: Option<PathBuf>,
    },
    /// Train the model from freshly drawn weights and export it to ONNX.
    Train {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        train: TrainOptions,
    },
    /// Fine-tune the model from its own weights and export it to ONNX.
    Finetune {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        train: TrainOptions,
        /// Re-estimate the batch-norm running statistics on N training
        /// batches before fine-tuning (e.g. after a transform changed the
        /// activations); 0: keep them.
        #[arg(long, value_name = "N", default_value_t = 0)]
        recalibrate_bn: usize,
    },
}

/// The options of `train` and `finetune`.
#[derive(clap::Args)]
struct TrainOptions {
    /// MNIST-format directory (train-* and t10k-* IDX files).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Peak learning rate of the cosine schedule (Adam).
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Training batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Mean subtracted from the [0, 1] pixels.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    mean: f32,
    /// Standard deviation the pixels are divided by.
    #[arg(long, default_value_t = 1.0)]
    std: f32,
    /// Seed of the shuffling and of the fresh weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on only the first K training samples.
    #[arg(long, value_name = "K")]
    train_limit: Option<usize>,
    /// Where to write the final checkpoint (safetensors).
    #[arg(long, value_name = "C.safetensors")]
    checkpoint: Option<PathBuf>,
    /// Where to write the trained model.
    #[arg(short = 'o', long, value_name = "OUT.onnx")]
    output: PathBuf,
}

impl From<TrainOptions> for TrainArgs {
    fn from(o: TrainOptions) -> Self {
        TrainArgs {
            data: o.data,
            epochs: o.epochs,
            lr: o.lr,
            batch: o.batch,
            mean: o.mean,
            std: o.std,
            seed: o.seed,
            train_limit: o.train_limit,
            checkpoint: o.checkpoint,
            output: o.output,
            recalibrate_bn: 0,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut line = format!("hasten: {e}");
            let mut cause = e.source();
            while let Some(c) = cause {
                let text = c.to_string();
                if !line.ends_with(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
                cause = c.source();
            }
            eprintln!("{}", line.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Inspect { model, plan, batch } => inspect(&model, plan, batch),
        Command::Run {
            model,
            input,
            output,
        } => run_model(&model, &input, &output),
        Command::Bench {
            model,
            batch,
            threads,
            runs,
            compare_ort,
        } => bench(&model, batch, threads, runs, compare_ort),
        Command::Eval {
            model,
            data,
            mean,
            std,
            batch,
            limit,
        } => eval(&model, &data, mean, std, batch, limit),
        Command::Compress {
            model,
            recipe,
            data,
            mean,
            std,
            train_limit,
            output,
            report,
            weights_out,
        } => compress(
            &model,
            &recipe,
            data.as_deref().map(|d| (d, mean, std, train_limit)),
            &output,
            report.as_deref(),
            weights_out.as_deref(),
        ),
        Command::Train { model, train: t } => train(&model, &t.into(), true),
        Command::Finetune {
            model,
            train: t,
            recalibrate_bn,
        } => train(
            &model,
            &TrainArgs {
                recalibrate_bn,
                ..t.into()
            },
            false,
        ),
    }
}

//! Training throughput of LeNet-5 (MNIST shape) or the small ResNet
//! (`resnet8`, Fashion-MNIST shape): `--steps` optimizer steps of batch 128
//! (SGD, momentum 0.9, softmax cross-entropy) on random images through the
//! [`Trainer`], after one warm-up epoch of the same length. Prints the
//! images/s of the timed steps (wall clock, and per CPU-second times the
//! thread count, the figure to compare on a busy machine) and the peak
//! resident memory of the process — the same line as the PyTorch peer
//! `scripts/torch_train_bench.py`, which `scripts/train_bench.sh` runs back
//! to back with this example.
//!
//! ```text
//! cargo run --release --example train_throughput -- --model lenet5|resnet8 [--steps N] [--threads T] [--batch B]
//! ```

use std::process::ExitCode;

use hasten::bench::{cpu_model, cpu_seconds, peak_rss_bytes, with_threads};
use hasten::core::SeededRng;
use hasten::models::{lenet5, resnet8, ModelConfig};
use hasten::train::data::ImageSet;
use hasten::train::optim::Sgd;
use hasten::train::schedule::Constant;
use hasten::train::{TrainConfig, TrainError, Trainer};
use ndarray::Array4;

struct Args {
    model: String,
    steps: usize,
    threads: usize,
    batch: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        model: "lenet5".into(),
        steps: 20,
        threads: 2,
        batch: 128,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let mut number = |name: &str| -> Result<usize, String> {
            value(name)?.parse().map_err(|e| format!("{name}: {e}"))
        };
        match a.as_str() {
            "--model" => args.model = value("--model")?,
            "--steps" => args.steps = number("--steps")?,
            "--threads" => args.threads = number("--threads")?,
            "--batch" => args.batch = number("--batch")?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.model != "lenet5" && args.model != "resnet8" {
        return Err(format!(
            "--model: `{}`, expected `lenet5` or `resnet8`",
            args.model
        ));
    }
    if args.steps == 0 || args.batch == 0 || args.threads == 0 {
        return Err("--steps, --batch and --threads must be >= 1".into());
    }
    Ok(args)
}

fn run(args: &Args) -> Result<(), TrainError> {
    let config = ModelConfig::mnist().with_seed(7);
    let graph = if args.model == "resnet8" {
        resnet8(&config)?
    } else {
        lenet5(&config)?
    };
    let n = args.steps * args.batch;
    let mut rng = SeededRng::new(1);
    let images: Array4<f32> = rng.normal_array((n, 1, 28, 28), 1.0);
    let labels = (0..n).map(|_| rng.below(10)).collect();
    let train = ImageSet::new(images, labels, 10)?;
    let test = train.head(1);
    let mut trainer = Trainer::new(
        graph,
        Sgd::new(0.9)?,
        Constant::new(0.01)?,
        TrainConfig {
            epochs: 2,
            batch_size: args.batch,
            eval_batch_size: 1,
            ..TrainConfig::default()
        },
    )?;
    let pid = std::process::id();
    let mut cpu = Vec::new();
    let history = trainer.fit(&train, &test, |_| cpu.push(cpu_seconds(pid)))?;
    let timed = &history[1];
    let per_cpu = match (
        cpu.first().copied().flatten(),
        cpu.get(1).copied().flatten(),
    ) {
        // The CPU time between the two callbacks covers epoch 2's training
        // and epoch 1's (one-image) evaluation.
        (Some(a), Some(b)) => format!("{:.0}", n as f64 / (b - a).max(1e-9) * args.threads as f64),
        _ => "n/a".into(),
    };
    println!(
        "hasten {} batch {} threads {}: {:.0} images/s ({} steps, {:.2} s), {} images per CPU-second x threads, peak RSS {:.0} MiB",
        args.model,
        args.batch,
        args.threads,
        timed.images_per_sec,
        args.steps,
        timed.seconds,
        per_cpu,
        peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64),
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("train_throughput: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("CPU: {}", cpu_model());
    match with_threads(args.threads, || run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train_throughput: {e}");
            ExitCode::FAILURE
        }
    }
}

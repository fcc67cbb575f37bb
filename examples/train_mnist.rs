//! LeNet-5 trained on MNIST with the f32 training tape: batch 128, Adam (or
//! SGD with momentum 0.9) on a cosine schedule, random shifts of up to two
//! pixels, evaluated after each epoch
//! by a fast plan in inference mode. Prints each epoch's loss, accuracies
//! and training throughput, and the total wall time.
//!
//! ```text
//! bash scripts/fetch-datasets.sh      # puts MNIST into data/mnist
//! cargo run --release --example train_mnist -- [--epochs N] [--sgd] [--threads T] [--data DIR]
//! ```

#[path = "common/frame.rs"]
mod frame;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use hasten::bench::{cpu_model, with_threads};
use hasten::models::{lenet5, ModelConfig};
use hasten::train::data::{load_mnist, Augment};
use hasten::train::optim::{Adam, Optimizer, Sgd};
use hasten::train::schedule::{Cosine, Schedule};
use hasten::train::{EpochStats, TrainConfig, TrainError, Trainer};

struct Args {
    epochs: usize,
    sgd: bool,
    threads: usize,
    data: PathBuf,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        epochs: 8,
        sgd: false,
        threads: 2,
        data: PathBuf::from("data/mnist"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--epochs" => {
                args.epochs = value("--epochs")?
                    .parse()
                    .map_err(|e| format!("--epochs: {e}"))?
            }
            "--threads" => {
                args.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--data" => args.data = PathBuf::from(value("--data")?),
            "--sgd" => args.sgd = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn print_epoch(e: &EpochStats) {
    println!("{e}");
}

fn train<O: Optimizer>(args: &Args, optimizer: O, lr: f32) -> Result<(), TrainError> {
    let start = Instant::now();
    let splits = load_mnist(&args.data)?;
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: 128,
        eval_batch_size: 500,
        seed: 2024,
        augment: Augment::new()
            .random_crop(2)
            .normalize(&[0.1307], &[0.3081])?,
        ..TrainConfig::default()
    };
    let steps = args.epochs * splits.train.labels().len().div_ceil(config.batch_size);
    let schedule = Cosine::new(lr, 0.0, steps)?;
    println!(
        "LeNet-5 on MNIST: {} training / {} test images, batch {}, {} epochs, {}, lr {} (cosine), random shifts ±2 px, {} threads",
        splits.train.labels().len(),
        splits.test.labels().len(),
        config.batch_size,
        args.epochs,
        if args.sgd { "SGD momentum 0.9" } else { "Adam" },
        schedule.lr(0),
        args.threads,
    );
    println!("CPU: {}", cpu_model());
    let graph = lenet5(&ModelConfig::mnist().with_seed(7))?;
    let mut trainer = Trainer::new(graph, optimizer, schedule, config)?;
    // The test split is evaluated with the same normalisation.
    let test = splits.test.normalized(&[0.1307], &[0.3081])?;
    let history = trainer.fit(&splits.train, &test, print_epoch)?;
    let last = history.last().expect("at least one epoch");
    let train_secs: f64 = history.iter().map(|e| e.seconds).sum();
    let images: f64 = history.iter().map(|e| e.images_per_sec * e.seconds).sum();
    println!(
        "final test accuracy {:.2} %; training {:.0} images/s on average; wall time {:.1} s",
        100.0 * last.test_accuracy,
        images / train_secs,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match frame::parsed("train_mnist", parse()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if frame::data_missing("MNIST", &args.data) {
        return ExitCode::SUCCESS;
    }
    let result = with_threads(args.threads.max(1), || {
        if args.sgd {
            Sgd::new(0.9).and_then(|sgd| train(&args, sgd, 0.05))
        } else {
            train(&args, Adam::new(), 2e-3)
        }
    });
    frame::exit_code("train_mnist", result)
}

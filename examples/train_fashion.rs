//! The small ResNet (`resnet8`: 16–32–64 channels, eight weighted layers),
//! or with `--model` the small VGG (`small_vgg`) or small MobileNet
//! (`small_mobilenet`), trained on Fashion-MNIST with the f32 training tape: batch 128, SGD with
//! Nesterov momentum 0.9 and weight decay 5·10⁻⁴ on a one-cycle schedule,
//! augmentation by random crops with 2 pixels of zero padding, horizontal
//! flips and normalisation, evaluated after each epoch by a fast plan in
//! inference mode. Prints each epoch's loss, accuracies, throughput and
//! time, the best test accuracy and the total wall time.
//!
//! ```text
//! bash scripts/fetch-datasets.sh      # puts Fashion-MNIST into data/fashion-mnist
//! cargo run --release --example train_fashion -- [--model resnet8|small_vgg|small_mobilenet] [--epochs N] [--lr MAX] [--threads T] [--limit N] [--data DIR] [--save OUT.onnx]
//! ```
//!
//! `--limit N` trains on the first `N` training images only (a quick check).
//! For ResNet-8 the default 20 epochs reach 92.98 % test accuracy
//! (docs/training.md, which also has the other two networks' curves);
//! `--save` writes the trained network as ONNX, the float model that
//! `qat_fashion` and the compression recipes start from.

#[path = "common/frame.rs"]
mod frame;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use hasten::bench::{cpu_model, with_threads};
use hasten::models::{by_name, ModelConfig};
use hasten::train::data::{load_mnist, Augment};
use hasten::train::optim::Sgd;
use hasten::train::schedule::{OneCycle, Schedule};
use hasten::train::{EpochStats, TrainConfig, Trainer};

/// Fashion-MNIST's training-set pixel mean and standard deviation.
const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;

/// The architectures `--model` accepts and the names printed for them.
const MODELS: [(&str, &str); 3] = [
    ("resnet8", "ResNet-8"),
    ("small_vgg", "small VGG"),
    ("small_mobilenet", "small MobileNet"),
];

struct Args {
    model: &'static str,
    label: &'static str,
    epochs: usize,
    lr: f32,
    threads: usize,
    limit: Option<usize>,
    data: PathBuf,
    save: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        model: MODELS[0].0,
        label: MODELS[0].1,
        epochs: 20,
        lr: 0.1,
        threads: 2,
        limit: None,
        data: PathBuf::from("data/fashion-mnist"),
        save: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--model" => {
                let name = value("--model")?;
                let &(model, label) = MODELS.iter().find(|(m, _)| *m == name).ok_or(format!(
                    "--model: `{name}` is not one of resnet8, small_vgg, small_mobilenet"
                ))?;
                (args.model, args.label) = (model, label);
            }
            "--epochs" => {
                args.epochs = value("--epochs")?
                    .parse()
                    .map_err(|e| format!("--epochs: {e}"))?
            }
            "--lr" => args.lr = value("--lr")?.parse().map_err(|e| format!("--lr: {e}"))?,
            "--threads" => {
                args.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--limit" => {
                args.limit = Some(
                    value("--limit")?
                        .parse()
                        .map_err(|e| format!("--limit: {e}"))?,
                )
            }
            "--data" => args.data = PathBuf::from(value("--data")?),
            "--save" => args.save = Some(PathBuf::from(value("--save")?)),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn print_epoch(e: &EpochStats) {
    println!("{e}");
}

fn train(args: &Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let start = Instant::now();
    let splits = load_mnist(&args.data)?;
    let train = match args.limit {
        Some(n) => splits.train.head(n),
        None => splits.train,
    };
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: 128,
        eval_batch_size: 500,
        seed: 2024,
        augment: Augment::new()
            .random_crop(2)
            .horizontal_flip(true)
            .normalize(&[MEAN], &[STD])?,
        ..TrainConfig::default()
    };
    let steps = args.epochs * train.labels().len().div_ceil(config.batch_size);
    let schedule = OneCycle::new(args.lr, steps, 0.25)?;
    println!(
        "{} on Fashion-MNIST: {} training / {} test images, batch {}, {} epochs, SGD Nesterov 0.9, weight decay 5e-4, one-cycle lr up to {} (from {:.4}), crop ±2 px + flip, {} threads",
        args.label,
        train.labels().len(),
        splits.test.labels().len(),
        config.batch_size,
        args.epochs,
        args.lr,
        schedule.lr(0),
        args.threads,
    );
    println!("CPU: {}", cpu_model());
    let graph = by_name(args.model, &ModelConfig::mnist().with_seed(7))?;
    let optimizer = Sgd::new(0.9)?.nesterov(true)?.weight_decay(5e-4)?;
    let mut trainer = Trainer::new(graph, optimizer, schedule, config)?;
    let test = splits.test.normalized(&[MEAN], &[STD])?;
    let history = trainer.fit(&train, &test, print_epoch)?;
    let best = history
        .iter()
        .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy))
        .expect("at least one epoch");
    let last = history.last().expect("at least one epoch");
    let train_secs: f64 = history.iter().map(|e| e.seconds).sum();
    let images: f64 = history.iter().map(|e| e.images_per_sec * e.seconds).sum();
    println!(
        "final test accuracy {:.2} % (best {:.2} % after epoch {}); training {:.0} images/s on average; wall time {:.1} s",
        100.0 * last.test_accuracy,
        100.0 * best.test_accuracy,
        best.epoch + 1,
        images / train_secs,
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.save {
        let graph = trainer.graph()?;
        hasten::onnx::export_file(&graph, path)?;
        println!("trained network written to {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match frame::parsed("train_fashion", parse()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if frame::data_missing("Fashion-MNIST", &args.data) {
        return ExitCode::SUCCESS;
    }
    frame::exit_code(
        "train_fashion",
        with_threads(args.threads.max(1), || train(&args)),
    )
}

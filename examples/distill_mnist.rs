//! Knowledge distillation on MNIST (survey §7, eq. (19)–(21)): a LeNet-5
//! teacher trained on the full training set, then a thin student (3 and 6
//! convolution channels, a 32-unit hidden layer: about 11× fewer
//! parameters) trained on a small slice of it twice — from hard labels
//! alone, and distilled from the teacher's soft targets,
//! `(1 − λ)·H(y, p^S) + λ·τ²·H(p^T_τ, p^S_τ)` (optionally with a FitNets
//! hint from the teacher's `conv2` to the student's). Prints each run's
//! test accuracy and the wall time.
//!
//! ```text
//! bash scripts/fetch-datasets.sh      # puts MNIST into data/mnist
//! cargo run --release --example distill_mnist -- [--teacher-epochs N] [--epochs M]
//!     [--samples K] [--temperature T] [--lambda L] [--hint] [--threads T] [--data DIR]
//! ```

#[path = "common/thin_lenet.rs"]
mod thin_lenet;

#[path = "common/frame.rs"]
mod frame;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use hasten::bench::{cpu_model, with_threads};
use hasten::core::Graph;
use hasten::models::{lenet5, ModelConfig};
use hasten::teacher_student::{DistillSettings, DistillTrainer};
use hasten::train::data::{load_mnist, Augment, ImageSet};
use hasten::train::optim::Adam;
use hasten::train::schedule::Cosine;
use hasten::train::{evaluate, EpochStats, TrainConfig, TrainError, Trainer};
use thin_lenet::thin_lenet5;

struct Args {
    teacher_epochs: usize,
    epochs: usize,
    samples: usize,
    temperature: f32,
    lambda: f32,
    hint: bool,
    threads: usize,
    data: PathBuf,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        teacher_epochs: 2,
        epochs: 8,
        samples: 2000,
        temperature: 4.0,
        lambda: 0.9,
        hint: false,
        threads: 2,
        data: PathBuf::from("data/mnist"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| format!("{name}: {e}"))
        }
        match a.as_str() {
            "--teacher-epochs" => args.teacher_epochs = number(&a, value(&a)?)?,
            "--epochs" => args.epochs = number(&a, value(&a)?)?,
            "--samples" => args.samples = number(&a, value(&a)?)?,
            "--temperature" => args.temperature = number(&a, value(&a)?)?,
            "--lambda" => args.lambda = number(&a, value(&a)?)?,
            "--threads" => args.threads = number(&a, value(&a)?)?,
            "--data" => args.data = PathBuf::from(value(&a)?),
            "--hint" => args.hint = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn print_epoch(e: &EpochStats) {
    println!("  {e}");
}

fn config(epochs: usize) -> Result<TrainConfig, TrainError> {
    Ok(TrainConfig {
        epochs,
        batch_size: 64,
        eval_batch_size: 500,
        seed: 2024,
        augment: Augment::new().normalize(&[0.1307], &[0.3081])?,
        ..TrainConfig::default()
    })
}

fn run(args: &Args) -> Result<(), TrainError> {
    let start = Instant::now();
    let splits = load_mnist(&args.data)?;
    let test = ImageSet::new(
        splits.test.images().mapv(|v| (v - 0.1307) / 0.3081),
        splits.test.labels().to_vec(),
        splits.test.classes(),
    )?;
    let few = splits.train.head(args.samples);
    println!("CPU: {}; {} threads", cpu_model(), args.threads);

    println!(
        "teacher LeNet-5, {} epochs on {} images:",
        args.teacher_epochs,
        splits.train.labels().len()
    );
    let t0 = Instant::now();
    let cfg = config(args.teacher_epochs)?;
    let steps = args.teacher_epochs * splits.train.labels().len().div_ceil(cfg.batch_size);
    let mut trainer = Trainer::new(
        lenet5(&ModelConfig::mnist().with_seed(7))?,
        Adam::new(),
        Cosine::new(2e-3, 0.0, steps)?,
        cfg,
    )?;
    trainer.fit(&splits.train, &test, print_epoch)?;
    let teacher = trainer.graph()?;
    let teacher_acc = evaluate(&teacher, &test, 500)?;
    let teacher_secs = t0.elapsed().as_secs_f64();

    let cfg = config(args.epochs)?;
    let steps = args.epochs * few.labels().len().div_ceil(cfg.batch_size);
    let schedule = || Cosine::new(3e-3, 0.0, steps);

    println!(
        "student from hard labels, {} epochs on {} images:",
        args.epochs,
        few.labels().len()
    );
    let t0 = Instant::now();
    let mut scratch = Trainer::new(thin_lenet5(11)?, Adam::new(), schedule()?, cfg.clone())?;
    scratch.fit(&few, &test, print_epoch)?;
    let scratch_acc = evaluate(&scratch.graph()?, &test, 500)?;
    let scratch_secs = t0.elapsed().as_secs_f64();

    let mut settings = DistillSettings::new(args.temperature, args.lambda)?;
    if args.hint {
        settings = settings.with_hint("conv2", "conv2", 0.1)?;
    }
    println!(
        "student distilled (τ = {}, λ = {}{}), {} epochs on the same images:",
        args.temperature,
        args.lambda,
        if args.hint {
            ", hint conv2 → conv2"
        } else {
            ""
        },
        args.epochs
    );
    let t0 = Instant::now();
    let mut distilled = DistillTrainer::new(
        thin_lenet5(11)?,
        teacher.clone(),
        settings,
        Adam::new(),
        schedule()?,
        cfg,
    )?;
    distilled.fit(&few, &test, print_epoch)?;
    let distilled_acc = evaluate(&distilled.student()?, &test, 500)?;
    let distilled_secs = t0.elapsed().as_secs_f64();

    let params = |g: &Graph| g.cost().map(|c| c.params);
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>9}",
        "network", "params", "test acc", "time"
    );
    for (what, g, acc, secs) in [
        ("teacher LeNet-5", &teacher, teacher_acc, teacher_secs),
        (
            "student, hard labels",
            &scratch.graph()?,
            scratch_acc,
            scratch_secs,
        ),
        (
            "student, distilled",
            &distilled.student()?,
            distilled_acc,
            distilled_secs,
        ),
    ] {
        println!(
            "{:<28} {:>10} {:>8.2} % {:>7.1} s",
            what,
            params(g)?,
            100.0 * acc,
            secs
        );
    }
    println!("wall time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    let args = match frame::parsed("distill_mnist", parse()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if frame::data_missing("MNIST", &args.data) {
        return ExitCode::SUCCESS;
    }
    frame::exit_code(
        "distill_mnist",
        with_threads(args.threads.max(1), || run(&args)),
    )
}

//! Quantization-aware training of LeNet-5 on MNIST (survey eq. (5)): float
//! training, then, for binary weights (eq. (8), `α_t·sign(W_t)`, on every
//! layer but the first and the last) and for int8 weights (symmetric, per
//! channel, every layer), post-training quantization of the float network
//! against fine-tuning it with fake-quantized weights and straight-through
//! gradients. Every quantized accuracy is measured on the frozen graph —
//! real packed binary / 8-bit ops run by a fast plan. Prints the accuracies,
//! their gaps to float and the wall time.
//!
//! ```text
//! bash scripts/fetch-datasets.sh      # puts MNIST into data/mnist
//! cargo run --release --example qat_mnist -- [--epochs N] [--qat-epochs M] [--threads T] [--data DIR]
//! ```

#[path = "common/frame.rs"]
mod frame;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use hasten::bench::{cpu_model, with_threads};
use hasten::core::{Graph, NodeFilter};
use hasten::models::{lenet5, ModelConfig};
use hasten::qat::{QatQuantizer, QuantAwareTraining};
use hasten::train::data::{load_mnist, Augment, ImageSet};
use hasten::train::optim::Adam;
use hasten::train::schedule::Cosine;
use hasten::train::{evaluate, EpochStats, TrainConfig, TrainError, Trainer};

struct Args {
    epochs: usize,
    qat_epochs: usize,
    threads: usize,
    data: PathBuf,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        epochs: 4,
        qat_epochs: 2,
        threads: 2,
        data: PathBuf::from("data/mnist"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| v.parse().map_err(|e| format!("{name}: {e}"));
        match a.as_str() {
            "--epochs" => args.epochs = number("--epochs", value("--epochs")?)?,
            "--qat-epochs" => args.qat_epochs = number("--qat-epochs", value("--qat-epochs")?)?,
            "--threads" => args.threads = number("--threads", value("--threads")?)?,
            "--data" => args.data = PathBuf::from(value("--data")?),
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
        batch_size: 128,
        eval_batch_size: 500,
        seed: 2024,
        augment: Augment::new()
            .random_crop(2)
            .normalize(&[0.1307], &[0.3081])?,
        ..TrainConfig::default()
    })
}

/// `epochs` of Adam on a cosine schedule from `lr`, quantization-aware when
/// `qat` is given; returns the trained graph (full-precision weights).
fn fit(
    graph: Graph,
    qat: Option<&QuantAwareTraining>,
    epochs: usize,
    lr: f32,
    train: &ImageSet,
    test: &ImageSet,
) -> Result<Graph, TrainError> {
    let config = config(epochs)?;
    let steps = epochs * train.labels().len().div_ceil(config.batch_size);
    let schedule = Cosine::new(lr, 0.0, steps)?;
    let mut trainer = Trainer::new(graph.clone(), Adam::new(), schedule, config)?;
    if let Some(q) = qat {
        trainer = trainer.with_fake_quant(q.fake_quant(&graph)?)?;
    }
    trainer.fit(train, test, print_epoch)?;
    trainer.graph()
}

fn run(args: &Args) -> Result<(), TrainError> {
    let start = Instant::now();
    let splits = load_mnist(&args.data)?;
    // The test split is evaluated with the training normalisation.
    let test = ImageSet::new(
        splits.test.images().mapv(|v| (v - 0.1307) / 0.3081),
        splits.test.labels().to_vec(),
        splits.test.classes(),
    )?;
    println!(
        "LeNet-5 on MNIST: {} training / {} test images, batch 128, Adam, random shifts ±2 px, {} threads",
        splits.train.labels().len(),
        test.labels().len(),
        args.threads
    );
    println!("CPU: {}", cpu_model());
    println!("float training, {} epochs (lr 2e-3, cosine):", args.epochs);
    let float = fit(
        lenet5(&ModelConfig::mnist().with_seed(7))?,
        None,
        args.epochs,
        2e-3,
        &splits.train,
        &test,
    )?;
    let float_acc = evaluate(&float, &test, 500)?;

    let setups = [
        (
            "binary α·sign(W), all but first and last layer",
            QuantAwareTraining::new().quantize(
                NodeFilter::all().except_first(1).except_last(1),
                QatQuantizer::binary(),
            ),
        ),
        (
            "int8 weights (symmetric, per channel), every layer",
            QuantAwareTraining::new().quantize(NodeFilter::all(), QatQuantizer::int8()),
        ),
    ];
    let mut rows = Vec::new();
    for (what, qat) in &setups {
        let (ptq, _) = qat.freeze(&float)?;
        let ptq_acc = evaluate(&ptq, &test, 500)?;
        println!(
            "{what}: post-training {:.2} %; fine-tuning {} epochs (lr 5e-4, cosine):",
            100.0 * ptq_acc,
            args.qat_epochs
        );
        let tuned = fit(
            float.clone(),
            Some(qat),
            args.qat_epochs,
            5e-4,
            &splits.train,
            &test,
        )?;
        let (frozen, _) = qat.freeze(&tuned)?;
        let qat_acc = evaluate(&frozen, &test, 500)?;
        let ratio = float.cost()?.weight_bytes as f64 / frozen.cost()?.weight_bytes.max(1) as f64;
        rows.push((*what, ptq_acc, qat_acc, ratio));
    }
    println!();
    println!("float: {:.2} %", 100.0 * float_acc);
    println!(
        "{:<52} {:>10} {:>10} {:>12} {:>8}",
        "quantization", "PTQ", "QAT", "QAT − float", "weights"
    );
    for (what, ptq, qat, ratio) in rows {
        println!(
            "{:<52} {:>8.2} % {:>8.2} % {:>+9.2} pp {:>7.1}×",
            what,
            100.0 * ptq,
            100.0 * qat,
            100.0 * (qat - float_acc),
            ratio
        );
    }
    println!("wall time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    let args = match frame::parsed("qat_mnist", parse()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if frame::data_missing("MNIST", &args.data) {
        return ExitCode::SUCCESS;
    }
    frame::exit_code(
        "qat_mnist",
        with_threads(args.threads.max(1), || run(&args)),
    )
}

//! Quantization-aware training of the small ResNet (ResNet-8) on
//! Fashion-MNIST (survey eq. (5)), starting from the float network that
//! `train_fashion --save` writes:
//!
//! - (a) binary weights `α_t·sign(W_t)` (eq. (8); BinaryConnect's clipped
//!   straight-through gradient, eq. (6)–(7)) on every convolution but the
//!   first; the first convolution and the last (linear) layer stay float,
//!   as is customary;
//! - (b) int8 weights (symmetric, per channel) *and* activations (u8,
//!   per tensor, input ranges calibrated by min–max on 256 training
//!   images, then fixed) on every convolution and linear layer;
//! - (c) BinaryConnect's stochastic binary weights (eq. (3): `+1` with
//!   probability `clip((w + 1)/2, 0, 1)`, a fresh draw each step, from
//!   shadow weights rescaled to `max |W| = 1` per layer
//!   (`QuantAwareTraining::rescale_shadow_weights`); frozen
//!   as the deterministic `sign(W)`, whose batch-norm statistics are then
//!   re-estimated on 1024 training images) on the layers of (a);
//! - (d) DoReFa-Net 4-bit weights and 4-bit activations (inputs clipped to
//!   `[0, 1]`) on the layers of (a).
//!
//! (c) and (d) run only when `--only` names them, with the binary settings
//! (`--binary-epochs`, `--lr-binary`).
//!
//! Binary weights are fine-tuned for 2 epochs and int8 for 1 by default
//! (`--epochs` sets both; Adam, cosine schedule), then
//! frozen into real packed binary / `Int8Conv` ops. Every accuracy is that
//! of a graph run by a fast `Plan`: float, post-training quantized, QAT;
//! also the drops from float, the latency at batch 1 and the wall time.
//!
//! ```text
//! cargo run --release --example train_fashion -- --epochs 20 --save data/resnet8-fashion.onnx
//! cargo run --release --example qat_fashion -- [--float FILE] [--epochs N | --binary-epochs N --int8-epochs N] [--only binary|int8|stochastic|dorefa] [--limit N] [--lr-binary LR] [--lr-int8 LR] [--threads T] [--data DIR]
//! ```
//!
//! `--limit N` fine-tunes on the first `N` training images only (a quick
//! check); the test split is always whole.

#[path = "common/frame.rs"]
mod frame;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hasten::bench::{cpu_model, measure, with_threads};
use hasten::core::ndarray::Array4;
use hasten::core::{Graph, IntType, NodeFilter};
use hasten::fastconv::{Plan, PlanOptions};
use hasten::onnx::{import_file, ImportOptions};
use hasten::qat::{DoReFaQat, Int8Qat, QatQuantizer, QuantAwareTraining};
use hasten::quant::Calibration;
use hasten::train::data::{load_mnist, Augment, ImageSet};
use hasten::train::optim::Adam;
use hasten::train::schedule::Cosine;
use hasten::train::{
    evaluate, recalibrate_batch_norm, EpochStats, FakeQuant, TrainConfig, Trainer,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Fashion-MNIST's training-set pixel mean and standard deviation (as in
/// `train_fashion`).
const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;

struct Args {
    float: PathBuf,
    binary_epochs: usize,
    int8_epochs: usize,
    only: Option<String>,
    limit: Option<usize>,
    lr_binary: f32,
    lr_int8: f32,
    threads: usize,
    data: PathBuf,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        float: PathBuf::from("data/resnet8-fashion.onnx"),
        binary_epochs: 2,
        int8_epochs: 1,
        only: None,
        limit: None,
        lr_binary: 1e-3,
        lr_int8: 1e-4,
        threads: 2,
        data: PathBuf::from("data/fashion-mnist"),
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
            "--float" => args.float = PathBuf::from(value("--float")?),
            "--epochs" => {
                let n = number("--epochs", value("--epochs")?)?;
                (args.binary_epochs, args.int8_epochs) = (n, n);
            }
            "--binary-epochs" => {
                args.binary_epochs = number("--binary-epochs", value("--binary-epochs")?)?
            }
            "--int8-epochs" => args.int8_epochs = number("--int8-epochs", value("--int8-epochs")?)?,
            "--only" => match value("--only")?.as_str() {
                v @ ("binary" | "int8" | "stochastic" | "dorefa") => {
                    args.only = Some(v.to_string())
                }
                v => {
                    return Err(format!(
                        "--only: `{v}`, expected binary, int8, stochastic or dorefa"
                    ))
                }
            },
            "--limit" => args.limit = Some(number("--limit", value("--limit")?)?),
            "--lr-binary" => args.lr_binary = number("--lr-binary", value("--lr-binary")?)?,
            "--lr-int8" => args.lr_int8 = number("--lr-int8", value("--lr-int8")?)?,
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

/// `epochs` of Adam on a cosine schedule from `lr` with the weights
/// `fake_quant` selects quantized in the forward; returns the trained graph
/// (full-precision weights).
fn fine_tune(
    graph: Graph,
    fake_quant: FakeQuant,
    epochs: usize,
    lr: f32,
    train: &ImageSet,
    test: &ImageSet,
) -> Result<Graph, Error> {
    let config = TrainConfig {
        epochs,
        batch_size: 128,
        eval_batch_size: 500,
        seed: 2024,
        augment: Augment::new()
            .random_crop(2)
            .horizontal_flip(true)
            .normalize(&[MEAN], &[STD])?,
        ..TrainConfig::default()
    };
    let steps = epochs * train.labels().len().div_ceil(config.batch_size);
    let schedule = Cosine::new(lr, 0.0, steps.max(1))?;
    let mut trainer = Trainer::new(graph, Adam::new(), schedule, config)?;
    trainer = trainer.with_fake_quant(fake_quant)?;
    trainer.fit(train, test, print_epoch)?;
    Ok(trainer.graph()?)
}

/// Median latency at batch 1 of `graph` run by a fast plan, milliseconds.
fn latency_ms(graph: &Graph, x: &Array4<f32>) -> Result<f64, Error> {
    let mut plan = Plan::for_graph(graph, 1, PlanOptions::default())?;
    plan.run(x)?;
    Ok(measure(
        || {
            plan.run(x).expect("the plan ran once already");
        },
        20,
        Duration::from_secs(2),
    )
    .median_ms())
}

fn run(args: &Args) -> Result<(), Error> {
    let start = Instant::now();
    let splits = load_mnist(&args.data)?;
    let train = match args.limit {
        Some(n) => splits.train.head(n),
        None => splits.train,
    };
    let test = splits.test.normalized(&[MEAN], &[STD])?;
    let float = import_file(&args.float, &ImportOptions::default())?;
    println!(
        "ResNet-8 on Fashion-MNIST from {}: fine-tuning on {} training images, {} epoch(s) binary, {} int8, batch 128, Adam, cosine, crop ±2 px + flip; {} test images; {} threads",
        args.float.display(),
        train.labels().len(),
        args.binary_epochs,
        args.int8_epochs,
        test.labels().len(),
        args.threads
    );
    println!("CPU: {}", cpu_model());
    let float_acc = evaluate(&float, &test, 500)?;
    println!("float: {:.2} %", 100.0 * float_acc);

    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let only = |name: &str| args.only.as_deref() == Some(name);
    let mut rows = Vec::new();
    // (a) Binary weights on every convolution but the first.
    if wanted("binary") {
        let binary = QuantAwareTraining::new().quantize(
            NodeFilter::kind("conv").except_first(1),
            QatQuantizer::binary(),
        );
        let (ptq, _) = binary.freeze(&float)?;
        let binary_ptq = evaluate(&ptq, &test, 500)?;
        println!(
            "binary α·sign(W), every conv but the first (first conv and the linear head float): post-training {:.2} %; QAT, lr {}:",
            100.0 * binary_ptq,
            args.lr_binary
        );
        let tuned = fine_tune(
            float.clone(),
            binary.fake_quant(&float)?,
            args.binary_epochs,
            args.lr_binary,
            &train,
            &test,
        )?;
        let (binary_net, _) = binary.freeze(&tuned)?;
        let binary_acc = evaluate(&binary_net, &test, 500)?;
        rows.push(("binary", binary_ptq, binary_acc, binary_net));
    }

    // (b) Int8 weights and activations on every convolution and linear layer.
    if wanted("int8") {
        let calibration = train.head(256).normalized(&[MEAN], &[STD])?;
        let int8 = Int8Qat::calibrate(
            &float,
            &NodeFilter::all(),
            calibration.images(),
            Calibration::MinMax,
            IntType::U8,
            true,
        )?;
        let training = int8.training_graph(&float)?;
        let int8_ptq = evaluate(&int8.freeze(&training)?, &test, 500)?;
        println!(
            "int8 weights (per channel) + u8 activations (min–max on 256 images), {} layers: post-training {:.2} %; QAT, lr {}:",
            int8.layers().len(),
            100.0 * int8_ptq,
            args.lr_int8
        );
        let tuned = fine_tune(
            training,
            int8.fake_quant()?,
            args.int8_epochs,
            args.lr_int8,
            &train,
            &test,
        )?;
        let int8_net = int8.freeze(&tuned)?;
        let int8_acc = evaluate(&int8_net, &test, 500)?;
        rows.push(("int8", int8_ptq, int8_acc, int8_net));
    }

    // (c) Stochastic binary weights on the layers of (a).
    if only("stochastic") {
        let stochastic = QuantAwareTraining::new().quantize(
            NodeFilter::kind("conv").except_first(1),
            QatQuantizer::StochasticBinary { seed: 7 },
        );
        let (ptq, _) = stochastic.freeze(&float)?;
        let stochastic_ptq = evaluate(&ptq, &test, 500)?;
        println!(
            "stochastic binary weights (eq. (3)), every conv but the first, frozen as sign(W): post-training {:.2} %; QAT, lr {}:",
            100.0 * stochastic_ptq,
            args.lr_binary
        );
        // Shadow weights at BinaryConnect's scale (max |W| = 1 per layer,
        // batch norm rescaled to keep the function): the float network's
        // weights ≪ 1 would make every draw of eq. (3) a near-fair coin.
        let (start, factors) = stochastic.rescale_shadow_weights(&float)?;
        let (lo, hi) = factors
            .iter()
            .fold((f32::MAX, 0.0f32), |(l, h), (_, a)| (l.min(*a), h.max(*a)));
        println!(
            "  shadow weights rescaled to max |W| = 1 (factors {lo:.1}–{hi:.1}); float after rescaling {:.2} %",
            100.0 * evaluate(&start, &test, 500)?
        );
        let tuned = fine_tune(
            start,
            stochastic.fake_quant(&float)?,
            args.binary_epochs,
            args.lr_binary,
            &train,
            &test,
        )?;
        let (frozen, _) = stochastic.freeze(&tuned)?;
        let frozen_acc = evaluate(&frozen, &test, 500)?;
        // The running statistics were gathered with random ±1 draws; the
        // deterministic sign(W) needs its own.
        let recalibration = train.head(1024).normalized(&[MEAN], &[STD])?;
        let net = recalibrate_batch_norm(&frozen, &recalibration, 128, 8, 0)?;
        let acc = evaluate(&net, &test, 500)?;
        println!(
            "  frozen sign(W): {:.2} %; after batch-norm recalibration on 1024 training images: {:.2} %",
            100.0 * frozen_acc,
            100.0 * acc
        );
        rows.push(("stoch.", stochastic_ptq, acc, net));
    }

    // (d) DoReFa 4-bit weights and activations on the layers of (a).
    if only("dorefa") {
        let dorefa = DoReFaQat::new(&float, &NodeFilter::kind("conv").except_first(1), 4, 4)?;
        let training = dorefa.training_graph(&float)?;
        let dorefa_ptq = evaluate(&dorefa.freeze(&training)?, &test, 500)?;
        println!(
            "DoReFa 4-bit weights + 4-bit activations, {} layers: post-training {:.2} %; QAT, lr {}:",
            dorefa.layers().len(),
            100.0 * dorefa_ptq,
            args.lr_binary
        );
        let tuned = fine_tune(
            training,
            dorefa.fake_quant()?,
            args.binary_epochs,
            args.lr_binary,
            &train,
            &test,
        )?;
        let net = dorefa.freeze(&tuned)?;
        let acc = evaluate(&net, &test, 500)?;
        rows.push(("dorefa", dorefa_ptq, acc, net));
    }

    let x = test
        .images()
        .slice(hasten::core::ndarray::s![..1, .., .., ..])
        .to_owned();
    println!();
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>16}",
        "network", "PTQ", "QAT", "QAT − float", "latency, batch 1"
    );
    println!(
        "{:<8} {:>10} {:>10.2} % {:>12} {:>13.3} ms",
        "float",
        "",
        100.0 * float_acc,
        "",
        latency_ms(&float, &x)?
    );
    for (name, ptq, acc, net) in &rows {
        println!(
            "{:<8} {:>8.2} % {:>10.2} % {:>+9.2} pp {:>13.3} ms",
            name,
            100.0 * ptq,
            100.0 * acc,
            100.0 * (acc - float_acc),
            latency_ms(net, &x)?
        );
    }
    println!("wall time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    let args = match frame::parsed("qat_fashion", parse()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if frame::data_missing("Fashion-MNIST", &args.data) {
        return ExitCode::SUCCESS;
    }
    if !args.float.exists() {
        println!(
            "No float network at {}: train one first with `cargo run --release --example train_fashion -- --epochs 20 --save {}`.",
            args.float.display(),
            args.float.display()
        );
        return ExitCode::SUCCESS;
    }
    frame::exit_code(
        "qat_fashion",
        with_threads(args.threads.max(1), || run(&args)),
    )
}

//! The per-method results table on real data (`docs/results.md`): LeNet-5
//! trained on MNIST (or loaded from `--checkpoint` when that file exists),
//! then one [`Recipe`] per method family of the survey — low-rank
//! decompositions (section 2), quantization (section 5), pruning (sections
//! 3, 6) — applied through `hasten::pipeline::compress`, fine-tuned briefly
//! (one epoch on a slice of the training set) where the compressed ops have
//! a backward, and measured: MAC speed-up, whole-network latency speed-up of
//! the fast plans (batch 1, `--threads` threads), weight bytes, test
//! accuracy before and after fine-tuning. Prints the table as markdown
//! (also to `--out`) and draws the speed/accuracy plot in the style of the
//! survey's Fig. 2 (`--svg`).
//!
//! ```text
//! bash scripts/fetch-datasets.sh      # puts MNIST into data/mnist
//! cargo run --release --example results -- [--data DIR] [--epochs N] [--tune-samples N]
//!     [--threads T] [--checkpoint FILE] [--only SUBSTRING] [--out FILE.md] [--svg FILE.svg]
//! ```

mod plot;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use hasten::bench::{cpu_model, with_threads};
use hasten::core::Graph;
use hasten::models::{lenet5, ModelConfig};
use hasten::pipeline::{compress, CompressionReport, FineTuneData, Recipe};
use hasten::train::data::{load_mnist, mnist_present, Augment, ImageSet};
use hasten::train::optim::Adam;
use hasten::train::schedule::Cosine;
use hasten::train::{TrainConfig, Trainer};

type Error = Box<dyn std::error::Error>;

/// MNIST's pixel mean and standard deviation.
const MEAN: f32 = 0.1307;
const STD: f32 = 0.3081;

/// One row: the method family, what the recipe does, and its steps.
struct Method {
    family: &'static str,
    label: &'static str,
    steps: &'static str,
}

/// The recipes, one per method; `{first}`-style selections keep the
/// survey's convention of leaving the first and last layer in full
/// precision for the binary and ternary methods (Table 2).
const METHODS: &[Method] = &[
    Method {
        family: "low rank",
        label: "SVD, fc1 & fc2 (rank 16)",
        steps: r#"select = { names = ["fc1", "fc2"] }
method = { name = "svd", rank = 16 }"#,
    },
    Method {
        family: "low rank",
        label: "TT-matrix, fc1 (rank 8)",
        steps: r#"select = { names = ["fc1"] }
method = { name = "tt-matrix", out_modes = [10, 12], in_modes = [20, 20], rank = 8 }"#,
    },
    Method {
        family: "low rank",
        label: "CP, conv2 (3x fewer MACs)",
        steps: r#"select = { names = ["conv2"] }
method = { name = "cp", rank = { speedup = 3.0 } }"#,
    },
    Method {
        family: "low rank",
        label: "Tucker-2, conv2 (2x fewer MACs)",
        steps: r#"select = { names = ["conv2"] }
method = { name = "tucker2", rank = { speedup = 2.0 } }"#,
    },
    Method {
        family: "low rank",
        label: "separable filters, conv2 (2x)",
        steps: r#"select = { names = ["conv2"] }
method = { name = "separable", rank = { speedup = 2.0 } }"#,
    },
    Method {
        family: "low rank",
        label: "Denton biclustering + SVD, conv2",
        steps: r#"select = { names = ["conv2"] }
method = { name = "bicluster-svd", input_clusters = 2, output_clusters = 2, k1 = 2, k2 = 4 }"#,
    },
    Method {
        family: "low rank",
        label: "asymmetric reconstruction, conv2 (rank 4)",
        steps: r#"select = { names = ["conv2"] }
method = { name = "asymmetric", rank = 4, nonlinear = true }"#,
    },
    Method {
        family: "quantization",
        label: "binary weights (not first/last)",
        steps: r#"select = { except_first = 1, except_last = 1 }
method = { name = "binarize", kind = "binary-weights" }"#,
    },
    Method {
        family: "quantization",
        label: "XNOR-Net (not first/last)",
        steps: r#"select = { except_first = 1, except_last = 1 }
method = { name = "binarize", kind = "xnor-net" }"#,
    },
    Method {
        family: "quantization",
        label: "ternary (TWN, not first/last)",
        steps: r#"select = { except_first = 1, except_last = 1 }
method = { name = "ternarize", granularity = "per-channel" }"#,
    },
    Method {
        family: "quantization",
        label: "k-means 4-bit (k = 16)",
        steps: r#"method = { name = "kmeans", k = 16, granularity = "per-channel" }"#,
    },
    Method {
        family: "quantization",
        label: "product quantization, fc1 & fc2",
        steps: r#"select = { names = ["fc1", "fc2"] }
method = { name = "product-quantize", subblocks = 20, k = 16 }"#,
    },
    Method {
        family: "quantization",
        label: "fixed-point 4-bit weights",
        steps: r#"method = { name = "fixed-point", bits = 4, granularity = "per-channel" }"#,
    },
    Method {
        family: "quantization",
        label: "int8 post-training (calibrated)",
        steps: r#"method = { name = "int8", granularity = "per-channel" }"#,
    },
    Method {
        family: "pruning",
        label: "filter pruning (L1), half the MACs",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "l1" }"#,
    },
    Method {
        family: "pruning",
        label: "channel pruning (energy), half the MACs",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "energy" }"#,
    },
    Method {
        family: "pruning",
        label: "channel pruning (APoZ), half the MACs",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "apoz" }"#,
    },
    Method {
        family: "pruning",
        label: "unstructured magnitude, 50 %",
        steps: r#"method = { name = "magnitude-sparse", fraction = 0.5 }"#,
    },
    Method {
        family: "pruning",
        label: "unstructured magnitude, 90 %",
        steps: r#"method = { name = "magnitude-sparse", fraction = 0.9 }"#,
    },
];

struct Args {
    data: PathBuf,
    epochs: usize,
    tune_samples: usize,
    threads: usize,
    checkpoint: Option<PathBuf>,
    only: Option<String>,
    out: Option<PathBuf>,
    svg: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        data: PathBuf::from("data/mnist"),
        epochs: 8,
        tune_samples: 20_000,
        threads: 2,
        checkpoint: None,
        only: None,
        out: None,
        svg: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| -> Result<usize, String> {
            v.parse().map_err(|e| format!("{name}: {e}"))
        };
        match a.as_str() {
            "--data" => args.data = PathBuf::from(value("--data")?),
            "--epochs" => args.epochs = number("--epochs", value("--epochs")?)?,
            "--tune-samples" => {
                args.tune_samples = number("--tune-samples", value("--tune-samples")?)?
            }
            "--threads" => args.threads = number("--threads", value("--threads")?)?,
            "--checkpoint" => args.checkpoint = Some(PathBuf::from(value("--checkpoint")?)),
            "--only" => args.only = Some(value("--only")?),
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--svg" => args.svg = Some(PathBuf::from(value("--svg")?)),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.epochs == 0 || args.tune_samples == 0 || args.threads == 0 {
        return Err("--epochs, --tune-samples and --threads must be at least 1".into());
    }
    Ok(args)
}

/// `set` with its pixels mapped to `(v − mean) / std`.
fn normalized(set: &ImageSet) -> Result<ImageSet, Error> {
    Ok(ImageSet::new(
        set.images().mapv(|v| (v - MEAN) / STD),
        set.labels().to_vec(),
        set.classes(),
    )?)
}

/// LeNet-5 trained on the normalised training split (Adam, cosine
/// schedule, batch 128), or the weights in `checkpoint` when it exists
/// (written there after training otherwise).
fn trained_lenet5(args: &Args, train: &ImageSet, test: &ImageSet) -> Result<Graph, Error> {
    let mut graph = lenet5(&ModelConfig::mnist().with_seed(7))?;
    if let Some(path) = args.checkpoint.as_ref().filter(|p| p.exists()) {
        hasten::onnx::weights::load_weights(&mut graph, path)?;
        println!("LeNet-5 weights loaded from {}", path.display());
        return Ok(graph);
    }
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: 128,
        eval_batch_size: 500,
        seed: 2024,
        augment: Augment::new(),
        ..TrainConfig::default()
    };
    let steps = args.epochs * train.labels().len().div_ceil(config.batch_size);
    let mut trainer = Trainer::new(graph, Adam::new(), Cosine::new(2e-3, 0.0, steps)?, config)?;
    let start = Instant::now();
    trainer.fit(train, test, |e| {
        println!(
            "  epoch {:>2}: loss {:.4}, test {:.2} %",
            e.epoch + 1,
            e.loss,
            100.0 * e.test_accuracy
        )
    })?;
    println!(
        "LeNet-5 trained for {} epochs in {:.0} s",
        args.epochs,
        start.elapsed().as_secs_f64()
    );
    let graph = trainer.graph()?;
    if let Some(path) = &args.checkpoint {
        hasten::onnx::weights::save_weights(&graph, path)?;
    }
    Ok(graph)
}

/// The recipe of `method`: its steps, one fine-tuning epoch (one-shot),
/// batch-1 latency and 512 calibration images.
fn recipe(method: &Method) -> Result<Recipe, Error> {
    Ok(Recipe::from_toml(&format!(
        "fine_tune = {{ epochs = 1, lr = 0.001, batch = 64 }}\n\
         latency = {{ batches = [1], runs = 300 }}\n\
         calibration = {{ samples = 512 }}\n\
         [[steps]]\n{}\n",
        method.steps
    ))?)
}

/// One measured row.
struct Row {
    family: &'static str,
    label: &'static str,
    outcome: Result<Measured, String>,
}

/// What a compressed network measured.
struct Measured {
    mac_speedup: f64,
    latency_speedup: f64,
    original_ms: f64,
    compressed_ms: f64,
    kib_before: f64,
    kib_after: f64,
    accuracy_before: f64,
    after_transform: f64,
    after_fine_tune: Option<f64>,
    seconds: f64,
}

fn measure(report: &CompressionReport, seconds: f64) -> Result<Measured, String> {
    let latency = report.latency.first().ok_or("latency not measured")?;
    let before = report.accuracy_before.ok_or("no accuracy")?;
    let after_transform = report
        .steps
        .last()
        .and_then(|s| s.accuracy_after_transform)
        .ok_or("no accuracy after the transform")?;
    let tuned = report
        .events
        .iter()
        .any(|e| matches!(e, hasten::pipeline::Event::FineTune(_)));
    Ok(Measured {
        mac_speedup: report.mac_speedup(),
        latency_speedup: latency.original_ms / latency.compressed_ms,
        original_ms: latency.original_ms,
        compressed_ms: latency.compressed_ms,
        kib_before: report.before.weight_bytes as f64 / 1024.0,
        kib_after: report.after.weight_bytes as f64 / 1024.0,
        accuracy_before: before,
        after_transform,
        after_fine_tune: if tuned { report.accuracy_after } else { None },
        seconds,
    })
}

/// The markdown table of `rows`.
fn table(rows: &[Row], threads: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| family | method | MAC speed-up | measured speed-up (batch 1, {threads} threads) | weights (KiB) | accuracy after transform | after fine-tuning | change |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        match &r.outcome {
            Ok(m) => {
                let last = m.after_fine_tune.unwrap_or(m.after_transform);
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2}× | {:.2}× ({:.3} → {:.3} ms) | {:.1} → {:.1} | {:.2} % | {} | {:+.2} |",
                    r.family,
                    r.label,
                    m.mac_speedup,
                    m.latency_speedup,
                    m.original_ms,
                    m.compressed_ms,
                    m.kib_before,
                    m.kib_after,
                    100.0 * m.after_transform,
                    m.after_fine_tune.map_or_else(
                        || "— (ops without a backward)".to_string(),
                        |a| format!("{:.2} %", 100.0 * a)
                    ),
                    100.0 * (last - m.accuracy_before),
                );
            }
            Err(e) => {
                let _ = writeln!(
                    s,
                    "| {} | {} | failed: {} | | | | | |",
                    r.family,
                    r.label,
                    e.replace('|', "\\|").replace('\n', " ")
                );
            }
        }
    }
    s
}

fn run(args: &Args) -> Result<(), Error> {
    let start = Instant::now();
    let splits = load_mnist(&args.data)?;
    let train = normalized(&splits.train)?;
    let test = normalized(&splits.test)?;
    let graph = trained_lenet5(args, &train, &test)?;
    let data = FineTuneData {
        train: train.head(args.tune_samples),
        test,
    };
    let mut rows = Vec::new();
    for method in METHODS {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !method.label.contains(o.as_str()))
        {
            continue;
        }
        let t = Instant::now();
        let outcome = recipe(method)
            .map_err(|e| e.to_string())
            .and_then(|r| compress(&graph, &r, Some(&data)).map_err(|e| error_chain(&e)))
            .and_then(|(_, report)| measure(&report, t.elapsed().as_secs_f64()));
        match &outcome {
            Ok(m) => eprintln!("{}: done in {:.1} s", method.label, m.seconds),
            Err(e) => eprintln!("{}: failed: {e}", method.label),
        }
        rows.push(Row {
            family: method.family,
            label: method.label,
            outcome,
        });
    }
    let accuracy = rows
        .iter()
        .find_map(|r| r.outcome.as_ref().ok().map(|m| m.accuracy_before));
    let mut text = format!(
        "LeNet-5 on MNIST, test accuracy {} before compression; fine-tuning: 1 epoch (SGD, momentum 0.9, lr 0.001, batch 64) on the first {} training images; CPU: {}; wall time {:.0} s.\n\n",
        accuracy.map_or("-".into(), |a| format!("{:.2} %", 100.0 * a)),
        data.train.labels().len(),
        cpu_model(),
        start.elapsed().as_secs_f64()
    );
    text.push_str(&table(&rows, args.threads));
    print!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text)?;
    }
    if let Some(path) = &args.svg {
        let points: Vec<plot::Point> = rows
            .iter()
            .filter_map(|r| {
                let m = r.outcome.as_ref().ok()?;
                let last = m.after_fine_tune.unwrap_or(m.after_transform);
                Some(plot::Point {
                    label: r.label.to_string(),
                    speedup: m.latency_speedup,
                    drop: 100.0 * (m.accuracy_before - last),
                })
            })
            .collect();
        plot::write_svg(path, &points, args.threads)?;
    }
    Ok(())
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("results: {e}");
            return ExitCode::from(2);
        }
    };
    if !mnist_present(&args.data) {
        println!(
            "MNIST not found in {}: run `bash scripts/fetch-datasets.sh` first (it puts the IDX files into data/mnist).",
            args.data.display()
        );
        return ExitCode::SUCCESS;
    }
    match with_threads(args.threads, || {
        run(&args).map_err(|e| error_chain(e.as_ref()))
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("results: {e}");
            ExitCode::FAILURE
        }
    }
}

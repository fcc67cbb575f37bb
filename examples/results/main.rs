//! The per-method results table on real data (`docs/results.md`): LeNet-5
//! trained on MNIST (or loaded from `--checkpoint` when that file exists),
//! then one [`Recipe`] per method family of the survey — low-rank
//! decompositions (section 2), quantization (section 5), pruning (sections
//! 3, 6) — applied through `hasten::pipeline::compress`, fine-tuned briefly
//! (one epoch on a slice of the training set) where the compressed ops have
//! a backward, and measured: MAC speed-up, whole-network latency speed-up of
//! the fast plans (batch 1, `--threads` threads), weight bytes, test
//! accuracy before and after fine-tuning; the convolutions a decomposition
//! replaced are also timed alone, for the CP / Tucker-2 target. Besides, a
//! thin student trained
//! from scratch and distilled from the LeNet-5 (section 7), and — in the
//! same run, through onnxruntime in a child process — onnxruntime's own
//! static int8 quantization of the same LeNet-5 and every exported
//! compressed model's accuracy under onnxruntime. Prints the tables and the
//! issue's targets as markdown (also to `--out`) and draws the
//! speed/accuracy plot in the style of the survey's Fig. 2 (`--svg`).
//! Each `--fashion [ARCH=]MODEL.onnx` adds a Fashion-MNIST section for a
//! network `train_fashion --model ARCH --save` wrote (`ARCH`: `resnet8`,
//! the default, `small_vgg` or `small_mobilenet`; see `fashion.rs`);
//! `--efficientnet` adds the EfficientNet-Lite0 section on its 20 ImageNet
//! photos (`efficientnet.rs`).
//!
//! ```text
//! bash scripts/fetch-datasets.sh      # puts MNIST into data/mnist
//! bash scripts/setup-python.sh        # .venv with onnx + onnxruntime
//! cargo run --release --example results -- [--data DIR] [--epochs N] [--tune-samples N]
//!     [--train-samples N] [--distill-samples N] [--distill-epochs N] [--threads T] [--checkpoint FILE]
//!     [--only SUBSTRING[,SUBSTRING…]] [--no-ort] [--no-lenet] [--fashion [ARCH=]MODEL.onnx …] [--fashion-data DIR]
//!     [--fashion-tune-samples N] [--fashion-test-samples N] [--efficientnet] [--out FILE.md] [--svg FILE.svg]
//! ```

#[path = "../common/thin_lenet.rs"]
mod thin_lenet;

mod conv_alone;
mod efficientnet;
mod fashion;
mod fashion_nets;
mod ort;
mod plot;
mod targets;

#[path = "../common/frame.rs"]
mod frame;

#[path = "../common/efficientnet_photos.rs"]
mod efficientnet_photos;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use hasten::bench::{cpu_model, with_threads};
use hasten::core::Graph;
use hasten::models::{lenet5, ModelConfig};
use hasten::pipeline::{
    compress, measure_latency, CompressionReport, FineTuneData, LatencySettings, Recipe,
};
use hasten::teacher_student::{DistillSettings, DistillTrainer};
use hasten::train::data::{load_mnist, Augment, ImageSet};
use hasten::train::optim::Adam;
use hasten::train::schedule::Cosine;
use hasten::train::{evaluate, TrainConfig, Trainer};
use ort::OrtFigures;
use thin_lenet::thin_lenet5;

/// The example's error.
pub type Error = Box<dyn std::error::Error>;

/// MNIST's pixel mean and standard deviation.
const MEAN: f32 = 0.1307;
const STD: f32 = 0.3081;

/// One row: the method family, what the recipe does, its steps, and
/// recipe settings other than the default one-shot fine-tuning (with no
/// steps: the whole recipe).
struct Method {
    family: &'static str,
    label: &'static str,
    steps: &'static str,
    header: Option<&'static str>,
}

/// The default fine-tuning: one epoch, one-shot.
const FINE_TUNE: &str = "fine_tune = { epochs = 1, lr = 0.001, batch = 64 }";

/// The recipes, one per method; `{first}`-style selections keep the
/// survey's convention of leaving the first and last layer in full
/// precision for the binary and ternary methods (Table 2).
const METHODS: &[Method] = &[
    Method {
        family: "low rank",
        label: "SVD, fc1 & fc2 (rank 16)",
        steps: r#"select = { names = ["fc1", "fc2"] }
method = { name = "svd", rank = 16 }"#,
        header: None,
    },
    Method {
        family: "low rank",
        label: "TT-matrix, fc1 (rank 8)",
        steps: r#"select = { names = ["fc1"] }
method = { name = "tt-matrix", out_modes = [10, 12], in_modes = [20, 20], rank = 8 }"#,
        header: None,
    },
    Method {
        family: "low rank",
        label: "CP, conv2 (3x fewer MACs)",
        steps: r#"select = { names = ["conv2"] }
method = { name = "cp", rank = { speedup = 3.0 } }"#,
        header: None,
    },
    Method {
        family: "low rank",
        label: "Tucker-2, conv2 (2x fewer MACs)",
        steps: r#"select = { names = ["conv2"] }
method = { name = "tucker2", rank = { speedup = 2.0 } }"#,
        header: None,
    },
    Method {
        family: "low rank",
        label: "separable filters, conv2 (2x)",
        steps: r#"select = { names = ["conv2"] }
method = { name = "separable", rank = { speedup = 2.0 } }"#,
        header: None,
    },
    Method {
        family: "low rank",
        label: "Denton biclustering + SVD, conv2",
        steps: r#"select = { names = ["conv2"] }
method = { name = "bicluster-svd", input_clusters = 2, output_clusters = 2, k1 = 2, k2 = 4 }"#,
        header: None,
    },
    Method {
        family: "low rank",
        label: "asymmetric reconstruction, conv2 (rank 4)",
        steps: r#"select = { names = ["conv2"] }
method = { name = "asymmetric", rank = 4, nonlinear = true }"#,
        header: None,
    },
    Method {
        family: "quantization",
        label: "binary weights (not first/last)",
        steps: r#"select = { except_first = 1, except_last = 1 }
method = { name = "binarize", kind = "binary-weights" }"#,
        header: None,
    },
    Method {
        family: "quantization",
        label: "binary weights, QAT (not first/last)",
        steps: r#"select = { except_first = 1, except_last = 1 }
method = { name = "binarize", kind = "binary-weights" }"#,
        header: Some("fine_tune = { epochs = 1, lr = 0.001, batch = 64, qat = true }"),
    },
    Method {
        family: "quantization",
        label: "XNOR-Net (not first/last)",
        steps: r#"select = { except_first = 1, except_last = 1 }
method = { name = "binarize", kind = "xnor-net" }"#,
        header: None,
    },
    Method {
        family: "quantization",
        label: "ternary (TWN, not first/last)",
        steps: r#"select = { except_first = 1, except_last = 1 }
method = { name = "ternarize", granularity = "per-channel" }"#,
        header: None,
    },
    Method {
        family: "quantization",
        label: "k-means 4-bit (k = 16), centroids fine-tuned",
        steps: r#"method = { name = "kmeans", k = 16, granularity = "per-channel" }"#,
        header: None,
    },
    Method {
        family: "quantization",
        label: "product quantization, fc1 & fc2",
        steps: r#"select = { names = ["fc1", "fc2"] }
method = { name = "product-quantize", subblocks = 20, k = 16 }"#,
        header: None,
    },
    Method {
        family: "quantization",
        label: "fixed-point 4-bit weights",
        steps: r#"method = { name = "fixed-point", bits = 4, granularity = "per-channel" }"#,
        header: None,
    },
    Method {
        family: "quantization",
        label: "int8 post-training (calibrated)",
        steps: r#"method = { name = "int8", granularity = "per-channel" }"#,
        header: None,
    },
    Method {
        family: "quantization",
        label: "int8 weights QAT, calibrated activations",
        steps: r#"method = { name = "int8", granularity = "per-channel" }"#,
        header: Some("fine_tune = { epochs = 1, lr = 0.001, batch = 64, qat = true }"),
    },
    Method {
        family: "pruning",
        label: "filter pruning (L1), half the MACs",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "l1" }"#,
        header: None,
    },
    Method {
        family: "pruning",
        label: "filter pruning (L1), half the MACs, gradual, distilled (recipes/lenet5-prune-half.toml)",
        steps: "",
        header: Some(include_str!("../../recipes/lenet5-prune-half.toml")),
    },
    Method {
        family: "pruning",
        label: "channel pruning (energy), half the MACs",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "energy" }"#,
        header: None,
    },
    Method {
        family: "pruning",
        label: "channel pruning (APoZ), half the MACs",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "apoz" }"#,
        header: None,
    },
    Method {
        family: "pruning",
        label: "unstructured magnitude, 50 %",
        steps: r#"method = { name = "magnitude-sparse", fraction = 0.5 }"#,
        header: None,
    },
    Method {
        family: "pruning",
        label: "unstructured magnitude, 90 %, masked retraining",
        steps: r#"method = { name = "magnitude-sparse", fraction = 0.9 }"#,
        header: None,
    },
    Method {
        family: "combined",
        label: "prune (L1) → Tucker-2 conv2 → int8, distilled",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "l1" }

[[steps]]
select = { names = ["conv2"] }
method = { name = "tucker2", rank = { speedup = 1.5 } }

[[steps]]
select = { names = ["conv1", "fc1", "fc2", "fc3"] }
method = { name = "int8", granularity = "per-channel" }"#,
        header: Some(
            r#"mode = "gradual"
fine_tune = { epochs = 1, lr = 0.001, batch = 64, distill = { temperature = 4.0, weight = 0.5 } }"#,
        ),
    },
];

struct Args {
    data: PathBuf,
    epochs: usize,
    train_samples: Option<usize>,
    tune_samples: usize,
    distill_samples: usize,
    distill_epochs: usize,
    threads: usize,
    ort: bool,
    lenet: bool,
    fashion: Vec<(&'static fashion::Network, PathBuf)>,
    fashion_data: PathBuf,
    fashion_tune_samples: usize,
    fashion_test_samples: Option<usize>,
    efficientnet: bool,
    checkpoint: Option<PathBuf>,
    only: Option<String>,
    out: Option<PathBuf>,
    svg: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        data: PathBuf::from("data/mnist"),
        epochs: 8,
        train_samples: None,
        tune_samples: 20_000,
        distill_samples: 2000,
        distill_epochs: 8,
        threads: 2,
        ort: true,
        lenet: true,
        fashion: Vec::new(),
        fashion_data: PathBuf::from("data/fashion-mnist"),
        fashion_tune_samples: 5000,
        fashion_test_samples: None,
        efficientnet: false,
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
            "--train-samples" => {
                args.train_samples = Some(number("--train-samples", value("--train-samples")?)?)
            }
            "--distill-samples" => {
                args.distill_samples = number("--distill-samples", value("--distill-samples")?)?
            }
            "--distill-epochs" => {
                args.distill_epochs = number("--distill-epochs", value("--distill-epochs")?)?
            }
            "--no-ort" => args.ort = false,
            "--no-lenet" => args.lenet = false,
            "--fashion" => args
                .fashion
                .push(fashion::parse_model(&value("--fashion")?)?),
            "--fashion-data" => args.fashion_data = PathBuf::from(value("--fashion-data")?),
            "--fashion-test-samples" => {
                args.fashion_test_samples = Some(number(
                    "--fashion-test-samples",
                    value("--fashion-test-samples")?,
                )?)
            }
            "--fashion-tune-samples" => {
                args.fashion_tune_samples =
                    number("--fashion-tune-samples", value("--fashion-tune-samples")?)?
            }
            "--efficientnet" => args.efficientnet = true,
            "--threads" => args.threads = number("--threads", value("--threads")?)?,
            "--checkpoint" => args.checkpoint = Some(PathBuf::from(value("--checkpoint")?)),
            "--only" => args.only = Some(value("--only")?),
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--svg" => args.svg = Some(PathBuf::from(value("--svg")?)),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if [
        args.epochs,
        args.train_samples.unwrap_or(1),
        args.tune_samples,
        args.distill_samples,
        args.distill_epochs,
        args.fashion_tune_samples,
        args.fashion_test_samples.unwrap_or(1),
        args.threads,
    ]
    .contains(&0)
    {
        return Err("--epochs, --train-samples, --tune-samples, --distill-samples, --distill-epochs, --fashion-tune-samples, --fashion-test-samples and --threads must be at least 1".into());
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

/// The recipe of `method`: its settings (default: one fine-tuning epoch,
/// one-shot) and steps — or, where `steps` is empty, `header` as a whole
/// recipe file — with batch-1 latency and 512 calibration images.
fn recipe(method: &Method) -> Result<Recipe, Error> {
    let header = method.header.unwrap_or(FINE_TUNE);
    let mut recipe = if method.steps.is_empty() {
        Recipe::from_toml(header)?
    } else {
        Recipe::from_toml(&format!("{header}\n[[steps]]\n{}\n", method.steps))?
    };
    recipe.latency = LatencySettings {
        batches: vec![1],
        runs: LATENCY_RUNS,
    };
    recipe.calibration.samples = CALIBRATION;
    Ok(recipe)
}

/// Timed runs per latency figure.
const LATENCY_RUNS: usize = 300;

/// Calibration images (the first of the training split).
const CALIBRATION: usize = 512;

/// One measured row.
pub struct Row {
    family: &'static str,
    label: &'static str,
    outcome: Result<Measured, String>,
}

/// What a compressed network measured.
pub struct Measured {
    mac_speedup: f64,
    latency_speedup: f64,
    original_ms: f64,
    compressed_ms: f64,
    kib_before: f64,
    kib_after: f64,
    accuracy_before: f64,
    after_transform: f64,
    after_fine_tune: Option<f64>,
    /// The compressed network's accuracy as exported: after fine-tuning
    /// where it ran, after batch-norm recalibration otherwise.
    accuracy_after: f64,
    seconds: f64,
    /// The exported ONNX model, where onnxruntime checks it.
    onnx: Option<PathBuf>,
    /// onnxruntime's accuracy and latency of that model.
    ort: Option<Result<OrtFigures, String>>,
    /// The decomposed convolutions timed alone, where there are any.
    conv_alone: Option<conv_alone::ConvAlone>,
}

impl Measured {
    /// The accuracy the row ends with (that of the exported network).
    fn last(&self) -> f64 {
        self.accuracy_after
    }

    /// The change in accuracy, in percentage points.
    fn change(&self) -> f64 {
        100.0 * (self.last() - self.accuracy_before)
    }
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
        accuracy_after: report
            .accuracy_after
            .ok_or("no accuracy after compression")?,
        seconds,
        onnx: None,
        ort: None,
        conv_alone: None,
    })
}

/// Differences larger than this many percentage points between Hasten's and
/// onnxruntime's accuracy of the same exported model are flagged.
const MISMATCH_POINTS: f64 = 0.1;

/// The onnxruntime accuracy cell of a model Hasten measured at `hasten`.
fn ort_cell(ort: Option<&Result<OrtFigures, String>>, hasten: f64) -> String {
    match ort {
        None => "not run".into(),
        Some(Err(e)) => format!("fails: {}", e.replace('|', "\\|")),
        Some(Ok(f)) => {
            let diff = 100.0 * (f.accuracy - hasten);
            let flag = if diff.abs() > MISMATCH_POINTS {
                format!(" (**mismatch**, {diff:+.2})")
            } else {
                String::new()
            };
            format!("{:.2} %{flag}", 100.0 * f.accuracy)
        }
    }
}

/// The "after fine-tuning" cell: the accuracy, or why there is none (and
/// the accuracy after batch-norm recalibration where that changed it).
fn fine_tune_cell(m: &Measured) -> String {
    match m.after_fine_tune {
        Some(a) => format!("{:.2} %", 100.0 * a),
        None if m.accuracy_after != m.after_transform => format!(
            "— (not fine-tuned; {:.2} % after batch-norm recalibration)",
            100.0 * m.accuracy_after
        ),
        None => "— (not fine-tuned)".into(),
    }
}

/// The markdown table of `rows`.
fn table(rows: &[Row], threads: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| family | method | MAC speed-up | measured speed-up (batch 1, {threads} threads) | weights (KiB) | accuracy after transform | after fine-tuning | change | onnxruntime accuracy |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        match &r.outcome {
            Ok(m) => {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2}× | {:.2}× ({:.3} → {:.3} ms) | {:.1} → {:.1} | {:.2} % | {} | {:+.2} | {} |",
                    r.family,
                    r.label,
                    m.mac_speedup,
                    m.latency_speedup,
                    m.original_ms,
                    m.compressed_ms,
                    m.kib_before,
                    m.kib_after,
                    100.0 * m.after_transform,
                    fine_tune_cell(m),
                    m.change(),
                    ort_cell(m.ort.as_ref(), m.last()),
                );
            }
            Err(e) => {
                let _ = writeln!(
                    s,
                    "| {} | {} | failed: {} | | | | | | |",
                    r.family,
                    r.label,
                    e.replace('|', "\\|").replace('\n', " ")
                );
            }
        }
    }
    s
}

/// The thin student trained twice on the same images for the same epochs:
/// from the hard labels, and distilled from the LeNet-5 (survey §7,
/// eq. (19)–(20), τ = 4, λ = 0.9).
pub struct Distilled {
    samples: usize,
    epochs: usize,
    teacher: f64,
    /// `(label, figures)`: from scratch, distilled.
    students: Vec<(&'static str, Measured)>,
}

/// Trains the two students and measures them against `teacher`.
fn distillation(
    args: &Args,
    teacher: &Graph,
    train: &ImageSet,
    test: &ImageSet,
) -> Result<Distilled, Error> {
    let few = train.head(args.distill_samples);
    let config = TrainConfig {
        epochs: args.distill_epochs,
        batch_size: 64,
        eval_batch_size: 500,
        seed: 2024,
        augment: Augment::new(),
        ..TrainConfig::default()
    };
    let steps = args.distill_epochs * few.labels().len().div_ceil(config.batch_size);
    let schedule = || Cosine::new(3e-3, 0.0, steps);
    let mut scratch = Trainer::new(thin_lenet5(11)?, Adam::new(), schedule()?, config.clone())?;
    scratch.fit(&few, test, |_| {})?;
    let mut distilled = DistillTrainer::new(
        thin_lenet5(11)?,
        teacher.clone(),
        DistillSettings::new(4.0, 0.9)?,
        Adam::new(),
        schedule()?,
        config,
    )?;
    distilled.fit(&few, test, |_| {})?;
    let teacher_accuracy = evaluate(teacher, test, 500)?;
    let settings = LatencySettings {
        batches: vec![1],
        runs: LATENCY_RUNS,
    };
    let mut students = Vec::new();
    for (label, student) in [
        ("from the hard labels", scratch.graph()?),
        ("distilled from LeNet-5", distilled.student()?),
    ] {
        let t = Instant::now();
        let latency = measure_latency(teacher, &student, &settings)?;
        let latency = latency.first().ok_or("latency not measured")?;
        let (before, after) = (teacher.cost()?, student.cost()?);
        let accuracy = evaluate(&student, test, 500)?;
        let onnx = match ort_dir(args) {
            Some(dir) => {
                let path = dir.join(format!("student-{}.onnx", students.len()));
                hasten::onnx::export_file(&student, &path)?;
                Some(path)
            }
            None => None,
        };
        students.push((
            label,
            Measured {
                mac_speedup: before.macs as f64 / after.macs as f64,
                latency_speedup: latency.original_ms / latency.compressed_ms,
                original_ms: latency.original_ms,
                compressed_ms: latency.compressed_ms,
                kib_before: before.weight_bytes as f64 / 1024.0,
                kib_after: after.weight_bytes as f64 / 1024.0,
                accuracy_before: teacher_accuracy,
                after_transform: accuracy,
                after_fine_tune: None,
                accuracy_after: accuracy,
                seconds: t.elapsed().as_secs_f64(),
                onnx,
                ort: None,
                conv_alone: None,
            },
        ));
    }
    Ok(Distilled {
        samples: few.labels().len(),
        epochs: args.distill_epochs,
        teacher: teacher_accuracy,
        students,
    })
}

/// The markdown table of the distillation rows.
fn distillation_table(d: &Distilled, threads: usize) -> String {
    let mut s = format!(
        "Thin student (3 and 6 convolution channels, one 32-unit hidden layer), {} epochs (Adam, cosine schedule from 0.003, batch 64) on the first {} training images, against the LeNet-5 teacher ({:.2} %):\n\n",
        d.epochs,
        d.samples,
        100.0 * d.teacher
    );
    let _ = writeln!(
        s,
        "| student | MAC speed-up | measured speed-up (batch 1, {threads} threads) | weights (KiB) | test accuracy | change vs teacher | onnxruntime accuracy |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, m) in &d.students {
        let _ = writeln!(
            s,
            "| {label} | {:.2}× | {:.2}× ({:.3} → {:.3} ms) | {:.1} → {:.1} | {:.2} % | {:+.2} | {} |",
            m.mac_speedup,
            m.latency_speedup,
            m.original_ms,
            m.compressed_ms,
            m.kib_before,
            m.kib_after,
            100.0 * m.after_transform,
            m.change(),
            ort_cell(m.ort.as_ref(), m.last()),
        );
    }
    s
}

/// onnxruntime on the original LeNet-5: f32 and its own static int8.
pub struct OrtOriginal {
    f32: Result<OrtFigures, String>,
    int8: Result<OrtFigures, String>,
}

/// The side-by-side table of Hasten and onnxruntime on the original
/// LeNet-5 and its int8 forms.
fn ort_table(rows: &[Row], ort: &OrtOriginal, threads: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| model | runtime | test accuracy | latency (batch 1, {threads} threads) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|");
    let figures = |f: &Result<OrtFigures, String>| match f {
        Ok(f) => format!("{:.2} % | {:.3} ms", 100.0 * f.accuracy, f.median_ms),
        Err(e) => format!("fails: {} | —", e.replace('|', "\\|")),
    };
    if let Some(m) = find(rows, "int8 post-training") {
        let _ = writeln!(
            s,
            "| LeNet-5 f32 | Hasten | {:.2} % | {:.3} ms |",
            100.0 * m.accuracy_before,
            m.original_ms
        );
    }
    let _ = writeln!(s, "| LeNet-5 f32 | onnxruntime | {} |", figures(&ort.f32));
    for prefix in ["int8 post-training", "int8 weights QAT"] {
        if let Some(m) = find(rows, prefix) {
            let _ = writeln!(
                s,
                "| {prefix} (Hasten's `Int8Conv`) | Hasten | {:.2} % | {:.3} ms |",
                100.0 * m.last(),
                m.compressed_ms
            );
        }
    }
    let _ = writeln!(
        s,
        "| onnxruntime static int8 (QOperator, min–max on {CALIBRATION} images) | onnxruntime | {} |",
        figures(&ort.int8)
    );
    s
}

/// The measured row whose label starts with `prefix`.
fn find<'a>(rows: &'a [Row], prefix: &str) -> Option<&'a Measured> {
    rows.iter()
        .find(|r| r.label.starts_with(prefix))
        .and_then(|r| r.outcome.as_ref().ok())
}

/// Where the exported models go, when onnxruntime checks them.
fn ort_dir(args: &Args) -> Option<PathBuf> {
    args.ort
        .then(|| std::env::temp_dir().join(format!("hasten-results-{}", std::process::id())))
}

/// Exports the original, quantizes it with onnxruntime, and runs every
/// exported model under onnxruntime; fills each row's `ort`.
fn run_ort(
    dir: &std::path::Path,
    original: &Graph,
    data: &FineTuneData,
    threads: usize,
    measured: Vec<&mut Measured>,
) -> Result<OrtOriginal, Error> {
    let f32_path = dir.join("original.onnx");
    let int8_path = dir.join("original-ort-int8.onnx");
    hasten::onnx::export_file(original, &f32_path)?;
    let quantized = ort::quantize_static(
        &f32_path,
        &data.train.head(CALIBRATION).images().clone(),
        &int8_path,
    );
    let mut models = vec![f32_path.clone()];
    if quantized.is_ok() {
        models.push(int8_path.clone());
    }
    models.extend(measured.iter().filter_map(|m| m.onnx.clone()));
    let figures = ort::evaluate(dir, &data.test, threads, LATENCY_RUNS, &models)?;
    let get = |p: &PathBuf| {
        figures
            .get(p)
            .cloned()
            .unwrap_or_else(|| Err("no answer from ort_eval.py".into()))
    };
    for m in measured {
        if let Some(p) = &m.onnx {
            let f = get(p);
            if let Ok(f) = &f {
                let diff = 100.0 * (f.accuracy - m.last());
                if diff.abs() > MISMATCH_POINTS {
                    eprintln!(
                        "mismatch: {} — onnxruntime {:.2} %, Hasten {:.2} %",
                        p.display(),
                        100.0 * f.accuracy,
                        100.0 * m.last()
                    );
                }
            }
            m.ort = Some(f);
        }
    }
    Ok(OrtOriginal {
        f32: get(&f32_path),
        int8: match quantized {
            Ok(()) => get(&int8_path),
            Err(e) => Err(e.to_string()),
        },
    })
}

/// Whether `label` is selected by `--only`: no filter, or one of its
/// comma-separated substrings is in the label.
fn selected(only: Option<&str>, label: &str) -> bool {
    only.is_none_or(|o| o.split(',').any(|part| label.contains(part)))
}

/// Compresses `graph` by every recipe of `methods` (those whose label
/// contains `only`) and measures each; with `dir`, exports each result
/// there as `{tag}-{i}.onnx` for onnxruntime.
fn compress_rows(
    graph: &Graph,
    methods: &[Method],
    data: &FineTuneData,
    dir: Option<&std::path::Path>,
    tag: &str,
    only: Option<&str>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, method) in methods.iter().enumerate() {
        if !selected(only, method.label) {
            continue;
        }
        let t = Instant::now();
        let cpu = hasten::bench::cpu_seconds(std::process::id());
        let outcome = recipe(method)
            .map_err(|e| e.to_string())
            .and_then(|r| compress(graph, &r, Some(data)).map_err(|e| error_chain(&e)))
            .and_then(|(compressed, report)| {
                let mut m = measure(&report, t.elapsed().as_secs_f64())?;
                m.conv_alone = conv_alone::conv_alone(graph, &compressed)
                    .map_err(|e| format!("timing the decomposed convolutions: {e}"))?;
                if let Some(dir) = dir {
                    let path = dir.join(format!("{tag}-{i}.onnx"));
                    match hasten::onnx::export_file(&compressed, &path) {
                        Ok(()) => m.onnx = Some(path),
                        Err(e) => m.ort = Some(Err(format!("export: {}", error_chain(&e)))),
                    }
                }
                Ok(m)
            });
        match &outcome {
            Ok(m) => {
                // CPU time of this process (not of onnxruntime): the wall
                // time on a machine shared with other busy processes says
                // little.
                let cpu = cpu.zip(hasten::bench::cpu_seconds(std::process::id()));
                let cpu = cpu.map_or(String::new(), |(a, b)| format!(", {:.1} s CPU", b - a));
                eprintln!("{}: done in {:.1} s{cpu}", method.label, m.seconds)
            }
            Err(e) => eprintln!("{}: failed: {e}", method.label),
        }
        rows.push(Row {
            family: method.family,
            label: method.label,
            outcome,
        });
    }
    rows
}

/// `run_ort` where `dir` is given, timed; `None` with a message when
/// onnxruntime cannot run.
fn ort_side(
    dir: Option<&std::path::Path>,
    original: &Graph,
    data: &FineTuneData,
    threads: usize,
    measured: Vec<&mut Measured>,
) -> Option<OrtOriginal> {
    let dir = dir?;
    let t = Instant::now();
    let ort = run_ort(dir, original, data, threads, measured);
    eprintln!("onnxruntime: done in {:.1} s", t.elapsed().as_secs_f64());
    match ort {
        Ok(ort) => Some(ort),
        Err(e) => {
            eprintln!("onnxruntime unavailable: {}", error_chain(e.as_ref()));
            None
        }
    }
}

/// The LeNet-5 / MNIST section: every method, the distillation rows,
/// onnxruntime side by side and the targets.
fn lenet_section(args: &Args, dir: Option<&std::path::Path>) -> Result<String, Error> {
    let start = Instant::now();
    let splits = load_mnist(&args.data)?;
    let mut train = normalized(&splits.train)?;
    if let Some(n) = args.train_samples {
        train = train.head(n);
    }
    let test = normalized(&splits.test)?;
    let graph = trained_lenet5(args, &train, &test)?;
    let data = FineTuneData {
        train: train.head(args.tune_samples),
        test,
    };
    let mut rows = compress_rows(&graph, METHODS, &data, dir, "lenet", args.only.as_deref());
    let mut distilled = match args.only.as_deref() {
        Some(o) if !o.split(',').any(|p| "distillation".contains(p)) => None,
        _ => {
            let t = Instant::now();
            let d = distillation(args, &graph, &train, &data.test)?;
            eprintln!("distillation: done in {:.1} s", t.elapsed().as_secs_f64());
            Some(d)
        }
    };
    let measured = rows
        .iter_mut()
        .filter_map(|r| r.outcome.as_mut().ok())
        .chain(
            distilled
                .iter_mut()
                .flat_map(|d| d.students.iter_mut().map(|(_, m)| m)),
        )
        .collect();
    let ort = ort_side(dir, &graph, &data, args.threads, measured);
    let accuracy = rows
        .iter()
        .find_map(|r| r.outcome.as_ref().ok().map(|m| m.accuracy_before));
    let mut text = format!(
        "LeNet-5 on MNIST, test accuracy {} before compression; fine-tuning: 1 epoch (SGD, momentum 0.9, lr 0.001, batch 64) on the first {} training images (after each step in the gradual combined recipe); CPU: {}; wall time {:.0} s.\n\n",
        accuracy.map_or("-".into(), |a| format!("{:.2} %", 100.0 * a)),
        data.train.labels().len(),
        cpu_model(),
        start.elapsed().as_secs_f64()
    );
    text.push_str(&table(&rows, args.threads));
    if let Some(d) = &distilled {
        text.push_str("\n### Distillation\n\n");
        text.push_str(&distillation_table(d, args.threads));
    }
    if let Some(ort) = &ort {
        text.push_str("\n### Side by side with onnxruntime\n\n");
        text.push_str(&ort_table(&rows, ort, args.threads));
    }
    text.push_str("\n### Targets\n\n");
    text.push_str(&targets::table(&rows, distilled.as_ref(), ort.as_ref()));
    if let Some(path) = &args.svg {
        let mut points: Vec<plot::Point> = rows
            .iter()
            .filter_map(|r| {
                let m = r.outcome.as_ref().ok()?;
                Some(plot::Point {
                    label: r.label.to_string(),
                    speedup: m.latency_speedup,
                    drop: -m.change(),
                })
            })
            .collect();
        if let Some((_, m)) = distilled.as_ref().and_then(|d| d.students.last()) {
            points.push(plot::Point {
                label: "thin student, distilled".into(),
                speedup: m.latency_speedup,
                drop: -m.change(),
            });
        }
        plot::write_svg(path, &points, args.threads)?;
    }
    Ok(text)
}

fn run(args: &Args) -> Result<(), Error> {
    let dir = ort_dir(args);
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::new();
    if args.lenet {
        let section = lenet_section(args, dir.as_deref());
        text.push_str(&section?);
    }
    for (network, model) in &args.fashion {
        if !text.is_empty() {
            text.push('\n');
        }
        let section = fashion::section(args, network, model, dir.as_deref());
        text.push_str(&section?);
    }
    if args.efficientnet {
        if !text.is_empty() {
            text.push('\n');
        }
        let section = efficientnet::section(args, dir.as_deref());
        text.push_str(&section?);
    }
    if let Some(dir) = &dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    print!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text)?;
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
    let args = match frame::parsed("results", parse()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.lenet && frame::data_missing("MNIST", &args.data) {
        return ExitCode::SUCCESS;
    }
    let result = with_threads(args.threads, || {
        run(&args).map_err(|e| error_chain(e.as_ref()))
    });
    frame::exit_code("results", result)
}

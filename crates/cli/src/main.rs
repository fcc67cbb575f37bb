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
//!
//! Failures print one line, `hasten: <error>: <cause>: …`, and exit with
//! status 1; usage errors exit with status 2.

use std::error::Error as StdError;
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hasten::bench::{cpu_model, measure, with_threads};
use hasten_core::ndarray::{Array4, Axis, Ix4};
use hasten_core::{ActShape, Graph, SeededRng};
use hasten_fastconv::{Plan, PlanOptions};
use hasten_onnx::ImportOptions;
use hasten_train::data::ImageSet;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

type Result<T> = std::result::Result<T, Box<dyn StdError + Send + Sync>>;

/// A failure with a message and an optional cause.
#[derive(Debug)]
struct Failure {
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

fn fail(message: impl Into<String>) -> Box<dyn StdError + Send + Sync> {
    Box::new(Failure {
        message: message.into(),
        source: None,
    })
}

/// Wraps an error with what was being done.
trait Context<T> {
    fn context(self, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: StdError + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| {
            Box::new(Failure {
                message: message(),
                source: Some(Box::new(e)),
            }) as Box<dyn StdError + Send + Sync>
        })
    }
}

#[derive(Parser)]
#[command(
    name = "hasten",
    version,
    about = "Inspect, run, benchmark and evaluate CNNs on Hasten's fast kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// An .onnx file or a built-in architecture (lenet5, resnet18, …).
    model: String,
    /// Trained weights (safetensors, npy or npz, PyTorch state_dict names).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
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
    }
}

/// Where a model comes from.
enum Source {
    Onnx(PathBuf),
    Builtin(&'static hasten_models::Architecture),
}

fn source(model: &str) -> Result<Source> {
    let path = Path::new(model);
    if path.is_file() {
        return Ok(Source::Onnx(path.to_path_buf()));
    }
    if let Some(arch) = hasten_models::architecture(model) {
        return Ok(Source::Builtin(arch));
    }
    let known: Vec<&str> = hasten_models::ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect();
    if path.extension().is_some() || model.contains(std::path::MAIN_SEPARATOR) {
        Err(fail(format!("{model}: no such file")))
    } else {
        Err(fail(format!(
            "{model}: neither a file nor a built-in architecture ({})",
            known.join(", ")
        )))
    }
}

/// Loads the model; `batch` is the batch size ONNX shapes are folded for.
fn load(args: &ModelArgs, batch: usize) -> Result<Graph> {
    let mut graph = match source(&args.model)? {
        Source::Onnx(path) => hasten_onnx::import_file(
            &path,
            &ImportOptions::default().with_batch_size(batch.max(1)),
        )
        .context(|| format!("cannot import {}", path.display()))?,
        Source::Builtin(arch) => (arch.build)(&(arch.default_config)())
            .context(|| format!("cannot build {}", arch.name))?,
    };
    if let Some(w) = &args.weights {
        hasten_onnx::weights::load_weights(&mut graph, w)
            .context(|| format!("cannot load weights {}", w.display()))?;
    }
    Ok(graph)
}

fn single_input(graph: &Graph) -> Result<ActShape> {
    match graph.inputs() {
        [one] => Ok(one.shape()),
        many => Err(fail(format!(
            "the model has {} inputs; this command takes models with one",
            many.len()
        ))),
    }
}

fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(fail("--batch must be at least 1"));
    }
    Ok(())
}

fn compile(graph: &Graph, batch: usize) -> Result<Plan> {
    Plan::for_graph(graph, batch, PlanOptions::default())
        .context(|| format!("cannot compile a plan for batch {batch}"))
}

fn inspect(args: &ModelArgs, plan: bool, batch: usize) -> Result<()> {
    check_batch(batch)?;
    let graph = load(args, batch)?;
    let summary = graph.summary().context(|| "cannot cost the graph".into())?;
    let inputs: Vec<String> = graph
        .inputs()
        .iter()
        .map(|i| format!("{} {}", i.name(), i.shape()))
        .collect();
    let outputs: Vec<String> = graph
        .output_shapes()
        .iter()
        .map(|s| s.to_string())
        .collect();
    println!(
        "model: {} ({} nodes; inputs: {}; outputs: {})",
        args.model,
        graph.nodes().len(),
        inputs.join(", "),
        outputs.join(", ")
    );
    println!("{summary}");
    if plan {
        let plan = compile(&graph, batch)?;
        println!();
        print!("{plan}");
    }
    Ok(())
}

fn read_input(path: &Path) -> Result<Array4<f32>> {
    let bytes = std::fs::read(path).context(|| format!("cannot read {}", path.display()))?;
    let array = hasten_onnx::weights::read_npy(&bytes)
        .context(|| format!("cannot read {}", path.display()))?;
    let shape = array.shape().to_vec();
    array.into_dimensionality::<Ix4>().map_err(|_| {
        fail(format!(
            "{}: shape {shape:?} is not an N×C×H×W batch",
            path.display()
        ))
    })
}

fn check_shape(expected: ActShape, got: &[usize], what: &str) -> Result<()> {
    if got[1..] != [expected.channels, expected.height, expected.width] {
        return Err(fail(format!(
            "{what}: samples are {}×{}×{}, the model takes {expected}",
            got[1], got[2], got[3]
        )));
    }
    if got[0] == 0 {
        return Err(fail(format!("{what}: the batch is empty")));
    }
    Ok(())
}

fn run_model(args: &ModelArgs, input: &Path, output: &Path) -> Result<()> {
    let x = read_input(input)?;
    let graph = load(args, x.shape()[0])?;
    let shape = single_input(&graph)?;
    check_shape(shape, x.shape(), &input.display().to_string())?;
    let mut plan = compile(&graph, x.shape()[0])?;
    let y = {
        let outputs = plan
            .run_all(&[&x])
            .context(|| "running the plan failed".into())?;
        outputs
            .get(0)
            .ok_or_else(|| fail("the model has no outputs"))?
            .to_owned()
    };
    let bytes = hasten_onnx::weights::write_npy(&y.into_dyn())
        .context(|| "cannot encode the output".into())?;
    std::fs::write(output, bytes).context(|| format!("cannot write {}", output.display()))?;
    let s = plan.output_shape();
    println!("wrote {} ({} × {})", output.display(), plan.batch(), s);
    Ok(())
}

fn bench(
    args: &ModelArgs,
    batch: usize,
    threads: Option<usize>,
    runs: usize,
    compare_ort: bool,
) -> Result<()> {
    check_batch(batch)?;
    let threads = match threads {
        Some(0) => return Err(fail("--threads must be at least 1")),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let graph = load(args, batch)?;
    let shape = single_input(&graph)?;
    let x: Array4<f32> =
        SeededRng::new(0).normal_array((batch, shape.channels, shape.height, shape.width), 1.0);
    let mut plan = compile(&graph, batch)?;
    let isa = plan.isa();
    let (latency, error) = with_threads(threads, || {
        let mut error = None;
        let latency = measure(
            || {
                if let Err(e) = plan.run_all(&[&x]) {
                    error.get_or_insert(e);
                }
            },
            runs.max(1),
            Duration::ZERO,
        );
        (latency, error)
    });
    if let Some(e) = error {
        return Err(Box::new(Failure {
            message: "running the plan failed".into(),
            source: Some(Box::new(e)),
        }));
    }
    println!(
        "model: {}, batch {batch}, {threads} threads, input {shape}",
        args.model
    );
    println!("cpu: {}, isa: {isa}", cpu_model());
    println!(
        "hasten: median {:.3} ms, min {:.3} ms, {} runs",
        latency.median_ms(),
        latency.min * 1e3,
        latency.runs
    );
    if compare_ort {
        match ort_median(args, &graph, batch, shape, threads, runs.max(1)) {
            Ok(ort) => {
                println!("onnxruntime: median {ort:.3} ms");
                println!(
                    "ratio (onnxruntime / hasten): {:.2}×",
                    ort / latency.median_ms()
                );
            }
            Err(e) => println!("onnxruntime: unavailable ({e})"),
        }
    }
    Ok(())
}

/// The repository root, where `scripts/ort_bench.py` and `.venv` live.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HASTEN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Removes a temporary file when dropped.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Times onnxruntime on the model's ONNX form; the median in ms.
fn ort_median(
    args: &ModelArgs,
    graph: &Graph,
    batch: usize,
    shape: ActShape,
    threads: usize,
    runs: usize,
) -> Result<f64> {
    let mut temp = TempFile(None);
    let onnx = match source(&args.model)? {
        Source::Onnx(p) if args.weights.is_none() => p,
        _ => {
            let p = std::env::temp_dir().join(format!("hasten-bench-{}.onnx", std::process::id()));
            hasten_onnx::export_file(graph, &p).context(|| "cannot export to ONNX".into())?;
            temp.0 = Some(p.clone());
            p
        }
    };
    let script = repo_root().join("scripts/ort_bench.py");
    let python = python();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&onnx)
        .args(
            [
                batch,
                shape.channels,
                shape.height,
                shape.width,
                threads,
                runs,
            ]
            .map(|v| v.to_string()),
        )
        .output()
        .context(|| format!("cannot start {}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(fail(format!(
            "ort_bench.py exited with {}: {last}",
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("median_ms="))
        .and_then(|m| m.parse::<f64>().ok())
        .ok_or_else(|| {
            fail(format!(
                "unexpected output from the script: {}",
                text.trim()
            ))
        })
}

/// The file `dir/name`, or `dir/name.gz` when only that exists.
fn idx_path(dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if !raw.exists() && gz.exists() {
        gz
    } else {
        raw
    }
}

fn eval(
    args: &ModelArgs,
    dir: &Path,
    mean: f32,
    std: f32,
    batch: usize,
    limit: Option<usize>,
) -> Result<()> {
    check_batch(batch)?;
    if !(std.is_finite() && std > 0.0 && mean.is_finite()) {
        return Err(fail(format!(
            "--mean {mean} --std {std}: need a finite mean and a positive std"
        )));
    }
    if limit == Some(0) {
        return Err(fail("--limit must be at least 1"));
    }
    if !dir.is_dir() {
        return Err(fail(format!("{}: no such directory", dir.display())));
    }
    let graph = load(args, batch)?;
    let shape = single_input(&graph)?;
    let classes = graph
        .output_shapes()
        .first()
        .map(|s| s.channels * s.height * s.width)
        .ok_or_else(|| fail("the model has no outputs"))?;
    let mut set = ImageSet::from_idx_files(
        &idx_path(dir, "t10k-images-idx3-ubyte"),
        &idx_path(dir, "t10k-labels-idx1-ubyte"),
        classes,
    )
    .context(|| format!("cannot load the test set in {}", dir.display()))?;
    if let Some(k) = limit {
        set = set.head(k);
    }
    let images = set.images();
    check_shape(shape, images.shape(), "the test images")?;
    let n = images.shape()[0];
    let full = batch.min(n);
    let mut plan = compile(&graph, full)?;
    let mut tail_plan = None;
    let bar = ProgressBar::new(n as u64);
    if !std::io::stdout().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} images {elapsed}") {
        bar.set_style(style);
    }
    let mut correct = 0usize;
    for (k, chunk) in images.axis_chunks_iter(Axis(0), full).enumerate() {
        let x = chunk.mapv(|v| (v - mean) / std);
        let m = x.shape()[0];
        let p = if m == full {
            &mut plan
        } else {
            tail_plan.get_or_insert(compile(&graph, m)?)
        };
        let outputs = p
            .run_all(&[&x])
            .context(|| "running the plan failed".into())?;
        let y = outputs
            .get(0)
            .ok_or_else(|| fail("the model has no outputs"))?;
        for (i, row) in y.outer_iter().enumerate() {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (j, &v)| {
                        if v > acc.1 {
                            (j, v)
                        } else {
                            acc
                        }
                    },
                )
                .0;
            if best == set.labels()[k * full + i] {
                correct += 1;
            }
        }
        bar.inc(m as u64);
    }
    bar.finish_and_clear();
    println!(
        "accuracy: {:.2} % ({correct}/{n})",
        100.0 * correct as f64 / n as f64
    );
    Ok(())
}

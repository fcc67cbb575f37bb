//! The EfficientNet-Lite0 section (`--efficientnet`): the ImageNet-pretrained
//! model of `shared/models/efficientnet_lite0` (`HASTEN_MODELS_DIR`, default
//! `<workspace>/../shared/models`), imported, run as a fast plan on its 20
//! photos, and compressed through `hasten::pipeline` with no fine-tuning
//! (there is no ImageNet training set here): int8 post-training
//! quantization (survey section 5) calibrated on photos 0–9 — the
//! pointwise, dense and linear layers, and, as a second version, the
//! depthwise ones too — and dependency-aware filter pruning (survey section
//! 6.1, L1 criterion eq. (14)) of 10 % and 25 % of the MACs, with and
//! without the removed channels' means put back (`compensate`), and by
//! activation energy (eq. (15)) at 10 %. Each version:
//! MACs, weight bytes, batch-1 latency (medians over alternating rounds in
//! this process), and agreement with the original on the photos; then, in
//! a child process, onnxruntime on every exported version and on its own
//! static int8 quantization of the original, calibrated on the same photos.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hasten::bench::{cpu_model, cpu_seconds};
use hasten::core::ndarray::{s, Array2, Array4, Ix2};
use hasten::core::{relative_error, Graph};
use hasten::fastconv::{Plan, PlanOptions};
use hasten::onnx::weights::read_npy;
use hasten::onnx::{import_file, ImportOptions};
use hasten::pipeline::{compress_calibrated, Recipe};

use crate::efficientnet_photos::{layers, model_dir, Photos};
use crate::{error_chain, ort, Args, Error};

/// The photos the int8 versions (Hasten's and onnxruntime's) are calibrated
/// on, and the pruning's activation energies and channel means measured on;
/// the others are held out.
const CALIBRATION: Range<usize> = 0..10;

/// Alternating timing rounds, and batch-1 runs of each version per round.
const ROUNDS: usize = 25;
const RUNS_PER_ROUND: usize = 4;

/// onnxruntime's timed batch-1 runs per model.
const ORT_RUNS: usize = 100;

/// One version of the network.
struct Version {
    label: &'static str,
    graph: Graph,
    /// What the compression did, for the notes.
    note: String,
    /// Seconds the compression took.
    seconds: f64,
}

/// The classes of `row` by decreasing logit.
fn ranking(row: hasten::core::ndarray::ArrayView1<f32>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    order
}

/// How a version's logits agree with the original's and the labels.
#[derive(Clone, Copy)]
struct Agreement {
    /// Photos whose top-1 class equals the original's: all, held out.
    same_top1: usize,
    same_top1_held_out: usize,
    /// Photos whose label is the top-1 / among the top-5.
    top1: usize,
    top5: usize,
    /// Mean and largest `‖y − y₀‖ / ‖y₀‖` over the photos.
    mean_error: f64,
    max_error: f64,
}

/// `logits` (one row per photo) against `original`'s and `labels`.
fn agreement(original: &Array2<f32>, logits: &Array2<f32>, labels: &[usize]) -> Agreement {
    let mut a = Agreement {
        same_top1: 0,
        same_top1_held_out: 0,
        top1: 0,
        top5: 0,
        mean_error: 0.0,
        max_error: 0.0,
    };
    for (i, &label) in labels.iter().enumerate() {
        let (y0, y) = (original.row(i), logits.row(i));
        let order = ranking(y);
        let same = order[0] == ranking(y0)[0];
        a.same_top1 += usize::from(same);
        a.same_top1_held_out += usize::from(same && !CALIBRATION.contains(&i));
        a.top1 += usize::from(order[0] == label);
        a.top5 += usize::from(order[..5].contains(&label));
        let e = relative_error(&y0, &y);
        a.mean_error += e / labels.len() as f64;
        a.max_error = a.max_error.max(e);
    }
    a
}

/// A batch-1 fast plan of `graph` and its logits on every photo.
fn run_plan(graph: &Graph, photos: &Photos) -> Result<(Plan, Array2<f32>), Error> {
    let mut plan = Plan::for_graph(graph, 1, PlanOptions::default())?;
    let mut logits = Vec::with_capacity(photos.len());
    for i in 0..photos.len() {
        let x = photos.inputs.slice(s![i..i + 1, .., .., ..]).to_owned();
        let y = plan.run(&x)?;
        logits.push(y.iter().copied().collect::<Vec<f32>>());
    }
    let classes = logits.first().map_or(0, Vec::len);
    Ok((
        plan,
        Array2::from_shape_vec((photos.len(), classes), logits.concat())?,
    ))
}

/// Batch-1 latency of each plan: `ROUNDS` rounds, each running every plan
/// `RUNS_PER_ROUND` times in turn, so that the machine's load falls on all
/// alike. Per plan: the median wall-clock ms of a run, and the process CPU
/// ms per run divided by `threads` (the time with the cores to itself;
/// `None` where the platform does not report CPU time).
fn latencies(
    plans: &mut [Plan],
    x: &Array4<f32>,
    threads: usize,
) -> Result<Vec<(f64, Option<f64>)>, Error> {
    let pid = std::process::id();
    let mut wall = vec![Vec::new(); plans.len()];
    let mut cpu = vec![Some(0.0); plans.len()];
    for plan in plans.iter_mut() {
        plan.run(x)?;
    }
    for _ in 0..ROUNDS {
        for (k, plan) in plans.iter_mut().enumerate() {
            let c0 = cpu_seconds(pid);
            for _ in 0..RUNS_PER_ROUND {
                let t = Instant::now();
                plan.run(x)?;
                wall[k].push(t.elapsed().as_secs_f64());
            }
            cpu[k] = match (cpu[k], c0, cpu_seconds(pid)) {
                (Some(sum), Some(a), Some(b)) => Some(sum + b - a),
                _ => None,
            };
        }
    }
    let runs = (ROUNDS * RUNS_PER_ROUND) as f64;
    Ok(wall
        .into_iter()
        .zip(cpu)
        .map(|(mut w, c)| {
            w.sort_by(f64::total_cmp);
            (
                1e3 * w[w.len() / 2],
                c.map(|c| 1e3 * c / runs / threads as f64),
            )
        })
        .collect())
}

/// `graph` compressed by the one-step recipe `method` on the nodes
/// `names` (all convolution and linear layers when empty), with no
/// fine-tuning and no timing, calibrated on `calibration`.
fn compressed(
    graph: &Graph,
    label: &'static str,
    method: &str,
    names: Vec<String>,
    calibration: &Array4<f32>,
) -> Result<Version, Error> {
    let t = Instant::now();
    let mut recipe = Recipe::from_toml(&format!(
        "latency = {{ batches = [] }}\n[[steps]]\nmethod = {method}\n"
    ))?;
    recipe.steps[0].select.names = names;
    let (small, report) = compress_calibrated(graph, &recipe, None, Some(calibration))
        .map_err(|e| format!("{label}: {}", error_chain(&e)))?;
    let mut note = format!(
        "{} nodes changed, {} selected nodes skipped",
        report.nodes.len(),
        report.steps.iter().map(|s| s.skipped.len()).sum::<usize>()
    );
    for n in &report.notes {
        let _ = write!(note, "; {n}");
    }
    Ok(Version {
        label,
        graph: small,
        note,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// What onnxruntime measured of one model: its logits on the photos and
/// its median batch-1 latency.
type OrtResult = Result<(Array2<f32>, f64), String>;

/// Runs `models` under onnxruntime on the photos (`scripts/ort_logits.py`).
fn run_ort(
    dir: &Path,
    photos: &Photos,
    threads: usize,
    models: &[PathBuf],
) -> Result<HashMap<PathBuf, OrtResult>, Error> {
    let images = dir.join("effnet-photos.npy");
    ort::write(&images, photos.inputs.clone().into_dyn())?;
    let (threads, runs) = (
        PathBuf::from(threads.to_string()),
        PathBuf::from(ORT_RUNS.to_string()),
    );
    let mut args: Vec<&Path> = vec![&images, &threads, &runs];
    args.extend(models.iter().map(PathBuf::as_path));
    let text = ort::script("ort_logits.py", &args)?;
    Ok(ort::per_model(&text, |line| {
        let (path, ms) = (
            ort::field(line, "logits=")?,
            ort::field(line, "median_ms=")?,
        );
        Some(
            std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| read_npy(&b).map_err(|e| e.to_string()))
                .and_then(|a| a.into_dimensionality::<Ix2>().map_err(|e| e.to_string()))
                .and_then(|a| Ok((a, ms.parse::<f64>().map_err(|e| e.to_string())?))),
        )
    }))
}

/// The agreement cells: same top-1 as the original (all, held out), top-1
/// and top-5 against the labels, mean / max relative logit error.
fn cells(a: &Agreement, n: usize) -> String {
    format!(
        "{}/{n} ({}/{}) | {}/{n} | {}/{n} | {:.2e} / {:.2e}",
        a.same_top1,
        a.same_top1_held_out,
        n - CALIBRATION.len(),
        a.top1,
        a.top5,
        a.mean_error,
        a.max_error
    )
}

/// The section's markdown, or a line saying why it was skipped.
pub fn section(args: &Args, dir: Option<&Path>) -> Result<String, Error> {
    let start = Instant::now();
    let folder = model_dir();
    if !folder.join("model.onnx").exists() {
        let line = format!(
            "EfficientNet-Lite0 not found in {} (set HASTEN_MODELS_DIR): section skipped",
            folder.display()
        );
        eprintln!("{line}");
        return Ok(format!(
            "## EfficientNet-Lite0 (ImageNet, 20 photos)\n\n{line}.\n"
        ));
    }
    let photos = Photos::load(&folder)?;
    let n = photos.len();
    let graph = import_file(folder.join("model.onnx"), &ImportOptions::default())?;
    let calibration = photos.inputs.slice(s![CALIBRATION, .., .., ..]).to_owned();
    let (depthwise, other) = layers(&graph);
    let int8 = r#"{ name = "int8", granularity = "per-channel" }"#;
    let prune = |f: f64, criterion: &str, compensate: bool| {
        format!(
            r#"{{ name = "prune-channels", target = "macs", fraction = {f}, multiple = 8, criterion = "{criterion}", compensate = {compensate} }}"#
        )
    };
    let mut versions = vec![Version {
        label: "original (f32)",
        graph: graph.clone(),
        note: String::new(),
        seconds: 0.0,
    }];
    let all: Vec<String> = depthwise.iter().chain(&other).cloned().collect();
    for (label, method, names) in [
        ("int8, depthwise in f32", int8.to_string(), other.clone()),
        ("int8, depthwise too", int8.to_string(), all),
        (
            "filter pruning (L1), 10 % of the MACs",
            prune(0.10, "l1", false),
            Vec::new(),
        ),
        (
            "filter pruning (L1), 10 % of the MACs, means put back",
            prune(0.10, "l1", true),
            Vec::new(),
        ),
        (
            "filter pruning (L1), 25 % of the MACs",
            prune(0.25, "l1", false),
            Vec::new(),
        ),
        (
            "filter pruning (L1), 25 % of the MACs, means put back",
            prune(0.25, "l1", true),
            Vec::new(),
        ),
        (
            "channel pruning (activation energy), 10 % of the MACs, means put back",
            prune(0.10, "energy", true),
            Vec::new(),
        ),
    ] {
        match compressed(&graph, label, &method, names, &calibration) {
            Ok(v) => {
                eprintln!("{label}: done in {:.1} s", v.seconds);
                versions.push(v);
            }
            Err(e) => eprintln!("{label}: failed: {e}"),
        }
    }
    let mut plans = Vec::new();
    let mut logits = Vec::new();
    for v in &versions {
        let (plan, y) = run_plan(&v.graph, &photos)?;
        plans.push(plan);
        logits.push(y);
    }
    let x = photos.inputs.slice(s![0..1, .., .., ..]).to_owned();
    let timing = latencies(&mut plans, &x, args.threads)?;
    let original = &logits[0];

    // onnxruntime: every version exported, and its own int8 of the original.
    let mut ort_rows: Vec<(String, PathBuf, Option<usize>)> = Vec::new();
    let mut ort_note = None;
    if let Some(dir) = dir {
        for (k, v) in versions.iter().enumerate() {
            let path = dir.join(format!("effnet-{k}.onnx"));
            match hasten::onnx::export_file(&v.graph, &path) {
                Ok(()) => ort_rows.push((format!("{} (Hasten's export)", v.label), path, Some(k))),
                Err(e) => eprintln!("{}: export failed: {}", v.label, error_chain(&e)),
            }
        }
        if let Some((_, f32_path, _)) = ort_rows.first().cloned() {
            let q = dir.join("effnet-ort-int8.onnx");
            match ort::quantize_static(&f32_path, &calibration, &q) {
                Ok(()) => ort_rows.push((
                    format!(
                        "onnxruntime static int8 (QOperator, min–max on photos {}–{})",
                        CALIBRATION.start,
                        CALIBRATION.end - 1
                    ),
                    q,
                    None,
                )),
                Err(e) => ort_note = Some(format!("onnxruntime's quantization failed: {e}")),
            }
        }
    }
    let models: Vec<PathBuf> = ort_rows.iter().map(|(_, p, _)| p.clone()).collect();
    let ort = match dir {
        Some(dir) if !models.is_empty() => match run_ort(dir, &photos, args.threads, &models) {
            Ok(m) => m,
            Err(e) => {
                ort_note = Some(format!(
                    "onnxruntime unavailable: {}",
                    error_chain(e.as_ref())
                ));
                HashMap::new()
            }
        },
        _ => HashMap::new(),
    };

    let reference = agreement(&photos.logits, original, &photos.labels);
    let mut text = format!(
        "## EfficientNet-Lite0 (ImageNet, 20 photos)\n\n\
         EfficientNet-Lite0 (ImageNet-pretrained, ReLU6, batch norm folded; `shared/models/efficientnet_lite0`) imported from ONNX and run as a Hasten fast plan on its 20 photos: top-1 {}/{n}, top-5 {}/{n} against the labels (the model's own figures: 18/20, 19/20); relative error of the logits against the original framework's `logits.npy`: mean {:.2e}, max {:.2e}. \
         No fine-tuning (no ImageNet training set here): every version is the transform alone. \
         Int8: post-training, per-channel weights, u8 activations with min–max ranges calibrated on photos {}–{} (onnxruntime's static int8 on the same photos); \"held out\" counts photos {}–{} only. \
         Pruning: dependency-aware filter pruning of the whole graph (channels tied by residual `Add`s and depthwise convolutions pruned together), L1 norm of the filters (or the activation energy of the channels on photos 0–9, eq. (15)), kept counts multiples of 8; \"means put back\": each removed channel replaced by its mean on photos {}–{} (its consumers' biases absorb it, `compensate = true`). \
         Latency: batch 1, {} threads, median of {} runs in {ROUNDS} alternating rounds of {RUNS_PER_ROUND} runs per version in one process; CPU ms: process CPU time per run ÷ threads. CPU: {}; wall time {:.0} s.\n\n",
        reference.top1,
        reference.top5,
        reference.mean_error,
        reference.max_error,
        CALIBRATION.start,
        CALIBRATION.end - 1,
        CALIBRATION.end,
        n - 1,
        CALIBRATION.start,
        CALIBRATION.end - 1,
        args.threads,
        ROUNDS * RUNS_PER_ROUND,
        cpu_model(),
        start.elapsed().as_secs_f64(),
    );
    let _ = writeln!(
        text,
        "| version | MACs (M) | weights (MiB) | Hasten latency (ms) | CPU ms | same top-1 as original (held out) | top-1 vs labels | top-5 vs labels | logit error vs original, mean / max |"
    );
    let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (k, v) in versions.iter().enumerate() {
        let cost = v.graph.cost()?;
        let a = agreement(original, &logits[k], &photos.labels);
        let _ = writeln!(
            text,
            "| {} | {:.1} | {:.2} | {:.2} | {} | {} |",
            v.label,
            cost.macs as f64 / 1e6,
            cost.weight_bytes as f64 / (1024.0 * 1024.0),
            timing[k].0,
            timing[k].1.map_or("—".into(), |c| format!("{c:.2}")),
            cells(&a, n),
        );
    }
    if !ort_rows.is_empty() || ort_note.is_some() {
        let _ = writeln!(
            text,
            "\nonnxruntime ({} intra-op threads, batch 1, median of {ORT_RUNS} runs), agreement against Hasten's original:\n",
            args.threads
        );
        let _ = writeln!(
            text,
            "| model under onnxruntime | latency (ms) | same top-1 as original (held out) | top-1 vs labels | top-5 vs labels | logit error vs original, mean / max | max error vs Hasten on the same graph |"
        );
        let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|---:|");
        for (label, path, k) in &ort_rows {
            match ort.get(path) {
                Some(Ok((y, ms))) => {
                    let a = agreement(original, y, &photos.labels);
                    let own = k.map_or("—".into(), |k| {
                        format!("{:.2e}", agreement(&logits[k], y, &photos.labels).max_error)
                    });
                    let _ = writeln!(text, "| {label} | {ms:.2} | {} | {own} |", cells(&a, n));
                }
                Some(Err(e)) => {
                    let _ = writeln!(
                        text,
                        "| {label} | fails: {} | | | | | |",
                        e.replace('|', "\\|")
                    );
                }
                None => {
                    let _ = writeln!(text, "| {label} | not run | | | | | |");
                }
            }
        }
        if let Some(note) = &ort_note {
            let _ = writeln!(text, "\n{note}.");
        }
    }
    let _ = writeln!(
        text,
        "\nThe versions: {} depthwise and {} other convolution / linear layers in the original.",
        depthwise.len(),
        other.len()
    );
    for v in versions.iter().skip(1) {
        let _ = writeln!(
            text,
            "- {}: {} (compressed in {:.1} s).",
            v.label, v.note, v.seconds
        );
    }
    let _ = writeln!(
        text,
        "\nPer photo (original, Hasten fast plan):\n\n| photo | label | top-1 | label in top-5 | logit error vs `logits.npy` |\n|---:|---:|---:|:---:|---:|"
    );
    for i in 0..n {
        let order = ranking(original.row(i));
        let _ = writeln!(
            text,
            "| {i} | {} | {} | {} | {:.2e} |",
            photos.labels[i],
            order[0],
            if order[..5].contains(&photos.labels[i]) {
                "yes"
            } else {
                "no"
            },
            relative_error(&photos.logits.row(i), &original.row(i))
        );
    }
    Ok(text)
}

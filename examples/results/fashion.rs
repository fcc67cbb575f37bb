//! The Fashion-MNIST sections, one per network that
//! `examples/train_fashion.rs --model … --save` trained, loaded from its
//! ONNX file: the small ResNet (ResNet-8) compressed by the convolution
//! methods, int8, filter pruning and the combined recipe of
//! `recipes/resnet8-combined.toml`; the small VGG and the small MobileNet by
//! the recipes of [`crate::fashion_nets`]; each row fine-tuned one epoch on
//! a slice (post-training int8: not at all), with onnxruntime's f32 and
//! static int8 latency of the original in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hasten::bench::cpu_model;
use hasten::onnx::{import_file, ImportOptions};
use hasten::pipeline::FineTuneData;
use hasten::train::data::{load_mnist, mnist_present};

use crate::fashion_nets::{self, FINE_TUNE, STRONG_CP, STRONG_TUCKER};
use crate::targets::{low_rank_line, row_line};
use crate::{compress_rows, find, ort_side, table, Args, Error, Method, OrtOriginal, Row};

/// CP three-way (1×1, 3×3 depthwise, 1×1) at 4× fewer MACs on each residual
/// 3×3 convolution: the step of the ResNet-8 rows at 4×.
const RESIDUAL_CP_4X: &str = r#"select = { names = ["layer*.conv*"] }
method = { name = "cp", rank = { speedup = 4.0 }, form = "three-way" }"#;

/// Fashion-MNIST's training-set pixel mean and standard deviation (as
/// `examples/train_fashion.rs` normalises).
const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;

/// The recipes of the ResNet-8 rows; the last is the repository's combined
/// recipe file, whole.
const METHODS: &[Method] = &[
    Method {
        family: "low rank",
        label: "Tucker-2, residual 3x3 convs (2x fewer MACs each)",
        steps: r#"select = { names = ["layer*.conv*"] }
method = { name = "tucker2", rank = { speedup = 2.0 } }"#,
        header: FINE_TUNE,
    },
    Method {
        family: "low rank",
        label: "CP, residual 3x3 convs (2x fewer MACs each)",
        steps: r#"select = { names = ["layer*.conv*"] }
method = { name = "cp", rank = { speedup = 2.0 } }"#,
        header: FINE_TUNE,
    },
    Method {
        family: "low rank",
        label: "CP, residual 3x3 convs (2x fewer MACs each), factors fine-tuned at 0.1× the rate",
        steps: r#"select = { names = ["layer*.conv*"] }
method = { name = "cp", rank = { speedup = 2.0 } }"#,
        header: Some("fine_tune = { epochs = 1, lr = 0.001, batch = 64, factor_lr_scale = 0.1 }"),
    },
    Method {
        family: "low rank",
        label: "CP three-way (1x1, 3x3 depthwise, 1x1) at 4x fewer MACs per residual 3x3 conv, factors at 0.1× the rate, distilled",
        steps: RESIDUAL_CP_4X,
        header: Some(STRONG_CP),
    },
    Method {
        family: "low rank",
        label: "CP three-way at 4x fewer MACs per residual 3x3 conv, lr 0.01, factors at 0.1× the rate, distilled",
        steps: RESIDUAL_CP_4X,
        header: Some("fine_tune = { epochs = 1, lr = 0.01, batch = 64, factor_lr_scale = 0.1, distill = { temperature = 4.0, weight = 0.5 } }"),
    },
    Method {
        family: "low rank",
        label: "CP three-way at 4x fewer MACs per residual 3x3 conv, two epochs, factors at 0.1× the rate, distilled",
        steps: RESIDUAL_CP_4X,
        header: Some("fine_tune = { epochs = 2, lr = 0.001, batch = 64, factor_lr_scale = 0.1, distill = { temperature = 4.0, weight = 0.5 } }"),
    },
    Method {
        family: "low rank",
        label: "Tucker-2 at 4x fewer MACs per residual 3x3 conv, distilled",
        steps: r#"select = { names = ["layer*.conv*"] }
method = { name = "tucker2", rank = { speedup = 4.0 } }"#,
        header: Some(STRONG_TUCKER),
    },
    Method {
        family: "quantization",
        label: "int8 post-training (calibrated)",
        steps: r#"method = { name = "int8", granularity = "per-channel" }"#,
        header: FINE_TUNE,
    },
    Method {
        family: "pruning",
        label: "filter pruning (L1), half the MACs",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "l1" }"#,
        header: FINE_TUNE,
    },
    Method {
        family: "combined",
        label: "recipes/resnet8-combined.toml (prune → Tucker-2 → int8, distilled)",
        steps: "",
        header: Some(include_str!("../../recipes/resnet8-combined.toml")),
    },
];

/// A network of the section: the architecture's name (as
/// `hasten::models::by_name` and `--fashion ARCH=MODEL.onnx` spell it), its
/// title and the recipes of its rows.
pub struct Network {
    arch: &'static str,
    title: &'static str,
    methods: &'static [Method],
}

/// The networks `train_fashion --model` trains.
const NETWORKS: [Network; 3] = [
    Network {
        arch: "resnet8",
        title: "ResNet-8",
        methods: METHODS,
    },
    Network {
        arch: "small_vgg",
        title: "Small VGG",
        methods: fashion_nets::VGG,
    },
    Network {
        arch: "small_mobilenet",
        title: "Small MobileNet",
        methods: fashion_nets::MOBILENET,
    },
];

/// `--fashion`'s value, `[ARCH=]MODEL.onnx` (ResNet-8 without `ARCH=`):
/// the network and its file.
///
/// # Errors
/// An unknown `ARCH`.
pub fn parse_model(value: &str) -> Result<(&'static Network, PathBuf), String> {
    match value.split_once('=') {
        Some((arch, path)) => NETWORKS
            .iter()
            .find(|n| n.arch == arch)
            .map(|n| (n, PathBuf::from(path)))
            .ok_or_else(|| {
                let known: Vec<&str> = NETWORKS.iter().map(|n| n.arch).collect();
                format!("--fashion: `{arch}` is not one of {}", known.join(", "))
            }),
        None => Ok((&NETWORKS[0], PathBuf::from(value))),
    }
}

/// The side-by-side latency table of the original and its compressed forms.
fn ort_table(title: &str, rows: &[Row], ort: &OrtOriginal, threads: usize) -> String {
    let mut s = format!(
        "| model | runtime | test accuracy | latency (batch 1, {threads} threads) |\n|---|---|---:|---:|\n"
    );
    if let Some(m) = rows.iter().find_map(|r| r.outcome.as_ref().ok()) {
        let _ = writeln!(
            s,
            "| {title} f32 | Hasten | {:.2} % | {:.3} ms |",
            100.0 * m.accuracy_before,
            m.original_ms
        );
    }
    for (what, f) in [("f32", &ort.f32), ("static int8 (QOperator)", &ort.int8)] {
        let _ = match f {
            Ok(f) => writeln!(
                s,
                "| {title} {what} | onnxruntime | {:.2} % | {:.3} ms |",
                100.0 * f.accuracy,
                f.median_ms
            ),
            Err(e) => writeln!(s, "| {title} {what} | onnxruntime | fails: {e} | — |"),
        };
    }
    for prefix in ["int8 post-training", "recipes/resnet8-combined"] {
        if let Some(m) = find(rows, prefix) {
            let _ = writeln!(
                s,
                "| {prefix} | Hasten | {:.2} % | {:.3} ms |",
                100.0 * m.last(),
                m.compressed_ms
            );
        }
    }
    s
}

/// The combined recipe's target on the small ResNet.
fn combined_target(rows: &[Row], ort: Option<&OrtOriginal>) -> String {
    let asks = "combined recipe on the small ResNet: ≤ 0.5 % drop, latency ≤ ⅓ of onnxruntime f32 on the original and below its static int8";
    let (measured, verdict) = match (find(rows, "recipes/resnet8-combined"), ort) {
        (
            Some(m),
            Some(OrtOriginal {
                f32: Ok(f),
                int8: Ok(q),
            }),
        ) => {
            let ok = -m.change() <= 0.5
                && m.compressed_ms <= f.median_ms / 3.0
                && m.compressed_ms < q.median_ms;
            (
                format!(
                    "{:+.2} points; Hasten {:.3} ms, onnxruntime f32 {:.3} ms (⅓: {:.3} ms), static int8 {:.3} ms",
                    m.change(),
                    m.compressed_ms,
                    f.median_ms,
                    f.median_ms / 3.0,
                    q.median_ms
                ),
                if ok { "met" } else { "not met" },
            )
        }
        (Some(m), _) => (
            format!("{:+.2} points; onnxruntime not run", m.change()),
            "not measured here",
        ),
        (None, _) => ("not run".into(), "not measured here"),
    };
    format!("| {asks} | {measured} | {verdict} |\n")
}

/// The issue's targets that apply to `network`'s rows: CP / Tucker-2 where
/// it has such rows; int8, k-means 4-bit and filter pruning likewise; the
/// combined recipe on the small ResNet.
fn targets(network: &Network, rows: &[Row], ort: Option<&OrtOriginal>) -> String {
    let has = |prefix: &str| network.methods.iter().any(|m| m.label.starts_with(prefix));
    let mut s = String::from("| target | measured | verdict |\n|---|---|---|\n");
    if has("CP") || has("Tucker-2") {
        s.push_str(&low_rank_line(rows));
    }
    let lines: [(&str, &str, f64, Option<f64>); 3] = [
        (
            "int8: ≤ 0.3 % drop and ≥ 2× measured speed-up",
            "int8 post-training",
            0.3,
            Some(2.0),
        ),
        ("k-means 4-bit: ≤ 0.3 % drop", "k-means 4-bit", 0.3, None),
        (
            "filter pruning to half the MACs: ≤ 0.5 % drop and ≥ 1.7× measured",
            "filter pruning (L1), half the MACs",
            0.5,
            Some(1.7),
        ),
    ];
    for (asks, prefix, drop_max, speedup_min) in lines {
        if has(prefix) {
            s.push_str(&row_line(rows, asks, prefix, drop_max, speedup_min));
        }
    }
    if network.arch == "resnet8" {
        s.push_str(&combined_target(rows, ort));
    }
    s
}

/// `network`'s section in markdown: the rows, onnxruntime side by side,
/// the targets.
pub fn section(
    args: &Args,
    network: &Network,
    model: &Path,
    dir: Option<&Path>,
) -> Result<String, Error> {
    let start = Instant::now();
    let title = network.title;
    if !mnist_present(&args.fashion_data) {
        return Err(format!(
            "Fashion-MNIST not found in {}: run `bash scripts/fetch-datasets.sh`",
            args.fashion_data.display()
        )
        .into());
    }
    let graph = import_file(model, &ImportOptions::default())?;
    let splits = load_mnist(&args.fashion_data)?;
    let data = FineTuneData {
        train: splits
            .train
            .head(args.fashion_tune_samples)
            .normalized(&[MEAN], &[STD])?,
        test: match args.fashion_test_samples {
            Some(n) => splits.test.head(n),
            None => splits.test,
        }
        .normalized(&[MEAN], &[STD])?,
    };
    let tag = format!("fashion-{}", network.arch);
    let mut rows = compress_rows(
        &graph,
        network.methods,
        &data,
        dir,
        &tag,
        args.only.as_deref(),
    );
    let measured = rows
        .iter_mut()
        .filter_map(|r| r.outcome.as_mut().ok())
        .collect();
    let ort = ort_side(dir, &graph, &data, args.threads, measured);
    let accuracy = rows
        .iter()
        .find_map(|r| r.outcome.as_ref().ok().map(|m| m.accuracy_before));
    let mut text = format!(
        "## {title} on Fashion-MNIST\n\n{title} ({}), test accuracy {} before compression; fine-tuning: 1 epoch (SGD, momentum 0.9, lr 0.001, batch 64; rows that say so: their own settings; int8 post-training: none) on the first {} training images; test accuracy on the first {} test images; CPU: {}; wall time {:.0} s.\n\n",
        model.file_name().map_or("".into(), |n| n.to_string_lossy()),
        accuracy.map_or("-".into(), |a| format!("{:.2} %", 100.0 * a)),
        data.train.labels().len(),
        data.test.labels().len(),
        cpu_model(),
        start.elapsed().as_secs_f64()
    );
    text.push_str(&table(&rows, args.threads));
    if let Some(ort) = &ort {
        text.push_str("\n### Side by side with onnxruntime\n\n");
        text.push_str(&ort_table(network.title, &rows, ort, args.threads));
    }
    text.push_str("\n### Targets\n\n");
    text.push_str(&targets(network, &rows, ort.as_ref()));
    Ok(text)
}

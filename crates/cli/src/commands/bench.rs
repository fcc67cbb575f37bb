//! `hasten bench`: the plan's median latency, and onnxruntime's on the same
//! model through `scripts/ort_bench.py`, which is compiled into the binary
//! and handed to Python with `-c`, so an installed `hasten` needs no
//! checkout.

use std::path::PathBuf;
use std::time::Duration;

use hasten::bench::{cpu_model, measure, with_threads};
use hasten_core::ndarray::Array4;
use hasten_core::{ActShape, Graph, SeededRng};

use crate::error::{fail, Context, Failure, Result};
use crate::model::{check_batch, compile, load, single_input, source, ModelArgs, Source};

pub(crate) fn bench(
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

/// `scripts/ort_bench.py`, embedded at build time.
const ORT_BENCH: &str = include_str!("../../../../scripts/ort_bench.py");

/// The Python to run onnxruntime with: `HASTEN_PYTHON`, else
/// `.venv/bin/python` in the current directory when present, else `python3`
/// on the `PATH`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HASTEN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(".venv/bin/python");
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
    let python = python();
    let out = std::process::Command::new(&python)
        .args(["-c", ORT_BENCH])
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

//! onnxruntime's side of the results table, in the same run: the test set
//! and calibration batch are written as `.npy`, onnxruntime's own static
//! int8 quantization (`scripts/ort_quantize.py`: min–max calibration,
//! uint8 activations, per-channel int8 weights) quantizes the original
//! model, and `scripts/ort_eval.py` measures every model's test accuracy
//! and batch-1 latency (`ort_bench.py`'s timing) in one child process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hasten::core::ndarray::{Array4, ArrayD};
use hasten::train::data::ImageSet;

use crate::Error;

/// What onnxruntime measured of one model.
#[derive(Clone, Copy)]
pub struct OrtFigures {
    /// Test accuracy (fraction).
    pub accuracy: f64,
    /// Median batch-1 latency in ms.
    pub median_ms: f64,
}

/// The repository root (scripts and `.venv`).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/NAME` with `args`; its standard output, or an error with
/// the last line it wrote to standard error.
pub fn script(name: &str, args: &[&Path]) -> Result<String, Error> {
    let python = hasten::bench::python(root());
    let out = Command::new(&python)
        .arg(root().join("scripts").join(name))
        .args(args)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        return Err(format!("{name} exited with {}: {}", out.status, last.unwrap_or("")).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `array` as `.npy` to `path`.
pub fn write(path: &Path, array: ArrayD<f32>) -> Result<(), Error> {
    std::fs::write(path, hasten::onnx::weights::write_npy(&array)?)?;
    Ok(())
}

/// onnxruntime's static int8 quantization (QOperator format) of `model`,
/// calibrated on `calibration`, written to `out`.
pub fn quantize_static(model: &Path, calibration: &Array4<f32>, out: &Path) -> Result<(), Error> {
    let dir = out.parent().ok_or("no directory for the quantized model")?;
    let calib = dir.join("calibration.npy");
    write(&calib, calibration.clone().into_dyn())?;
    script(
        "ort_quantize.py",
        &[model, &calib, out, Path::new("qoperator")],
    )?;
    Ok(())
}

/// Test accuracy and batch-1 latency (`threads` intra-op threads, `runs`
/// timed runs) of each of `models` under onnxruntime, by path; a model
/// that fails maps to its error message.
pub fn evaluate(
    dir: &Path,
    test: &ImageSet,
    threads: usize,
    runs: usize,
    models: &[PathBuf],
) -> Result<HashMap<PathBuf, Result<OrtFigures, String>>, Error> {
    let (images, labels) = (dir.join("test-images.npy"), dir.join("test-labels.npy"));
    write(&images, test.images().clone().into_dyn())?;
    let classes: Vec<f32> = test.labels().iter().map(|&l| l as f32).collect();
    write(
        &labels,
        ArrayD::from_shape_vec(vec![classes.len()], classes)?,
    )?;
    let (threads, runs) = (
        PathBuf::from(threads.to_string()),
        PathBuf::from(runs.to_string()),
    );
    let mut args: Vec<&Path> = vec![&images, &labels, &threads, &runs];
    args.extend(models.iter().map(PathBuf::as_path));
    let text = script("ort_eval.py", &args)?;
    Ok(per_model(&text, |line| {
        let (a, m) = (field(line, "accuracy=")?, field(line, "median_ms=")?);
        Some(match (a.parse(), m.parse()) {
            (Ok(accuracy), Ok(median_ms)) => Ok(OrtFigures {
                accuracy,
                median_ms,
            }),
            _ => Err(format!("unreadable figures: {line}")),
        })
    }))
}

/// The value of `key` (`"accuracy="`, say) in a script's output line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key))
}

/// The `model=PATH key=value …` lines a script printed, by model path:
/// `figures` reads a line's values (`None` when they are missing), and a
/// model the script could not run maps to the text after its `error=`.
pub fn per_model<T>(
    text: &str,
    figures: impl Fn(&str) -> Option<Result<T, String>>,
) -> HashMap<PathBuf, Result<T, String>> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(model) = field(line, "model=") else {
            continue;
        };
        let parsed = figures(line).unwrap_or_else(|| {
            Err(line
                .split_once("error=")
                .map_or(line.to_string(), |(_, e)| e.to_string()))
        });
        out.insert(PathBuf::from(model), parsed);
    }
    out
}

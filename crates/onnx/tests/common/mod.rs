//! Shared helpers of the integration tests: where the real models live, and
//! the Python interpreter with onnxruntime.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `HASTEN_MODELS_DIR`, or `<workspace root>/../shared/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("HASTEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/models"))
}

/// The directory of a model, or `None` (with a skip message) when absent.
pub fn model_dir(name: &str) -> Option<PathBuf> {
    let dir = models_dir().join(name);
    if dir.join("model.onnx").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} not found (set HASTEN_MODELS_DIR to the folder holding {name}/)",
            dir.display()
        );
        None
    }
}

/// `HASTEN_PYTHON`, else `.venv/bin/python` in the workspace root if present,
/// else `python3` — when it can import onnxruntime and onnx; `None` (with a
/// skip message naming `what`) otherwise.
pub fn python_with_ort(what: &str) -> Option<PathBuf> {
    let python = std::env::var_os("HASTEN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let venv = workspace_root().join(".venv/bin/python");
            if venv.is_file() {
                venv
            } else {
                PathBuf::from("python3")
            }
        });
    let ok = Command::new(&python)
        .args(["-c", "import onnxruntime, onnx, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(python)
    } else {
        eprintln!(
            "SKIPPED: {what}: `{}` cannot import onnxruntime, onnx and numpy \
             (set HASTEN_PYTHON or create .venv with them)",
            python.display()
        );
        None
    }
}

/// A scratch directory unique to this test process and `tag`.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hasten-onnx-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

//! Imports the real EfficientNet-Lite0 and checks it on all 20 photos:
//! relative error of each image's logits against the original framework's,
//! and top-1 / top-5 accuracy against the labels (the model's own figures:
//! 18/20 and 19/20).
//!
//! `cargo run --release -p hasten-onnx --example efficientnet_check`
//! (`HASTEN_MODELS_DIR` points at the folder holding `efficientnet_lite0/`;
//! default `<workspace>/../shared/models`).

use std::path::PathBuf;

use hasten_core::relative_error;
use hasten_onnx::{import_file, ImportOptions};
use ndarray::{s, Array1, Array2, Array4};
use ndarray_npy::read_npy;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::var_os("HASTEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models")
        });
    let dir = root.join("efficientnet_lite0");
    let graph = import_file(dir.join("model.onnx"), &ImportOptions::default())?;
    let inputs: Array4<f32> = read_npy(dir.join("inputs.npy"))?;
    let logits: Array2<f32> = read_npy(dir.join("logits.npy"))?;
    let labels: Array1<i64> = read_npy(dir.join("labels.npy"))?;
    let (mut top1, mut top5, mut worst) = (0, 0, 0.0f64);
    for i in 0..inputs.shape()[0] {
        let x = inputs.slice(s![i..i + 1, .., .., ..]).to_owned();
        let y = graph.reference_forward(&[&x])?.remove(0);
        let y = y.slice(s![0, .., 0, 0]).to_owned();
        let err = relative_error(&logits.slice(s![i, ..]), &y);
        worst = worst.max(err);
        let mut order: Vec<usize> = (0..y.len()).collect();
        order.sort_by(|&a, &b| y[b].total_cmp(&y[a]));
        let label = usize::try_from(labels[i])?;
        top1 += usize::from(order[0] == label);
        top5 += usize::from(order[..5].contains(&label));
        println!(
            "image {i:2}: label {label:4}, top-1 {:4}, relative error {err:.2e}",
            order[0]
        );
    }
    let n = inputs.shape()[0];
    println!("top-1 {top1}/{n}, top-5 {top5}/{n}, worst relative error {worst:.2e}");
    if worst >= 1e-4 || top1 < 18 {
        return Err("EfficientNet-Lite0 check failed".into());
    }
    Ok(())
}

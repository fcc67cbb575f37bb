//! Classifies photos with an ImageNet ONNX model through a fast plan and
//! prints each photo's top-5 classes with their probabilities.
//!
//! ```text
//! cargo run --release --example classify                       # the 20 bundled photos
//! cargo run --release --example classify -- a.jpg b.png       # your own photos
//! cargo run --release --example classify -- --model m.onnx a.jpg
//! ```
//!
//! The default model is the ImageNet-pretrained EfficientNet-Lite0 of the
//! shared models folder (`HASTEN_MODELS_DIR`, default `<workspace>/../shared/models`),
//! and the default photos are its 20 validation photos, whose file names end
//! in their class index (`imagenet_00_243.jpg` is class 243): for those the
//! example also counts top-1 and top-5 hits. Preprocessing is the model's: the
//! shorter side resized to 256 (bicubic), the centre 224×224 crop, `x / 255`
//! then `(x − 0.498) / 0.502`, NCHW. Where the model folder holds
//! `inputs.npy` (the same photos preprocessed by the original framework),
//! the example prints how far its own preprocessing is from it.
//!
//! Classes are printed as ImageNet-1k indices: the model file carries no
//! class names.

use std::error::Error;
use std::path::{Path, PathBuf};

use hasten::onnx::{import_file, weights::read_npy, ImportOptions};
use hasten_core::ndarray::{s, Array4, Axis, Ix4};
use hasten_fastconv::{Plan, PlanOptions};
use image::imageops::FilterType;

/// The side the shorter image side is resized to before cropping.
const RESIZE: u32 = 256;
/// The model's input side.
const CROP: u32 = 224;
/// Per-channel normalisation of EfficientNet-Lite: `(x − MEAN) / STD`.
const MEAN: f32 = 0.498;
const STD: f32 = 0.502;

fn main() -> Result<(), Box<dyn Error>> {
    let models = std::env::var_os("HASTEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models"));
    let model_dir = models.join("efficientnet_lite0");
    let (model, photos) = parse_args(std::env::args().skip(1), &model_dir)?;
    if !model.exists() {
        println!(
            "no model at {}: pass --model FILE.onnx or set HASTEN_MODELS_DIR",
            model.display()
        );
        return Ok(());
    }
    if photos.is_empty() {
        println!("no photos given and none bundled with the model");
        return Ok(());
    }

    let graph = import_file(&model, &ImportOptions::default())?;
    let batch = load_batch(&photos)?;
    let mut plan = Plan::for_graph(&graph, batch.shape()[0], PlanOptions::default())?;
    let logits = plan.run(&batch)?.to_owned();

    let (mut top1, mut top5, mut labelled) = (0, 0, 0);
    for (i, photo) in photos.iter().enumerate() {
        let probabilities = softmax(logits.slice(s![i, .., 0, 0]).to_vec());
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
        let best: Vec<String> = order[..5]
            .iter()
            .map(|&c| format!("{c:4} ({:4.1} %)", 100.0 * probabilities[c]))
            .collect();
        let name = photo.file_name().unwrap_or_default().to_string_lossy();
        let label = label_of(photo);
        let mark = match label {
            Some(l) if order[0] == l => "top-1",
            Some(l) if order[..5].contains(&l) => "top-5",
            Some(_) => "miss",
            None => "",
        };
        println!("{name:24} {}  {mark}", best.join("  "));
        if let Some(l) = label {
            labelled += 1;
            top1 += usize::from(order[0] == l);
            top5 += usize::from(order[..5].contains(&l));
        }
    }
    if labelled > 0 {
        println!("top-1 {top1}/{labelled}, top-5 {top5}/{labelled}");
    }
    compare_with_reference(&model_dir, &photos, &batch)?;
    Ok(())
}

/// `[--model FILE] [PHOTO …]`; with no photos, the bundled ones in order.
fn parse_args(
    args: impl Iterator<Item = String>,
    model_dir: &Path,
) -> Result<(PathBuf, Vec<PathBuf>), Box<dyn Error>> {
    let mut model = model_dir.join("model.onnx");
    let mut photos = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "--model" {
            model = args.next().ok_or("--model needs a file")?.into();
        } else {
            photos.push(PathBuf::from(arg));
        }
    }
    if photos.is_empty() {
        if let Ok(entries) = std::fs::read_dir(model_dir.join("images")) {
            photos = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
                .collect();
            photos.sort();
        }
    }
    Ok((model, photos))
}

/// The photos, preprocessed, as one `[n, 3, 224, 224]` batch.
fn load_batch(photos: &[PathBuf]) -> Result<Array4<f32>, Box<dyn Error>> {
    let side = CROP as usize;
    let mut batch = Array4::<f32>::zeros((photos.len(), 3, side, side));
    for (photo, mut slot) in photos.iter().zip(batch.outer_iter_mut()) {
        let image = image::open(photo).map_err(|e| format!("{}: {e}", photo.display()))?;
        let (w, h) = (image.width(), image.height());
        let scale = RESIZE as f64 / w.min(h) as f64;
        let (rw, rh) = (
            ((w as f64 * scale).round() as u32).max(CROP),
            ((h as f64 * scale).round() as u32).max(CROP),
        );
        let resized = image.resize_exact(rw, rh, FilterType::CatmullRom).to_rgb8();
        let (left, top) = ((rw - CROP) / 2, (rh - CROP) / 2);
        for y in 0..side {
            for x in 0..side {
                let pixel = resized.get_pixel(left + x as u32, top + y as u32);
                for c in 0..3 {
                    slot[[c, y, x]] = (f32::from(pixel[c]) / 255.0 - MEAN) / STD;
                }
            }
        }
    }
    Ok(batch)
}

/// Probabilities from logits, computed stably.
fn softmax(logits: Vec<f32>) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&z| (z - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The class index a bundled photo's name ends with (`…_243.jpg`).
fn label_of(photo: &Path) -> Option<usize> {
    let stem = photo.file_stem()?.to_str()?;
    stem.starts_with("imagenet_")
        .then(|| stem.rsplit('_').next()?.parse().ok())
        .flatten()
}

/// Prints how far this example's preprocessing is from the original
/// framework's (`inputs.npy`) when the photos are exactly the bundled ones.
fn compare_with_reference(
    model_dir: &Path,
    photos: &[PathBuf],
    batch: &Array4<f32>,
) -> Result<(), Box<dyn Error>> {
    let Ok(bytes) = std::fs::read(model_dir.join("inputs.npy")) else {
        return Ok(());
    };
    let reference = read_npy(&bytes)?.into_dimensionality::<Ix4>()?;
    let bundled = photos.len() == reference.len_of(Axis(0))
        && photos
            .iter()
            .all(|p| p.starts_with(model_dir.join("images")));
    if !bundled {
        return Ok(());
    }
    let max_diff = (&reference - batch)
        .iter()
        .fold(0.0f32, |m, d| m.max(d.abs()));
    println!(
        "preprocessing: largest difference from the original framework's inputs {max_diff:.3} \
         (in normalised units; one 8-bit level is {:.4})",
        1.0 / (255.0 * STD)
    );
    Ok(())
}

//! Data: the IDX format of MNIST and Fashion-MNIST ([`idx`]), npy arrays
//! ([`npy`]), in-memory image sets behind the [`Dataset`] trait, a seeded
//! shuffling [`Loader`] and [`Augment`]ations.

mod augment;
pub mod idx;
mod loader;
pub mod npy;

pub use augment::Augment;
pub use loader::Loader;

use std::path::Path;

use hasten_core::ActShape;
use ndarray::{s, Array4, ArrayView3};

use crate::error::{Result, TrainError};

/// A labelled set of images (or any `C×H×W` samples). `Sync`, so that
/// the [`Loader`] can assemble the next batch on another thread.
pub trait Dataset: Sync {
    /// The number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The per-sample shape.
    fn sample_shape(&self) -> ActShape;
    /// Sample `index` (`< len()`), `C×H×W`.
    fn sample(&self, index: usize) -> ArrayView3<'_, f32>;
    /// The label of sample `index`.
    fn label(&self, index: usize) -> usize;
}

/// Images `[N, C, H, W]` in f32 with one label each, held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    images: Array4<f32>,
    labels: Vec<usize>,
    classes: usize,
}

impl ImageSet {
    /// Validates one label `< classes` per image, at least one image and
    /// finite pixels.
    pub fn new(images: Array4<f32>, labels: Vec<usize>, classes: usize) -> Result<Self> {
        let n = images.shape()[0];
        if n == 0 || images.is_empty() {
            return Err(TrainError::invalid(
                "image set size",
                format!("{:?}", images.shape()),
                "non-empty",
            ));
        }
        if labels.len() != n {
            return Err(TrainError::invalid(
                "label count",
                labels.len(),
                "one label per image",
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
            return Err(TrainError::invalid("label", bad, "< the class count"));
        }
        if images.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::invalid(
                "image pixels",
                "non-finite",
                "finite values",
            ));
        }
        Ok(ImageSet {
            images: images.as_standard_layout().into_owned(),
            labels,
            classes,
        })
    }

    /// The images `[N, C, H, W]`.
    pub fn images(&self) -> &Array4<f32> {
        &self.images
    }

    /// The labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The first `n` samples (all when `n ≥ len`), e.g. a small slice for a test.
    pub fn head(&self, n: usize) -> ImageSet {
        let n = n.min(self.labels.len()).max(1);
        ImageSet {
            images: self.images.slice(s![..n, .., .., ..]).to_owned(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes,
        }
    }

    /// The set with channel `c` mapped to `(x − mean[c]) / std[c]` — the
    /// [`Augment::normalize`] of a training pipeline applied once to a test
    /// split; the same errors (lengths, non-finite or non-positive std, a
    /// channel count other than the samples').
    pub fn normalized(&self, mean: &[f32], std: &[f32]) -> Result<ImageSet> {
        let augment = Augment::new().normalize(mean, std)?;
        let mut images = self.images.clone();
        let mut rng = hasten_core::SeededRng::new(0);
        for mut sample in images.outer_iter_mut() {
            let out = augment.apply(sample.view(), &mut rng)?;
            sample.assign(&out);
        }
        Ok(ImageSet {
            images,
            labels: self.labels.clone(),
            classes: self.classes,
        })
    }

    /// An IDX image file (`N×H×W` bytes) and label file (`N` bytes), pixels
    /// scaled to `[0, 1]`, labels `< classes`.
    pub fn from_idx_files(images: &Path, labels: &Path, classes: usize) -> Result<Self> {
        let img = idx::read_idx_file(images)?;
        let lab = idx::read_idx_file(labels)?;
        ImageSet::from_idx(img, lab, classes, &images.display().to_string())
    }

    /// As [`ImageSet::from_idx_files`] from parsed arrays.
    pub fn from_idx(
        images: idx::IdxArray,
        labels: idx::IdxArray,
        classes: usize,
        what: &str,
    ) -> Result<Self> {
        let bad = |reason: String| TrainError::Format {
            format: "IDX",
            what: what.to_string(),
            reason,
        };
        let (n, h, w) = match images.dims[..] {
            [n, h, w] => (n, h, w),
            _ => {
                return Err(bad(format!(
                    "images have dims {:?}, expected N×H×W",
                    images.dims
                )))
            }
        };
        if labels.dims != [n] {
            return Err(bad(format!(
                "labels have dims {:?}, expected [{n}]",
                labels.dims
            )));
        }
        let pixels = Array4::from_shape_vec(
            (n, 1, h, w),
            images.data.iter().map(|&b| f32::from(b) / 255.0).collect(),
        )
        .map_err(|e| bad(e.to_string()))?;
        ImageSet::new(
            pixels,
            labels.data.iter().map(|&b| usize::from(b)).collect(),
            classes,
        )
    }
}

impl Dataset for ImageSet {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn sample_shape(&self) -> ActShape {
        let s = self.images.shape();
        ActShape::new(s[1], s[2], s[3])
    }

    fn sample(&self, index: usize) -> ArrayView3<'_, f32> {
        self.images.slice(s![index, .., .., ..])
    }

    fn label(&self, index: usize) -> usize {
        self.labels[index]
    }
}

/// The training and test splits of an MNIST-format data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    /// The training split.
    pub train: ImageSet,
    /// The test split.
    pub test: ImageSet,
}

/// The file `dir/name`, or `dir/name.gz` when only that exists.
fn idx_path(dir: &Path, name: &str) -> std::path::PathBuf {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if !raw.exists() && gz.exists() {
        gz
    } else {
        raw
    }
}

/// Loads MNIST or Fashion-MNIST (10 classes) from `dir`, which holds
/// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each raw or
/// gzipped (`.gz`).
pub fn load_mnist(dir: &Path) -> Result<Splits> {
    let split = |prefix: &str| {
        ImageSet::from_idx_files(
            &idx_path(dir, &format!("{prefix}-images-idx3-ubyte")),
            &idx_path(dir, &format!("{prefix}-labels-idx1-ubyte")),
            10,
        )
    };
    Ok(Splits {
        train: split("train")?,
        test: split("t10k")?,
    })
}

/// Whether `dir` holds the four MNIST-format files (raw or gzipped).
pub fn mnist_present(dir: &Path) -> bool {
    [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    .iter()
    .all(|n| idx_path(dir, n).exists())
}

#[cfg(test)]
mod tests;

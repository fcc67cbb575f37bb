//! Augmentations: random crop with zero padding, random horizontal flip and
//! per-channel normalisation, applied in that order.

use hasten_core::SeededRng;
use ndarray::{Array3, ArrayView3};

use crate::error::{Result, TrainError};

/// A per-sample augmentation pipeline; the default does nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Augment {
    crop_padding: usize,
    flip: bool,
    normalize: Option<(Vec<f32>, Vec<f32>)>,
}

impl Augment {
    /// No augmentation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pads each side by `padding` zeros and crops a window of the original
    /// size at a uniformly random offset (`0..=2·padding` on each axis).
    pub fn random_crop(mut self, padding: usize) -> Self {
        self.crop_padding = padding;
        self
    }

    /// Mirrors left–right with probability 1/2.
    pub fn horizontal_flip(mut self, on: bool) -> Self {
        self.flip = on;
        self
    }

    /// Maps channel `c` to `(x − mean[c]) / std[c]`; every `std` finite and
    /// > 0, every mean finite, one entry per channel.
    pub fn normalize(mut self, mean: &[f32], std: &[f32]) -> Result<Self> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(TrainError::invalid(
                "normalisation lengths",
                format!("{} / {}", mean.len(), std.len()),
                "equal and non-zero",
            ));
        }
        if let Some(&s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(TrainError::invalid(
                "normalisation std",
                s,
                "finite and > 0",
            ));
        }
        if let Some(&m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(TrainError::invalid("normalisation mean", m, "finite"));
        }
        self.normalize = Some((mean.to_vec(), std.to_vec()));
        Ok(self)
    }

    /// Whether the pipeline draws random numbers.
    pub fn is_random(&self) -> bool {
        self.crop_padding > 0 || self.flip
    }

    /// Applies the pipeline to one `C×H×W` sample with randomness from `rng`.
    pub fn apply(&self, sample: ArrayView3<f32>, rng: &mut SeededRng) -> Result<Array3<f32>> {
        let (c, h, w) = sample.dim();
        let p = self.crop_padding;
        let (dy, dx) = if p > 0 {
            (rng.below(2 * p + 1), rng.below(2 * p + 1))
        } else {
            (p, p)
        };
        let flip = self.flip && rng.uniform() < 0.5;
        let mut out = Array3::<f32>::zeros((c, h, w));
        for ch in 0..c {
            for y in 0..h {
                // Row y of the crop is row y + dy − p of the sample.
                let Some(sy) = (y + dy).checked_sub(p).filter(|&v| v < h) else {
                    continue;
                };
                for x in 0..w {
                    let xo = if flip { w - 1 - x } else { x };
                    if let Some(sx) = (xo + dx).checked_sub(p).filter(|&v| v < w) {
                        out[[ch, y, x]] = sample[[ch, sy, sx]];
                    }
                }
            }
        }
        if let Some((mean, std)) = &self.normalize {
            if mean.len() != c {
                return Err(TrainError::invalid(
                    "normalisation channels",
                    mean.len(),
                    "the sample's channel count",
                ));
            }
            for (ch, mut plane) in out.outer_iter_mut().enumerate() {
                plane.mapv_inplace(|v| (v - mean[ch]) / std[ch]);
            }
        }
        Ok(out)
    }
}

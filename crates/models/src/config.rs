//! [`ModelConfig`]: what every builder takes — seed, classes, input shape,
//! MobileNet's width and resolution multipliers, and how batch norms start.

use hasten_core::{ActShape, Error, Result};

/// How the batch norms of a freshly built model are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BatchNormInit {
    /// As PyTorch initialises `BatchNorm2d`: γ = 1, β = 0, running mean 0,
    /// running variance 1 (so with ε = 1e-5 each batch norm is almost the
    /// identity).
    #[default]
    Identity,
    /// Non-trivial statistics drawn from the model's seed, as
    /// [`crate::randomize_batch_norms`] draws them, so that tests exercise
    /// batch norms that actually scale and shift.
    Random,
}

/// The settings of a model builder.
///
/// Start from a preset ([`ModelConfig::imagenet`], [`ModelConfig::mnist`],
/// [`ModelConfig::cifar10`]) and adjust it with the `with_*` methods:
///
/// ```
/// use hasten_models::{resnet18, ModelConfig};
///
/// let config = ModelConfig::imagenet().with_seed(7).with_input_size(64);
/// let graph = resnet18(&config)?;
/// assert_eq!(graph.inputs()[0].shape().height, 64);
/// # Ok::<(), hasten_core::Error>(())
/// ```
///
/// The width multiplier α applies to the MobileNet builders only (the
/// others reject α ≠ 1); the resolution multiplier ρ applies to every
/// builder, scaling the input's height and width to `round(ρ·H) ×
/// round(ρ·W)` (MobileNet's `224·ρ`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Seed of every weight drawn.
    pub seed: u64,
    /// Outputs of the classifier (logits, `num_classes × 1 × 1`).
    pub num_classes: usize,
    /// Per-sample input shape before the resolution multiplier.
    pub input: ActShape,
    /// MobileNet's width multiplier α (channels scale by α).
    pub width_multiplier: f64,
    /// The resolution multiplier ρ (input height and width scale by ρ).
    pub resolution_multiplier: f64,
    /// How batch norms start.
    pub batch_norm: BatchNormInit,
}

impl Default for ModelConfig {
    /// [`ModelConfig::imagenet`].
    fn default() -> Self {
        ModelConfig::imagenet()
    }
}

impl ModelConfig {
    /// ImageNet: `3 × 224 × 224` inputs, 1000 classes, seed 0, α = ρ = 1,
    /// PyTorch's batch-norm initialisation.
    pub fn imagenet() -> Self {
        ModelConfig {
            seed: 0,
            num_classes: 1000,
            input: ActShape::new(3, 224, 224),
            width_multiplier: 1.0,
            resolution_multiplier: 1.0,
            batch_norm: BatchNormInit::Identity,
        }
    }

    /// MNIST / Fashion-MNIST: `1 × 28 × 28` inputs, 10 classes.
    pub fn mnist() -> Self {
        ModelConfig {
            num_classes: 10,
            input: ActShape::new(1, 28, 28),
            ..ModelConfig::imagenet()
        }
    }

    /// CIFAR-10: `3 × 32 × 32` inputs, 10 classes.
    pub fn cifar10() -> Self {
        ModelConfig {
            num_classes: 10,
            input: ActShape::new(3, 32, 32),
            ..ModelConfig::imagenet()
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the number of classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Sets the per-sample input shape (channels × height × width).
    pub fn with_input(mut self, input: ActShape) -> Self {
        self.input = input;
        self
    }

    /// Sets a square `size × size` input, keeping the channels.
    pub fn with_input_size(mut self, size: usize) -> Self {
        self.input.height = size;
        self.input.width = size;
        self
    }

    /// Sets MobileNet's width multiplier α.
    pub fn with_width_multiplier(mut self, alpha: f64) -> Self {
        self.width_multiplier = alpha;
        self
    }

    /// Sets the resolution multiplier ρ.
    pub fn with_resolution_multiplier(mut self, rho: f64) -> Self {
        self.resolution_multiplier = rho;
        self
    }

    /// Sets how batch norms start.
    pub fn with_batch_norm(mut self, init: BatchNormInit) -> Self {
        self.batch_norm = init;
        self
    }

    /// Shorthand for [`BatchNormInit::Random`].
    pub fn with_random_batch_norm(self) -> Self {
        self.with_batch_norm(BatchNormInit::Random)
    }

    /// The graph's input shape: the configured input with height and width
    /// scaled by ρ and rounded. Checks that classes, channels, α and ρ are
    /// valid and that the scaled input is not empty.
    pub fn input_shape(&self) -> Result<ActShape> {
        if self.num_classes == 0 {
            return Err(Error::param("number of classes", 0, ">= 1"));
        }
        if self.input.is_empty() {
            return Err(Error::param("model input shape", self.input, "non-empty"));
        }
        for (name, v) in [
            ("width multiplier", self.width_multiplier),
            ("resolution multiplier", self.resolution_multiplier),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::param(name, v, "finite and > 0"));
            }
        }
        let scale = |d: usize| (d as f64 * self.resolution_multiplier).round() as usize;
        let shape = ActShape::new(
            self.input.channels,
            scale(self.input.height),
            scale(self.input.width),
        );
        if shape.is_empty() {
            return Err(Error::param(
                "resolution multiplier",
                self.resolution_multiplier,
                format!("large enough that {} keeps at least one pixel", self.input),
            ));
        }
        Ok(shape)
    }

    /// Rejects a width multiplier other than 1 for a builder that has none.
    pub(crate) fn require_unit_width(&self, model: &str) -> Result<()> {
        if self.width_multiplier != 1.0 {
            return Err(Error::unsupported(
                model,
                format!(
                    "a width multiplier of {} (only the MobileNet builders scale widths)",
                    self.width_multiplier
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_multiplier_rounds_the_scaled_input() {
        let c = ModelConfig::imagenet().with_resolution_multiplier(192.0 / 224.0);
        assert_eq!(c.input_shape().unwrap(), ActShape::new(3, 192, 192));
        let c = ModelConfig::imagenet().with_resolution_multiplier(0.5714);
        assert_eq!(c.input_shape().unwrap(), ActShape::new(3, 128, 128));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let base = ModelConfig::mnist();
        assert!(base.with_num_classes(0).input_shape().is_err());
        assert!(base.with_width_multiplier(0.0).input_shape().is_err());
        assert!(base.with_width_multiplier(f64::NAN).input_shape().is_err());
        assert!(base.with_resolution_multiplier(-1.0).input_shape().is_err());
        assert!(base.with_resolution_multiplier(0.01).input_shape().is_err());
        assert!(base
            .with_input(ActShape::new(0, 28, 28))
            .input_shape()
            .is_err());
        assert!(base
            .with_width_multiplier(0.5)
            .require_unit_width("lenet5")
            .is_err());
    }
}

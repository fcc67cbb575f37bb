//! # hasten-models
//!
//! Reference CNN architectures as validated [`hasten_core::Graph`]s with
//! seeded, He-initialised weights — the networks the survey *Speeding-up
//! convolutional neural networks* (Lebedev & Lempitsky) measures its methods
//! on, and small models for MNIST / Fashion-MNIST:
//!
//! | builder | network | default input |
//! | --- | --- | --- |
//! | [`resnet18`], [`resnet34`] | torchvision's ResNets with BasicBlocks | `3 × 224 × 224` |
//! | [`vgg16`] | torchvision's VGG-16 (no batch norm) | `3 × 224 × 224` |
//! | [`mobilenet_v1`] | MobileNet-v1 with width multiplier α and resolution multiplier ρ | `3 × 224 × 224` |
//! | [`lenet5`] | LeNet-5 (ReLU, max-pool) | `1 × 28 × 28` |
//! | [`resnet8`] | CIFAR-style ResNet, one BasicBlock per stage, 16/32/64 | `1 × 28 × 28` |
//! | [`small_vgg`] | two VGG blocks with batch norm, 32/64 | `1 × 28 × 28` |
//! | [`small_mobilenet`] | stem and five separable blocks, 16 … 128 | `1 × 28 × 28` |
//!
//! Every builder takes a [`ModelConfig`] (seed, classes, input shape, α, ρ,
//! batch-norm initialisation) and returns a graph with one input named
//! `input` and one output, the logits (`num_classes × 1 × 1`). [`by_name`]
//! and [`ARCHITECTURES`] build them by name.
//!
//! ## Names
//!
//! Node names are the module names of the PyTorch model, so a node's
//! parameters are the `state_dict` entries `<node>.weight`, `<node>.bias`,
//! `<node>.running_mean`, `<node>.running_var` and trained weights can be
//! loaded by name: `conv1`, `layer2.0.downsample.0`, `fc` for the ResNets;
//! `features.N`, `classifier.N` for the VGGs; `model.N.M` for the
//! MobileNets; `conv1`, `fc1` … for LeNet-5. Parameter-free nodes have
//! unique descriptive names (`relu`, `maxpool`, `layer1.0.relu1`,
//! `layer1.0.add`, `avgpool`, `flatten`); each builder's documentation gives
//! its scheme.
//!
//! ## Weights
//!
//! Convolution and linear weights are He-normal, `N(0, 2 / fan_in)` (see
//! [`he_std`]), biases zero; batch norms start as PyTorch's (γ = 1, β = 0,
//! μ = 0, σ² = 1, ε = 1e-5) or with random statistics
//! ([`BatchNormInit::Random`], [`randomize_batch_norms`]). Each node draws
//! from a stream derived from the seed and its name.
//!
//! ```
//! use hasten_models::{by_name, resnet18, ModelConfig};
//!
//! let graph = resnet18(&ModelConfig::imagenet().with_seed(7))?;
//! assert_eq!(graph.cost()?.params, 11_689_512);
//! assert_eq!(graph.inputs()[0].name(), "input");
//!
//! let small = by_name("lenet5", &ModelConfig::mnist())?;
//! assert_eq!(small.nodes().last().unwrap().name(), "fc3");
//! # Ok::<(), hasten_core::Error>(())
//! ```

mod config;
mod init;
mod lenet;
mod mobilenet;
mod net;
mod resnet;
mod vgg;

pub use config::{BatchNormInit, ModelConfig};
pub use init::{he_std, randomize_batch_norms, reinitialize, BATCH_NORM_EPS};
pub use lenet::lenet5;
pub use mobilenet::{mobilenet_v1, scale_channels, small_mobilenet};
pub use resnet::{resnet18, resnet34, resnet8};
pub use vgg::{small_vgg, vgg16};

use hasten_core::{Error, Graph, Result};

/// A builder by name, for command-line tools: its name, a one-line
/// description, the builder and the preset it is meant for.
#[derive(Debug, Clone, Copy)]
pub struct Architecture {
    /// The name [`by_name`] takes (the builder function's name).
    pub name: &'static str,
    /// One line describing the network.
    pub description: &'static str,
    /// The builder.
    pub build: fn(&ModelConfig) -> Result<Graph>,
    /// The preset of its default input ([`ModelConfig::imagenet`] or
    /// [`ModelConfig::mnist`]).
    pub default_config: fn() -> ModelConfig,
}

/// Every architecture of the crate, ImageNet models first.
///
/// ```
/// use hasten_models::ARCHITECTURES;
///
/// for arch in ARCHITECTURES {
///     let graph = (arch.build)(&(arch.default_config)().with_input_size(32));
///     // VGG-16 needs 224 × 224 inputs; the others accept 32 × 32.
///     assert_eq!(graph.is_ok(), arch.name != "vgg16", "{}", arch.name);
/// }
/// ```
pub const ARCHITECTURES: &[Architecture] = &[
    Architecture {
        name: "resnet18",
        description: "ResNet-18 (torchvision), 11.7 M parameters, 1.8 G MACs at 224²",
        build: resnet18,
        default_config: ModelConfig::imagenet,
    },
    Architecture {
        name: "resnet34",
        description: "ResNet-34 (torchvision), 21.8 M parameters, 3.7 G MACs at 224²",
        build: resnet34,
        default_config: ModelConfig::imagenet,
    },
    Architecture {
        name: "vgg16",
        description: "VGG-16 (torchvision, no batch norm), 138 M parameters, 15.5 G MACs at 224²",
        build: vgg16,
        default_config: ModelConfig::imagenet,
    },
    Architecture {
        name: "mobilenet_v1",
        description: "MobileNet-v1 with width multiplier α and resolution multiplier ρ, 4.2 M parameters, 569 M MACs at α = ρ = 1",
        build: mobilenet_v1,
        default_config: ModelConfig::imagenet,
    },
    Architecture {
        name: "lenet5",
        description: "LeNet-5 (ReLU, max-pool) for 28×28 digits, 61.7 k parameters",
        build: lenet5,
        default_config: ModelConfig::mnist,
    },
    Architecture {
        name: "resnet8",
        description: "CIFAR-style ResNet-8 (16/32/64 channels) for 28×28 inputs",
        build: resnet8,
        default_config: ModelConfig::mnist,
    },
    Architecture {
        name: "small_vgg",
        description: "small VGG with batch norm (32/64 channels) for 28×28 inputs",
        build: small_vgg,
        default_config: ModelConfig::mnist,
    },
    Architecture {
        name: "small_mobilenet",
        description: "small MobileNet (five separable blocks, 16…128 channels) for 28×28 inputs",
        build: small_mobilenet,
        default_config: ModelConfig::mnist,
    },
];

/// The architecture named `name`, if the crate has one.
pub fn architecture(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().find(|a| a.name == name)
}

/// Builds the architecture named `name` (one of [`ARCHITECTURES`]) with
/// `config`; an unknown name is an [`Error::InvalidParameter`] listing the
/// known ones.
///
/// ```
/// use hasten_models::{by_name, ModelConfig};
///
/// let graph = by_name("small_mobilenet", &ModelConfig::mnist().with_seed(1))?;
/// assert_eq!(graph.node("fc").unwrap().output_shape().channels, 10);
/// assert!(by_name("alexnet", &ModelConfig::imagenet()).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn by_name(name: &str, config: &ModelConfig) -> Result<Graph> {
    match architecture(name) {
        Some(arch) => (arch.build)(config),
        None => {
            let known: Vec<&str> = ARCHITECTURES.iter().map(|a| a.name).collect();
            Err(Error::param(
                "architecture",
                name,
                format!("one of {}", known.join(", ")),
            ))
        }
    }
}

//! VGG networks (Simonyan & Zisserman, 2015): torchvision's VGG-16 and a
//! small VGG with batch norm for MNIST-sized inputs.
//!
//! Names follow torchvision's `VGG` modules, numbered as its `Sequential`s
//! number them: `features.N` for every convolution, batch norm, ReLU and
//! max-pool of the feature extractor, `classifier.N` for the linear layers,
//! ReLUs and dropouts of the classifier; `flatten` stands for
//! `torch.flatten(x, 1)`.

use hasten_core::graph::Value;
use hasten_core::{ConvSpec, Dropout, Error, Flatten, Graph, MaxPool, PoolSpec, Result};

use crate::config::ModelConfig;
use crate::net::Net;

/// One entry of a VGG configuration: a 3×3 convolution to this many
/// channels, or a 2×2/2 max-pool.
#[derive(Clone, Copy)]
enum Layer {
    Conv(usize),
    Pool,
}

use Layer::{Conv, Pool};

/// torchvision's configuration "D" (VGG-16).
const VGG16: [Layer; 18] = [
    Conv(64),
    Conv(64),
    Pool,
    Conv(128),
    Conv(128),
    Pool,
    Conv(256),
    Conv(256),
    Conv(256),
    Pool,
    Conv(512),
    Conv(512),
    Conv(512),
    Pool,
    Conv(512),
    Conv(512),
    Conv(512),
    Pool,
];

/// The small VGG's feature extractor.
const SMALL_VGG: [Layer; 6] = [Conv(32), Conv(32), Pool, Conv(64), Conv(64), Pool];

/// torchvision's `make_layers`: each convolution (3×3, padding 1, with bias)
/// is followed by an optional batch norm and a ReLU, each taking the next
/// index of `features`.
fn features(net: &mut Net, mut x: Value, layers: &[Layer], batch_norm: bool) -> Result<Value> {
    let mut i = 0;
    let mut next = || {
        i += 1;
        format!("features.{}", i - 1)
    };
    for &layer in layers {
        match layer {
            Conv(out) => {
                x = net.conv(&next(), x, out, 3, ConvSpec::new().with_padding(1), true)?;
                if batch_norm {
                    x = net.batch_norm(&next(), x)?;
                }
                x = net.relu(&next(), x)?;
            }
            Pool => {
                let pool = MaxPool::new(PoolSpec::square(2).with_stride(2))?;
                x = net.op(&next(), pool, x)?;
            }
        }
    }
    Ok(x)
}

/// torchvision's classifier: `flatten`, then linear layers to each of
/// `hidden` with ReLU and `Dropout(0.5)` after each, and a last linear layer
/// to `classes`, numbered `classifier.0`, `classifier.1`, ….
fn classifier(net: &mut Net, x: Value, hidden: &[usize], classes: usize) -> Result<Value> {
    let mut y = net.op("flatten", Flatten, x)?;
    let mut i = 0;
    for &width in hidden {
        y = net.linear(&format!("classifier.{i}"), y, width)?;
        y = net.relu(&format!("classifier.{}", i + 1), y)?;
        y = net.op(&format!("classifier.{}", i + 2), Dropout::new(0.5)?, y)?;
        i += 3;
    }
    net.linear(&format!("classifier.{i}"), y, classes)
}

/// VGG-16 as torchvision's `vgg16` (configuration "D", no batch norm):
/// thirteen 3×3 convolutions with bias and padding 1, each followed by a
/// ReLU, five 2×2/2 max-pools, then `flatten` and the classifier 25088 →
/// 4096 → 4096 → classes with ReLU and `Dropout(0.5)` after the first two.
///
/// torchvision puts an adaptive average pool to 7×7 between the features and
/// the classifier; for a 224 × 224 input (any side from 224 to 255) the
/// features already end at 7×7 and the pool is the identity, so it is left
/// out, and the builder rejects inputs whose features do not end at
/// `512 × 7 × 7`.
///
/// 138,357,544 parameters and 15.47 G multiply–adds at `3 × 224 × 224` with
/// 1000 classes. Rejects a width multiplier other than 1.
///
/// # Errors
/// [`Error::InvalidParameter`] for an
/// invalid configuration (see
/// [`ModelConfig::input_shape`]) or a
/// width multiplier other than 1, and a shape error when the input is too
/// small for the network's strides and pools.
///
/// ```
/// use hasten_models::{vgg16, ModelConfig};
///
/// let graph = vgg16(&ModelConfig::imagenet().with_num_classes(10))?;
/// assert!(graph.node("features.28").is_some());
/// assert_eq!(graph.node("classifier.6").unwrap().kind(), "linear");
/// assert!(vgg16(&ModelConfig::imagenet().with_input_size(128)).is_err());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn vgg16(config: &ModelConfig) -> Result<Graph> {
    config.require_unit_width("vgg16")?;
    let (mut net, x) = Net::new(config)?;
    let y = features(&mut net, x, &VGG16, false)?;
    let shape = net.shape(y);
    if (shape.height, shape.width) != (7, 7) {
        return Err(Error::unsupported(
            "vgg16",
            format!(
                "an input whose features end at {shape} rather than 512×7×7 \
                 (the adaptive average pool is omitted: use 224×224 inputs)"
            ),
        ));
    }
    let y = classifier(&mut net, y, &[4096, 4096], config.num_classes)?;
    net.finish(y)
}

/// A small VGG with batch norm for MNIST-sized inputs, laid out as
/// torchvision's `vgg*_bn`: two blocks of two 3×3 convolutions (32 then 64
/// channels, bias, padding 1), each followed by batch norm and ReLU, and a
/// 2×2/2 max-pool per block (`features.0` … `features.13`); then `flatten`
/// and the classifier `64·(H/4)·(W/4)` → 256 → classes with ReLU and
/// `Dropout(0.5)` after the hidden layer (`classifier.0` … `classifier.3`).
///
/// Any input of at least 4 × 4 works; at `1 × 28 × 28` the classifier takes
/// 3136 features.
///
/// # Errors
/// [`Error::InvalidParameter`] for an
/// invalid configuration (see
/// [`ModelConfig::input_shape`]) or a
/// width multiplier other than 1, and a shape error when the input is too
/// small for the network's strides and pools.
///
/// ```
/// use hasten_models::{small_vgg, ModelConfig};
///
/// let graph = small_vgg(&ModelConfig::mnist())?;
/// assert_eq!(graph.node("classifier.0").unwrap().input_shapes()[0].len(), 3136);
/// assert_eq!(graph.node("features.1").unwrap().kind(), "batch_norm");
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn small_vgg(config: &ModelConfig) -> Result<Graph> {
    config.require_unit_width("small_vgg")?;
    let (mut net, x) = Net::new(config)?;
    let y = features(&mut net, x, &SMALL_VGG, true)?;
    let y = classifier(&mut net, y, &[256], config.num_classes)?;
    net.finish(y)
}

//! MobileNet-v1 (Howard et al., 2017; section 3 of the survey): depthwise
//! separable convolutions with a width multiplier α and a resolution
//! multiplier ρ.
//!
//! There is no torchvision MobileNet-v1; names follow the common PyTorch
//! port in which the network is one `Sequential` called `model`:
//!
//! - `model.0.0`, `model.0.1`, `model.0.2`: the stem 3×3 convolution, its
//!   batch norm and ReLU;
//! - `model.{i}.0` … `model.{i}.5` for separable block `i` (1-based): the
//!   depthwise 3×3 convolution, batch norm, ReLU, the pointwise 1×1
//!   convolution, batch norm, ReLU;
//! - `avgpool`, `flatten` and the classifier `fc`.

use hasten_core::graph::Value;
use hasten_core::{ConvSpec, Graph, Result};

use crate::config::ModelConfig;
use crate::net::Net;

/// Howard et al.'s Table 1: the stem's width and the 13 separable blocks
/// as `(output channels, stride)` at α = 1 (strides 2 at blocks 2, 4, 6, 12).
const MOBILENET_V1: (usize, [(usize, usize); 13]) = (
    32,
    [
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (1024, 2),
        (1024, 1),
    ],
);

/// The small MobileNet: stem width and five separable blocks.
const SMALL_MOBILENET: (usize, [(usize, usize); 5]) =
    (16, [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]);

/// `channels · α` rounded to the nearest multiple of 8, at least 8 and never
/// more than 10 % below `channels · α` (TensorFlow's `make_divisible`, as
/// the MobileNet reference implementations scale widths).
///
/// ```
/// use hasten_models::scale_channels;
///
/// assert_eq!(scale_channels(32, 0.75), 24);
/// assert_eq!(scale_channels(1024, 0.25), 256);
/// assert_eq!(scale_channels(32, 0.1), 8);
/// assert_eq!(scale_channels(100, 1.0), 104);
/// ```
pub fn scale_channels(channels: usize, alpha: f64) -> usize {
    let v = channels as f64 * alpha;
    let mut scaled = (((v + 4.0) / 8.0).floor() as usize * 8).max(8);
    if (scaled as f64) < 0.9 * v {
        scaled += 8;
    }
    scaled
}

/// Conv (or depthwise conv) → batch norm → ReLU at `model.{block}.{at..at+3}`.
fn conv_bn_relu(
    net: &mut Net,
    block: usize,
    at: usize,
    x: Value,
    out: Option<usize>,
    k: usize,
    stride: usize,
) -> Result<Value> {
    let name = |j: usize| format!("model.{block}.{}", at + j);
    let spec = ConvSpec::new().with_stride(stride).with_padding(k / 2);
    let y = match out {
        Some(out) => net.conv(&name(0), x, out, k, spec, false)?,
        None => net.depthwise(&name(0), x, k, spec)?,
    };
    let y = net.batch_norm(&name(1), y)?;
    net.relu(&name(2), y)
}

/// A MobileNet-v1-style network: a 3×3 stem convolution of stride
/// `stem_stride`, the separable `blocks`, and the pooled classifier; every
/// width scaled by α.
fn mobilenet(
    config: &ModelConfig,
    stem: usize,
    stem_stride: usize,
    blocks: &[(usize, usize)],
) -> Result<Graph> {
    let alpha = config.width_multiplier;
    let (mut net, x) = Net::new(config)?;
    let mut y = conv_bn_relu(
        &mut net,
        0,
        0,
        x,
        Some(scale_channels(stem, alpha)),
        3,
        stem_stride,
    )?;
    for (i, &(out, stride)) in blocks.iter().enumerate() {
        y = conv_bn_relu(&mut net, i + 1, 0, y, None, 3, stride)?;
        y = conv_bn_relu(
            &mut net,
            i + 1,
            3,
            y,
            Some(scale_channels(out, alpha)),
            1,
            1,
        )?;
    }
    let y = net.pooled_classifier(y, config.num_classes)?;
    net.finish(y)
}

/// MobileNet-v1 (Howard et al., 2017, Table 1): a 3×3/2 stem convolution
/// to 32·α channels, 13 depthwise separable blocks (depthwise 3×3 + batch
/// norm + ReLU, then pointwise 1×1 + batch norm + ReLU; strides 2 at blocks
/// 2, 4, 6 and 12; 64 … 1024 channels, times α), global average pool,
/// flatten and the classifier `fc`. Convolutions have no bias; padding is
/// PyTorch's symmetric padding 1 (TensorFlow's `SAME` pads stride-2 layers
/// on one side only, with the same output sizes and costs on even inputs).
///
/// The width multiplier α of the config scales every width (rounded as
/// [`scale_channels`] does); the resolution multiplier ρ scales the input,
/// `224·ρ` on the ImageNet preset. Multiply–adds scale by about α²ρ²
/// (Howard et al., eq. (5)). At α = ρ = 1 with 1000 classes: 4,231,976
/// parameters (Howard et al.'s 4.2 M) and 568.7 M multiply–adds of
/// convolutions and `fc` (their 569 M).
///
/// # Errors
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for an
/// invalid configuration (see
/// [`ModelConfig::input_shape`]), and a
/// shape error when the input is too small for the network's strides and
/// pools.
///
/// ```
/// use hasten_models::{mobilenet_v1, ModelConfig};
/// use hasten_core::ActShape;
///
/// let config = ModelConfig::imagenet()
///     .with_width_multiplier(0.5)
///     .with_resolution_multiplier(160.0 / 224.0);
/// let graph = mobilenet_v1(&config)?;
/// assert_eq!(graph.inputs()[0].shape(), ActShape::new(3, 160, 160));
/// assert_eq!(graph.node("model.13.3").unwrap().output_shape(), ActShape::new(512, 5, 5));
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn mobilenet_v1(config: &ModelConfig) -> Result<Graph> {
    let (stem, blocks) = MOBILENET_V1;
    mobilenet(config, stem, 2, &blocks)
}

/// A small MobileNet for MNIST-sized inputs, in MobileNet-v1's style and
/// naming: a 3×3 stem convolution of stride 1 to 16·α channels, five
/// separable blocks to 32, 64, 64, 128, 128 channels (times α; blocks 2 and
/// 4 at stride 2), global average pool, flatten and `fc`. At `1 × 28 × 28`
/// the blocks see 28², 14² and 7² planes.
///
/// # Errors
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for an
/// invalid configuration (see
/// [`ModelConfig::input_shape`]), and a
/// shape error when the input is too small for the network's strides and
/// pools.
///
/// ```
/// use hasten_models::{small_mobilenet, ModelConfig};
/// use hasten_core::{ActShape, SeededRng};
///
/// let graph = small_mobilenet(&ModelConfig::mnist().with_width_multiplier(0.5))?;
/// assert_eq!(graph.node("model.5.3").unwrap().output_shape(), ActShape::new(64, 7, 7));
/// let x = SeededRng::new(0).normal_array((1, 1, 28, 28), 1.0);
/// assert_eq!(graph.reference_forward(&[&x])?[0].shape(), &[1, 10, 1, 1]);
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn small_mobilenet(config: &ModelConfig) -> Result<Graph> {
    let (stem, blocks) = SMALL_MOBILENET;
    mobilenet(config, stem, 1, &blocks)
}

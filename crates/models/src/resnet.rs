//! Residual networks (He et al., 2016) with BasicBlocks: torchvision's
//! ResNet-18 and ResNet-34, and a small CIFAR-style ResNet-8.
//!
//! Names follow torchvision's `ResNet` modules: `conv1`, `bn1`, `relu`,
//! `maxpool`, `layer{s}.{b}.conv1`, `.bn1`, `.conv2`, `.bn2`, the projection
//! shortcut `layer{s}.{b}.downsample.0` (1×1 convolution) and
//! `layer{s}.{b}.downsample.1` (its batch norm), `avgpool`, `fc`. A block's
//! `relu` module is applied twice in PyTorch; here the two applications are
//! the nodes `layer{s}.{b}.relu1` (after `bn1`) and `layer{s}.{b}.relu2`
//! (after the residual sum `layer{s}.{b}.add`), and `flatten` stands for
//! `torch.flatten(x, 1)`.

use hasten_core::graph::Value;
use hasten_core::{ConvSpec, Graph, MaxPool, PoolSpec, Result};

use crate::config::ModelConfig;
use crate::net::Net;

/// torchvision's `BasicBlock`: two 3×3 convolutions (the first with the
/// block's stride) with batch norms, and a 1×1 convolution + batch norm
/// shortcut when the stride or width changes.
fn basic_block(
    net: &mut Net,
    prefix: &str,
    x: Value,
    planes: usize,
    stride: usize,
) -> Result<Value> {
    let inplanes = net.shape(x).channels;
    let name = |part: &str| format!("{prefix}.{part}");
    let y = net.conv(
        &name("conv1"),
        x,
        planes,
        3,
        ConvSpec::new().with_stride(stride).with_padding(1),
        false,
    )?;
    let y = net.batch_norm(&name("bn1"), y)?;
    let y = net.relu(&name("relu1"), y)?;
    let y = net.conv(
        &name("conv2"),
        y,
        planes,
        3,
        ConvSpec::new().with_padding(1),
        false,
    )?;
    let y = net.batch_norm(&name("bn2"), y)?;
    let identity = if stride != 1 || inplanes != planes {
        let s = net.conv(
            &name("downsample.0"),
            x,
            planes,
            1,
            ConvSpec::new().with_stride(stride),
            false,
        )?;
        net.batch_norm(&name("downsample.1"), s)?
    } else {
        x
    };
    let y = net.add(&name("add"), y, identity)?;
    net.relu(&name("relu2"), y)
}

/// Stages `layer1`, `layer2`, … of `blocks[i]` BasicBlocks of width
/// `widths[i]`, the first stage at stride 1 and the others at stride 2.
fn stages(net: &mut Net, mut x: Value, widths: &[usize], blocks: &[usize]) -> Result<Value> {
    for (s, (&planes, &count)) in widths.iter().zip(blocks).enumerate() {
        for b in 0..count {
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            x = basic_block(net, &format!("layer{}.{b}", s + 1), x, planes, stride)?;
        }
    }
    Ok(x)
}

/// torchvision's ImageNet ResNet with BasicBlocks.
fn imagenet_resnet(config: &ModelConfig, model: &str, blocks: [usize; 4]) -> Result<Graph> {
    config.require_unit_width(model)?;
    let (mut net, x) = Net::new(config)?;
    let y = net.conv(
        "conv1",
        x,
        64,
        7,
        ConvSpec::new().with_stride(2).with_padding(3),
        false,
    )?;
    let y = net.batch_norm("bn1", y)?;
    let y = net.relu("relu", y)?;
    let pool = MaxPool::new(PoolSpec::square(3).with_stride(2).with_padding(1))?;
    let y = net.op("maxpool", pool, y)?;
    let y = stages(&mut net, y, &[64, 128, 256, 512], &blocks)?;
    let y = net.pooled_classifier(y, config.num_classes)?;
    net.finish(y)
}

/// ResNet-18 as torchvision builds it: a 7×7/2 stem convolution (no bias),
/// batch norm, ReLU and 3×3/2 max-pool (padding 1), four stages of two
/// BasicBlocks (64, 128, 256, 512 channels; stages 2–4 start at stride 2
/// with a 1×1/2 convolution + batch norm shortcut), global average pool,
/// flatten and the classifier `fc`.
///
/// 11,689,512 parameters and 1.81 G multiply–adds (convolutions and `fc`)
/// at `3 × 224 × 224` with 1000 classes. Any input the stride-32 pyramid
/// accepts works (32 × 32 reaches `512 × 1 × 1`). Rejects a width
/// multiplier other than 1.
///
/// # Errors
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for an
/// invalid configuration (see
/// [`ModelConfig::input_shape`]) or a
/// width multiplier other than 1, and a shape error when the input is too
/// small for the network's strides and pools.
///
/// ```
/// use hasten_models::{resnet18, ModelConfig};
/// use hasten_core::ActShape;
///
/// let graph = resnet18(&ModelConfig::imagenet().with_seed(7))?;
/// assert_eq!(graph.cost()?.params, 11_689_512);
/// assert_eq!(graph.output_shapes(), vec![ActShape::flat(1000)]);
/// assert!(graph.node("layer2.0.downsample.0").is_some());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn resnet18(config: &ModelConfig) -> Result<Graph> {
    imagenet_resnet(config, "resnet18", [2, 2, 2, 2])
}

/// ResNet-34: [`resnet18`] with 3, 4, 6 and 3 BasicBlocks per stage.
///
/// 21,797,672 parameters and 3.66 G multiply–adds at `3 × 224 × 224` with
/// 1000 classes.
///
/// # Errors
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for an
/// invalid configuration (see
/// [`ModelConfig::input_shape`]) or a
/// width multiplier other than 1, and a shape error when the input is too
/// small for the network's strides and pools.
///
/// ```
/// use hasten_models::{resnet34, ModelConfig};
///
/// let graph = resnet34(&ModelConfig::imagenet())?;
/// assert_eq!(graph.cost()?.params, 21_797_672);
/// assert!(graph.node("layer3.5.conv2").is_some());
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn resnet34(config: &ModelConfig) -> Result<Graph> {
    imagenet_resnet(config, "resnet34", [3, 4, 6, 3])
}

/// A small CIFAR-style ResNet-8 for MNIST-sized inputs: a 3×3 stem
/// convolution to 16 channels (stride 1, padding 1, no bias) with batch norm
/// and ReLU, no max-pool, three stages of one BasicBlock of widths 16, 32
/// and 64 (stages 2 and 3 at stride 2 with a 1×1 convolution + batch norm
/// shortcut, as in torchvision rather than the zero-padding shortcut of He et
/// al.'s CIFAR models), global average pool, flatten and `fc`: eight
/// weighted layers, named as in [`resnet18`].
///
/// At `1 × 28 × 28` the stages see 28², 14² and 7² planes; any input with
/// the configured channels works.
///
/// # Errors
/// [`Error::InvalidParameter`](hasten_core::Error::InvalidParameter) for an
/// invalid configuration (see
/// [`ModelConfig::input_shape`]) or a
/// width multiplier other than 1, and a shape error when the input is too
/// small for the network's strides and pools.
///
/// ```
/// use hasten_models::{resnet8, ModelConfig};
/// use hasten_core::{ActShape, SeededRng};
///
/// let graph = resnet8(&ModelConfig::mnist())?;
/// let x = SeededRng::new(0).normal_array((2, 1, 28, 28), 1.0);
/// let logits = graph.reference_forward(&[&x])?;
/// assert_eq!(logits[0].shape(), &[2, 10, 1, 1]);
/// # Ok::<(), hasten_core::Error>(())
/// ```
pub fn resnet8(config: &ModelConfig) -> Result<Graph> {
    config.require_unit_width("resnet8")?;
    let (mut net, x) = Net::new(config)?;
    let y = net.conv("conv1", x, 16, 3, ConvSpec::new().with_padding(1), false)?;
    let y = net.batch_norm("bn1", y)?;
    let y = net.relu("relu", y)?;
    let y = stages(&mut net, y, &[16, 32, 64], &[1, 1, 1])?;
    let y = net.pooled_classifier(y, config.num_classes)?;
    net.finish(y)
}

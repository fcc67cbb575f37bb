//! Test helpers: planted layers and the "block is the layer" check.

use hasten_core::ndarray::{Array1, Array4};
use hasten_core::{Block, Conv4d, ConvLayer, ConvSpec, Layer, SeededRng};

/// Max-norm relative error `‖a − b‖_F / ‖b‖_F` of two activations.
pub fn rel(a: &Array4<f32>, b: &Array4<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let d: f64 = a
        .iter()
        .zip(b.iter())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let n: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    (d / n).sqrt()
}

/// A layer with the given f64 kernel, a random bias and `spec`.
pub fn layer_from(kernel: &Array4<f64>, spec: ConvSpec, seed: u64) -> ConvLayer {
    let n = kernel.shape()[0];
    let bias: Array1<f32> = SeededRng::new(seed).normal_array(n, 0.5);
    ConvLayer::new(Conv4d::from_f64(kernel).unwrap(), Some(bias), spec).unwrap()
}

/// Asserts that `block` computes the convolution of `layer`'s spec and bias
/// with the kernel `recon`, on a random input of `input` (C, H, W), batch 2:
/// relative error < 1e-4 (f32 storage of the factors and of the activations
/// of the intermediate ops; both sides accumulate in f64).
pub fn assert_block_is_conv(
    block: &Block,
    layer: &ConvLayer,
    recon: &Array4<f64>,
    input: (usize, usize, usize),
) {
    let dense = ConvLayer::new(
        Conv4d::from_f64(recon).unwrap(),
        layer.bias().cloned(),
        *layer.spec(),
    )
    .unwrap();
    let x: Array4<f32> = SeededRng::new(77).normal_array((2, input.0, input.1, input.2), 1.0);
    let want = Block::single(dense).reference_forward(&x).unwrap();
    let got = block.reference_forward(&x).unwrap();
    let e = rel(&got, &want);
    assert!(
        e < 1e-4,
        "block vs dense conv with reconstructed kernel: {e}"
    );
}

/// The specs every block is checked with: plain, padded, stride 2 + padding,
/// asymmetric padding with dilation.
pub fn specs() -> Vec<ConvSpec> {
    vec![
        ConvSpec::new(),
        ConvSpec::new().with_padding(1),
        ConvSpec::new().with_padding(1).with_stride(2),
        ConvSpec::new()
            .with_padding_sides(hasten_core::Padding {
                top: 2,
                bottom: 1,
                left: 0,
                right: 2,
            })
            .with_dilation(2)
            .with_stride_hw(1, 2),
    ]
}

/// A layer of `Layer` kind.
pub fn as_layer(c: &ConvLayer) -> Layer {
    Layer::Conv(c.clone())
}

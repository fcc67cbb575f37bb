//! Quantization methods of survey section 5 on one ResNet-18 layer
//! (256 → 256, 3×3, padding 1, 14×14 input): bits per weight, compression
//! ratio of the weight payload, weight error and output error of the
//! quantized block's reference forward against the dense layer.
//!
//! The weights are He-initialised Gaussians (no trained checkpoint is
//! bundled), the inputs are rectified Gaussians (post-ReLU activations).
//!
//! Run with `cargo run --release --example quantize`.

use std::time::Instant;

use hasten::core::ndarray::Array4;
use hasten::core::{
    relative_error, ActShape, ConvLayer, ConvSpec, IntType, Layer, Operator, Result, SeededRng,
    Transform,
};
use hasten::quant::fixed_point::{calibrate, Calibration, Mode};
use hasten::quant::int8::activation_params;
use hasten::quant::kmeans1d::{assign_1d, lloyd_1d};
use hasten::quant::ternary::Ternarize;
use hasten::quant::{
    Binarize, DoReFa, FixedPoint, Granularity, Int8Quantize, Lcnn, ProductQuantize, ScalarKMeans,
    Solver, StochasticBinarize,
};

fn main() -> Result<()> {
    let (c, t, hw) = (256usize, 256usize, 14usize);
    let mut rng = SeededRng::new(2024);
    let std = (2.0 / (c * 9) as f64).sqrt();
    let conv = ConvLayer::from_array(
        rng.normal_array((t, c, 3, 3), std),
        ConvSpec::new().with_padding(1),
    )?;
    let layer: Layer = conv.clone().into();
    let input = ActShape::new(c, hw, hw);
    let x: Array4<f32> = rng
        .normal_array((1, c, hw, hw), 1.0)
        .mapv(|v: f32| v.max(0.0));
    let dense = conv.reference_forward(&x)?;
    let (lo, hi) = calibrate(x.as_slice().expect("standard"), Calibration::MinMax, 8)?;
    let act = activation_params(lo, hi, IntType::U8)?;

    let lloyd = |seed| Solver::Lloyd {
        max_iter: 100,
        seed,
    };
    let methods: Vec<(String, Box<dyn Transform>)> = vec![
        ("binary sign, eq. (3)".into(), Box::new(Binarize::sign())),
        (
            "binary α·sign(W), eq. (8)".into(),
            Box::new(Binarize::binary_weights()),
        ),
        ("XNOR-Net, eq. (9)".into(), Box::new(Binarize::xnor_net())),
        (
            "BinaryConnect stochastic".into(),
            Box::new(StochasticBinarize::new(1)),
        ),
        (
            "ternary TWN per-channel".into(),
            Box::new(Ternarize::twn(Granularity::PerChannel)),
        ),
        (
            "ternary stochastic (Lin)".into(),
            Box::new(Ternarize::stochastic(1, Granularity::PerTensor)),
        ),
        (
            "k-means k=4 per-channel (optimal)".into(),
            Box::new(ScalarKMeans::new(
                4,
                Granularity::PerChannel,
                Solver::Optimal,
            )?),
        ),
        (
            "k-means k=16 (Lloyd)".into(),
            Box::new(ScalarKMeans::new(16, Granularity::PerTensor, lloyd(1))?),
        ),
        (
            "k-means k=16 (optimal)".into(),
            Box::new(ScalarKMeans::new(
                16,
                Granularity::PerTensor,
                Solver::Optimal,
            )?),
        ),
        (
            "k-means k=256 (Lloyd)".into(),
            Box::new(ScalarKMeans::new(256, Granularity::PerTensor, lloyd(1))?),
        ),
        (
            "PQ s=256 (d=9), k=32".into(),
            Box::new(ProductQuantize::new(256, 32, 50, 1)?),
        ),
        (
            "PQ s=288 (d=8), k=16".into(),
            Box::new(ProductQuantize::new(288, 16, 50, 1)?),
        ),
        (
            "fixed 8-bit sym per-channel".into(),
            Box::new(FixedPoint::new(
                8,
                Mode::Symmetric,
                Granularity::PerChannel,
            )?),
        ),
        (
            "fixed 4-bit sym per-channel".into(),
            Box::new(FixedPoint::new(
                4,
                Mode::Symmetric,
                Granularity::PerChannel,
            )?),
        ),
        (
            "fixed 4-bit affine per-tensor".into(),
            Box::new(FixedPoint::new(4, Mode::Affine, Granularity::PerTensor)?),
        ),
        ("DoReFa 4-bit".into(), Box::new(DoReFa::new(4)?)),
        ("DoReFa 2-bit".into(), Box::new(DoReFa::new(2)?)),
        (
            "int8 (u8 acts, i32 acc)".into(),
            Box::new(Int8Quantize::new(act, None, Granularity::PerChannel)),
        ),
        ("LCNN m=128, s=8".into(), Box::new(Lcnn::new(128, 8, 2, 1)?)),
    ];

    println!(
        "ResNet-18 layer {c}→{t} 3×3 at {hw}×{hw}; dense: {} MACs, {} weight bytes",
        layer.cost(input)?.macs,
        layer.cost(input)?.weight_bytes
    );
    println!();
    println!("| method | bits/weight | compression | MAC ratio | weight error | output error | quantize time |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, m) in &methods {
        let start = Instant::now();
        let c = m.apply(&layer, input)?;
        let secs = start.elapsed().as_secs_f64();
        let y = c.block.reference_forward(&x)?;
        let r = &c.report;
        println!(
            "| {name} | {:.3} | {:.1}× | {:.2}× | {:.4} | {:.4} | {:.2} s |",
            r.bits_per_weight(),
            r.compression_ratio(),
            r.mac_speedup(),
            r.weight_error.unwrap_or(f64::NAN),
            relative_error(&dense, &y),
            secs
        );
    }

    // XNOR-Net binarizes its input: it belongs after batch normalisation
    // (zero-mean inputs), not after a ReLU, whose outputs all have sign +1.
    let x_bn: Array4<f32> = rng.normal_array((1, c, hw, hw), 1.0);
    let xnor = Binarize::xnor_net().apply(&layer, input)?;
    println!(
        "| XNOR-Net, eq. (9), zero-mean (BN-output) inputs | {:.3} | {:.1}× | {:.2}× | {:.4} | {:.4} | — |",
        xnor.report.bits_per_weight(),
        xnor.report.compression_ratio(),
        xnor.report.mac_speedup(),
        xnor.report.weight_error.unwrap_or(f64::NAN),
        relative_error(&conv.reference_forward(&x_bn)?, &xnor.block.reference_forward(&x_bn)?),
    );

    // Speed of the sorted 1-D Lloyd solver on a 512×512×3×3 kernel.
    let big: Vec<f32> = (0..512 * 512 * 9)
        .map(|_| (rng.normal() * 0.02) as f32)
        .collect();
    let start = Instant::now();
    let km = lloyd_1d(&big, 256, 100, &mut SeededRng::new(1))?;
    let codes = assign_1d(&big, &km.centroids);
    println!();
    println!(
        "k-means k=256 on 512×512×3×3 ({} weights): {} Lloyd iterations, fit + assign {:.3} s ({} codes)",
        big.len(),
        km.iterations,
        start.elapsed().as_secs_f64(),
        codes.len()
    );
    Ok(())
}

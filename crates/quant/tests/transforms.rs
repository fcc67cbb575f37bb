//! Every quantizer on random conv (strided, padded, grouped) and linear
//! layers: no panic; when it succeeds, the block keeps the layer's output
//! shape, its reference forward equals the dense layer built from the op's
//! dequantized weights, and the reported weight bytes equal the packed payload.

use hasten_core::ndarray::{Array2, Array4};
use hasten_core::{
    ActShape, ConvLayer, ConvSpec, IntType, Layer, LinearLayer, Op, QuantParams, SeededRng,
    Transform,
};
use hasten_quant::fixed_point::Mode;
use hasten_quant::ternary::Ternarize;
use hasten_quant::{
    Binarize, DoReFa, FixedPoint, Granularity, Int8Quantize, Lcnn, ProductQuantize, ScalarKMeans,
    Solver, StochasticBinarize,
};
use proptest::prelude::*;

fn transforms(k: usize, bits: u32, s: usize) -> Vec<Box<dyn Transform>> {
    let mut v: Vec<Box<dyn Transform>> = vec![
        Box::new(Binarize::sign()),
        Box::new(Binarize::binary_weights()),
        Box::new(Binarize::xnor_net()),
        Box::new(StochasticBinarize::new(3)),
        Box::new(Ternarize::twn(Granularity::PerChannel)),
        Box::new(Ternarize::stochastic(1, Granularity::PerTensor)),
        Box::new(Int8Quantize::new(
            QuantParams::new(0.02, 128, IntType::U8).unwrap(),
            None,
            Granularity::PerChannel,
        )),
    ];
    for g in [Granularity::PerTensor, Granularity::PerChannel] {
        if let Ok(t) = ScalarKMeans::new(k, g, Solver::Optimal) {
            v.push(Box::new(t));
        }
        if let Ok(t) = ScalarKMeans::new(
            k,
            g,
            Solver::Lloyd {
                max_iter: 20,
                seed: 1,
            },
        ) {
            v.push(Box::new(t));
        }
        for mode in [Mode::Symmetric, Mode::Affine] {
            if let Ok(t) = FixedPoint::new(bits, mode, g) {
                v.push(Box::new(t));
            }
        }
    }
    if let Ok(t) = DoReFa::new(bits) {
        v.push(Box::new(t));
    }
    if let Ok(t) = ProductQuantize::new(s, k, 20, 2) {
        v.push(Box::new(t));
    }
    if let Ok(t) = Lcnn::new(k, s.min(k).max(1), 1, 4) {
        v.push(Box::new(t));
    }
    v
}

/// The dense weight matrix a packed op stands for, and its payload bytes.
fn dequantized(op: &Op) -> Option<(Array2<f32>, u64)> {
    Some(match op {
        Op::BinaryConv(o) => (o.dequantized(), o.signs().payload_bytes()),
        Op::TernaryConv(o) => (o.dequantized(), o.codes().payload_bytes()),
        Op::CodebookConv(o) => (o.dequantized(), o.codes().payload_bytes()),
        Op::ProductQuantizedConv(o) => (o.dequantized(), o.codes().payload_bytes()),
        Op::FixedPointConv(o) => (o.dequantized(), o.codes().payload_bytes()),
        Op::LcnnConv(o) => (o.dequantized(), 0),
        _ => return None,
    })
}

fn check(
    layer: &Layer,
    input: ActShape,
    k: usize,
    bits: u32,
    s: usize,
) -> Result<(), TestCaseError> {
    let mut rng = SeededRng::new(9);
    let x: Array4<f32> = rng.normal_array(input.batched(2), 1.0);
    let mut applied = 0;
    for t in transforms(k, bits, s) {
        let Ok(c) = t.apply(layer, input) else {
            continue;
        };
        applied += 1;
        prop_assert_eq!(
            c.block.output_shape(input).unwrap(),
            layer.output_shape(input).unwrap()
        );
        let op = &c.block.ops()[0];
        let y = c.block.reference_forward(&x).unwrap();
        if let Some((w, payload)) = dequantized(op) {
            let binarize_input = matches!(op, Op::BinaryConv(b) if b.binarize_input());
            if !binarize_input {
                let bias = match layer {
                    Layer::Conv(l) => l.bias().cloned(),
                    Layer::Linear(l) => l.bias().cloned(),
                };
                let layout = hasten_core::WeightLayout::of_layer(layer);
                let want = layout.dense_forward(w, bias, &x).unwrap();
                for (a, b) in y.iter().zip(want.iter()) {
                    prop_assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{}: {a} vs {b}",
                        t.name()
                    );
                }
            }
            prop_assert!(c.report.after.weight_bytes >= payload);
        }
        prop_assert!(c.report.bits_per_weight().is_finite());
    }
    // Binary (4), ternary (2) and int8 apply to every layer.
    prop_assert!(applied >= 7, "only {applied} transforms applied");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn conv_layers(t in 1usize..5, cg in 1usize..4, kh in 1usize..4, groups in 1usize..3,
                   stride in 1usize..3, pad in 0usize..2, k in 0usize..6, bits in 0u32..10, s in 0usize..4,
                   bias in any::<bool>()) {
        let t = t * groups;
        let mut rng = SeededRng::new((t * 100 + cg * 10 + kh) as u64);
        let w = rng.normal_array((t, cg, kh, kh), 0.5);
        let b = bias.then(|| rng.normal_array(t, 0.1));
        let spec = ConvSpec::new().with_groups(groups).with_stride(stride).with_padding(pad);
        let layer: Layer = ConvLayer::new(hasten_core::Conv4d::new(w).unwrap(), b, spec).unwrap().into();
        check(&layer, ActShape::new(cg * groups, 5, 4), k, bits, s)?;
    }

    #[test]
    fn linear_layers(out in 1usize..6, inp in 1usize..12, k in 0usize..6, bits in 0u32..10, s in 0usize..4) {
        let mut rng = SeededRng::new((out * 100 + inp) as u64);
        let layer: Layer = LinearLayer::new(rng.normal_array((out, inp), 1.0), Some(rng.normal_array(out, 0.1))).unwrap().into();
        check(&layer, ActShape::new(inp, 1, 1), k, bits, s)?;
    }
}

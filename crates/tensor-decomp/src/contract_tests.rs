//! The transform contract across all methods: the report's weight error
//! bounds the block's output error.
//!
//! For a convolution, `y − ŷ` at each output position is `(W − Ŵ)` applied to
//! one input patch, so `‖y − ŷ‖ ≤ ‖W − Ŵ‖_F · √(Σ_positions ‖patch‖²)
//! ≤ weight_error · ‖W‖_F · √(kh·kw) · ‖x‖` (every input pixel lies in at most
//! `kh·kw` patches). Every transform that keeps the layer's bias must satisfy
//! it on any input.

use hasten_core::ndarray::Array4;
use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, Layer, SeededRng, Transform};

use crate::cp::{CpConv, CpOptions, CpVariant};
use crate::testutil::layer_from;
use crate::{
    BiclusterCp, BiclusterSvd, Monochromatic, RankSpec, SeparableFilters, TruncatedSvd, TtConv,
    Tucker2,
};

fn norm(a: &Array4<f32>) -> f64 {
    a.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn weight_error_bounds_output_error() {
    let kernel = SeededRng::new(11).normal_array_f64((8, 6, 3, 3), 1.0);
    let transforms: Vec<Box<dyn Transform>> = vec![
        Box::new(TruncatedSvd::new(RankSpec::Fixed(3))),
        Box::new(SeparableFilters::new(RankSpec::Fixed(4))),
        Box::new(
            CpConv::new(RankSpec::Fixed(5))
                .with_als_options(CpOptions::default().with_max_iter(20)),
        ),
        Box::new(
            CpConv::new(RankSpec::Fixed(5))
                .with_variant(CpVariant::ThreeWay)
                .with_als_options(CpOptions::default().with_max_iter(20)),
        ),
        Box::new(Tucker2::with_ranks(4, 3)),
        Box::new(TtConv::new(RankSpec::Fixed(3))),
        Box::new(Monochromatic::new(3)),
        Box::new(BiclusterSvd::new(2, 2, 2, 2)),
        Box::new(BiclusterCp::new(2, 2, RankSpec::Fixed(2))),
    ];
    for spec in [
        ConvSpec::new().with_padding(1),
        ConvSpec::new().with_padding(1).with_stride(2),
    ] {
        let conv: ConvLayer = layer_from(&kernel, spec, 3);
        let layer = Layer::Conv(conv.clone());
        let x: Array4<f32> = SeededRng::new(12).normal_array((2, 6, 7, 7), 1.0);
        let y = Block::single(conv.clone()).reference_forward(&x).unwrap();
        let w_norm = conv.weight().frobenius_norm();
        for t in &transforms {
            let c = t.apply(&layer, ActShape::new(6, 7, 7)).unwrap();
            let err = c.report.weight_error.unwrap();
            let y_hat = c.block.reference_forward(&x).unwrap();
            let diff = norm(&(&y_hat - &y));
            // f32 storage of factors and activations: 1e-5 of ‖y‖ slack.
            let bound = err * w_norm * 3.0 * norm(&x) + 1e-5 * norm(&y);
            assert!(
                diff <= bound,
                "{}: output error {diff} > bound {bound}",
                t.name()
            );
            assert!(err > 0.0 && err < 1.0, "{}: weight error {err}", t.name());
        }
    }
}

#[test]
fn speedup_targets_are_met_with_stride_and_padding() {
    let kernel = SeededRng::new(13).normal_array_f64((16, 12, 3, 3), 1.0);
    let target = 2.5;
    let s = RankSpec::Speedup(target);
    let quick = CpOptions::default().with_max_iter(3);
    let transforms: Vec<Box<dyn Transform>> = vec![
        Box::new(TruncatedSvd::new(s)),
        Box::new(SeparableFilters::new(s)),
        Box::new(CpConv::new(s).with_als_options(quick.clone())),
        Box::new(
            CpConv::new(s)
                .with_variant(CpVariant::ThreeWay)
                .with_als_options(quick.clone()),
        ),
        Box::new(Tucker2::new(s)),
        Box::new(TtConv::new(s)),
        Box::new(BiclusterCp::new(2, 2, s).with_cp_options(quick)),
    ];
    for spec in [
        ConvSpec::new().with_padding(1).with_stride(2),
        ConvSpec::new().with_padding_sides(hasten_core::Padding {
            top: 2,
            bottom: 0,
            left: 1,
            right: 1,
        }),
    ] {
        let layer = Layer::Conv(layer_from(&kernel, spec, 1));
        for t in &transforms {
            let c = t.apply(&layer, ActShape::new(12, 9, 9)).unwrap();
            assert!(
                c.report.mac_speedup() >= target,
                "{}: {}",
                t.name(),
                c.report.mac_speedup()
            );
        }
    }
}

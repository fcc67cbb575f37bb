//! Every transform of `hasten-tensor-decomp`, run through `hasten::fastconv`,
//! agrees with its reference forward (stride 1 and 2, symmetric and
//! asymmetric padding, batch 1 and 3); its block is the dense layer with the
//! kernel it computes (read back from the block by probing); that kernel's
//! distance to the original is the report's weight error; and the block's
//! output stays within the error bound that weight error implies.

mod common;

use common::{
    check_conv_transform, check_linear_transform, conv_layer, linear_layer, specs, BiasRule,
};
use hasten::core::{ActShape, Layer, Transform};
use hasten::tensor_decomp::asymmetric::{layer_responses, sample_patches};
use hasten::tensor_decomp::cp::{CpAlgorithm, CpVariant};
use hasten::tensor_decomp::{
    AsymmetricOptions, AsymmetricReconstruction, BiclusterCp, BiclusterSvd, CpConv, Monochromatic,
    RankSpec, SeparableFilters, TruncatedSvd, TtConv, TtMatrix, Tucker2,
};

/// Output channels, input channels and spatial size of the test layers.
const T: usize = 6;
const C: usize = 4;
const HW: usize = 7;

/// Runs the conv checks of `make(layer)` on one seeded layer per spec.
fn each_spec(make: impl Fn(&hasten::core::ConvLayer) -> Box<dyn Transform>, bias: BiasRule) {
    for (i, spec) in specs().into_iter().enumerate() {
        let layer = conv_layer(T, C, spec, 10 + i as u64);
        let t = make(&layer);
        check_conv_transform(t.as_ref(), &layer, HW, bias, 100 + i as u64);
    }
}

#[test]
fn channel_svd_conv() {
    each_spec(
        |_| Box::new(TruncatedSvd::new(RankSpec::Fixed(3))),
        BiasRule::Kept,
    );
}

/// Ranks chosen from the spectrum or a MAC target (which depends on the
/// output size, so on the stride) give blocks with the same guarantees.
#[test]
fn data_chosen_ranks() {
    each_spec(
        |_| Box::new(TruncatedSvd::new(RankSpec::Energy(0.8))),
        BiasRule::Kept,
    );
    each_spec(
        |_| Box::new(Tucker2::new(RankSpec::Speedup(1.5))),
        BiasRule::Kept,
    );
    each_spec(
        |_| Box::new(CpConv::new(RankSpec::Speedup(2.0))),
        BiasRule::Kept,
    );
}

#[test]
fn svd_linear() {
    let layer = linear_layer(8, 12, 3);
    let out = check_linear_transform(&TruncatedSvd::new(RankSpec::Fixed(3)), &layer, 4);
    assert_eq!(out.block.ops().len(), 2);
}

#[test]
fn separable_filters() {
    each_spec(
        |_| Box::new(SeparableFilters::new(RankSpec::Fixed(4))),
        BiasRule::Kept,
    );
}

#[test]
fn cp_four_way() {
    each_spec(
        |_| Box::new(CpConv::new(RankSpec::Fixed(5))),
        BiasRule::Kept,
    );
}

#[test]
fn cp_four_way_deflation() {
    each_spec(
        |_| Box::new(CpConv::new(RankSpec::Fixed(4)).with_algorithm(CpAlgorithm::Deflation)),
        BiasRule::Kept,
    );
}

#[test]
fn cp_three_way() {
    each_spec(
        |_| Box::new(CpConv::new(RankSpec::Fixed(5)).with_variant(CpVariant::ThreeWay)),
        BiasRule::Kept,
    );
}

#[test]
fn tucker2() {
    each_spec(|_| Box::new(Tucker2::with_ranks(3, 2)), BiasRule::Kept);
}

#[test]
fn tt_conv() {
    each_spec(
        |_| Box::new(TtConv::new(RankSpec::Fixed(3))),
        BiasRule::Kept,
    );
}

#[test]
fn tt_matrix_linear() {
    let layer = linear_layer(8, 12, 5);
    let t = TtMatrix::new(vec![2, 4], vec![3, 4], RankSpec::Fixed(3));
    check_linear_transform(&t, &layer, 6);
}

#[test]
fn monochromatic() {
    each_spec(
        |_| Box::new(Monochromatic::new(2).with_seed(1)),
        BiasRule::Kept,
    );
}

#[test]
fn bicluster_svd() {
    each_spec(
        |_| Box::new(BiclusterSvd::new(2, 2, 2, 2).with_seed(2)),
        BiasRule::Kept,
    );
}

#[test]
fn bicluster_cp() {
    each_spec(
        |_| Box::new(BiclusterCp::new(2, 2, RankSpec::Fixed(3)).with_seed(3)),
        BiasRule::Kept,
    );
}

/// Asymmetric reconstruction (Zhang et al.) fitted to the layer's own
/// responses on seeded patches; it refits the bias, so only the kernel part
/// of the output is bounded by the weight error.
fn asymmetric(layer: &hasten::core::ConvLayer, nonlinear: bool) -> Box<dyn Transform> {
    let x = hasten::core::SeededRng::new(7).normal_array((4, C, HW, HW), 1.0);
    let patches = sample_patches(layer, &x, 200, 8).unwrap();
    let targets = layer_responses(layer, patches.view()).unwrap();
    let options = AsymmetricOptions {
        nonlinear,
        iterations: 5,
        ..AsymmetricOptions::default()
    };
    Box::new(
        AsymmetricReconstruction::new(RankSpec::Fixed(3), patches, targets).with_options(options),
    )
}

#[test]
fn asymmetric_linear() {
    each_spec(|l| asymmetric(l, false), BiasRule::Refitted);
}

#[test]
fn asymmetric_nonlinear() {
    each_spec(|l| asymmetric(l, true), BiasRule::Refitted);
}

/// The conv-only transforms reject a fully connected layer with a typed
/// error rather than a panic (they have no linear block).
#[test]
fn conv_only_transforms_reject_linear_layers() {
    let layer = Layer::Linear(linear_layer(8, 12, 9));
    let input = ActShape::new(12, 1, 1);
    let conv_only: Vec<Box<dyn Transform>> = vec![
        Box::new(SeparableFilters::new(RankSpec::Fixed(2))),
        Box::new(CpConv::new(RankSpec::Fixed(2))),
        Box::new(Tucker2::with_ranks(2, 2)),
        Box::new(TtConv::new(RankSpec::Fixed(2))),
        Box::new(Monochromatic::new(2)),
    ];
    for t in conv_only {
        assert!(
            t.apply(&layer, input).is_err(),
            "{} accepted a linear layer",
            t.name()
        );
    }
}

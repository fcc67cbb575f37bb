//! The depthwise kernel equals the reference forward on every ISA path for
//! the shapes its fast paths special-case: planes wider than one 16-lane
//! run (borders inside and across runs), planes narrower than a run, single
//! rows and columns, strides up to 5 (gathered lanes), asymmetric padding,
//! shifted channel views, and the MobileNet `3×3` stride-1 / stride-2
//! and CP `3×1` / `1×3` layers at every residue of the 4-row blocking.

mod common;

use common::relative_error;
use hasten_core::ndarray::Array4;
use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, Op, Padding, Relu, SeededRng, Shift};
use hasten_fastconv::{Isa, Plan};
use proptest::prelude::*;

/// f32 accumulation of at most 25 terms against an f64 reference.
const TOL: f64 = 1e-4;

/// The largest relative error over every supported ISA.
fn worst_error(block: &Block, x: &Array4<f32>) -> f64 {
    let slow = block.reference_forward(x).unwrap();
    let shape = ActShape::new(x.shape()[1], x.shape()[2], x.shape()[3]);
    Isa::supported()
        .into_iter()
        .map(|isa| {
            let mut plan = Plan::with_isa(block, shape, x.shape()[0], isa).unwrap();
            relative_error(&plan.run(x).unwrap().to_owned(), &slow)
        })
        .fold(0.0, f64::max)
}

/// A depthwise layer on `channels` channels with multiplier `t_g`.
fn depthwise(
    rng: &mut SeededRng,
    channels: usize,
    t_g: usize,
    kernel: (usize, usize),
    spec: ConvSpec,
) -> ConvLayer {
    let w = rng.normal_array((channels * t_g, 1, kernel.0, kernel.1), 1.0);
    let bias = rng.normal_array(channels * t_g, 1.0);
    ConvLayer::new(
        hasten_core::Conv4d::new(w).unwrap(),
        Some(bias),
        spec.with_groups(channels),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn wide_narrow_and_strided_planes_match_reference(
        (kh, kw, sh, sw) in (1..=5usize, 1..=5usize, 1..=5usize, 1..=5usize),
        (dh, dw, t_g, channels) in (1..=2usize, 1..=2usize, 1..=2usize, 2..=4usize),
        (pt, pb, pl, pr) in (0..=3usize, 0..=3usize, 0..=3usize, 0..=3usize),
        (eh, ew, relu, shifted) in (0..=20usize, 0..=44usize, any::<bool>(), any::<bool>()),
        seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let h = ((kh - 1) * dh + 1).saturating_sub(pt + pb).max(1) + eh;
        let w = ((kw - 1) * dw + 1).saturating_sub(pl + pr).max(1) + ew;
        let spec = ConvSpec::new()
            .with_stride_hw(sh, sw)
            .with_padding_sides(Padding { top: pt, bottom: pb, left: pl, right: pr });
        let spec = ConvSpec { dilation: (dh, dw), ..spec };
        let mut ops: Vec<Op> = Vec::new();
        if shifted {
            let offsets = (0..channels)
                .map(|_| (rng.below(5) as isize - 2, rng.below(5) as isize - 2))
                .collect();
            ops.push(Shift::new(offsets).unwrap().into());
        }
        ops.push(depthwise(&mut rng, channels, t_g, (kh, kw), spec).into());
        if relu {
            ops.push(Relu.into());
        }
        let block = Block::new(ops).unwrap();
        let x = rng.normal_array((1, channels, h, w), 1.0);
        let err = worst_error(&block, &x);
        prop_assert!(err < TOL, "relative error {err}");
    }
}

#[test]
fn mobilenet_and_cp_shaped_layers_match_reference() {
    let mut rng = SeededRng::new(11);
    for (kernel, stride) in [((3, 3), 1), ((3, 3), 2), ((3, 1), 1), ((1, 3), 1)] {
        for hw in [1, 2, 5, 7, 13, 14, 15, 16, 17, 28, 33] {
            let spec = ConvSpec::new().with_stride(stride).with_padding(1);
            let block = Block::new(vec![
                depthwise(&mut rng, 3, 1, kernel, spec).into(),
                Relu.into(),
            ])
            .unwrap();
            let x = rng.normal_array((2, 3, hw, hw), 1.0);
            let err = worst_error(&block, &x);
            assert!(
                err < TOL,
                "{kernel:?} stride {stride}, {hw}×{hw}: relative error {err}"
            );
        }
    }
}

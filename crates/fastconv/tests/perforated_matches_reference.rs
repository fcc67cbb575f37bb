//! The perforated convolution kernel (GEMM over the kept positions, nearest
//! fill) equals the reference forward on every instruction-set path, and
//! never panics on inputs of the wrong shape.

mod common;

use common::relative_error;
use hasten_core::ndarray::Array4;
use hasten_core::{
    ActShape, Block, Clip, ConvLayer, ConvSpec, Op, Operator, Padding, PerforatedConv, Relu,
    SeededRng,
};
use hasten_fastconv::{Isa, Plan};
use proptest::prelude::*;

/// f32 accumulation over at most a few thousand terms against an f64
/// reference stays two orders of magnitude below this.
const TOL: f64 = 1e-4;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn perforated_matches_reference(
        (groups, c_g, t_g, k) in (1..=2usize, 1..=5usize, 1..=9usize, 1..=3usize),
        (stride, dilation, pad, extra) in (1..=2usize, 1..=2usize, 0..=2usize, 0..=9usize),
        (batch, keep, bias, act) in (1..=3usize, 0.05..1.0f64, any::<bool>(), 0..3usize),
        seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let spec = ConvSpec::new()
            .with_stride(stride)
            .with_dilation(dilation)
            .with_groups(groups)
            .with_padding_sides(Padding { top: pad, bottom: 0, left: 0, right: pad });
        let t = groups * t_g;
        let conv = ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((t, c_g, k, k), 1.0)).unwrap(),
            bias.then(|| rng.normal_array(t, 1.0)),
            spec,
        )
        .unwrap();
        let side = dilation * (k - 1) + 1 + extra;
        let input = ActShape::new(groups * c_g, side, side);
        let out = conv.output_shape(input).unwrap();
        let (oh, ow) = (out.height, out.width);
        let mut mask: Vec<bool> = (0..oh * ow).map(|_| rng.uniform() < keep).collect();
        mask[rng.below(oh * ow)] = true;
        let perf = PerforatedConv::new(conv, (oh, ow), mask).unwrap();
        let mut ops: Vec<Op> = vec![perf.into()];
        // No activation, a fused ReLU, or a fused Clip.
        match act {
            1 => ops.push(Relu.into()),
            2 => ops.push(Clip::new(-0.5, 0.75).unwrap().into()),
            _ => {}
        }
        let block = Block::new(ops).unwrap();
        let x: Array4<f32> = rng.normal_array((batch, input.channels, side, side), 1.0);
        let slow = block.reference_forward(&x).unwrap();
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, input, batch, isa).unwrap();
            for _ in 0..2 {
                let fast = plan.run(&x).unwrap().to_owned();
                let err = relative_error(&fast, &slow);
                prop_assert!(err < TOL, "{isa}: relative error {err}");
            }
        }
    }

    #[test]
    fn perforated_never_panics(
        (n, c, h, w) in (0..=2usize, 0..=4usize, 0..=7usize, 0..=7usize),
        (oh, ow, seed) in (1..=6usize, 1..=6usize, any::<u64>()),
    ) {
        let mut rng = SeededRng::new(seed);
        let conv = ConvLayer::from_array(rng.normal_array((3, 2, 3, 3), 1.0), ConvSpec::new().with_padding(1)).unwrap();
        let mask: Vec<bool> = (0..oh * ow).map(|p| p % 2 == 0).collect();
        let op: Op = PerforatedConv::new(conv, (oh, ow), mask).unwrap().into();
        let x: Array4<f32> = rng.normal_array((n, c, h, w), 1.0);
        let valid = hasten_core::op::input_shape_of(&x).and_then(|s| op.output_shape(s)).is_ok();
        let fast = hasten_fastconv::forward_op(&op, &x);
        prop_assert_eq!(fast.is_ok(), valid, "{:?}", fast.err());
        if let Ok(fast) = fast {
            let err = relative_error(&fast, &op.reference_forward(&x).unwrap());
            prop_assert!(err < TOL, "relative error {err}");
        }
    }
}

//! Random, also invalid, layers and inputs: the fast forward never panics and
//! fails exactly when the block cannot take the input.

use hasten_core::ndarray::Array4;
use hasten_core::op::input_shape_of;
use hasten_core::{Block, ConvLayer, ConvSpec, LinearLayer, Op, Padding, Relu, SeededRng};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn forward_never_panics(
        (t, c_g, kh, kw) in (1..=4usize, 1..=3usize, 1..=4usize, 1..=4usize),
        (groups, s, d) in (0..=3usize, 0..=3usize, 0..=2usize),
        (pt, pb, pl, pr) in (0..=3usize, 0..=3usize, 0..=3usize, 0..=3usize),
        (n, c, h, w) in (0..=2usize, 0..=7usize, 0..=6usize, 0..=6usize),
        (with_linear, features, seed) in (any::<bool>(), 1..=40usize, any::<u64>()),
    ) {
        let mut rng = SeededRng::new(seed);
        let spec = ConvSpec::new()
            .with_stride(s)
            .with_dilation(d)
            .with_groups(groups)
            .with_padding_sides(Padding { top: pt, bottom: pb, left: pl, right: pr });
        let Ok(layer) = ConvLayer::from_array(rng.normal_array((t, c_g, kh, kw), 1.0), spec) else {
            // An invalid spec is refused at construction; nothing to run.
            return Ok(());
        };
        let mut ops: Vec<Op> = vec![layer.into(), Relu.into()];
        if with_linear {
            ops.push(LinearLayer::new(rng.normal_array((2, features), 1.0), None).unwrap().into());
        }
        let block = Block::new(ops).unwrap();
        let x: Array4<f32> = rng.normal_array((n, c, h, w), 1.0);
        let valid = input_shape_of(&x).and_then(|s| block.shapes(s)).is_ok();
        let fast = hasten_fastconv::forward(&block, &x);
        prop_assert_eq!(fast.is_ok(), valid, "{:?}", fast.err());
        for op in block.ops() {
            let one = hasten_fastconv::forward_op(op, &x);
            let ok = input_shape_of(&x).and_then(|s| hasten_core::Operator::output_shape(op, s)).is_ok();
            prop_assert_eq!(one.is_ok(), ok);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn plan_never_panics(
        (t, c_g, k, groups) in (1..=4usize, 1..=3usize, 1..=3usize, 1..=2usize),
        (c, h, w, batch) in (0..=7usize, 0..=6usize, 0..=6usize, 0..=3usize),
        (rn, rc, rh, rw) in (0..=3usize, 0..=7usize, 0..=6usize, 0..=6usize),
        (isa, seed) in (0..3usize, any::<u64>()),
    ) {
        let mut rng = SeededRng::new(seed);
        let spec = ConvSpec::new().with_padding(1).with_groups(groups);
        let Ok(layer) = ConvLayer::from_array(rng.normal_array((t * groups, c_g, k, k), 1.0), spec) else {
            return Ok(());
        };
        let block = Block::single(layer);
        let isa = [hasten_fastconv::Isa::Avx512, hasten_fastconv::Isa::Avx2, hasten_fastconv::Isa::Scalar][isa];
        let shape = hasten_core::ActShape::new(c, h, w);
        let plan = hasten_fastconv::Plan::with_isa(&block, shape, batch, isa);
        let valid = batch > 0 && isa.is_supported() && !shape.is_empty() && block.shapes(shape).is_ok();
        prop_assert_eq!(plan.is_ok(), valid, "{:?}", plan.as_ref().err());
        if let Ok(mut plan) = plan {
            let x: Array4<f32> = rng.normal_array((rn, rc, rh, rw), 1.0);
            let same = [rn, rc, rh, rw] == shape.batched(batch);
            prop_assert_eq!(plan.run(&x).is_ok(), same);
        }
    }
}

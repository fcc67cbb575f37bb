//! Random, also invalid, layers and inputs: the fast forward never panics and
//! fails exactly when the block cannot take the input.

use hasten_core::ndarray::Array4;
use hasten_core::op::input_shape_of;
use hasten_core::{Block, ConvLayer, ConvSpec, LinearLayer, Op, Padding, Relu, SeededRng};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Three cases in four get a valid spec and, of those, three in four an
    /// input (and linear width) that fits, so the forward runs on most
    /// cases; the rest keep the raw, often invalid, parameters.
    #[test]
    fn forward_never_panics(
        (t, c_g, kh, kw) in (1..=4usize, 1..=3usize, 1..=4usize, 1..=4usize),
        (groups, s, d) in (0..=3usize, 0..=3usize, 0..=2usize),
        (pt, pb, pl, pr) in (0..=3usize, 0..=3usize, 0..=3usize, 0..=3usize),
        (n, c, h, w) in (0..=2usize, 0..=7usize, 0..=6usize, 0..=6usize),
        (with_linear, features, seed) in (any::<bool>(), 1..=40usize, any::<u64>()),
        (raw_spec, raw_input) in (0..4usize, 0..4usize),
    ) {
        let mut rng = SeededRng::new(seed);
        let valid_spec = raw_spec != 0;
        let (groups, s, d) = if valid_spec {
            (groups.max(1), s.max(1), d.max(1))
        } else {
            (groups, s, d)
        };
        let spec = ConvSpec::new()
            .with_stride(s)
            .with_dilation(d)
            .with_groups(groups)
            .with_padding_sides(Padding { top: pt, bottom: pb, left: pl, right: pr });
        // With a valid spec, the filter count is a multiple of the groups.
        let filters = if valid_spec { t * groups } else { t };
        let made = ConvLayer::from_array(rng.normal_array((filters, c_g, kh, kw), 1.0), spec);
        prop_assert!(made.is_ok() || !valid_spec, "{:?}", made.as_ref().err());
        let Ok(layer) = made else {
            // An invalid spec is refused at construction; nothing to run.
            return Ok(());
        };
        let fits = raw_input != 0;
        let (n, c, h, w) = if fits {
            // At least one output row and column: the dilated kernel fits.
            (n.max(1), c_g * groups, h + d * (kh - 1) + 1, w + d * (kw - 1) + 1)
        } else {
            (n, c, h, w)
        };
        let features = match hasten_core::Operator::output_shape(&layer, hasten_core::ActShape::new(c, h, w)) {
            Ok(out) if fits => out.len(),
            _ => features,
        };
        let mut ops: Vec<Op> = vec![layer.into(), Relu.into()];
        if with_linear {
            ops.push(LinearLayer::new(rng.normal_array((2, features), 1.0), None).unwrap().into());
        }
        let block = Block::new(ops).unwrap();
        let x: Array4<f32> = rng.normal_array((n, c, h, w), 1.0);
        let valid = input_shape_of(&x).and_then(|s| block.shapes(s)).is_ok();
        prop_assert!(valid || !fits, "a fitting input was refused: {:?}", block.shapes(hasten_core::ActShape::new(c, h, w)).err());
        let fast = hasten_fastconv::forward(&block, &x);
        prop_assert_eq!(fast.is_ok(), valid, "{:?}", fast.err());
        if let Ok(y) = &fast {
            // The forward ran: it agrees with the reference.
            let want = block.reference_forward(&x).unwrap();
            prop_assert_eq!(y.shape(), want.shape());
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (a, b) in y.iter().zip(want.iter()) {
                prop_assert!((a - b).abs() <= 1e-4 * scale, "{} vs {}", a, b);
            }
        }
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

//! The fast forward equals the reference forward (relative error < 1e-4).

mod common;

use common::{conv_case, relative_error};
use hasten_core::ndarray::Array4;
use hasten_core::{
    BatchNorm, Block, ChannelShuffle, ConvLayer, ConvSpec, LinearLayer, Op, Relu, SeededRng, Shift,
};
use proptest::prelude::*;

/// f32 accumulation over at most a few hundred terms against an f64
/// reference stays far below this.
const TOL: f64 = 1e-4;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn conv_matches_reference(case in conv_case(3, 5, 4)) {
        let (layer, x) = case.build();
        let op: Op = layer.into();
        let fast = hasten_fastconv::forward_op(&op, &x).unwrap();
        let slow = hasten_core::Operator::reference_forward(&op, &x).unwrap();
        let err = relative_error(&fast, &slow);
        prop_assert!(err < TOL, "relative error {err} for {case:?}");
    }

    #[test]
    fn block_of_every_op_matches_reference(
        batch in 1..=3usize,
        c in 1..=4usize,
        hw in 2..=7usize,
        shuffle_groups in 1..=2usize,
        seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let channels = 2 * c;
        let conv = ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((channels, 2, 3, 3), 1.0)).unwrap(),
            Some(rng.normal_array(channels, 1.0)),
            ConvSpec::new().with_padding(1).with_groups(c),
        )
        .unwrap();
        let bn = BatchNorm::new(
            rng.normal_array(channels, 1.0),
            rng.normal_array(channels, 1.0),
            rng.normal_array(channels, 1.0),
            rng.uniform_array(channels, 0.1, 2.0),
            1e-5,
        )
        .unwrap();
        let offsets = (0..channels)
            .map(|_| (rng.below(5) as isize - 2, rng.below(5) as isize - 2))
            .collect();
        let linear = LinearLayer::new(
            rng.normal_array((5, channels * hw * hw), 1.0),
            Some(rng.normal_array(5, 1.0)),
        )
        .unwrap();
        let block = Block::new(vec![
            conv.into(),
            bn.into(),
            Relu.into(),
            ChannelShuffle::new(shuffle_groups).unwrap().into(),
            Shift::new(offsets).unwrap().into(),
            linear.into(),
        ])
        .unwrap();
        let x: Array4<f32> = rng.normal_array((batch, channels, hw, hw), 1.0);
        let fast = hasten_fastconv::forward(&block, &x).unwrap();
        let slow = block.reference_forward(&x).unwrap();
        let err = relative_error(&fast, &slow);
        prop_assert!(err < TOL, "relative error {err}");
    }
}

#[test]
fn non_standard_layout_input_is_accepted() {
    let mut rng = SeededRng::new(3);
    let layer = ConvLayer::from_array(
        rng.normal_array((4, 3, 3, 3), 1.0),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let x: Array4<f32> = rng.normal_array((5, 5, 3, 2), 1.0);
    let x = x.permuted_axes([3, 2, 0, 1]);
    let op: Op = layer.into();
    let fast = hasten_fastconv::forward_op(&op, &x).unwrap();
    let slow = hasten_core::Operator::reference_forward(&op, &x).unwrap();
    assert!(relative_error(&fast, &slow) < TOL);
}

//! The fast kernels equal the reference forward (relative error < 1e-4) on
//! every instruction-set path this CPU supports, the portable one included.

mod common;

use common::{conv_case, relative_error, ConvCase};
use hasten_core::ndarray::Array4;
use hasten_core::{
    ActShape, BatchNorm, Block, ChannelShuffle, ConvLayer, ConvSpec, LinearLayer, Op, Padding,
    Relu, SeededRng, Shift,
};
use hasten_fastconv::{Isa, Plan, PlanOptions, Winograd};
use proptest::prelude::*;

/// f32 accumulation over at most a few thousand terms against an f64
/// reference stays two orders of magnitude below this.
const TOL: f64 = 1e-4;

/// Runs `block` on `x` with every supported ISA and compares with the reference.
fn check_all_paths(block: &Block, x: &Array4<f32>) -> Result<(), TestCaseError> {
    let slow = block.reference_forward(x).unwrap();
    let shape = ActShape::new(x.shape()[1], x.shape()[2], x.shape()[3]);
    for isa in Isa::supported() {
        for winograd in [Winograd::F4, Winograd::F2, Winograd::Off] {
            let options = PlanOptions {
                isa,
                winograd,
                ..PlanOptions::default()
            };
            let mut plan = Plan::with_options(block, shape, x.shape()[0], options).unwrap();
            let fast = plan.run(x).unwrap().to_owned();
            let err = relative_error(&fast, &slow);
            prop_assert!(err < TOL, "{options:?}: relative error {err}");
        }
    }
    Ok(())
}

/// The kernel of the first step of `block`'s plan for `x`.
fn first_kernel(block: &Block, x: &Array4<f32>, winograd: Winograd) -> String {
    let shape = ActShape::new(x.shape()[1], x.shape()[2], x.shape()[3]);
    let options = PlanOptions {
        winograd,
        ..PlanOptions::default()
    };
    let plan = Plan::with_options(block, shape, x.shape()[0], options).unwrap();
    plan.steps()[0].kernel.clone()
}

fn check_case(case: &ConvCase, relu: bool) -> Result<(), TestCaseError> {
    let (layer, x) = case.build();
    let mut ops: Vec<Op> = vec![layer.into()];
    if relu {
        ops.push(Relu.into());
    }
    check_all_paths(&Block::new(ops).unwrap(), &x)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn conv_matches_reference(case in conv_case(3, 5, 4), relu in any::<bool>()) {
        check_case(&case, relu)?;
    }

    #[test]
    fn depthwise_matches_reference(mut case in conv_case(1, 1, 5), groups in 2..=19usize, multiplier in 1..=2usize) {
        case.groups = groups;
        case.c_g = 1;
        case.t_g = multiplier;
        check_case(&case, multiplier == 1)?;
    }

    #[test]
    fn wide_gemm_tiles_match_reference(mut case in conv_case(2, 3, 3), t_g in 11..=40usize, c_g in 20..=34usize) {
        // Several MR panels, partial edge tiles and K blocks (C_g·kh·kw > 256).
        case.t_g = t_g;
        case.c_g = c_g;
        case.kh = 3;
        case.kw = 3;
        case.batch = 1;
        check_case(&case, true)?;
    }

    #[test]
    fn winograd_sized_layers_match_reference(
        mut case in conv_case(1, 1, 3),
        (c, t, relu) in (16..=24usize, 16..=30usize, any::<bool>()),
    ) {
        // Dense stride-1 3×3 with ≥ 16 channels: the Winograd path (and GEMM).
        case.c_g = c;
        case.t_g = t;
        case.kh = 3;
        case.kw = 3;
        case.stride = (1, 1);
        case.dilation = (1, 1);
        check_case(&case, relu)?;
        // The comparison above covered both Winograd tiles: `F2` and `F4`
        // (and `Always`) chose them and `Off` did not.
        let (layer, x) = case.build();
        let block = Block::single(layer);
        prop_assert_eq!(first_kernel(&block, &x, Winograd::F2), "conv winograd");
        prop_assert_eq!(first_kernel(&block, &x, Winograd::F4), "conv winograd f4");
        prop_assert_eq!(first_kernel(&block, &x, Winograd::Always), "conv winograd f4");
        prop_assert!(!first_kernel(&block, &x, Winograd::Off).starts_with("conv winograd"));
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
        let offsets: Vec<(isize, isize)> = (0..channels)
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
        check_all_paths(&block, &x)?;
    }

    #[test]
    fn absorbed_shuffle_and_shift_match_reference(
        (groups, per, hw) in (1..=3usize, 1..=3usize, 3..=8usize),
        (kernel, pad, stride) in (1..=3usize, 0..=1usize, 1..=2usize),
        (two_shifts, depthwise, seed) in (any::<bool>(), any::<bool>(), any::<u64>()),
    ) {
        // shuffle → shift (→ shift) → shuffle → conv: the conv reads through the view.
        let mut rng = SeededRng::new(seed);
        let channels = groups * per * 2;
        let offsets = |rng: &mut SeededRng| -> Shift {
            Shift::new(
                (0..channels)
                    .map(|_| (rng.below(5) as isize - 2, rng.below(5) as isize - 2))
                    .collect(),
            )
            .unwrap()
        };
        let mut ops: Vec<Op> = vec![ChannelShuffle::new(groups).unwrap().into(), offsets(&mut rng).into()];
        if two_shifts {
            ops.push(offsets(&mut rng).into());
        }
        ops.push(ChannelShuffle::new(2).unwrap().into());
        let (t, c_g, g) = if depthwise { (channels, 1, channels) } else { (5, channels, 1) };
        let spec = ConvSpec::new().with_padding(pad).with_stride(stride).with_groups(g);
        let conv = ConvLayer::from_array(rng.normal_array((t, c_g, kernel, kernel), 1.0), spec).unwrap();
        ops.push(conv.into());
        let block = Block::new(ops).unwrap();
        let x: Array4<f32> = rng.normal_array((2, channels, hw, hw), 1.0);
        check_all_paths(&block, &x)?;
        // A trailing shuffle / shift with no conv after it is written out.
        let tail = Block::new(vec![ChannelShuffle::new(2).unwrap().into(), offsets(&mut rng).into()]).unwrap();
        check_all_paths(&tail, &x)?;
    }
}

#[test]
fn large_layers_match_reference() {
    // Multiple column tiles (OH·OW > 256), K blocks, partial panels, stride 2.
    for (t, c, k, hw, stride, pad) in [
        (70, 33, 3, 23, 1, 1),
        (30, 40, 1, 20, 1, 0),
        (24, 20, 3, 31, 2, 1),
        (13, 300, 1, 5, 1, 0),
        // Row counts that take the narrow 8-row AVX-512 tile.
        (64, 20, 3, 15, 1, 1),
        (16, 9, 3, 9, 2, 1),
        // Few output columns and many rows: the tall tiles (AVX-512 48×7
        // on 7×7 outputs, 48×8 on 6×6, AVX2 16×6), with partial row and
        // column panels, two K blocks (K = 1100 > 512) and the stride-2
        // ResNet-18 last-stage shape at reduced width.
        (90, 40, 3, 7, 1, 1),
        (96, 1100, 1, 7, 1, 0),
        (144, 64, 3, 14, 2, 1),
        (96, 64, 3, 6, 1, 1),
        (40, 300, 1, 6, 1, 0),
    ] {
        let mut rng = SeededRng::new(t as u64);
        let layer = ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((t, c, k, k), 1.0)).unwrap(),
            Some(rng.normal_array(t, 1.0)),
            ConvSpec::new()
                .with_stride(stride)
                .with_padding_sides(Padding::same(pad)),
        )
        .unwrap();
        let x: Array4<f32> = rng.normal_array((2, c, hw, hw), 1.0);
        check_all_paths(&Block::single(layer), &x).unwrap();
    }
}

#[test]
fn gemm_shares_match_reference_on_any_thread_count() {
    // The GEMM's work split depends on the thread count: whole column tiles
    // when there are many, equal shares of the output tiles (rows and
    // columns of one tile split between tasks, `B` packed beforehand in
    // shares of panels) when there are few — batch 1 and 3, grouped and
    // strided layers, on pools of 1 to 5 threads.
    for threads in [1, 3, 5, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for (t, c, k, hw, stride, groups, batch) in [
                (90, 40, 3, 7, 1, 1, 1),
                (100, 24, 3, 9, 2, 2, 1),
                (36, 30, 3, 28, 1, 1, 1),
                (52, 16, 1, 13, 1, 1, 3),
                (20, 12, 5, 40, 1, 2, 1),
                (7, 5, 3, 3, 1, 1, 1),
            ] {
                let mut rng = SeededRng::new((t * threads) as u64);
                let layer = ConvLayer::new(
                    hasten_core::Conv4d::new(rng.normal_array((t, c / groups, k, k), 1.0)).unwrap(),
                    Some(rng.normal_array(t, 1.0)),
                    ConvSpec::new()
                        .with_stride(stride)
                        .with_groups(groups)
                        .with_padding_sides(Padding::same(k / 2)),
                )
                .unwrap();
                let x: Array4<f32> = rng.normal_array((batch, c, hw, hw), 1.0);
                check_all_paths(&Block::single(layer), &x).unwrap();
            }
        });
    }
}

#[test]
fn channel_gather_between_convolutions_matches_reference() {
    // Permutation, replication and omission of channels between two convs.
    let mut rng = SeededRng::new(6);
    let conv = |rng: &mut SeededRng, t: usize, c: usize| {
        ConvLayer::from_array(
            rng.normal_array((t, c, 3, 3), 1.0),
            ConvSpec::new().with_padding(1),
        )
        .unwrap()
    };
    let gather = hasten_core::ChannelGather::new(vec![3, 0, 0, 5, 1], 6).unwrap();
    let block = Block::new(vec![
        conv(&mut rng, 6, 4).into(),
        Relu.into(),
        gather.into(),
        conv(&mut rng, 7, 5).into(),
    ])
    .unwrap();
    let x: Array4<f32> = rng.normal_array((2, 4, 9, 8), 1.0);
    check_all_paths(&block, &x).unwrap();
}

#[test]
fn ops_without_a_fast_kernel_run_their_reference() {
    // A perforated convolution (no dedicated kernel yet) between a conv and
    // a ReLU: the plan runs its reference forward and stays exact around it.
    let mut rng = SeededRng::new(8);
    let first = ConvLayer::from_array(
        rng.normal_array((5, 3, 3, 3), 1.0),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let inner = ConvLayer::from_array(
        rng.normal_array((4, 5, 3, 3), 1.0),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let mask: Vec<bool> = (0..7 * 6).map(|k| k % 3 != 1).collect();
    let perforated = hasten_core::PerforatedConv::new(inner, (7, 6), mask).unwrap();
    let block = Block::new(vec![first.into(), perforated.into(), Relu.into()]).unwrap();
    let x: Array4<f32> = rng.normal_array((2, 3, 7, 6), 1.0);
    check_all_paths(&block, &x).unwrap();
}

#[test]
fn block_that_cancels_out_copies_its_input() {
    // A shuffle of 2 channels in 2 groups and a zero shift change nothing.
    let x: Array4<f32> = SeededRng::new(5).normal_array((2, 2, 3, 3), 1.0);
    let block = Block::new(vec![
        ChannelShuffle::new(2).unwrap().into(),
        Shift::new(vec![(0, 0), (0, 0)]).unwrap().into(),
    ])
    .unwrap();
    assert_eq!(hasten_fastconv::forward(&block, &x).unwrap(), x);
}

#[test]
fn plan_is_reusable_and_deterministic() {
    let mut rng = SeededRng::new(9);
    let layer = ConvLayer::from_array(
        rng.normal_array((16, 8, 3, 3), 1.0),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let block = Block::new(vec![layer.into(), Relu.into()]).unwrap();
    let shape = ActShape::new(8, 12, 12);
    let mut plan = Plan::new(&block, shape, 2).unwrap();
    let a: Array4<f32> = rng.normal_array((2, 8, 12, 12), 1.0);
    let b: Array4<f32> = rng.normal_array((2, 8, 12, 12), 1.0);
    let ya = plan.run(&a).unwrap().to_owned();
    let yb = plan.run(&b).unwrap().to_owned();
    assert_eq!(plan.run(&a).unwrap(), ya.view());
    assert!(relative_error(&yb, &block.reference_forward(&b).unwrap()) < TOL);
    let mut out = Array4::zeros((2, 16, 12, 12));
    plan.run_into(&b, &mut out).unwrap();
    assert_eq!(out, yb);
    assert!(plan
        .run_into(&b, &mut Array4::zeros((2, 16, 12, 11)))
        .is_err());
    assert!(plan.run(&Array4::zeros((3, 8, 12, 12))).is_err());
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

#[test]
fn every_isa_is_exercised_here() {
    // The portable path always runs; report which SIMD paths this CPU adds.
    let paths = Isa::supported();
    assert_eq!(paths.last(), Some(&Isa::Scalar));
    assert!(paths.contains(&Isa::detect()));
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Scalar] {
        assert_eq!(isa.ensure_supported().is_ok(), isa.is_supported());
    }
}

/// The relative error of each Winograd tile against the f64 reference on
/// every ISA path, on `(case, C, T, H, W)`: unit-variance data and filters,
/// and ResNet-like magnitudes (He-scaled filters, non-negative
/// post-ReLU inputs) on a plane large enough for several chunks of tiles.
fn winograd_errors() -> Vec<(Winograd, String, f64)> {
    let mut rng = SeededRng::new(11);
    let mut found = Vec::new();
    for (case, c, t, h, w) in [("unit", 48, 32, 17, 20), ("resnet", 128, 128, 68, 68)] {
        let std = if case == "unit" {
            1.0
        } else {
            (2.0 / (9.0 * c as f64)).sqrt()
        };
        let layer = ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((t, c, 3, 3), std)).unwrap(),
            Some(rng.normal_array(t, std)),
            ConvSpec::new().with_padding(1),
        )
        .unwrap();
        let block = Block::single(layer);
        let mut x: Array4<f32> = rng.normal_array((1, c, h, w), 1.0);
        if case == "resnet" {
            x.mapv_inplace(|v| v.max(0.0));
        }
        let slow = block.reference_forward(&x).unwrap();
        for (isa, tile) in Isa::supported()
            .into_iter()
            .flat_map(|isa| [(isa, Winograd::F2), (isa, Winograd::F4)])
        {
            let options = PlanOptions {
                isa,
                winograd: tile,
                ..PlanOptions::default()
            };
            let mut plan = Plan::with_options(&block, ActShape::new(c, h, w), 1, options).unwrap();
            assert!(plan.steps()[0].kernel.starts_with("conv winograd"), "{isa}");
            let err = relative_error(&plan.run(&x).unwrap().to_owned(), &slow);
            eprintln!("{tile:?} {case} {isa}: relative error {err:.2e}");
            found.push((tile, format!("{case} {isa}"), err));
        }
    }
    found
}

#[test]
fn winograd_error_is_stated_bound() {
    // The module's stated bounds: F(2×2) below 1e-5, F(4×4) below 2e-5.
    for (tile, what, err) in winograd_errors() {
        let bound = if tile == Winograd::F2 { 1e-5 } else { 2e-5 };
        assert!(err < bound, "{tile:?} {what}: relative error {err}");
    }
}

//! The kernels of the pooling, padding, softmax, copy and element-wise
//! activation ops, and activation clamps fused into convolution and linear
//! epilogues, equal the reference forward on every instruction-set path this
//! CPU supports (relative error < 1e-5; NaN exactly where the reference has
//! it).

mod common;

use common::relative_error;
use hasten_core::ndarray::Array4;
use hasten_core::{
    ActShape, AvgPool, Block, Clip, ConvLayer, ConvSpec, Dropout, Flatten, GlobalAvgPool,
    HardSigmoid, HardSwish, Identity, LinearLayer, MaxPool, Op, Pad, Padding, PerforatedConv,
    PoolSpec, Relu, SeededRng, Sigmoid, Silu, Softmax, TtLinear,
};
use hasten_fastconv::{Isa, Plan, PlanOptions, Winograd};
use proptest::prelude::*;

/// These ops add at most a few dozen terms or evaluate one correctly
/// rounded function per value; f32 rounding stays far below this.
const TOL: f64 = 1e-5;

/// Compares the fast and reference outputs: NaN at the same positions, and
/// the finite values within `TOL` relative error (infinities equal).
fn compare(fast: &Array4<f32>, slow: &Array4<f32>, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(fast.shape(), slow.shape(), "{}", what);
    for (i, (f, s)) in fast.iter().zip(slow.iter()).enumerate() {
        prop_assert_eq!(
            f.is_nan(),
            s.is_nan(),
            "{}: NaN mismatch at {} ({} vs {})",
            what,
            i,
            f,
            s
        );
        if s.is_infinite() {
            prop_assert_eq!(f, s, "{}: infinity at {}", what, i);
        }
    }
    let clean = |a: &Array4<f32>| a.mapv(|v| if v.is_finite() { v } else { 0.0 });
    let err = relative_error(&clean(fast), &clean(slow));
    prop_assert!(err < TOL, "{}: relative error {}", what, err);
    Ok(())
}

/// Runs `block` on `x` with every supported ISA (twice, so scratch reuse is
/// covered) and compares with the reference.
fn check(block: &Block, x: &Array4<f32>) -> Result<(), TestCaseError> {
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
            for _ in 0..2 {
                let fast = plan.run(x).unwrap().to_owned();
                let kinds: Vec<&str> = block.ops().iter().map(|o| o.kind()).collect();
                compare(&fast, &slow, &format!("{options:?} {kinds:?}"))?;
            }
        }
    }
    Ok(())
}

/// A random input with a few NaN and infinite values when `special`.
fn input(seed: u64, shape: (usize, usize, usize, usize), special: bool) -> Array4<f32> {
    let mut rng = SeededRng::new(seed);
    let mut x: Array4<f32> = rng.normal_array(shape, 2.0);
    if special {
        let len = x.len();
        let flat = x.as_slice_mut().unwrap();
        for (k, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
            .into_iter()
            .enumerate()
        {
            flat[rng.below(len)] = v;
            if k == 0 {
                flat[rng.below(len)] = v;
            }
        }
    }
    x
}

fn pool_spec() -> impl Strategy<Value = (PoolSpec, usize, usize)> {
    (
        (1..=4usize, 1..=4usize, 1..=3usize, 1..=3usize),
        (0..4usize, 0..4usize, 0..4usize, 0..4usize),
        (any::<bool>(), 0..=9usize, 0..=9usize),
    )
        .prop_map(|((kh, kw, sh, sw), (t, b, l, r), (ceil, eh, ew))| {
            let p = Padding {
                top: t % kh,
                bottom: b % kh,
                left: l % kw,
                right: r % kw,
            };
            let spec = PoolSpec::new(kh, kw)
                .with_stride_hw(sh, sw)
                .with_padding_sides(p)
                .with_ceil_mode(ceil);
            let h = kh.saturating_sub(p.top + p.bottom).max(1) + eh;
            let w = kw.saturating_sub(p.left + p.right).max(1) + ew;
            (spec, h, w)
        })
}

fn activations() -> Vec<Op> {
    vec![
        Relu.into(),
        Clip::relu6().into(),
        Clip::new(-0.75, 0.5).unwrap().into(),
        Clip::new(f32::NEG_INFINITY, 1.0).unwrap().into(),
        Sigmoid.into(),
        HardSigmoid::default().into(),
        HardSigmoid::new(-0.3, 0.1).unwrap().into(),
        HardSwish.into(),
        Silu.into(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pooling_matches_reference(
        (spec, h, w) in pool_spec(),
        (batch, c, seed, special) in (1..=3usize, 1..=4usize, any::<u64>(), any::<bool>()),
    ) {
        let x = input(seed, (batch, c, h, w), special);
        let ops: [Op; 3] = [
            MaxPool::new(spec).unwrap().into(),
            AvgPool::new(spec, true).unwrap().into(),
            AvgPool::new(spec, false).unwrap().into(),
        ];
        for op in ops {
            check(&Block::single(op), &x)?;
        }
    }

    #[test]
    fn common_pooling_shapes_match_reference(
        (k, pad, ceil) in prop_oneof![Just((2usize, 0usize, false)), Just((2, 0, true)), Just((3, 1, false)), Just((3, 0, true)), Just((3, 1, true))],
        (batch, c, h, w, seed, special) in (1..=2usize, 1..=3usize, 3..=40usize, 3..=70usize, any::<u64>(), any::<bool>()),
    ) {
        // The 2×2/s2 and 3×3/s2 fast paths, with wide rows.
        let spec = PoolSpec::square(k).with_stride(2).with_padding(pad).with_ceil_mode(ceil);
        let x = input(seed, (batch, c, h, w), special);
        check(&Block::single(Op::from(MaxPool::new(spec).unwrap())), &x)?;
        check(&Block::single(Op::from(AvgPool::new(spec, pad > 0).unwrap())), &x)?;
    }

    #[test]
    fn shape_ops_match_reference(
        (batch, c, h, w) in (1..=3usize, 1..=6usize, 1..=9usize, 1..=9usize),
        (t, b, l, r) in (0..=3usize, 0..=3usize, 0..=3usize, 0..=3usize),
        (value, seed, special) in (prop_oneof![Just(f32::NEG_INFINITY), -3.0f32..3.0], any::<u64>(), any::<bool>()),
    ) {
        let x = input(seed, (batch, c, h, w), special);
        let pad = Pad::new(Padding { top: t, bottom: b, left: l, right: r }, value).unwrap();
        let ops: [Op; 6] = [
            pad.into(),
            GlobalAvgPool.into(),
            Softmax.into(),
            Flatten.into(),
            Identity.into(),
            Dropout::new(0.3).unwrap().into(),
        ];
        for op in ops {
            check(&Block::single(op), &x)?;
        }
    }

    #[test]
    fn activations_match_reference(
        (batch, c, h, w) in (1..=3usize, 1..=5usize, 1..=9usize, 1..=40usize),
        (seed, special) in (any::<u64>(), any::<bool>()),
    ) {
        let x = input(seed, (batch, c, h, w), special);
        for op in activations() {
            check(&Block::single(op), &x)?;
        }
    }

    #[test]
    fn fused_clamps_match_reference(
        (lo, hi) in (-2.0f32..0.5, 0.5f32..3.0),
        (kind, c, k, stride, seed) in (0..4usize, 1..=20usize, 1..=3usize, 1..=2usize, any::<u64>()),
    ) {
        // A convolution (GEMM, Winograd, depthwise or 1×1) or a linear
        // layer followed by a Clip, fused into the kernel's store.
        let mut rng = SeededRng::new(seed);
        let clip: Op = Clip::new(lo, hi).unwrap().into();
        let (layer, x): (Op, Array4<f32>) = match kind {
            0 | 1 => {
                let (k, groups, c_g) = if kind == 0 { (k, 1, c) } else { (3, c, 1) };
                let spec = ConvSpec::new().with_padding(k / 2).with_stride(stride).with_groups(groups);
                let conv = ConvLayer::new(
                    hasten_core::Conv4d::new(rng.normal_array((c, c_g, k, k), 1.0)).unwrap(),
                    Some(rng.normal_array(c, 1.0)),
                    spec,
                ).unwrap();
                (conv.into(), rng.normal_array((2, c, 9, 11), 1.0))
            }
            2 => {
                let conv = ConvLayer::new(
                    hasten_core::Conv4d::new(rng.normal_array((c + 16, c + 16, 3, 3), 0.3)).unwrap(),
                    None,
                    ConvSpec::new().with_padding(1),
                ).unwrap();
                (conv.into(), rng.normal_array((1, c + 16, 8, 8), 1.0))
            }
            _ => {
                let batch = if stride == 1 { 2 } else { 12 };
                let lin = LinearLayer::new(rng.normal_array((c, 7), 1.0), Some(rng.normal_array(c, 1.0))).unwrap();
                (lin.into(), rng.normal_array((batch, 7, 1, 1), 1.0))
            }
        };
        check(&Block::new(vec![layer, clip]).unwrap(), &x)?;
    }
}

/// NaN reaching a fused ReLU or Clip stays NaN on every path and ISA: an
/// input channel of NaN makes every output of a dense layer NaN (and only
/// its own outputs in a depthwise one). Dense, direct 1×1, depthwise,
/// Winograd, linear (GEMV at batch 1), perforated and Tensor-Train kernels.
#[test]
fn fused_activations_keep_nan() {
    let mut rng = SeededRng::new(11);
    let c = 20;
    let conv = |rng: &mut SeededRng, k: usize, groups: usize| -> Op {
        ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((c, c / groups, k, k), 0.3)).unwrap(),
            Some(rng.normal_array(c, 1.0)),
            ConvSpec::new().with_padding(k / 2).with_groups(groups),
        )
        .unwrap()
        .into()
    };
    let layers: Vec<(Op, (usize, usize, usize))> = vec![
        (conv(&mut rng, 3, 1), (c, 8, 8)),
        (conv(&mut rng, 1, 1), (c, 5, 7)),
        (conv(&mut rng, 3, c), (c, 9, 20)),
        (conv(&mut rng, 5, c), (c, 9, 40)),
        (
            LinearLayer::new(rng.normal_array((9, c), 1.0), None)
                .unwrap()
                .into(),
            (c, 1, 1),
        ),
    ];
    // The perforated kernel's GEMM epilogue and its nearest fill: half the
    // output positions computed, the rest copied.
    let Op::Conv(dense) = conv(&mut rng, 3, 1) else {
        unreachable!()
    };
    let mask: Vec<bool> = (0..64).map(|p| p % 2 == 0).collect();
    let perforated = PerforatedConv::new(dense, (8, 8), mask).unwrap();
    // The Tensor-Train kernel's last GEMM epilogue: 20 = 4·5 outputs from
    // 20 = 5·4 inputs, every output reading every input.
    let cores = vec![
        rng.normal_array((1, 4, 5, 3), 1.0),
        rng.normal_array((3, 5, 4, 1), 1.0),
    ];
    let tt = TtLinear::new(cores, Some(rng.normal_array(c, 1.0))).unwrap();
    let layers = layers
        .into_iter()
        .chain([(perforated.into(), (c, 8, 8)), (tt.into(), (c, 1, 1))]);
    for (layer, (ch, h, w)) in layers {
        for act in [Op::from(Relu), Clip::relu6().into()] {
            for batch in [1, 12] {
                let mut x: Array4<f32> = rng.normal_array((batch, ch, h, w), 1.0);
                x.slice_mut(hasten_core::ndarray::s![.., 3, .., ..])
                    .fill(f32::NAN);
                let block = Block::new(vec![layer.clone(), act.clone()]).unwrap();
                let slow = block.reference_forward(&x).unwrap();
                assert!(slow.iter().any(|v| v.is_nan()));
                check(&block, &x).unwrap();
            }
        }
    }
}

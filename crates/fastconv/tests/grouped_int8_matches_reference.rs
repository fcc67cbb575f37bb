//! Grouped and depthwise `Int8Conv` layers run on the plan's low-bit steps
//! (the depthwise int8 step, or the int8 GEMM with block-diagonal weights)
//! and give bit for bit the outputs of the op's reference forward (then the
//! plan's documented f32 batch norm `scale·x + shift` and activation), on
//! every ISA path of this CPU: the accumulators are exact integers, and the
//! input code and output stage are core's.

use hasten_core::ndarray::{Array1, Array2, Array4};
use hasten_core::op::WeightLayout;
use hasten_core::{
    ActShape, BatchNorm, Block, Clip, ConvSpec, Int8Conv, IntType, Op, Operator, Padding,
    QuantParams, Relu, SeededRng,
};
use hasten_fastconv::{Isa, Plan, PlanOptions};
use proptest::prelude::*;

mod common;
use common::{reference_with_f32_batch_norm, same_bits};

/// Runs `ops` in a plan on every ISA of this CPU, fused and not, and
/// checks that the int8 layer (the first op) runs on a low-bit step and
/// that the outputs equal [`reference_with_f32_batch_norm`] bit for bit (twice per plan).
fn assert_plans_match(ops: &[Op], x: &Array4<f32>) -> Result<(), TestCaseError> {
    let block = Block::new(ops.to_vec()).unwrap();
    let slow = reference_with_f32_batch_norm(ops, x);
    let s = x.shape();
    let shape = ActShape::new(s[1], s[2], s[3]);
    for isa in Isa::supported() {
        for fuse in [true, false] {
            let options = PlanOptions {
                isa,
                fuse,
                ..PlanOptions::default()
            };
            let mut plan = Plan::with_options(&block, shape, s[0], options).unwrap();
            let first = &plan.steps()[0].kernel;
            prop_assert!(first.starts_with("low-bit"), "{}: {}", isa, first);
            for _ in 0..2 {
                let fast = plan.run(x).unwrap().to_owned();
                prop_assert!(same_bits(&fast, &slow), "{} fuse {}", isa, fuse);
            }
        }
    }
    Ok(())
}

/// Sizes of a grouped convolution: groups, input and output channels per
/// group, kernel, stride, dilation, padding sides, input plane.
#[derive(Debug, Clone)]
struct Case {
    groups: usize,
    c_g: usize,
    t_g: usize,
    kernel: (usize, usize),
    spec: ConvSpec,
    hw: (usize, usize),
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=6,
        // Depthwise (one input channel per group) half of the time.
        prop_oneof![Just(1usize), 1usize..=3],
        1usize..=3,
        (1usize..=5, 1usize..=5),
        (1usize..=3, 1usize..=3),
        (1usize..=2, 1usize..=2),
        proptest::array::uniform4(0usize..=2),
        (1usize..=12, 1usize..=12),
    )
        .prop_map(|(groups, c_g, t_g, kernel, stride, dilation, p, hw)| {
            let mut spec = ConvSpec::new()
                .with_groups(groups)
                .with_padding_sides(Padding {
                    top: p[0],
                    bottom: p[1],
                    left: p[2],
                    right: p[3],
                });
            spec.stride = stride;
            spec.dilation = dilation;
            Case {
                groups,
                c_g,
                t_g,
                kernel,
                spec,
                hw,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random grouped and depthwise int8 layers (groups 1..=6, 1–3 input
    /// and output channels per group, kernels 1–5 × 1–5, strides 1–3,
    /// dilation 1–2, asymmetric padding; u8 or i8 inputs, per-tensor or
    /// per-channel weight scales, with or without bias and requantized
    /// outputs; an optional batch norm and ReLU / Clip fused into the
    /// epilogue; batch 1 or 3; a NaN and infinities in the input).
    #[test]
    fn grouped_int8_plans_are_bit_exact(
        case in case(), batch in prop_oneof![Just(1usize), Just(3usize)],
        signed in any::<bool>(), requant in any::<bool>(), per_channel in any::<bool>(),
        bias in any::<bool>(), bn in any::<bool>(), act in 0u8..3, nan in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let Case { groups, c_g, t_g, kernel: (kh, kw), spec, hw: (h, w) } = case;
        prop_assume!(spec.output_hw(h, w, kh, kw).is_ok());
        let mut rng = SeededRng::new(seed);
        let (c, t) = (groups * c_g, groups * t_g);
        let layout = WeightLayout::conv([t, c_g, kh, kw], spec).unwrap();
        let weights = Array2::from_shape_fn((t, c_g * kh * kw), |_| (rng.below(256) as i32 - 128) as i8);
        let input = if signed {
            QuantParams::new(0.04, rng.below(256) as i32 - 128, IntType::I8).unwrap()
        } else {
            QuantParams::new(0.02, rng.below(256) as i32, IntType::U8).unwrap()
        };
        let scales = if per_channel {
            Array1::from_shape_fn(t, |i| 0.001 + i as f32 * 3e-4)
        } else {
            Array1::from_elem(1, 0.003)
        };
        let bias = bias.then(|| Array1::from_shape_fn(t, |_| rng.below(4001) as i32 - 2000));
        let output = requant.then(|| {
            QuantParams::new(0.2, rng.below(9) as i32, if signed { IntType::I8 } else { IntType::U8 }).unwrap()
        });
        let op = Int8Conv::new(layout, weights, scales, input, bias, output).unwrap();
        let mut ops = vec![Op::Int8Conv(op)];
        if bn {
            let mut v = |lo: f32, w: f32| Array1::from_shape_fn(t, |_| lo + w * rng.below(1000) as f32 / 1000.0);
            let (g, b, m, var) = (v(0.5, 1.0), v(-0.5, 1.0), v(-0.2, 0.4), v(0.1, 2.0));
            ops.push(Op::BatchNorm(BatchNorm::new(g, b, m, var, 1e-5).unwrap()));
        }
        match act {
            1 => ops.push(Op::Relu(Relu)),
            2 => ops.push(Op::Clip(Clip::new(-0.5, 1.5).unwrap())),
            _ => {}
        }
        // A third of the inputs on exact half-steps, where the rounding
        // shows; the wide spread saturates some codes.
        let s_in = input.scale();
        let mut x: Array4<f32> = rng.normal_array((batch, c, h, w), 3.0);
        x.mapv_inplace(|v| if rng.below(3) == 0 { ((v / s_in).trunc() + 0.5) * s_in } else { v });
        let n = x.len();
        let flat = x.as_slice_mut().unwrap();
        flat[rng.below(n)] = f32::INFINITY;
        flat[rng.below(n)] = f32::NEG_INFINITY;
        if nan {
            flat[rng.below(n)] = f32::NAN;
        }
        assert_plans_match(&ops, &x)?;
    }
}

/// Depthwise layers at the worst case of the accumulators: every code as
/// far from the zero point as it goes (`q − z = ±255`) times weights of
/// −128 or 127, over kernels of 9, 25, 484 and 514 taps (the most the
/// depthwise step sums exactly in f32) and 515 (past it: the block-diagonal
/// GEMM), u8 and i8 inputs, each output equal to the reference's.
#[test]
fn saturated_depthwise_sums_are_exact() {
    for (kh, kw) in [(3, 3), (5, 5), (22, 22), (1, 514), (2, 257), (1, 515)] {
        for (dtype, z, x) in [
            (IntType::U8, 0, f32::INFINITY),
            (IntType::U8, 255, f32::NEG_INFINITY),
            (IntType::I8, -128, 1e6),
            (IntType::I8, 127, -1e6),
        ] {
            let c = 3;
            let spec = ConvSpec::new().with_groups(c).with_padding(1);
            let layout = WeightLayout::conv([2 * c, 1, kh, kw], spec).unwrap();
            // Channel pairs of −128 and 127: both signs at full magnitude.
            let weights =
                Array2::from_shape_fn(
                    (2 * c, kh * kw),
                    |(t, _)| {
                        if t % 2 == 0 {
                            -128
                        } else {
                            127
                        }
                    },
                );
            let input = QuantParams::new(0.5, z, dtype).unwrap();
            let scales = Array1::from_elem(1, 0.25);
            let op = Int8Conv::new(layout, weights, scales, input, None, None).unwrap();
            let xs = Array4::from_elem((1, c, kh, kw), x);
            let ops = [Op::Int8Conv(op.clone())];
            // The sums do not wrap: the centre output holds ±255·128·taps.
            let y = op.reference_forward(&xs).unwrap();
            let code = if x > 0.0 { 255.0 } else { -255.0 };
            let centre = (-128.0 * code * 0.5 * 0.25 * (kh * kw) as f64) as f32;
            assert_eq!(y[[0, 0, 1, 1]], centre, "{kh}×{kw} {dtype:?} z {z}");
            assert_plans_match(&ops, &xs).unwrap();
        }
    }
}

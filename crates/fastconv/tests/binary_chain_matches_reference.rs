//! Chains of binary convolutions with binarized inputs in a plan: a step
//! whose output only a following sign-input binary layer reads hands it
//! packed sign bits (`BINARY_CHAIN`); the results equal the reference.
//!
//! Why bit-exact: a sign-input layer's reference is `(B ∗ sign(x))·α + b`,
//! whose ±1 × ±1 sums are exact integers in f32, then one product and one
//! sum — the kernel's `α·dot + b`, the same two roundings. The reference
//! below applies a batch norm as the plan does, by its f32 affine form
//! `scale·y + shift` (`BatchNorm::affine`; core's own batch norm evaluates
//! the same map in f64, which may differ in the last bit and so flip the
//! sign of a value within an ulp of 0). `sign(NaN) = −1` and `sign(0) = +1`
//! in both (core's `binary_sign`).

use hasten_core::graph::GraphBuilder;
use hasten_core::ndarray::{Array1, Array4};
use hasten_core::op::WeightLayout;
use hasten_core::{
    relative_error, ActShape, BatchNorm, BinaryConv, BinaryInput, Block, Clip, ConvLayer, ConvSpec,
    Op, PackedCodes, Padding, Relu, SeededRng,
};
use hasten_fastconv::{Isa, Plan, PlanOptions, BINARY_CHAIN};
use proptest::prelude::*;

mod common;
use common::{reference_with_f32_batch_norm, same_bits};

/// A `k×k` binary convolution `c → t` with random signs, `α` and bias.
fn binary(
    rng: &mut SeededRng,
    (c, t, k): (usize, usize, usize),
    spec: ConvSpec,
    input: BinaryInput,
) -> BinaryConv {
    let bits: Vec<u32> = (0..t * c * k * k).map(|_| rng.below(2) as u32).collect();
    BinaryConv::new(
        WeightLayout::conv([t, c, k, k], spec).unwrap(),
        PackedCodes::pack(&bits, t, c * k * k, 1).unwrap(),
        Array1::from_shape_fn(t, |_| 0.05 + rng.uniform() as f32),
        Some(Array1::from_shape_fn(t, |_| {
            (rng.below(9) as f32 - 4.0) * 0.5 * rng.uniform() as f32
        })),
        false,
    )
    .unwrap()
    .with_input(input)
}

/// A batch norm over `t` channels, some with negative `γ` (a flipped sign).
fn batch_norm(rng: &mut SeededRng, t: usize) -> BatchNorm {
    let mut v = |lo: f32, w: f32| Array1::from_shape_fn(t, |_| lo + w * rng.uniform() as f32);
    let (g, b, m, var) = (v(-1.0, 2.0), v(-0.5, 1.0), v(-2.0, 4.0), v(0.1, 2.0));
    BatchNorm::new(g, b, m, var, 1e-5).unwrap()
}

/// Which steps of `plan` hand packed signs to the next.
fn chained(plan: &Plan) -> Vec<bool> {
    plan.steps()
        .iter()
        .map(|s| s.fused.iter().any(|f| f == BINARY_CHAIN))
        .collect()
}

/// One layer of a random chain: output channels, kernel, stride, padding
/// (top-left, bottom-right), batch norm, activation (0 none, 1 ReLU, 2 Clip).
type LayerCase = (usize, usize, usize, (usize, usize), bool, usize);

fn layer_case() -> impl Strategy<Value = LayerCase> {
    (
        prop_oneof![1usize..12, 60usize..70, 125usize..135],
        prop_oneof![Just(1usize), Just(3)],
        1usize..3,
        (0usize..3, 0usize..3),
        any::<bool>(),
        0usize..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Random chains of 2–4 sign-input layers (the first one XNOR-Net's
    /// with `K` or not): channels on and off multiples of 64, strides 1–2,
    /// paddings 0–2, batch norms with both signs of `γ`, ReLU / Clip or
    /// nothing, batch 1 and 3, a NaN in the input; every level, fused
    /// (chained) and not, twice per plan (a run must leave no signs behind).
    #[test]
    fn chains_equal_the_reference(
        c in prop_oneof![1usize..10, 60usize..70, 126usize..131],
        hw in 5usize..11,
        layers in proptest::collection::vec(layer_case(), 2..5),
        first_k in any::<bool>(),
        batch in prop_oneof![Just(1usize), Just(3)],
        nan in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let mut ops = Vec::new();
        let (mut ch, mut h) = (c, hw);
        for (i, &(t, k, s, (p0, p1), bn, act)) in layers.iter().enumerate() {
            let spec = ConvSpec::new()
                .with_stride(s)
                .with_padding_sides(Padding { top: p0, bottom: p1, left: p1, right: p0 });
            let Ok((oh, _)) = spec.output_hw(h, h, k, k) else { return Ok(()) };
            let input = if i == 0 && first_k { BinaryInput::XnorK } else { BinaryInput::Sign };
            ops.push(Op::BinaryConv(binary(&mut rng, (ch, t, k), spec, input)));
            if bn {
                ops.push(Op::BatchNorm(batch_norm(&mut rng, t)));
            }
            match act {
                1 => ops.push(Op::Relu(Relu)),
                2 => ops.push(Op::Clip(Clip::new(-1.0, 1.0).unwrap())),
                _ => {}
            }
            (ch, h) = (t, oh);
        }
        let block = Block::new(ops.clone()).unwrap();
        let mut x: Array4<f32> = rng.normal_array((batch, c, hw, hw), 1.0);
        x[[0, 0, 0, 0]] = 0.0;
        if nan {
            x[[batch - 1, c - 1, hw / 2, 1]] = f32::NAN;
        }
        let want = reference_with_f32_batch_norm(&ops, &x);
        prop_assert!(want.iter().all(|v| v.is_finite()));
        let n = layers.len();
        for isa in Isa::supported() {
            for fuse in [true, false] {
                let options = PlanOptions { isa, fuse, ..PlanOptions::default() };
                let mut plan = Plan::with_options(&block, ActShape::new(c, hw, hw), batch, options).unwrap();
                let expect: Vec<bool> = if fuse {
                    (0..n).map(|i| i + 1 < n).collect()
                } else {
                    vec![false; plan.steps().len()]
                };
                prop_assert_eq!(chained(&plan), expect, "{}", plan);
                for _ in 0..2 {
                    let got = plan.run(&x).unwrap().to_owned();
                    if first_k {
                        // K is summed in another order than the reference:
                        // agreement to f32 rounding, signs downstream alike
                        // (no value of this seed lies within rounding of 0).
                        let err = relative_error(&want, &got);
                        prop_assert!(err < 1e-5, "{} fuse {}: {}", isa, fuse, err);
                    } else {
                        prop_assert!(same_bits(&got, &want), "{} fuse {}\n{}", isa, fuse, plan);
                    }
                }
            }
        }
    }
}

/// A layer whose output is also read by a residual add, a fan-out into two
/// layers, a consumer with XNOR-Net's `K` and a real-valued convolution all
/// keep the f32 path; a sign-input layer after the add starts a new chain.
#[test]
fn consumers_needing_real_values_keep_f32() {
    let mut rng = SeededRng::new(5);
    let c = 70;
    let same = ConvSpec::new().with_padding(1);
    let sign = BinaryInput::Sign;
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(c, 7, 7));
    let a = b.op("a", binary(&mut rng, (c, c, 3), same, sign), x);
    let a2 = b.op("a2", binary(&mut rng, (c, c, 3), same, sign), a);
    let sum = b.add("sum", &[a, a2]);
    let f = b.op("f", binary(&mut rng, (c, 20, 3), same, sign), sum);
    let g1 = b.op("g1", binary(&mut rng, (20, 9, 1), ConvSpec::new(), sign), f);
    let g2 = b.op("g2", binary(&mut rng, (20, 9, 3), same, sign), f);
    let cat = b.concat("cat", &[g1, g2]);
    let k = b.op("k", binary(&mut rng, (18, 18, 3), same, sign), cat);
    let kx = b.op(
        "kx",
        binary(&mut rng, (18, 18, 3), same, BinaryInput::XnorK),
        k,
    );
    let r = b.op("r", binary(&mut rng, (18, 18, 3), same, sign), kx);
    let real = ConvLayer::from_array(rng.normal_array((5, 18, 3, 3), 0.3), same).unwrap();
    let out = b.op("real", real, r);
    b.output(out);
    let graph = b.build().unwrap();
    let x = rng.normal_array((3, c, 7, 7), 1.0);
    let want = graph.reference_forward(&[&x]).unwrap().remove(0);
    for isa in Isa::supported() {
        let options = PlanOptions {
            isa,
            ..PlanOptions::default()
        };
        let mut plan = Plan::for_graph(&graph, 3, options).unwrap();
        let chained_nodes: Vec<String> = plan
            .steps()
            .iter()
            .filter(|s| s.fused.iter().any(|f| f == BINARY_CHAIN))
            .map(|s| s.nodes[0].clone())
            .collect();
        // `a` (read by the add too), `f` (fan-out), `k` (into K), `r` (into
        // a real convolution) write f32; `a2` feeds an add, `g1`, `g2` a
        // concatenation. Only `kx` → `r` chains (a K producer is fine).
        assert_eq!(chained_nodes, ["kx"], "{isa}\n{plan}");
        let got = plan.run(&x).unwrap().to_owned();
        let err = relative_error(&want, &got);
        assert!(err < 1e-5, "{isa}: relative error {err}");
    }
}

/// Two sign-input layers chain; the chained plan's output equals the
/// unchained plan's bit for bit and the reference, on every level.
#[test]
fn chained_and_unchained_plans_agree() {
    let mut rng = SeededRng::new(11);
    let same = ConvSpec::new().with_padding(1);
    let ops = vec![
        Op::BinaryConv(binary(&mut rng, (64, 128, 3), same, BinaryInput::Sign)),
        Op::BatchNorm(batch_norm(&mut rng, 128)),
        Op::BinaryConv(binary(
            &mut rng,
            (128, 128, 3),
            same.with_stride(2),
            BinaryInput::Sign,
        )),
    ];
    let block = Block::new(ops.clone()).unwrap();
    let x = rng.normal_array((1, 64, 12, 12), 1.0);
    let want = reference_with_f32_batch_norm(&ops, &x);
    for isa in Isa::supported() {
        let run = |fuse| {
            let options = PlanOptions {
                isa,
                fuse,
                ..PlanOptions::default()
            };
            let mut plan =
                Plan::with_options(&block, ActShape::new(64, 12, 12), 1, options).unwrap();
            (chained(&plan), plan.run(&x).unwrap().to_owned())
        };
        let (on, chained_out) = run(true);
        let (off, plain_out) = run(false);
        assert_eq!(on, [true, false], "{isa}");
        assert!(off.iter().all(|&c| !c));
        assert!(same_bits(&chained_out, &plain_out), "{isa}");
        assert!(same_bits(&chained_out, &want), "{isa}");
    }
}

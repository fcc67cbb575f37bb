//! The packed-format ops of the core IR run through `hasten_fastconv::forward`
//! (the plan's op dispatch → the low-bit kernels) and agree with their
//! reference semantics: exactly for int8, to f32 rounding otherwise.

use hasten_core::ndarray::{Array1, Array2, Array3, Array4};
use hasten_core::op::WeightLayout;
use hasten_core::{
    ActShape, BatchNorm, BinaryConv, Block, Clip, CodebookConv, ConvLayer, ConvSpec, Csr,
    GroupwiseConv, Int8Conv, IntType, LinearLayer, Op, Operator, PackedCodes, Padding,
    ProductQuantizedConv, QuantParams, Relu, SeededRng, SparseConv, SparseLinear, TernaryConv,
};
use hasten_fastconv::{Isa, Plan, PlanOptions, INT8_CHAIN};
use proptest::prelude::*;

fn run(op: Op, x: &Array4<f32>) -> (Array4<f32>, Array4<f32>) {
    let fast = hasten_fastconv::forward(&Block::single(op.clone()), x).unwrap();
    let slow = op.reference_forward(x).unwrap();
    (fast, slow)
}

/// Whether the plan for `op` on batches like `x` runs it on a low-bit kernel
/// (and not on the reference fallback).
fn runs_lowbit(op: &Op, x: &Array4<f32>) -> bool {
    let s = x.shape();
    let plan = Plan::new(
        &Block::single(op.clone()),
        ActShape::new(s[1], s[2], s[3]),
        s[0],
    )
    .unwrap();
    let steps = plan.steps();
    steps.len() == 1 && steps[0].kernel.starts_with("low-bit")
}

fn assert_close(fast: &Array4<f32>, slow: &Array4<f32>, rel: f32) {
    assert_eq!(fast.shape(), slow.shape());
    let scale = slow.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (a, b) in fast.iter().zip(slow.iter()) {
        assert!((a - b).abs() <= rel * scale, "{a} vs {b} (scale {scale})");
    }
}

fn specs() -> Vec<ConvSpec> {
    vec![
        ConvSpec::new().with_padding(1),
        ConvSpec::new().with_stride(2).with_padding_sides(Padding {
            top: 0,
            bottom: 1,
            left: 2,
            right: 0,
        }),
        ConvSpec::new().with_dilation(2).with_padding(2),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn int8_conv_is_bit_exact(
        c in 1usize..70, t in 1usize..70, hw in 3usize..9, batch in 1usize..3,
        signed in any::<bool>(), requant in any::<bool>(), s in 0usize..3, seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let spec = specs()[s];
        let layout = WeightLayout::conv([t, c, 3, 3], spec).unwrap();
        let w = Array2::from_shape_fn((t, c * 9), |_| (rng.below(255) as i32 - 127) as i8);
        let input = if signed {
            QuantParams::new(0.05, rng.below(20) as i32 - 10, IntType::I8).unwrap()
        } else {
            QuantParams::new(0.02, rng.below(256) as i32, IntType::U8).unwrap()
        };
        let output = requant.then(|| QuantParams::new(0.3, 3, IntType::U8).unwrap());
        let bias = Array1::from_shape_fn(t, |_| rng.below(2001) as i32 - 1000);
        let scales = Array1::from_shape_fn(t, |i| 0.001 + i as f32 * 1e-4);
        let op = Int8Conv::new(layout, w, scales, input, Some(bias), output).unwrap();
        // A third of the inputs on exact half-steps, where the rounding shows.
        let mut x: Array4<f32> = rng.normal_array((batch, c, hw, hw), 2.0);
        x.mapv_inplace(|v| if rng.below(3) == 0 {
            ((v / input.scale()).trunc() + 0.5) * input.scale()
        } else {
            v
        });
        prop_assert!(runs_lowbit(&Op::Int8Conv(op.clone()), &x));
        let block = Block::single(op.clone());
        let slow = op.reference_forward(&x).unwrap();
        // Every int8 path of this CPU (a plan forced to AVX2 runs int8 on AVX2).
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(c, hw, hw), batch, isa).unwrap();
            prop_assert_eq!(&plan.run(&x).unwrap().to_owned(), &slow, "{}", isa);
        }
    }

    #[test]
    fn xnor_conv_matches_reference(
        c in 1usize..140, t in 1usize..40, hw in 3usize..9, batch in 1usize..3, s in 0usize..3, seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let spec = specs()[s];
        let layout = WeightLayout::conv([t, c, 3, 3], spec).unwrap();
        let bits: Vec<u32> = (0..t * c * 9).map(|_| rng.below(2) as u32).collect();
        let alpha = Array1::from_shape_fn(t, |i| 0.1 + 0.01 * i as f32);
        let bias = Array1::from_shape_fn(t, |i| i as f32 * 0.1);
        let op = BinaryConv::new(layout, PackedCodes::pack(&bits, t, c * 9, 1).unwrap(), alpha, Some(bias), true).unwrap();
        let x = rng.normal_array((batch, c, hw, hw), 1.0);
        prop_assert!(runs_lowbit(&Op::BinaryConv(op.clone()), &x));
        let (fast, slow) = run(Op::BinaryConv(op), &x);
        assert_close(&fast, &slow, 1e-5);
    }
}

/// An int8 convolution `c → t`, `k × k`, with random weights, bias, and
/// input (and, if `requant`, output) quantization.
fn int8_layer(
    rng: &mut SeededRng,
    (c, t, k): (usize, usize, usize),
    spec: ConvSpec,
    signed: bool,
    requant: bool,
) -> Int8Conv {
    let layout = WeightLayout::conv([t, c, k, k], spec).unwrap();
    let w = Array2::from_shape_fn((t, c * k * k), |_| (rng.below(256) as i32 - 128) as i8);
    let input = if signed {
        QuantParams::new(0.03, rng.below(40) as i32 - 20, IntType::I8).unwrap()
    } else {
        QuantParams::new(0.02, rng.below(256) as i32, IntType::U8).unwrap()
    };
    let output = requant.then(|| QuantParams::new(0.25, rng.below(9) as i32, IntType::U8).unwrap());
    let bias = Array1::from_shape_fn(t, |_| rng.below(2001) as i32 - 1000);
    let scales = Array1::from_shape_fn(t, |i| 0.002 + i as f32 * 1e-4);
    Int8Conv::new(layout, w, scales, input, Some(bias), output).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// A Tucker-2 shaped chain of int8 convolutions (1×1 → k×k → 1×1),
    /// each of the first two optionally followed by a batch norm and a ReLU
    /// or a Clip (which fusion folds into the int8 step's epilogue, keeping
    /// the chain): the plan hands the u8 codes from step to step and stays
    /// bit-identical to the ops' reference forward one after the other (a
    /// batch norm as the plan's documented f32 `scale·x + shift` of
    /// `BatchNorm::affine`), fused or not, on every int8 path of this CPU,
    /// with and without requantized outputs and NaN inputs.
    #[test]
    fn chained_int8_steps_are_bit_exact(
        c in 1usize..40, r in 1usize..40, t in 1usize..40, k in 1usize..4, hw in 3usize..9,
        batch in 1usize..3, signed in any::<[bool; 3]>(), requant in any::<[bool; 3]>(),
        s in 0usize..3, nan in any::<bool>(), act in any::<[u8; 2]>(), bn in any::<[bool; 2]>(),
        seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let spec = specs()[s];
        prop_assume!(spec.output_hw(hw, hw, k, k).is_ok());
        let mut ops = Vec::new();
        for (i, (ci, ti, ki, sp)) in [(c, r, 1, ConvSpec::new()), (r, r, k, spec), (r, t, 1, ConvSpec::new())]
            .into_iter()
            .enumerate()
        {
            ops.push(Op::Int8Conv(int8_layer(&mut rng, (ci, ti, ki), sp, signed[i], requant[i])));
            if i < 2 && bn[i] {
                let mut v = |lo: f32, w: f32| Array1::from_shape_fn(ti, |_| lo + w * rng.below(1000) as f32 / 1000.0);
                let (g, b, m, var) = (v(0.5, 1.0), v(-0.5, 1.0), v(-0.2, 0.4), v(0.1, 2.0));
                ops.push(Op::BatchNorm(BatchNorm::new(g, b, m, var, 1e-5).unwrap()));
            }
            match act.get(i).map(|a| a % 3) {
                Some(1) => ops.push(Op::Relu(Relu)),
                Some(2) => ops.push(Op::Clip(Clip::new(-0.5, 1.5).unwrap())),
                _ => {}
            }
        }
        let block = Block::new(ops.clone()).unwrap();
        let mut x: Array4<f32> = rng.normal_array((batch, c, hw, hw), 2.0);
        if nan {
            x[[0, 0, 1, 2]] = f32::NAN;
        }
        let mut slow = x.clone();
        for op in &ops {
            slow = match op {
                Op::BatchNorm(b) => {
                    let (scale, shift) = b.affine();
                    let mut y = slow.clone();
                    for ((_, ch, _, _), v) in y.indexed_iter_mut() {
                        *v = scale[ch] * *v + shift[ch];
                    }
                    y
                }
                _ => op.reference_forward(&slow).unwrap(),
            };
        }
        let same = |a: &Array4<f32>| a.shape() == slow.shape()
            && a.iter().zip(slow.iter()).all(|(f, s)| f.to_bits() == s.to_bits() || (f.is_nan() && s.is_nan()));
        let shape = ActShape::new(c, hw, hw);
        for isa in Isa::supported() {
            for fuse in [true, false] {
                let options = PlanOptions { isa, fuse, ..PlanOptions::default() };
                let mut plan = Plan::with_options(&block, shape, batch, options).unwrap();
                let chained: Vec<bool> = plan.steps().iter().map(|st| st.fused.iter().any(|f| f == INT8_CHAIN)).collect();
                let want = if fuse { vec![true, true, false] } else { vec![false; ops.len()] };
                prop_assert_eq!(chained, want);
                // Twice: a run must not leave codes behind for the next one.
                for _ in 0..2 {
                    let fast = plan.run(&x).unwrap().to_owned();
                    prop_assert!(same(&fast), "{} fuse {}", isa, fuse);
                }
            }
        }
    }
}

#[test]
fn int8_and_xnor_linear_layouts() {
    let mut rng = SeededRng::new(3);
    let (o, i) = (37, 2 * 5 * 5);
    let x = rng.normal_array((2, 2, 5, 5), 1.0);
    let layout = WeightLayout::linear(o, i).unwrap();
    let w = Array2::from_shape_fn((o, i), |_| (rng.below(255) as i32 - 127) as i8);
    let q = Int8Conv::new(
        layout,
        w,
        Array1::from_elem(1, 0.01),
        QuantParams::new(0.04, 128, IntType::U8).unwrap(),
        None,
        None,
    )
    .unwrap();
    let (fast, slow) = run(Op::Int8Conv(q), &x);
    assert_eq!(fast, slow);
    let bits: Vec<u32> = (0..o * i).map(|_| rng.below(2) as u32).collect();
    let b = BinaryConv::new(
        layout,
        PackedCodes::pack(&bits, o, i, 1).unwrap(),
        Array1::from_elem(o, 0.5),
        None,
        true,
    )
    .unwrap();
    let (fast, slow) = run(Op::BinaryConv(b), &x);
    assert_close(&fast, &slow, 1e-5);
}

#[test]
fn weight_only_formats_run_decoded() {
    let mut rng = SeededRng::new(4);
    for spec in specs() {
        let (t, c) = (9, 5);
        let layout = WeightLayout::conv([t, c, 3, 3], spec).unwrap();
        let x = rng.normal_array((2, c, 7, 6), 1.0);
        let bits: Vec<u32> = (0..t * c * 9).map(|_| rng.below(2) as u32).collect();
        let bc = BinaryConv::new(
            layout,
            PackedCodes::pack(&bits, t, c * 9, 1).unwrap(),
            Array1::from_elem(t, 0.3),
            None,
            false,
        )
        .unwrap();
        let tern: Vec<u32> = (0..t * c * 9).map(|_| rng.below(3) as u32).collect();
        let tc = TernaryConv::new(
            layout,
            PackedCodes::pack(&tern, t, c * 9, 2).unwrap(),
            Array1::from_elem(t, 0.7),
            None,
        )
        .unwrap();
        let codes: Vec<u32> = (0..t * c * 9).map(|_| rng.below(16) as u32).collect();
        let cc = CodebookConv::new(
            layout,
            PackedCodes::pack(&codes, t, c * 9, 4).unwrap(),
            rng.normal_array((1, 16), 1.0),
            None,
        )
        .unwrap();
        for op in [
            Op::BinaryConv(bc),
            Op::TernaryConv(tc),
            Op::CodebookConv(cc),
        ] {
            let (fast, slow) = run(op, &x);
            assert_close(&fast, &slow, 1e-4);
        }
    }
}

#[test]
fn codebook_and_pq_linear_layouts() {
    let mut rng = SeededRng::new(5);
    let (o, i) = (70, 3 * 4 * 4);
    let x = rng.normal_array((2, 3, 4, 4), 1.0);
    let layout = WeightLayout::linear(o, i).unwrap();
    let codes: Vec<u32> = (0..o * i).map(|_| rng.below(200) as u32).collect();
    let cb = CodebookConv::new(
        layout,
        PackedCodes::pack(&codes, o, i, 8).unwrap(),
        rng.normal_array((1, 200), 1.0),
        Some(Array1::from_elem(o, 0.5)),
    )
    .unwrap();
    // Decoded once at plan build: the dense linear kernel, not a per-call decode.
    let plan = Plan::new(
        &Block::single(Op::CodebookConv(cb.clone())),
        ActShape::new(3, 4, 4),
        2,
    )
    .unwrap();
    assert_eq!(plan.steps()[0].kernel, "linear");
    let (fast, slow) = run(Op::CodebookConv(cb), &x);
    assert_close(&fast, &slow, 1e-5);
    let (s, k, d) = (12, 32, 4);
    let codes: Vec<u32> = (0..s * o).map(|_| rng.below(k) as u32).collect();
    let books: Array3<f32> = Array3::from_shape_fn((s, k, d), |_| rng.normal() as f32);
    let pq = ProductQuantizedConv::new(
        layout,
        PackedCodes::pack(&codes, s, o, 5).unwrap(),
        books,
        None,
    )
    .unwrap();
    assert!(runs_lowbit(&Op::ProductQuantizedConv(pq.clone()), &x));
    let (fast, slow) = run(Op::ProductQuantizedConv(pq), &x);
    assert_close(&fast, &slow, 1e-5);
}

#[test]
fn sparse_and_groupwise_ops() {
    let mut rng = SeededRng::new(6);
    for spec in specs() {
        let (t, c) = (11, 6);
        let w = rng
            .normal_array((t, c, 3, 3), 1.0)
            .mapv(|v: f32| if v.abs() > 0.8 { v } else { 0.0 });
        let layer = ConvLayer::new(
            hasten_core::Conv4d::new(w).unwrap(),
            Some(Array1::from_elem(t, 0.2)),
            spec,
        )
        .unwrap();
        let x = rng.normal_array((2, c, 8, 7), 1.0);
        let sc = SparseConv::from_conv(&layer).unwrap();
        let taps: Vec<(usize, usize, usize)> = (0..c)
            .flat_map(|cc| [(cc, 0, 1), (cc, 1, 1), (cc, 2, 0)])
            .collect();
        let gc = GroupwiseConv::from_conv(&layer, taps).unwrap();
        for op in [Op::SparseConv(sc), Op::GroupwiseConv(gc)] {
            assert!(runs_lowbit(&op, &x));
            let (fast, slow) = run(op, &x);
            assert_close(&fast, &slow, 1e-5);
        }
    }
    let wl = Array2::from_shape_fn((30, 40), |_| {
        if rng.uniform() < 0.2 {
            rng.normal() as f32
        } else {
            0.0
        }
    });
    let sl = SparseLinear::new(Csr::from_dense(wl.view()).unwrap(), None).unwrap();
    let _ = LinearLayer::new(wl, None).unwrap();
    let x = rng.normal_array((3, 40, 1, 1), 1.0);
    let (fast, slow) = run(Op::SparseLinear(sl), &x);
    assert_close(&fast, &slow, 1e-5);
}

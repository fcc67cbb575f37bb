//! One `Int8Conv` as a plan step against the f32 `Conv` step of the same
//! shape, at batch 1: ResNet-18's 3×3 and strided 1×1 convolutions, the
//! Tucker-2 factors of its 3×3 convolutions (1×1 reduction, 3×3 core on
//! fewer channels, 1×1 expansion; ranks for a 2× MAC cut) and the 3×3
//! convolutions of a small 28×28 network (ResNet-8: 16–64 channels). Both plans are
//! forced to the same [`Isa`] (the int8 step runs VNNI under `Avx512` where
//! the CPU has it, the exact `vpmaddwd` kernel under `Avx2`). Minima and
//! medians of interleaved rounds, wall clock, one run. The last rows time
//! whole Tucker-2 blocks (reduce → core → expand as one plan) and a pair of
//! 3×3 convolutions with a batch norm and ReLU between them (a ResNet basic
//! block's first half), where the int8 steps hand their u8 codes to each
//! other instead of f32 tensors. A second table times MobileNet-v1's
//! depthwise 3×3 layers (one channel per group) as f32, as the int8
//! depthwise step, and as the op's reference forward (where grouped int8
//! layers ran before they had a plan step).
//!
//! `cargo run --release -p hasten-fastconv --example int8_steps [-- avx2|avx512|scalar [ROW]]`
//! (`ROW`: time only the rows whose shape contains it, e.g. `64→38`, for a
//! profiler).

use std::time::Instant;

use hasten_core::ndarray::{Array1, Array2};
use hasten_core::op::WeightLayout;
use hasten_core::{
    ActShape, BatchNorm, Block, ConvLayer, ConvSpec, Int8Conv, IntType, Op, QuantParams, Relu,
    SeededRng,
};
use hasten_fastconv::{Isa, Plan};

/// (minimum, median) ms of `fs`, one call of each per round, for ~0.5 s.
fn interleaved_ms(fs: &mut [&mut dyn FnMut()]) -> Vec<(f64, f64)> {
    fs.iter_mut().for_each(|f| f());
    let mut times = vec![Vec::new(); fs.len()];
    let start = Instant::now();
    while times[0].len() < 9 || (start.elapsed().as_secs_f64() < 0.5 && times[0].len() < 400) {
        for (f, t) in fs.iter_mut().zip(times.iter_mut()) {
            let t0 = Instant::now();
            f();
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times
        .into_iter()
        .map(|mut t: Vec<f64>| {
            t.sort_by(|a, b| a.total_cmp(b));
            (t[0], t[t.len() / 2])
        })
        .collect()
}

fn main() {
    let isa = match std::env::args().nth(1).as_deref() {
        Some("avx2") => Isa::Avx2,
        Some("scalar") => Isa::Scalar,
        _ => Isa::detect(),
    };
    let threads = rayon::current_num_threads();
    println!("int8 vs f32 plan step, batch 1, {threads} threads, {isa}\n");
    println!("| layer | C→T, k×k, H, stride | f32 ms (min) | int8 ms (min) | int8 × (min) | int8 × (median) |");
    println!("|---|---|---|---|---|---|");
    let mut rng = SeededRng::new(1);
    // (what, C, T, k, H = W, stride); Tucker ranks R from C·R + 9R² + R·T = 4.5·C·T.
    let shapes = [
        ("3×3", 64, 64, 3, 56, 1),
        ("3×3", 128, 128, 3, 28, 1),
        ("3×3", 256, 256, 3, 14, 1),
        ("3×3", 512, 512, 3, 7, 1),
        ("1×1 downsample", 64, 128, 1, 56, 2),
        ("1×1 downsample", 256, 512, 1, 14, 2),
        ("Tucker reduce", 64, 38, 1, 56, 1),
        ("Tucker core", 38, 38, 3, 56, 1),
        ("Tucker expand", 38, 64, 1, 56, 1),
        ("Tucker reduce", 256, 155, 1, 14, 1),
        ("Tucker core", 155, 155, 3, 14, 1),
        ("Tucker expand", 155, 256, 1, 14, 1),
        // A small network's layers (ResNet-8 on 28×28 Fashion-MNIST).
        ("small 3×3", 16, 16, 3, 28, 1),
        ("small 3×3", 32, 32, 3, 14, 1),
        ("small 3×3", 64, 64, 3, 7, 1),
    ];
    for (what, c, t, k, hw, s) in shapes {
        let (f32_op, int8_op) = layer_pair(&mut rng, (c, t, k), s);
        let row = format!("{c}→{t}, {k}×{k}, {hw}, {s}");
        compare(
            what,
            &row,
            [f32_op],
            [int8_op],
            ActShape::new(c, hw, hw),
            isa,
        );
    }
    // Whole Tucker-2 blocks: the three int8 steps chained.
    for (c, r, hw) in [(64, 38, 56), (256, 155, 14)] {
        let (f1, i1) = layer_pair(&mut rng, (c, r, 1), 1);
        let (f2, i2) = layer_pair(&mut rng, (r, r, 3), 1);
        let (f3, i3) = layer_pair(&mut rng, (r, c, 1), 1);
        let row = format!("{c}→{r}→{r}→{c}, 1×1 · 3×3 · 1×1, {hw}, 1");
        let shape = ActShape::new(c, hw, hw);
        compare(
            "Tucker block (chained)",
            &row,
            [f1, f2, f3],
            [i1, i2, i3],
            shape,
            isa,
        );
    }
    // 3×3 → batch norm → ReLU → 3×3: the int8 plan folds the batch norm and
    // ReLU into the first step's epilogue and chains it into the second.
    for (c, hw) in [(64, 56), (256, 14)] {
        let (f1, i1) = layer_pair(&mut rng, (c, c, 3), 1);
        let (f2, i2) = layer_pair(&mut rng, (c, c, 3), 1);
        let ones = || Array1::from_elem(c, 1.0);
        let bn = BatchNorm::new(ones(), ones() * 0.1, ones() * 0.05, ones(), 1e-5).unwrap();
        let (bn, relu) = (Op::BatchNorm(bn), Op::Relu(Relu));
        let row = format!("{c}→{c}→{c}, 3×3 · BN · ReLU · 3×3, {hw}, 1");
        compare(
            "basic-block half (chained)",
            &row,
            [f1, bn.clone(), relu.clone(), f2],
            [i1, bn, relu, i2],
            ActShape::new(c, hw, hw),
            isa,
        );
    }
    println!("\n| MobileNet-v1 depthwise | C, k×k, H, stride | f32 ms (min) | int8 ms (min) | int8 × (min) | int8 × (median) | int8 reference ms (min) |");
    println!("|---|---|---|---|---|---|---|");
    for (c, hw, s) in [
        (32, 112, 1),
        (64, 112, 2),
        (128, 56, 1),
        (128, 56, 2),
        (256, 28, 1),
        (512, 14, 1),
        (1024, 7, 1),
    ] {
        let (f32_op, int8_op) = grouped_pair(&mut rng, (c, c, 3), s, c);
        let row = format!("dw {c}, 3×3, {hw}, {s}");
        compare_with_reference(&row, f32_op, int8_op, ActShape::new(c, hw, hw), isa);
    }
}

/// Times an f32 layer, its int8 twin as a plan step and the int8 op's
/// reference forward in alternating rounds and prints a row.
fn compare_with_reference(row: &str, f32_op: Op, int8_op: Op, shape: ActShape, isa: Isa) {
    if let Some(only) = std::env::args().nth(2) {
        if !row.contains(&only) {
            return;
        }
    }
    let x = SeededRng::new(2).normal_array((1, shape.channels, shape.height, shape.width), 1.0);
    let mut f32_plan = Plan::with_isa(&Block::single(f32_op), shape, 1, isa).unwrap();
    let block = Block::single(int8_op.clone());
    let mut int8_plan = Plan::with_isa(&block, shape, 1, isa).unwrap();
    let ms = interleaved_ms(&mut [
        &mut || {
            f32_plan.run(&x).unwrap();
        },
        &mut || {
            int8_plan.run(&x).unwrap();
        },
        &mut || {
            hasten_core::Operator::reference_forward(&int8_op, &x).unwrap();
        },
    ]);
    println!(
        "| | {row} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} |",
        ms[0].0,
        ms[1].0,
        ms[0].0 / ms[1].0,
        ms[0].1 / ms[1].1,
        ms[2].0
    );
}

/// The f32 convolution `c → t`, `k × k` (padding `k / 2`, `stride`) with
/// random weights, and its int8 twin (weights rounded at step 0.002).
fn layer_pair(rng: &mut SeededRng, (c, t, k): (usize, usize, usize), stride: usize) -> (Op, Op) {
    grouped_pair(rng, (c, t, k), stride, 1)
}

/// [`layer_pair`] with `groups` groups (`c / groups` input channels each).
fn grouped_pair(
    rng: &mut SeededRng,
    (c, t, k): (usize, usize, usize),
    stride: usize,
    groups: usize,
) -> (Op, Op) {
    let spec = ConvSpec::new()
        .with_padding(k / 2)
        .with_stride(stride)
        .with_groups(groups);
    let c = c / groups;
    let w = rng.normal_array((t, c, k, k), 0.05);
    let ws = w.as_slice().unwrap();
    let q = Array2::from_shape_fn((t, c * k * k), |(tt, j)| {
        (ws[tt * c * k * k + j] / 0.002)
            .round()
            .clamp(-127.0, 127.0) as i8
    });
    let input = QuantParams::new(16.0 / 255.0, 128, IntType::U8).unwrap();
    let layout = WeightLayout::conv([t, c, k, k], spec).unwrap();
    let op = Int8Conv::new(layout, q, Array1::from_elem(t, 0.002), input, None, None).unwrap();
    let conv = ConvLayer::from_array(w.clone(), spec).unwrap();
    (Op::Conv(conv), Op::Int8Conv(op))
}

/// Times the f32 and int8 blocks in alternating rounds and prints a row.
fn compare<const N: usize>(
    what: &str,
    row: &str,
    f32_ops: [Op; N],
    int8_ops: [Op; N],
    shape: ActShape,
    isa: Isa,
) {
    if let Some(only) = std::env::args().nth(2) {
        if !row.contains(&only) {
            return;
        }
    }
    let x = SeededRng::new(2).normal_array((1, shape.channels, shape.height, shape.width), 1.0);
    let block = |ops: [Op; N]| Block::new(ops.to_vec()).unwrap();
    let mut f32_plan = Plan::with_isa(&block(f32_ops), shape, 1, isa).unwrap();
    let mut int8_plan = Plan::with_isa(&block(int8_ops), shape, 1, isa).unwrap();
    let ms = interleaved_ms(&mut [
        &mut || {
            f32_plan.run(&x).unwrap();
        },
        &mut || {
            int8_plan.run(&x).unwrap();
        },
    ]);
    println!(
        "| {what} | {row} | {:.3} | {:.3} | {:.2} | {:.2} |",
        ms[0].0,
        ms[1].0,
        ms[0].0 / ms[1].0,
        ms[0].1 / ms[1].1
    );
}

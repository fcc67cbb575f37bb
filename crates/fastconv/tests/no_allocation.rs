//! A built plan runs without allocating: every buffer is owned by the plan
//! and sized by its first run. Counted with a global allocator wrapper, on
//! the thread that runs the plan and only while it runs (the harness's
//! threads, and the exiting worker of a previous pool, allocate at times of
//! their choosing).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hasten_core::graph::GraphBuilder;
use hasten_core::ndarray::{Array1, Array2, Array3, Array4};
use hasten_core::op::WeightLayout;
use hasten_core::{
    ActShape, AvgPool, BatchNorm, BinaryConv, BinaryInput, Block, ChannelShuffle, Clip,
    CodebookConv, ConvLayer, ConvSpec, Csr, Dropout, Flatten, GlobalAvgPool, GroupwiseConv,
    HardSwish, Identity, Int8Conv, IntType, LinearLayer, MaxPool, PackedCodes, Pad, Padding,
    PerforatedConv, PoolSpec, ProductQuantizedConv, QuantParams, Relu, SeededRng, Shift, Softmax,
    SparseConv, SparseLinear, TtLinear,
};
use hasten_fastconv::{Isa, Plan, PlanOptions, Winograd, BINARY_CHAIN};

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether allocations on this thread are counted.
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Counts one allocation if the current thread is counted.
fn count() {
    if COUNTED.with(|c| c.get()) {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A rayon pool with one worker thread, so that the count holds only the
/// plan's own allocations: a multi-threaded rayon pool allocates now and then
/// inside its scheduler (parking, work-stealing buffers) whatever the job does.
fn single_worker_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
}

/// Runs `plan` once on `x` (sizing its buffers), then returns how many
/// allocations this thread makes during five further runs.
fn allocations_in_five_runs(plan: &mut Plan, x: &Array4<f32>) -> usize {
    plan.run(x).unwrap();
    COUNTED.with(|c| c.set(true));
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..5 {
        plan.run(x).unwrap();
    }
    let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
    COUNTED.with(|c| c.set(false));
    during
}

/// One test only: the count is global, and the harness allocates whenever
/// another test starts or reports.
#[test]
fn running_plans_does_not_allocate() {
    conv_plan_does_not_allocate();
    linear_plan_does_not_allocate();
    perforated_plan_does_not_allocate();
    lowbit_plan_does_not_allocate();
    tt_plan_does_not_allocate();
    graph_plan_does_not_allocate();
    head_plan_does_not_allocate();
}

/// Pooling, padding, an activation, softmax and the copies of a network's
/// stem and head.
fn head_plan_does_not_allocate() {
    let mut rng = SeededRng::new(6);
    let c = 6;
    let block = Block::new(vec![
        MaxPool::new(PoolSpec::square(3).with_stride(2).with_padding(1))
            .unwrap()
            .into(),
        HardSwish.into(),
        Pad::new(Padding::same(1), 0.0).unwrap().into(),
        AvgPool::new(PoolSpec::square(2).with_stride(2), false)
            .unwrap()
            .into(),
        Clip::relu6().into(),
        Softmax.into(),
        GlobalAvgPool.into(),
        Flatten.into(),
        Dropout::new(0.2).unwrap().into(),
        Identity.into(),
    ])
    .unwrap();
    let x: Array4<f32> = rng.normal_array((2, c, 17, 23), 1.0);
    let pool = single_worker_pool();
    pool.install(|| {
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(c, 17, 23), 2, isa).unwrap();
            let during = allocations_in_five_runs(&mut plan, &x);
            assert_eq!(during, 0, "{isa}: {during} allocations in 5 runs");
        }
    });
}

fn conv_plan_does_not_allocate() {
    let mut rng = SeededRng::new(4);
    let c = 32;
    let conv = |rng: &mut SeededRng, t: usize, c_g: usize, k: usize, spec: ConvSpec| {
        ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((t, c_g, k, k), 0.1)).unwrap(),
            Some(rng.normal_array(t, 0.1)),
            spec,
        )
        .unwrap()
    };
    let bn = BatchNorm::new(
        rng.normal_array(c, 1.0),
        rng.normal_array(c, 1.0),
        rng.normal_array(c, 1.0),
        rng.uniform_array(c, 0.5, 1.5),
        1e-5,
    )
    .unwrap();
    // GEMM (3×3 with BN + ReLU), shuffle + shift absorbed, depthwise,
    // 1×1, a trailing shuffle written out, and a 3×3 by Winograd.
    let block = Block::new(vec![
        conv(&mut rng, c, c, 3, ConvSpec::new().with_padding(1)).into(),
        bn.into(),
        Relu.into(),
        ChannelShuffle::new(4).unwrap().into(),
        Shift::grouped(c, 3).unwrap().into(),
        conv(
            &mut rng,
            c,
            1,
            3,
            ConvSpec::new().with_padding(1).with_groups(c),
        )
        .into(),
        conv(&mut rng, c, c, 1, ConvSpec::new()).into(),
        conv(&mut rng, c, c, 3, ConvSpec::new().with_padding(1)).into(),
        ChannelShuffle::new(2).unwrap().into(),
    ])
    .unwrap();
    let x: Array4<f32> = rng.normal_array((2, c, 12, 12), 1.0);
    let pool = single_worker_pool();
    pool.install(|| {
        for isa in Isa::supported() {
            let options = PlanOptions {
                isa,
                winograd: Winograd::Always,
                ..PlanOptions::default()
            };
            let mut plan =
                Plan::with_options(&block, ActShape::new(c, 12, 12), 2, options).unwrap();
            let during = allocations_in_five_runs(&mut plan, &x);
            assert_eq!(during, 0, "{isa}: {during} allocations in 5 runs");
        }
    });
}

fn linear_plan_does_not_allocate() {
    let mut rng = SeededRng::new(5);
    let (c, hw, out) = (7, 3, 45);
    let layer = LinearLayer::new(
        rng.normal_array((out, c * hw * hw), 1.0),
        Some(rng.normal_array(out, 1.0)),
    )
    .unwrap();
    let block = Block::new(vec![layer.into(), Relu.into()]).unwrap();
    let pool = single_worker_pool();
    pool.install(|| {
        // Batch 3 takes the skinny product, batch 11 the GEMM.
        for batch in [3, 11] {
            let x: Array4<f32> = rng.normal_array((batch, c, hw, hw), 1.0);
            for isa in Isa::supported() {
                let mut plan =
                    Plan::with_isa(&block, ActShape::new(c, hw, hw), batch, isa).unwrap();
                let during = allocations_in_five_runs(&mut plan, &x);
                assert_eq!(
                    during, 0,
                    "{isa}, batch {batch}: {during} allocations in 5 runs"
                );
            }
        }
    });
}

fn perforated_plan_does_not_allocate() {
    let mut rng = SeededRng::new(6);
    let (c, hw) = (5, 9);
    let conv = ConvLayer::new(
        hasten_core::Conv4d::new(rng.normal_array((11, c, 3, 3), 1.0)).unwrap(),
        Some(rng.normal_array(11, 1.0)),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let mask: Vec<bool> = (0..hw * hw).map(|p| p % 3 != 0).collect();
    let perf = PerforatedConv::new(conv, (hw, hw), mask).unwrap();
    let block = Block::new(vec![perf.into(), Relu.into()]).unwrap();
    let x: Array4<f32> = rng.normal_array((2, c, hw, hw), 1.0);
    let pool = single_worker_pool();
    pool.install(|| {
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(c, hw, hw), 2, isa).unwrap();
            let during = allocations_in_five_runs(&mut plan, &x);
            assert_eq!(during, 0, "{isa}: {during} allocations in 5 runs");
        }
    });
}

/// The fully connected kernels (codebook decoded to dense, product-quantized, CSR)
/// chained in one block; checked against the reference on the second run.
fn lowbit_plan_does_not_allocate() {
    let mut rng = SeededRng::new(7);
    let (c, hw, o1, o2, o3) = (3, 4, 40, 24, 9);
    let i = c * hw * hw;
    let codes: Vec<u32> = (0..o1 * i).map(|_| rng.below(16) as u32).collect();
    let cb = CodebookConv::new(
        WeightLayout::linear(o1, i).unwrap(),
        PackedCodes::pack(&codes, o1, i, 4).unwrap(),
        rng.normal_array((1, 16), 1.0),
        Some(rng.normal_array(o1, 1.0)),
    )
    .unwrap();
    let (s, k, d) = (10, 8, 4);
    let codes: Vec<u32> = (0..s * o2).map(|_| rng.below(k) as u32).collect();
    let books: Array3<f32> = Array3::from_shape_fn((s, k, d), |_| rng.normal() as f32);
    let pq = ProductQuantizedConv::new(
        WeightLayout::linear(o2, o1).unwrap(),
        PackedCodes::pack(&codes, s, o2, 3).unwrap(),
        books,
        None,
    )
    .unwrap();
    let w = Array2::from_shape_fn((o3, o2), |_| {
        if rng.uniform() < 0.3 {
            rng.normal() as f32
        } else {
            0.0
        }
    });
    let sl = SparseLinear::new(Csr::from_dense(w.view()).unwrap(), None).unwrap();
    let block = Block::new(vec![cb.into(), pq.into(), sl.into()]).unwrap();
    let pool = single_worker_pool();
    pool.install(|| {
        for batch in [1, 3] {
            let x: Array4<f32> = rng.normal_array((batch, c, hw, hw), 1.0);
            let mut plan = Plan::new(&block, ActShape::new(c, hw, hw), batch).unwrap();
            let during = allocations_in_five_runs(&mut plan, &x);
            let fast = plan.run(&x).unwrap().to_owned();
            let slow = block.reference_forward(&x).unwrap();
            let err = hasten_core::relative_error(&slow, &fast);
            assert!(err < 1e-4, "batch {batch}: relative error {err}");
            assert_eq!(
                during, 0,
                "low-bit, batch {batch}: {during} allocations in 5 runs"
            );
        }
        // Int8 convolutions (3×3, depthwise 3×3, 1×1) on every int8 path.
        let (c1, c2) = (5, 7);
        let int8 = |rng: &mut SeededRng, t: usize, c: usize, k: usize| {
            let layout =
                WeightLayout::conv([t, c, k, k], ConvSpec::new().with_padding(k / 2)).unwrap();
            let w = Array2::from_shape_fn((t, c * k * k), |_| (rng.below(255) as i32 - 127) as i8);
            let input = QuantParams::new(0.03, 120, IntType::U8).unwrap();
            Int8Conv::new(layout, w, Array1::from_elem(t, 0.01), input, None, None).unwrap()
        };
        // A depthwise one (multiplier 2, stride 2) between them.
        let depthwise = |rng: &mut SeededRng, c: usize| {
            let spec = ConvSpec::new()
                .with_padding(1)
                .with_stride(2)
                .with_groups(c);
            let layout = WeightLayout::conv([2 * c, 1, 3, 3], spec).unwrap();
            let w = Array2::from_shape_fn((2 * c, 9), |_| (rng.below(255) as i32 - 127) as i8);
            let input = QuantParams::new(0.05, 7, IntType::I8).unwrap();
            Int8Conv::new(layout, w, Array1::from_elem(2 * c, 0.02), input, None, None).unwrap()
        };
        let block = Block::new(vec![
            int8(&mut rng, c2, c1, 3).into(),
            depthwise(&mut rng, c2).into(),
            int8(&mut rng, c1, 2 * c2, 1).into(),
        ])
        .unwrap();
        let x: Array4<f32> = rng.normal_array((2, c1, 9, 8), 1.0);
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(c1, 9, 8), 2, isa).unwrap();
            let during = allocations_in_five_runs(&mut plan, &x);
            assert_eq!(plan.run(&x).unwrap(), block.reference_forward(&x).unwrap());
            assert_eq!(during, 0, "int8, {isa}: {during} allocations in 5 runs");
        }
    });
}

#[test]
/// A CSR-sparse 3×3 convolution (stride 2) then a group-wise pruned 3×3
/// convolution, on every f32 path and batch 1 and 3: their im2col rows live
/// in the plan's buffer; checked against the reference.
fn sparse_conv_plan_does_not_allocate() {
    let mut rng = SeededRng::new(11);
    let (c, t1, t2, hw) = (6, 10, 7, 11);
    let w = Array2::from_shape_fn((t1, c * 9), |_| {
        if rng.uniform() < 0.3 {
            rng.normal() as f32
        } else {
            0.0
        }
    });
    let spec = ConvSpec::new().with_padding(1).with_stride(2);
    let sparse = SparseConv::new(
        Csr::from_dense(w.view()).unwrap(),
        c,
        (3, 3),
        Some(rng.normal_array(t1, 1.0)),
        spec,
    )
    .unwrap();
    let taps: Vec<(usize, usize, usize)> = (0..t1)
        .flat_map(|ch| (0..3).flat_map(move |i| (0..3).map(move |j| (ch, i, j))))
        .filter(|&(ch, i, j)| (ch + i + j) % 3 != 0)
        .collect();
    let weight = rng.normal_array((t2, taps.len()), 0.3);
    let groupwise = GroupwiseConv::new(
        t1,
        (3, 3),
        taps,
        weight,
        Some(rng.normal_array(t2, 1.0)),
        ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let block = Block::new(vec![sparse.into(), Relu.into(), groupwise.into()]).unwrap();
    assert_lowbit_steps_do_not_allocate(&block, ActShape::new(c, hw, hw), 2, 1e-4, &mut rng);
}

/// Plans of `block` on every f32 path at batch 1 and 3 run `lowbit` low-bit
/// steps, equal the reference within `tol` (relative) and allocate nothing
/// once built.
fn assert_lowbit_steps_do_not_allocate(
    block: &Block,
    input: ActShape,
    lowbit: usize,
    tol: f64,
    rng: &mut SeededRng,
) {
    let pool = single_worker_pool();
    pool.install(|| {
        for batch in [1, 3] {
            let x: Array4<f32> =
                rng.normal_array((batch, input.channels, input.height, input.width), 1.0);
            let slow = block.reference_forward(&x).unwrap();
            for isa in Isa::supported() {
                let mut plan = Plan::with_isa(block, input, batch, isa).unwrap();
                let steps = plan.steps();
                let count = steps
                    .iter()
                    .filter(|s| s.kernel.starts_with("low-bit"))
                    .count();
                assert_eq!(count, lowbit, "{plan}");
                let during = allocations_in_five_runs(&mut plan, &x);
                let fast = plan.run(&x).unwrap().to_owned();
                let err = hasten_core::relative_error(&slow, &fast);
                assert!(err < tol, "{isa}, batch {batch}: relative error {err}");
                assert_eq!(
                    during, 0,
                    "{isa}, batch {batch}: {during} allocations in 5 runs"
                );
            }
        }
    });
}

#[test]
/// XNOR convolutions (binary weights and inputs, XNOR-Net's `K`): a 3×3
/// stride-1 layer with padding, then a linear layer on the flattened
/// output, on every path and batch 1 and 3: the packed signs, `K` and the
/// popcount rows live in the steps' buffers; checked against the reference.
fn xnor_plan_does_not_allocate() {
    let mut rng = SeededRng::new(13);
    let (c, t, hw, o) = (70, 9, 6, 5);
    let spec = ConvSpec::new().with_padding(1);
    let bits: Vec<u32> = (0..t * c * 9).map(|_| rng.below(2) as u32).collect();
    let conv = BinaryConv::new(
        WeightLayout::conv([t, c, 3, 3], spec).unwrap(),
        PackedCodes::pack(&bits, t, c * 9, 1).unwrap(),
        Array1::from_shape_fn(t, |i| 0.1 + 0.01 * i as f32),
        Some(rng.normal_array(t, 0.5)),
        true,
    )
    .unwrap();
    let inputs = t * hw * hw;
    let linear = xnor_linear(o, inputs, &mut rng);
    let block = Block::new(vec![conv.into(), Flatten.into(), linear.into()]).unwrap();
    assert_lowbit_steps_do_not_allocate(&block, ActShape::new(c, hw, hw), 2, 1e-5, &mut rng);
}

#[test]
/// A chain of binary convolutions: an XNOR-Net layer (with `K`) and a Clip
/// hand packed signs to two sign-input layers (stride 2, no padding, then
/// padding 2), the last writing f32 for an XNOR linear layer: the packed
/// signs pass through the consumers' own buffers.
fn binary_chain_plan_does_not_allocate() {
    let mut rng = SeededRng::new(14);
    let mut layer = |c: usize, t: usize, spec: ConvSpec, input: BinaryInput| {
        let bits: Vec<u32> = (0..t * c * 9).map(|_| rng.below(2) as u32).collect();
        BinaryConv::new(
            WeightLayout::conv([t, c, 3, 3], spec).unwrap(),
            PackedCodes::pack(&bits, t, c * 9, 1).unwrap(),
            Array1::from_shape_fn(t, |i| 0.1 + 0.01 * i as f32),
            Some(Array1::from_shape_fn(t, |i| 0.25 * i as f32 - 1.0)),
            false,
        )
        .unwrap()
        .with_input(input)
    };
    let (c, hw, o) = (70, 9, 5);
    let first = layer(c, 65, ConvSpec::new().with_padding(1), BinaryInput::XnorK);
    let second = layer(65, 20, ConvSpec::new().with_stride(2), BinaryInput::Sign);
    let third = layer(20, 9, ConvSpec::new().with_padding(2), BinaryInput::Sign);
    let inputs = 9 * 6 * 6;
    let linear = xnor_linear(o, inputs, &mut rng);
    let ops = vec![
        first.into(),
        Clip::new(-1.0, 1.0).unwrap().into(),
        second.into(),
        third.into(),
        Flatten.into(),
        linear.into(),
    ];
    let block = Block::new(ops).unwrap();
    let plan = Plan::new(&block, ActShape::new(c, hw, hw), 1).unwrap();
    let chained = plan
        .steps()
        .iter()
        .filter(|s| s.fused.iter().any(|f| f == BINARY_CHAIN))
        .count();
    assert_eq!(chained, 2, "{plan}");
    assert_lowbit_steps_do_not_allocate(&block, ActShape::new(c, hw, hw), 4, 1e-5, &mut rng);
}

/// A three-core Tensor-Train layer with bias and ReLU, batch 3.
fn tt_plan_does_not_allocate() {
    let mut rng = SeededRng::new(8);
    let cores = vec![
        rng.normal_array((1, 3, 4, 2), 1.0),
        rng.normal_array((2, 5, 2, 3), 1.0),
        rng.normal_array((3, 2, 3, 1), 1.0),
    ];
    let tt = TtLinear::new(cores, Some(rng.normal_array(30, 1.0))).unwrap();
    let block = Block::new(vec![tt.into(), Relu.into()]).unwrap();
    let x: Array4<f32> = rng.normal_array((3, 24, 1, 1), 1.0);
    let pool = single_worker_pool();
    pool.install(|| {
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(24, 1, 1), 3, isa).unwrap();
            let during = allocations_in_five_runs(&mut plan, &x);
            assert_eq!(during, 0, "TT, {isa}: {during} allocations in 5 runs");
        }
    });
}

/// A residual graph with a concatenation, a broadcast product, a 3-operand
/// add and two outputs, fused and unfused, on every ISA.
fn graph_plan_does_not_allocate() {
    let mut rng = SeededRng::new(9);
    let c = 8;
    let conv = |rng: &mut SeededRng, t: usize, c: usize, k: usize, pad: usize| {
        ConvLayer::from_array(
            rng.normal_array((t, c, k, k), 0.2),
            ConvSpec::new().with_padding(pad),
        )
        .unwrap()
    };
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(c, 10, 10));
    let y = b.op("conv1", conv(&mut rng, c, c, 3, 1), x);
    let y = b.op("relu1", Relu, y);
    let z = b.op("conv2", conv(&mut rng, c, c, 3, 1), y);
    let z = b.add("add", &[z, x]);
    let z = b.op("relu2", Relu, z);
    let p = b.op("p", conv(&mut rng, 3, c, 1, 0), z);
    let q = b.op("q", conv(&mut rng, 5, c, 3, 1), z);
    let cat = b.concat("cat", &[p, q]);
    let g = b.op("gate", conv(&mut rng, c, c, 10, 0), cat);
    let m = b.mul("mul", cat, g);
    let s = b.add("sum3", &[m, z, x]);
    b.output(s);
    b.output(z);
    let graph = b.build().unwrap();
    let input: Array4<f32> = rng.normal_array((2, c, 10, 10), 1.0);
    let pool = single_worker_pool();
    pool.install(|| {
        for isa in Isa::supported() {
            for fuse in [true, false] {
                let options = PlanOptions {
                    isa,
                    fuse,
                    ..PlanOptions::default()
                };
                let mut plan = Plan::for_graph(&graph, 2, options).unwrap();
                plan.run_all(&[&input]).unwrap();
                COUNTED.with(|c| c.set(true));
                let before = ALLOCATIONS.load(Ordering::SeqCst);
                for _ in 0..5 {
                    plan.run_all(&[&input]).unwrap();
                }
                let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
                COUNTED.with(|c| c.set(false));
                assert_eq!(during, 0, "graph, {isa}, fuse {fuse}: {during} allocations");
            }
        }
    });
}

/// An XNOR-Net fully connected layer (`o` outputs of `inputs`, random signs,
/// `α = 0.5`, no bias) with binarized inputs.
fn xnor_linear(o: usize, inputs: usize, rng: &mut SeededRng) -> BinaryConv {
    let bits: Vec<u32> = (0..o * inputs).map(|_| rng.below(2) as u32).collect();
    BinaryConv::new(
        WeightLayout::linear(o, inputs).unwrap(),
        PackedCodes::pack(&bits, o, inputs, 1).unwrap(),
        Array1::from_elem(o, 0.5),
        None,
        true,
    )
    .unwrap()
}

//! A built plan runs without allocating: every buffer is owned by the plan
//! and sized by its first run. Counted with a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hasten_core::ndarray::Array4;
use hasten_core::{
    ActShape, BatchNorm, Block, ChannelShuffle, ConvLayer, ConvSpec, LinearLayer, PerforatedConv,
    Relu, SeededRng, Shift,
};
use hasten_fastconv::{Isa, Plan, PlanOptions, Winograd};

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One test only: the count is global, and the harness allocates whenever
/// another test starts or reports.
#[test]
fn running_plans_does_not_allocate() {
    conv_plan_does_not_allocate();
    linear_plan_does_not_allocate();
    perforated_plan_does_not_allocate();
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
    // On one worker thread, so that the count holds only the plan's own
    // allocations: a multi-threaded rayon pool allocates now and then inside
    // its scheduler (parking, work-stealing buffers) whatever the job does.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for isa in Isa::supported() {
            let options = PlanOptions {
                isa,
                winograd: Winograd::Always,
            };
            let mut plan =
                Plan::with_options(&block, ActShape::new(c, 12, 12), 2, options).unwrap();
            plan.run(&x).unwrap();
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for _ in 0..5 {
                plan.run(&x).unwrap();
            }
            let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        // Batch 3 takes the skinny product, batch 11 the GEMM.
        for batch in [3, 11] {
            let x: Array4<f32> = rng.normal_array((batch, c, hw, hw), 1.0);
            for isa in Isa::supported() {
                let mut plan =
                    Plan::with_isa(&block, ActShape::new(c, hw, hw), batch, isa).unwrap();
                plan.run(&x).unwrap();
                let before = ALLOCATIONS.load(Ordering::SeqCst);
                for _ in 0..5 {
                    plan.run(&x).unwrap();
                }
                let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for isa in Isa::supported() {
            let mut plan = Plan::with_isa(&block, ActShape::new(c, hw, hw), 2, isa).unwrap();
            plan.run(&x).unwrap();
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for _ in 0..5 {
                plan.run(&x).unwrap();
            }
            let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
            assert_eq!(during, 0, "{isa}: {during} allocations in 5 runs");
        }
    });
}

//! Criterion benchmarks of the fast f32 kernels on the standard workloads
//! (ResNet-18, VGG-16, MobileNet-v1 layers and the CP / Tucker-2 / separable
//! blocks replacing a 256-channel 3×3 layer at rank 64), at batch 1 and 8,
//! through a pre-built [`Plan`] (weights packed once, no allocation per run).
//!
//! ```text
//! cargo bench --bench conv
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hasten::core::SeededRng;
use hasten::fastconv::Plan;
use hasten::workloads;

fn bench_conv(c: &mut Criterion) {
    let all = workloads::all(7).expect("standard workloads build");
    for batch in [1usize, 8] {
        let mut group = c.benchmark_group(format!("conv/batch{batch}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(800));
        for w in &all {
            let macs = w.block.cost(w.input).expect("valid workload").macs;
            let mut plan = Plan::new(&w.block, w.input, batch).expect("plan builds");
            let x = SeededRng::new(1).normal_array(w.input.batched(batch), 1.0);
            group.throughput(Throughput::Elements(2 * macs * batch as u64));
            group.bench_function(BenchmarkId::from_parameter(&w.name), |b| {
                b.iter(|| plan.run(&x).expect("plan runs")[[0, 0, 0, 0]])
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);

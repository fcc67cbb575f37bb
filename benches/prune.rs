//! Pruned convolution formats against the dense layer (survey section 6.1):
//! a ResNet-18 `layer3` 3×3 convolution (256 → 256, 14×14, batch 1), pruned
//! group-wise ([`hasten::core::GroupwiseConv`], Lebedev & Lempitsky \[66\])
//! and unstructured ([`hasten::core::SparseConv`], CSR) at densities
//! 0.05 – 0.9, each run through `hasten::fastconv::forward` next to the dense
//! layer. The survey expects group-wise speed-ups close to `1 / density` and
//! CSR to pay off only below ≈ 10 % density.
//!
//! ```text
//! cargo bench --bench prune
//! ```
//!
//! Ops without a fast kernel in `hasten-fastconv` run its reference fallback;
//! their timings then measure that fallback.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hasten::core::{ActShape, Block, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
use hasten::prune::removal::{GroupwisePrune, MagnitudeSparse};

fn pruned_formats(c: &mut Criterion) {
    let mut rng = SeededRng::new(18);
    let (ch, hw) = (256, 14);
    let std = (2.0 / (ch * 9) as f64).sqrt();
    let layer = ConvLayer::from_array(
        rng.normal_array((ch, ch, 3, 3), std),
        ConvSpec::new().with_padding(1),
    )
    .expect("valid layer");
    let input = ActShape::new(ch, hw, hw);
    let x = rng.normal_array((1, ch, hw, hw), 1.0);
    let dense = Block::single(layer.clone());
    let layer = Layer::Conv(layer);

    let mut group = c.benchmark_group("prune_resnet18_layer3_3x3");
    group.sample_size(10);
    group.bench_function("dense", |b| {
        b.iter(|| hasten::fastconv::forward(&dense, &x).expect("forward"))
    });
    for density in [0.05, 0.1, 0.25, 0.5, 0.75, 0.9] {
        let fraction = 1.0 - density;
        let gw = GroupwisePrune { fraction }
            .apply(&layer, input)
            .expect("group-wise");
        group.bench_with_input(
            BenchmarkId::new("groupwise", density),
            &gw.block,
            |b, blk| b.iter(|| hasten::fastconv::forward(blk, &x).expect("forward")),
        );
        let csr = MagnitudeSparse { fraction }
            .apply(&layer, input)
            .expect("csr");
        group.bench_with_input(BenchmarkId::new("csr", density), &csr.block, |b, blk| {
            b.iter(|| hasten::fastconv::forward(blk, &x).expect("forward"))
        });
    }
    group.finish();
}

criterion_group!(benches, pruned_formats);
criterion_main!(benches);

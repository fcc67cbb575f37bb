//! Speed of scalar k-means quantization (survey eq. (4)): k = 256 on a
//! 512×512×3×3 kernel (2.36 M weights), the sorted 1-D Lloyd solver.

use criterion::{criterion_group, criterion_main, Criterion};
use hasten::core::SeededRng;
use hasten::quant::kmeans1d::{assign_1d, lloyd_1d};
use std::hint::black_box;

fn kmeans_256(c: &mut Criterion) {
    let mut rng = SeededRng::new(0);
    let weights: Vec<f32> = (0..512 * 512 * 9)
        .map(|_| (rng.normal() * 0.02) as f32)
        .collect();
    let mut group = c.benchmark_group("scalar_kmeans");
    group.sample_size(10);
    group.bench_function("lloyd_k256_512x512x3x3_fit_and_assign", |b| {
        b.iter(|| {
            let r = lloyd_1d(black_box(&weights), 256, 100, &mut SeededRng::new(1)).unwrap();
            black_box(assign_1d(&weights, &r.centroids))
        })
    });
    group.finish();
}

criterion_group!(benches, kmeans_256);
criterion_main!(benches);

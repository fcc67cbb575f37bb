//! Decomposition speed on a ResNet-18-sized kernel (256×256×3×3):
//! CP-ALS at rank 64 for 100 sweeps and Tucker-2 HOOI.
//!
//! `cargo bench --bench decompose`

use criterion::{criterion_group, criterion_main, Criterion};
use hasten::core::ndarray::{Array4, IxDyn};
use hasten::core::SeededRng;
use hasten::tensor_decomp::cp::{cp_als, CpOptions};
use hasten::tensor_decomp::tucker::{tucker2, TuckerOptions};

/// A 256×256×3×3 kernel with a decaying spectrum (filters mixed from a
/// low-dimensional basis plus noise), like trained layers.
fn kernel() -> Array4<f64> {
    let mut rng = SeededRng::new(42);
    let (n, c) = (256, 256);
    let basis: Vec<f64> = (0..64).map(|k| (-(k as f64) / 12.0).exp()).collect();
    let a = rng.normal_array_f64((n, 64), 1.0);
    let b = rng.normal_array_f64((64, c * 9), 1.0);
    let mut w = Array4::<f64>::zeros((n, c, 3, 3));
    let scaled = &a
        * &hasten::core::ndarray::Array1::from(basis).insert_axis(hasten::core::ndarray::Axis(0));
    let m = scaled.dot(&b);
    for (dst, &src) in w.iter_mut().zip(m.iter()) {
        *dst = src;
    }
    w + rng.normal_array_f64((n, c, 3, 3), 0.05)
}

fn bench(c: &mut Criterion) {
    let w = kernel();
    let x = w
        .clone()
        .into_shape_with_order(IxDyn(&[256, 256, 3, 3]))
        .unwrap();
    let mut g = c.benchmark_group("decompose_256x256x3x3");
    g.sample_size(10);
    let plain = CpOptions::default()
        .with_max_iter(100)
        .with_tol(0.0)
        .with_line_search(false);
    g.bench_function("cp_als_rank64_100it", |b| {
        b.iter(|| cp_als(&x, 64, &plain).unwrap())
    });
    let ls = plain.clone().with_line_search(true);
    g.bench_function("cp_als_rank64_100it_linesearch", |b| {
        b.iter(|| cp_als(&x, 64, &ls).unwrap())
    });
    let sweeps = tucker2(&w, 64, 64, &TuckerOptions::default())
        .unwrap()
        .error_history
        .len();
    println!("tucker2 default options: HOSVD start + {sweeps} HOOI sweeps");
    g.bench_function("tucker2_hooi_64x64_default", |b| {
        b.iter(|| tucker2(&w, 64, 64, &TuckerOptions::default()).unwrap())
    });
    let hosvd = TuckerOptions {
        max_iter: 0,
        tol: 0.0,
    };
    g.bench_function("tucker2_hosvd_64x64", |b| {
        b.iter(|| tucker2(&w, 64, 64, &hosvd).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Low-bit and sparse kernels against our own f32 convolution (the fastconv
//! `Plan`) on the ResNet-18 stage-2 3×3 convolution (128 channels, 28×28,
//! batch 1) and a 4096 → 4096 FC layer at batch 1. `cargo run --release
//! --example lowbit_report` prints the full tables with ratios.

use criterion::{criterion_group, criterion_main, Criterion};
use hasten::core::ndarray::Array4;
use hasten::core::{ActShape, Block, ConvLayer, ConvSpec, Op, SeededRng};
use hasten::fastconv::{
    dense_gemv, ActivationScale, CodebookLinear, CsrConv, GroupwiseGemm, Int8Gemm, Plan, U8Quant,
    XnorGemm,
};
use std::hint::black_box;

fn conv_128x28(c: &mut Criterion) {
    let mut rng = SeededRng::new(0);
    let (ch, hw) = (128, 28);
    let spec = ConvSpec::new().with_padding(1);
    let w = rng.normal_array((ch, ch, 3, 3), 0.05);
    let x: Array4<f32> = rng.normal_array((1, ch, hw, hw), 1.0);
    let mut group = c.benchmark_group("conv3x3_128x28_batch1");
    group.sample_size(20);

    let block = Block::single(Op::Conv(ConvLayer::from_array(w.clone(), spec).unwrap()));
    let mut plan = Plan::new(&block, ActShape::new(ch, hw, hw), 1).unwrap();
    group.bench_function("f32_plan", |b| {
        b.iter(|| black_box(plan.run(black_box(&x)).unwrap().len()))
    });

    let bin = XnorGemm::new(w.view(), vec![0.05; ch], None, spec, ActivationScale::None).unwrap();
    let packed = bin.pack_input(x.view(), None).unwrap();
    group.bench_function("xnor_kernel", |b| {
        b.iter(|| black_box(bin.dot_products(black_box(&packed), None).unwrap()))
    });
    group.bench_function("xnor_end_to_end", |b| {
        b.iter(|| black_box(bin.forward(black_box(&x)).unwrap()))
    });

    let wq = w.mapv(|v| (v / 0.002).round().clamp(-127.0, 127.0) as i8);
    let int8 = Int8Gemm::new(
        wq.view(),
        &vec![0.002; ch],
        None,
        spec,
        U8Quant::new(0.02, 128).unwrap(),
    )
    .unwrap();
    let q = int8.input_quant().quantize_array(x.view());
    group.bench_function("int8_kernel", |b| {
        b.iter(|| black_box(int8.accumulators(black_box(q.view()), None).unwrap()))
    });
    group.bench_function("int8_end_to_end", |b| {
        b.iter(|| black_box(int8.forward(black_box(&x)).unwrap()))
    });

    for density in [0.25, 0.1] {
        let ws = w.mapv(|v| if rng.uniform() < density { v } else { 0.0 });
        let csr = CsrConv::from_dense(ws.view(), None, spec).unwrap();
        group.bench_function(format!("csr_density_{density}"), |b| {
            b.iter(|| black_box(csr.forward(black_box(&x), None).unwrap()))
        });
    }
    for density in [1.0, 0.5, 0.25] {
        let mut wg = w.clone();
        for cc in 0..ch {
            for i in 0..3 {
                for j in 0..3 {
                    if rng.uniform() >= density {
                        wg.slice_mut(hasten::core::ndarray::s![.., cc, i, j])
                            .fill(0.0);
                    }
                }
            }
        }
        let gw = GroupwiseGemm::from_dense(wg.view(), None, spec, ch).unwrap();
        group.bench_function(format!("groupwise_density_{density}"), |b| {
            b.iter(|| black_box(gw.forward(black_box(&x), None).unwrap()))
        });
    }
    group.finish();
}

fn fc_4096(c: &mut Criterion) {
    let mut rng = SeededRng::new(1);
    let (o, i) = (4096, 4096);
    let w: Vec<f32> = (0..o * i).map(|_| rng.normal() as f32 * 0.02).collect();
    let x: Vec<f32> = (0..i).map(|_| rng.normal() as f32).collect();
    let mut group = c.benchmark_group("fc_4096x4096_batch1");
    group.sample_size(20);
    group.bench_function("f32_gemv", |b| {
        b.iter(|| black_box(dense_gemv(&w, o, black_box(&x), None).unwrap()))
    });
    let cb: Vec<f32> = (0..256).map(|k| (k as f32 - 127.5) * 0.0004).collect();
    let codes: Vec<u8> = (0..o * i).map(|_| rng.below(256) as u8).collect();
    let layer = CodebookLinear::new(o, i, cb, codes, None).unwrap();
    group.bench_function("codebook_8bit", |b| {
        b.iter(|| black_box(layer.forward(black_box(&x), 1, None).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, conv_128x28, fc_4096);
criterion_main!(benches);

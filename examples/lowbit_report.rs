//! Measured speed of the low-bit and sparse kernels against our own f32
//! convolution, next to the operation-count prediction.
//!
//! Run with `cargo run --release --example lowbit_report` (uses every core;
//! set `RAYON_NUM_THREADS` to change that). All times are medians of repeated
//! runs; ratios compare numbers measured in the same run.

use std::time::Instant;

use hasten::core::ndarray::{Array2, Array4};
use hasten::core::{Block, ConvLayer, ConvSpec, LinearLayer, Op, SeededRng};
use hasten::fastconv::lowbit::binary_gemm::{ActivationScale, BinaryConv};
use hasten::fastconv::lowbit::codebook::{CodebookLinear, PqLinear};
use hasten::fastconv::lowbit::csr::{CsrConv, CsrLinear, CsrMatrix};
use hasten::fastconv::lowbit::dense::{dense_conv, dense_gemv};
use hasten::fastconv::lowbit::groupwise::GroupwiseConv;
use hasten::fastconv::lowbit::int8_gemm::{Int8Conv, U8Quant};
use hasten::fastconv::lowbit::ternary::TernaryConv;
use hasten::fastconv::Plan;

/// Median wall time of `f` in milliseconds over enough runs to fill ~0.3 s.
fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    f();
    let once = t0.elapsed().as_secs_f64();
    let runs = ((0.3 / once.max(1e-6)) as usize).clamp(5, 200);
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[runs / 2]
}

fn f32_plan_ms(layer: &ConvLayer, x: &Array4<f32>) -> f64 {
    let block = Block::new(vec![Op::Conv(layer.clone())]).unwrap();
    let shape = hasten::core::ActShape::new(x.shape()[1], x.shape()[2], x.shape()[3]);
    let mut plan = Plan::new(&block, shape, x.shape()[0]).unwrap();
    median_ms(|| {
        plan.run(x).unwrap();
    })
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("# Low-bit and sparse kernels: measured speed-ups\n");
    println!("threads: {threads}; batch 1; median wall times; f32 = hasten_fastconv Plan (own GEMM), im2col = im2col + matrixmultiply sgemm\n");
    let mut rng = SeededRng::new(7);
    let spec = ConvSpec::new().with_padding(1);
    let shapes = [(64, 56), (128, 28), (256, 14), (512, 7)];

    println!("## Binary (XNOR), ternary and int8 3×3 convolutions, ResNet-18 shapes\n");
    println!("| C=T, H=W | f32 ms | im2col ms | XNOR ms (kernel / end-to-end) | XNOR × (kernel / e2e) | ternary × (e2e) | int8 ms (kernel / e2e) | int8 × (kernel / e2e) |");
    println!("|---|---|---|---|---|---|---|---|");
    for &(c, hw) in &shapes {
        let w = rng.normal_array((c, c, 3, 3), 0.05);
        let x = rng.normal_array((1, c, hw, hw), 1.0);
        let layer = ConvLayer::from_array(w.clone(), spec).unwrap();
        let f32_ms = f32_plan_ms(&layer, &x);
        let im2col_ms = median_ms(|| {
            dense_conv(w.view(), &x, &spec).unwrap();
        });
        let bin =
            BinaryConv::new(w.view(), vec![0.05; c], None, spec, ActivationScale::None).unwrap();
        let packed = bin.pack_input(x.view(), None).unwrap();
        let xnor_kernel = median_ms(|| {
            bin.dot_products(&packed, None).unwrap();
        });
        let xnor_e2e = median_ms(|| {
            bin.forward(&x).unwrap();
        });
        let levels = w.mapv(|v| {
            if v > 0.03 {
                1.0
            } else if v < -0.03 {
                -1.0
            } else {
                0.0
            }
        });
        let ter = TernaryConv::new(
            levels.view(),
            vec![0.05; c],
            None,
            spec,
            ActivationScale::None,
        )
        .unwrap();
        let ter_e2e = median_ms(|| {
            ter.forward(&x).unwrap();
        });
        let wq = w.mapv(|v| (v / 0.002).round().clamp(-127.0, 127.0) as i8);
        let int8 = Int8Conv::new(
            wq.view(),
            &vec![0.002; c],
            None,
            spec,
            U8Quant::new(0.02, 128).unwrap(),
        )
        .unwrap();
        let q = int8.input_quant().quantize_array(x.view());
        let int8_kernel = median_ms(|| {
            int8.accumulators(q.view(), None).unwrap();
        });
        let int8_e2e = median_ms(|| {
            int8.forward(&x).unwrap();
        });
        println!(
            "| {c}, {hw} | {f32_ms:.3} | {im2col_ms:.3} | {xnor_kernel:.3} / {xnor_e2e:.3} | {:.1} / {:.1} | {:.1} | {int8_kernel:.3} / {int8_e2e:.3} | {:.2} / {:.2} |",
            f32_ms / xnor_kernel,
            f32_ms / xnor_e2e,
            f32_ms / ter_e2e,
            f32_ms / int8_kernel,
            f32_ms / int8_e2e,
        );
    }
    println!("\nOperation-count prediction: XNOR 64× (one 64-bit XNOR + popcount per 64 MACs), int8 4× (4× the lanes per vector instruction). Kernel = packed input to exact integer dot products / i32 accumulators; e2e = f32 NCHW in, f32 NCHW out (sign packing or u8 quantisation, layout change and epilogue included).\n");

    println!("## Codebook and product-quantized FC layer, 4096 → 4096, batch 1\n");
    let (o, i) = (4096, 4096);
    let wfc: Vec<f32> = (0..o * i).map(|_| rng.normal() as f32 * 0.02).collect();
    let xfc: Vec<f32> = (0..i).map(|_| rng.normal() as f32).collect();
    let lin = LinearLayer::new(Array2::from_shape_vec((o, i), wfc.clone()).unwrap(), None).unwrap();
    let block = Block::new(vec![Op::Linear(lin)]).unwrap();
    let xfc4 = Array4::from_shape_vec((1, i, 1, 1), xfc.clone()).unwrap();
    let mut plan = Plan::new(&block, hasten::core::ActShape::new(i, 1, 1), 1).unwrap();
    let f32_fc = median_ms(|| {
        plan.run(&xfc4).unwrap();
    });
    let gemv = median_ms(|| {
        dense_gemv(&wfc, o, &xfc, None).unwrap();
    });
    let cb: Vec<f32> = (0..256).map(|k| (k as f32 - 127.5) * 0.0004).collect();
    let codes: Vec<u8> = (0..o * i).map(|_| rng.below(256) as u8).collect();
    let cbl = CodebookLinear::new(o, i, cb, codes, None).unwrap();
    let cb_ms = median_ms(|| {
        cbl.forward(&xfc, 1, None).unwrap();
    });
    let (d, k) = (4, 256);
    let pq = PqLinear::new(
        o,
        i,
        d,
        (0..i * k).map(|_| rng.normal() as f32 * 0.02).collect(),
        (0..o * i / d).map(|_| rng.below(k) as u8).collect(),
        None,
    )
    .unwrap();
    let pq_ms = median_ms(|| {
        pq.forward(&xfc, 1, None).unwrap();
    });
    println!("| kernel | weight bytes | ms | × vs f32 Plan | × vs f32 GEMV | prediction |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| f32 Plan (Linear) | {} | {f32_fc:.3} | 1.00 | {:.2} | |",
        4 * o * i,
        f32_fc / gemv
    );
    println!(
        "| f32 GEMV (AVX-512) | {} | {gemv:.3} | {:.2} | 1.00 | |",
        4 * o * i,
        gemv / f32_fc
    );
    println!(
        "| codebook, 8-bit codes | {} | {cb_ms:.3} | {:.2} | {:.2} | 4× (bytes) |",
        cbl.weight_bytes(),
        f32_fc / cb_ms,
        gemv / cb_ms
    );
    println!(
        "| PQ, d = {d}, k = {k} | {} | {pq_ms:.3} | {:.2} | {:.2} | {:.1}× (ops), {:.1}× (bytes) |",
        pq.weight_bytes(),
        f32_fc / pq_ms,
        gemv / pq_ms,
        (o * i) as f64 / ((o * i / d) + k * i) as f64,
        (4 * o * i) as f64 / pq.weight_bytes() as f64
    );

    println!(
        "\n## Sparse (CSR, direct) and group-wise pruned 3×3 convolution, 128 channels, 28×28\n"
    );
    let (c, hw) = (128, 28);
    let w = rng.normal_array((c, c, 3, 3), 0.05);
    let x = rng.normal_array((1, c, hw, hw), 1.0);
    let layer = ConvLayer::from_array(w.clone(), spec).unwrap();
    let f32_ms = f32_plan_ms(&layer, &x);
    let dense_gw = GroupwiseConv::from_dense(w.view(), None, spec, c).unwrap();
    let dense_gw_ms = median_ms(|| {
        dense_gw.forward(&x).unwrap();
    });
    println!(
        "f32 Plan: {f32_ms:.3} ms; im2col + sgemm (group-wise at density 1): {dense_gw_ms:.3} ms\n"
    );
    println!("| density | CSR ms | CSR × vs f32 Plan | group-wise ms | group-wise × vs density 1 | × / (1/density) | group-wise × vs f32 Plan |");
    println!("|---|---|---|---|---|---|---|");
    for density in [1.0, 0.75, 0.5, 0.25, 0.1, 0.05] {
        let ws = w.mapv(|v| if rng.uniform() < density { v } else { 0.0 });
        let csr = CsrConv::from_dense(ws.view(), None, spec).unwrap();
        let csr_ms = median_ms(|| {
            csr.forward(&x, None).unwrap();
        });
        // Group-wise: prune whole im2col rows (layer-wide pattern).
        let mut wg = w.clone();
        for cc in 0..c {
            for a in 0..3 {
                for b in 0..3 {
                    if rng.uniform() >= density {
                        for t in 0..c {
                            wg[[t, cc, a, b]] = 0.0;
                        }
                    }
                }
            }
        }
        let gw = GroupwiseConv::from_dense(wg.view(), None, spec, c).unwrap();
        let gw_ms = median_ms(|| {
            gw.forward(&x).unwrap();
        });
        let gw_speed = dense_gw_ms / gw_ms;
        println!(
            "| {density} (gw {:.2}) | {csr_ms:.3} | {:.2} | {gw_ms:.3} | {gw_speed:.2} | {:.2} | {:.2} |",
            gw.density(),
            f32_ms / csr_ms,
            gw_speed * gw.density(),
            f32_ms / gw_ms,
        );
    }

    println!("\n## Sparse FC (CSR), 4096 → 4096, batch 1 (vs f32 GEMV {gemv:.3} ms)\n");
    println!("| density | CSR ms | × vs GEMV |");
    println!("|---|---|---|");
    for density in [0.5, 0.25, 0.1, 0.05] {
        let ws: Vec<f32> = wfc
            .iter()
            .map(|&v| if rng.uniform() < density { v } else { 0.0 })
            .collect();
        let m = CsrMatrix::from_dense(&ws, o, i).unwrap();
        let l = CsrLinear::new(m, None).unwrap();
        let ms = median_ms(|| {
            l.forward(&xfc, 1, None).unwrap();
        });
        println!("| {density} | {ms:.3} | {:.2} |", gemv / ms);
    }
}

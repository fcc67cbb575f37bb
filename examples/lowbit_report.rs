//! Measured speed of the low-bit and sparse kernels against our own f32
//! convolution, next to the operation-count prediction.
//!
//! Run with `cargo run --release --example lowbit_report` (uses every core;
//! set `RAYON_NUM_THREADS` to change that). All times are medians of repeated
//! runs; ratios compare numbers measured in the same run.

use std::time::Instant;

use hasten::core::ndarray::{Array2, Array4};
use hasten::core::{Block, ConvLayer, ConvSpec, Csr, LinearLayer, Op, SeededRng};
use hasten::fastconv::{
    dense_conv, dense_gemv, ActivationScale, CodebookLinear, CsrConv, CsrLinear, GroupwiseGemm,
    Int8Gemm, Plan, PqLinear, TernaryGemm, U8Quant, XnorGemm,
};

/// Median wall times (ms) of several closures run *interleaved* — one call of
/// each per round — so that all of them see the same machine load; rounds
/// continue until ~0.6 s have passed (at least 7, at most 300).
fn interleaved_ms(fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    for f in fs.iter_mut() {
        f();
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); fs.len()];
    let start = Instant::now();
    while times[0].len() < 7 || (start.elapsed().as_secs_f64() < 0.6 && times[0].len() < 300) {
        for (f, t) in fs.iter_mut().zip(times.iter_mut()) {
            let t0 = Instant::now();
            f();
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(|a, b| a.total_cmp(b));
            t[t.len() / 2]
        })
        .collect()
}

fn f32_plan(layer: &ConvLayer, x: &Array4<f32>) -> Plan {
    let block = Block::new(vec![Op::Conv(layer.clone())]).unwrap();
    let shape = hasten::core::ActShape::new(x.shape()[1], x.shape()[2], x.shape()[3]);
    Plan::new(&block, shape, x.shape()[0]).unwrap()
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("# Low-bit and sparse kernels: measured speed-ups\n");
    println!(
        "threads: {threads}; batch 1; medians of interleaved runs; f32 = hasten_fastconv Plan \
         (own GEMM, pre-packed weights); im2col = im2col + matrixmultiply sgemm\n"
    );
    let mut rng = SeededRng::new(7);
    let spec = ConvSpec::new().with_padding(1);
    let shapes = [(64, 56), (128, 28), (256, 14), (512, 7)];

    println!("## Binary (XNOR), ternary and int8 3×3 convolutions, ResNet-18 shapes\n");
    println!("| C=T, H=W | f32 ms | im2col ms | XNOR ms kernel / e2e | XNOR × kernel / e2e | ternary × e2e | int8 ms kernel / e2e | int8 × kernel / e2e |");
    println!("|---|---|---|---|---|---|---|---|");
    for &(c, hw) in &shapes {
        let w = rng.normal_array((c, c, 3, 3), 0.05);
        let x = rng.normal_array((1, c, hw, hw), 1.0);
        let layer = ConvLayer::from_array(w.clone(), spec).unwrap();
        let mut plan = f32_plan(&layer, &x);
        let bin =
            XnorGemm::new(w.view(), vec![0.05; c], None, spec, ActivationScale::None).unwrap();
        let packed = bin.pack_input(x.view(), None).unwrap();
        let levels = w.mapv(|v| {
            if v > 0.03 {
                1.0
            } else if v < -0.03 {
                -1.0
            } else {
                0.0
            }
        });
        let ter = TernaryGemm::new(
            levels.view(),
            vec![0.05; c],
            None,
            spec,
            ActivationScale::None,
        )
        .unwrap();
        let wq = w.mapv(|v| (v / 0.002).round().clamp(-127.0, 127.0) as i8);
        let int8 = Int8Gemm::new(
            wq.view(),
            &vec![0.002; c],
            None,
            spec,
            U8Quant::new(0.02, 128).unwrap(),
        )
        .unwrap();
        let q = int8.input_quant().quantize_array(x.view());
        let t = interleaved_ms(&mut [
            &mut || {
                plan.run(&x).unwrap();
            },
            &mut || {
                dense_conv(w.view(), &x, &spec).unwrap();
            },
            &mut || {
                bin.dot_products(&packed, None).unwrap();
            },
            &mut || {
                bin.forward(&x).unwrap();
            },
            &mut || {
                ter.forward(&x).unwrap();
            },
            &mut || {
                int8.accumulators(q.view(), None).unwrap();
            },
            &mut || {
                int8.forward(&x).unwrap();
            },
        ]);
        println!(
            "| {c}, {hw} | {:.3} | {:.3} | {:.3} / {:.3} | {:.1} / {:.1} | {:.1} | {:.3} / {:.3} | {:.2} / {:.2} |",
            t[0], t[1], t[2], t[3], t[0] / t[2], t[0] / t[3], t[0] / t[4], t[5], t[6], t[0] / t[5], t[0] / t[6],
        );
    }
    println!(
        "\nOperation-count prediction: XNOR 64× (one 64-bit XNOR + popcount per 64 MACs), int8 4× \
         (4× the lanes per vector instruction). kernel = packed input → exact integer dot products \
         / i32 accumulators; e2e = f32 NCHW in → f32 NCHW out (sign packing or u8 quantisation, \
         layout change and epilogue included).\n"
    );

    println!("## Codebook and product-quantized FC layer, 4096 → 4096, batch 1\n");
    let (o, i) = (4096, 4096);
    let wfc: Vec<f32> = (0..o * i).map(|_| rng.normal() as f32 * 0.02).collect();
    let xfc: Vec<f32> = (0..i).map(|_| rng.normal() as f32).collect();
    let lin = LinearLayer::new(Array2::from_shape_vec((o, i), wfc.clone()).unwrap(), None).unwrap();
    let block = Block::new(vec![Op::Linear(lin)]).unwrap();
    let xfc4 = Array4::from_shape_vec((1, i, 1, 1), xfc.clone()).unwrap();
    let mut plan = Plan::new(&block, hasten::core::ActShape::new(i, 1, 1), 1).unwrap();
    let cb: Vec<f32> = (0..256).map(|k| (k as f32 - 127.5) * 0.0004).collect();
    let codes: Vec<u8> = (0..o * i).map(|_| rng.below(256) as u8).collect();
    let cbl = CodebookLinear::new(o, i, cb, codes, None).unwrap();
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
    let t = interleaved_ms(&mut [
        &mut || {
            plan.run(&xfc4).unwrap();
        },
        &mut || {
            dense_gemv(&wfc, o, &xfc, None).unwrap();
        },
        &mut || {
            cbl.forward(&xfc, 1, None).unwrap();
        },
        &mut || {
            pq.forward(&xfc, 1, None).unwrap();
        },
    ]);
    println!("| kernel | weight bytes | ms | × vs f32 Plan | × vs f32 GEMV | prediction |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| f32 Plan (Linear) | {} | {:.3} | 1.00 | {:.2} | |",
        4 * o * i,
        t[0],
        t[1] / t[0]
    );
    println!(
        "| f32 GEMV (AVX-512 dot per row) | {} | {:.3} | {:.2} | 1.00 | |",
        4 * o * i,
        t[1],
        t[0] / t[1]
    );
    println!(
        "| codebook, 8-bit codes, k = 256 | {} | {:.3} | {:.2} | {:.2} | 4× (bytes) |",
        cbl.weight_bytes(),
        t[2],
        t[0] / t[2],
        t[1] / t[2]
    );
    println!(
        "| PQ, d = {d}, k = {k} | {} | {:.3} | {:.2} | {:.2} | {:.1}× (ops), {:.1}× (bytes) |",
        pq.weight_bytes(),
        t[3],
        t[0] / t[3],
        t[1] / t[3],
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
    let mut plan = f32_plan(&layer, &x);
    let dense_gw = GroupwiseGemm::from_dense(w.view(), None, spec, c).unwrap();
    println!("| density (group-wise kept) | f32 Plan ms | CSR ms | CSR × vs f32 Plan | group-wise ms | group-wise × vs its density 1 | that × density | group-wise × vs f32 Plan |");
    println!("|---|---|---|---|---|---|---|---|");
    for density in [1.0, 0.75, 0.5, 0.25, 0.1, 0.05] {
        let ws = w.mapv(|v| if rng.uniform() < density { v } else { 0.0 });
        let csr = CsrConv::from_dense(ws.view(), None, spec).unwrap();
        // Group-wise: prune whole im2col rows (the layer-wide pattern).
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
        let gw = GroupwiseGemm::from_dense(wg.view(), None, spec, c).unwrap();
        let t = interleaved_ms(&mut [
            &mut || {
                plan.run(&x).unwrap();
            },
            &mut || {
                dense_gw.forward(&x).unwrap();
            },
            &mut || {
                csr.forward(&x, None).unwrap();
            },
            &mut || {
                gw.forward(&x).unwrap();
            },
        ]);
        let gw_speed = t[1] / t[3];
        println!(
            "| {density} ({:.2}) | {:.3} | {:.3} | {:.2} | {:.3} | {gw_speed:.2} | {:.2} | {:.2} |",
            gw.density(),
            t[0],
            t[2],
            t[0] / t[2],
            t[3],
            gw_speed * gw.density(),
            t[0] / t[3],
        );
    }

    println!("\n## Sparse FC (CSR), 4096 → 4096, batch 1\n");
    println!("| density | f32 GEMV ms | CSR ms | × vs GEMV |");
    println!("|---|---|---|---|");
    for density in [0.5, 0.25, 0.1, 0.05] {
        let ws: Vec<f32> = wfc
            .iter()
            .map(|&v| if rng.uniform() < density { v } else { 0.0 })
            .collect();
        let ws = Array2::from_shape_vec((o, i), ws).unwrap();
        let l = CsrLinear::new(Csr::from_dense(ws.view()).unwrap(), None).unwrap();
        let t = interleaved_ms(&mut [
            &mut || {
                dense_gemv(&wfc, o, &xfc, None).unwrap();
            },
            &mut || {
                l.forward(&xfc, 1, None).unwrap();
            },
        ]);
        println!(
            "| {density} | {:.3} | {:.3} | {:.2} |",
            t[0],
            t[1],
            t[0] / t[1]
        );
    }
}

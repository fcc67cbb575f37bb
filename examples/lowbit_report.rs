//! Measured speed of the low-bit and sparse kernels against our own f32
//! convolution, next to the operation-count prediction.
//!
//! Run with `cargo run --release --example lowbit_report` (uses every core;
//! set `RAYON_NUM_THREADS` to change that). `-- --isa avx2` (or `avx512`,
//! `scalar`) forces one instruction set on every kernel that takes one and on
//! the f32 baselines; `--only xnor,xnor-chain,fc,csr,groupwise,fc-sparse`
//! runs some sections. All times are medians of repeated runs (`--min`: minima, the
//! estimate of the unpreempted time on a heavily shared machine); ratios
//! compare numbers measured in the same run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Whether [`interleaved_ms`] reports minima instead of medians (`--min`).
static MINIMA: AtomicBool = AtomicBool::new(false);

use hasten::core::ndarray::{Array2, Array4};
use hasten::core::{Block, ConvLayer, ConvSpec, Csr, LinearLayer, Op, SeededRng};
use hasten::fastconv::{
    dense_conv, dense_gemv, ActivationScale, CodebookLinear, CsrConv, CsrLinear, GroupwiseGemm,
    Int8Gemm, Isa, Plan, PqLinear, TernaryGemm, U8Quant, XnorGemm,
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
            if MINIMA.load(Ordering::Relaxed) {
                t[0]
            } else {
                t[t.len() / 2]
            }
        })
        .collect()
}

fn f32_plan(layer: &ConvLayer, x: &Array4<f32>, isa: Option<Isa>) -> Plan {
    let block = Block::new(vec![Op::Conv(layer.clone())]).unwrap();
    let shape = hasten::core::ActShape::new(x.shape()[1], x.shape()[2], x.shape()[3]);
    plan_on(&block, shape, x.shape()[0], isa)
}

fn plan_on(block: &Block, shape: hasten::core::ActShape, batch: usize, isa: Option<Isa>) -> Plan {
    match isa {
        Some(isa) => Plan::with_isa(block, shape, batch, isa).unwrap(),
        None => Plan::new(block, shape, batch).unwrap(),
    }
}

/// `--isa NAME` and `--only a,b` from the command line.
fn options() -> (Option<Isa>, Option<Vec<String>>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let isa = value("--isa").map(|v| match v.as_str() {
        "avx512" => Isa::Avx512,
        "avx2" => Isa::Avx2,
        "scalar" => Isa::Scalar,
        other => panic!("--isa {other}: expected avx512, avx2 or scalar"),
    });
    let only = value("--only").map(|v| v.split(',').map(str::to_owned).collect());
    MINIMA.store(args.iter().any(|a| a == "--min"), Ordering::Relaxed);
    (isa, only)
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (isa, only) = options();
    let run = |section: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == section));
    println!("# Low-bit and sparse kernels: measured speed-ups\n");
    println!(
        "threads: {threads}; batch 1; ISA: {}; {} of interleaved runs; f32 = \
         hasten_fastconv Plan (own GEMM, pre-packed weights); im2col = im2col + matrixmultiply \
         sgemm\n",
        isa.map_or("widest available".to_owned(), |i| i.to_string()),
        if MINIMA.load(Ordering::Relaxed) {
            "minima"
        } else {
            "medians"
        }
    );
    let mut rng = SeededRng::new(7);
    let spec = ConvSpec::new().with_padding(1);
    let shapes = [(64, 56), (128, 28), (256, 14), (512, 7)];

    if run("xnor") {
        println!("## Binary (XNOR), ternary and int8 3×3 convolutions, ResNet-18 shapes\n");
        println!("| C=T, H=W | f32 ms | im2col ms | XNOR ms kernel / e2e | XNOR × kernel / e2e | ternary × e2e | int8 ms kernel / e2e | int8 × kernel / e2e |");
        println!("|---|---|---|---|---|---|---|---|");
        for &(c, hw) in &shapes {
            let w = rng.normal_array((c, c, 3, 3), 0.05);
            let x = rng.normal_array((1, c, hw, hw), 1.0);
            let layer = ConvLayer::from_array(w.clone(), spec).unwrap();
            let mut plan = f32_plan(&layer, &x, isa);
            let bin =
                XnorGemm::new(w.view(), vec![0.05; c], None, spec, ActivationScale::None).unwrap();
            let packed = bin.pack_input(x.view(), isa).unwrap();
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
                    bin.dot_products(&packed, isa).unwrap();
                },
                &mut || {
                    bin.forward_with(&x, isa).unwrap();
                },
                &mut || {
                    ter.forward_with(&x, isa).unwrap();
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
    }

    if run("xnor-chain") {
        chain_section(&mut rng, isa, &shapes);
    }
    if run("fc") {
        fc_section(&mut rng, isa);
    }
    if run("csr") {
        csr_section(&mut rng, isa, &shapes);
    }
    if run("groupwise") {
        groupwise_section(&mut rng, isa);
    }
    if run("fc-sparse") {
        sparse_fc_section(&mut rng, isa);
    }
}

/// Layers per chain in [`chain_section`].
const CHAIN_LAYERS: usize = 4;

/// Chains of [`CHAIN_LAYERS`] binary 3×3 layers with sign inputs (no `K`)
/// per ResNet-18 stage, end to end in a plan: f32 in, f32 out, against the
/// f32 plan of the same chain; unchained (every layer packs its f32 input
/// and writes f32: the plan without fusion) and chained (packed signs
/// between the layers).
fn chain_section(rng: &mut SeededRng, isa: Option<Isa>, shapes: &[(usize, usize)]) {
    use hasten::core::op::WeightLayout;
    use hasten::core::{ActShape, BinaryConv, BinaryInput, PackedCodes};
    use hasten::fastconv::PlanOptions;
    println!(
        "## Chains of {CHAIN_LAYERS} binary 3×3 layers (sign inputs, no K), ResNet-18 shapes\n"
    );
    println!("| C=T, H=W | f32 chain ms | binary unchained ms | binary chained ms | unchained × | chained × | chained ms per layer |");
    println!("|---|---|---|---|---|---|---|");
    let spec = ConvSpec::new().with_padding(1);
    for &(c, hw) in shapes {
        let mut f32_ops = Vec::new();
        let mut bin_ops = Vec::new();
        for _ in 0..CHAIN_LAYERS {
            let w = rng.normal_array((c, c, 3, 3), 0.05);
            f32_ops.push(Op::Conv(ConvLayer::from_array(w.clone(), spec).unwrap()));
            let bits: Vec<u32> = w.iter().map(|&v| u32::from(v >= 0.0)).collect();
            let op = BinaryConv::new(
                WeightLayout::conv([c, c, 3, 3], spec).unwrap(),
                PackedCodes::pack(&bits, c, c * 9, 1).unwrap(),
                hasten::core::ndarray::Array1::from_elem(c, 0.05),
                None,
                false,
            )
            .unwrap()
            .with_input(BinaryInput::Sign);
            bin_ops.push(Op::BinaryConv(op));
        }
        let shape = ActShape::new(c, hw, hw);
        let x = rng.normal_array((1, c, hw, hw), 1.0);
        let options = |fuse| PlanOptions {
            isa: isa.unwrap_or_else(Isa::detect),
            fuse,
            ..PlanOptions::default()
        };
        let chain = |ops: &[Op], fuse| {
            Plan::with_options(&Block::new(ops.to_vec()).unwrap(), shape, 1, options(fuse)).unwrap()
        };
        let mut f32_plan = chain(&f32_ops, true);
        let mut unchained = chain(&bin_ops, false);
        let mut chained = chain(&bin_ops, true);
        let links = chained
            .steps()
            .iter()
            .filter(|s| s.fused.iter().any(|f| f == hasten::fastconv::BINARY_CHAIN))
            .count();
        assert_eq!(links, CHAIN_LAYERS - 1, "{chained}");
        let t = interleaved_ms(&mut [
            &mut || {
                f32_plan.run(&x).unwrap();
            },
            &mut || {
                unchained.run(&x).unwrap();
            },
            &mut || {
                chained.run(&x).unwrap();
            },
        ]);
        println!(
            "| {c}, {hw} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {:.3} |",
            t[0],
            t[1],
            t[2],
            t[0] / t[1],
            t[0] / t[2],
            t[2] / CHAIN_LAYERS as f64,
        );
    }
    println!(
        "\n× = f32 chain time / binary chain time (the per-layer end-to-end speed-up of the \
         chain: every layer has the same shape). Unchained: every binary layer packs the signs of \
         its f32 input and writes f32; chained: signs packed once, f32 written once.\n"
    );
}

/// Codebook and PQ fully connected layers against the f32 GEMV.
fn fc_section(rng: &mut SeededRng, isa: Option<Isa>) {
    println!("## Codebook and product-quantized FC layers, batch 1\n");
    println!("| out × in | kernel | weight bytes | ms | × vs f32 GEMV | × vs f32 Plan |");
    println!("|---|---|---|---|---|---|");
    for (o, i) in [(4096, 4096), (1000, 4096), (10, 512)] {
        let wfc: Vec<f32> = (0..o * i).map(|_| rng.normal() as f32 * 0.02).collect();
        let xfc: Vec<f32> = (0..i).map(|_| rng.normal() as f32).collect();
        let lin =
            LinearLayer::new(Array2::from_shape_vec((o, i), wfc.clone()).unwrap(), None).unwrap();
        let block = Block::new(vec![Op::Linear(lin)]).unwrap();
        let xfc4 = Array4::from_shape_vec((1, i, 1, 1), xfc.clone()).unwrap();
        let mut plan = plan_on(&block, hasten::core::ActShape::new(i, 1, 1), 1, isa);
        let mut codebook = |k: usize| {
            let cb: Vec<f32> = (0..k)
                .map(|c| (c as f32 - k as f32 / 2.0) * 0.004)
                .collect();
            let codes: Vec<u8> = (0..o * i).map(|_| rng.below(k) as u8).collect();
            CodebookLinear::new(o, i, cb, codes, None).unwrap()
        };
        let (cb8, cb4) = (codebook(256), codebook(16));
        let mut pq = |d: usize, k: usize| {
            PqLinear::new(
                o,
                i,
                d,
                (0..i * k).map(|_| rng.normal() as f32 * 0.02).collect(),
                (0..o * i / d).map(|_| rng.below(k) as u8).collect(),
                None,
            )
            .unwrap()
        };
        let (pq4, pq8) = (pq(4, 256), pq(8, 256));
        let t = interleaved_ms(&mut [
            &mut || {
                plan.run(&xfc4).unwrap();
            },
            &mut || {
                dense_gemv(&wfc, o, &xfc, isa).unwrap();
            },
            &mut || {
                cb8.forward(&xfc, 1, isa).unwrap();
            },
            &mut || {
                cb4.forward(&xfc, 1, isa).unwrap();
            },
            &mut || {
                pq4.forward(&xfc, 1, isa).unwrap();
            },
            &mut || {
                pq8.forward(&xfc, 1, isa).unwrap();
            },
        ]);
        let rows = [
            ("f32 Plan (Linear)", 4 * o * i),
            ("f32 GEMV", 4 * o * i),
            ("codebook, 8-bit codes, k = 256", cb8.weight_bytes()),
            ("codebook, 4-bit codes, k = 16", cb4.weight_bytes()),
            ("PQ, d = 4, k = 256", pq4.weight_bytes()),
            ("PQ, d = 8, k = 256", pq8.weight_bytes()),
        ];
        for ((name, bytes), ms) in rows.iter().zip(&t) {
            println!(
                "| {o} × {i} | {name} | {bytes} | {ms:.3} | {:.2} | {:.2} |",
                t[1] / ms,
                t[0] / ms
            );
        }
    }
    println!(
        "\nPrediction (memory-bound): f32 bytes / weight bytes — 8-bit codes 4×, 4-bit 8×, \
         PQ d = 4: 16×, d = 8: 32× (plus the k·in-MAC tables).\n"
    );
}

/// CSR convolution (sparse × dense over im2col) against the dense f32 plan
/// on the ResNet-18 3×3 shapes.
fn csr_section(rng: &mut SeededRng, isa: Option<Isa>, shapes: &[(usize, usize)]) {
    let spec = ConvSpec::new().with_padding(1);
    println!("## Sparse (CSR) 3×3 convolution, ResNet-18 shapes\n");
    println!("| C=T, H=W | density | f32 Plan ms | CSR ms | CSR × vs f32 Plan |");
    println!("|---|---|---|---|---|");
    for &(c, hw) in shapes {
        let w = rng.normal_array((c, c, 3, 3), 0.05);
        let x = rng.normal_array((1, c, hw, hw), 1.0);
        let layer = ConvLayer::from_array(w.clone(), spec).unwrap();
        let mut plan = f32_plan(&layer, &x, isa);
        for density in [0.05, 0.1, 0.2, 0.3, 0.5] {
            let ws = w.mapv(|v| if rng.uniform() < density { v } else { 0.0 });
            let csr = CsrConv::from_dense(ws.view(), None, spec).unwrap();
            let t = interleaved_ms(&mut [
                &mut || {
                    plan.run(&x).unwrap();
                },
                &mut || {
                    csr.forward(&x, isa).unwrap();
                },
            ]);
            println!(
                "| {c}, {hw} | {density} | {:.3} | {:.3} | {:.2} |",
                t[0],
                t[1],
                t[0] / t[1]
            );
        }
    }
    println!();
}

/// Group-wise pruned convolution (whole im2col rows removed), 128 × 28².
fn groupwise_section(rng: &mut SeededRng, isa: Option<Isa>) {
    let spec = ConvSpec::new().with_padding(1);
    println!("## Group-wise pruned 3×3 convolution, 128 channels, 28×28\n");
    let (c, hw) = (128, 28);
    let w = rng.normal_array((c, c, 3, 3), 0.05);
    let x = rng.normal_array((1, c, hw, hw), 1.0);
    let layer = ConvLayer::from_array(w.clone(), spec).unwrap();
    let mut plan = f32_plan(&layer, &x, isa);
    let dense_gw = GroupwiseGemm::from_dense(w.view(), None, spec, c).unwrap();
    println!("| density (kept) | f32 Plan ms | group-wise ms | × vs its density 1 | that × density | × vs f32 Plan |");
    println!("|---|---|---|---|---|---|");
    for density in [1.0, 0.75, 0.5, 0.25, 0.1, 0.05] {
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
                dense_gw.forward(&x, isa).unwrap();
            },
            &mut || {
                gw.forward(&x, isa).unwrap();
            },
        ]);
        let gw_speed = t[1] / t[2];
        println!(
            "| {density} ({:.2}) | {:.3} | {:.3} | {gw_speed:.2} | {:.2} | {:.2} |",
            gw.density(),
            t[0],
            t[2],
            gw_speed * gw.density(),
            t[0] / t[2],
        );
    }
    println!();
}

/// CSR fully connected layer against the f32 GEMV.
fn sparse_fc_section(rng: &mut SeededRng, isa: Option<Isa>) {
    println!("## Sparse FC (CSR), 4096 → 4096, batch 1\n");
    let (o, i) = (4096, 4096);
    let wfc: Vec<f32> = (0..o * i).map(|_| rng.normal() as f32 * 0.02).collect();
    let xfc: Vec<f32> = (0..i).map(|_| rng.normal() as f32).collect();
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
                dense_gemv(&wfc, o, &xfc, isa).unwrap();
            },
            &mut || {
                l.forward(&xfc, 1, isa).unwrap();
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

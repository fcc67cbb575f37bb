//! Perforated convolution (survey section 6.1) on ResNet-18's conv3_x layer
//! (128 → 128 channels, 3×3, 28×28): the plan's perforated kernel at
//! perforation rates 0.25 / 0.5 / 0.75 (random masks) against the dense
//! layer, both with the default kernels (dense: Winograd where it pays) and
//! with GEMM only. Wall-clock medians of interleaved rounds, one run.
//!
//! `cargo run --release -p hasten-fastconv --example perforated_speed`

use std::time::{Duration, Instant};

use hasten_core::ndarray::Array4;
use hasten_core::{ActShape, Block, ConvLayer, ConvSpec, PerforatedConv, SeededRng};
use hasten_fastconv::{Plan, PlanOptions, Winograd};

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let mut rng = SeededRng::new(0);
    let (c, hw) = (128, 28);
    let conv = ConvLayer::new(
        hasten_core::Conv4d::new(rng.normal_array((c, c, 3, 3), 0.05)).expect("finite"),
        Some(rng.normal_array(c, 0.1)),
        ConvSpec::new().with_padding(1),
    )
    .expect("valid layer");
    let input = ActShape::new(c, hw, hw);
    let x: Array4<f32> = rng.normal_array((1, c, hw, hw), 1.0);
    let gemm_only = PlanOptions {
        winograd: Winograd::Off,
        ..PlanOptions::default()
    };
    let dense = Block::single(conv.clone());
    let mut dense_auto = Plan::new(&dense, input, 1).expect("plan");
    let mut dense_gemm = Plan::with_options(&dense, input, 1, gemm_only).expect("plan");
    println!("| perforation rate | kept positions | dense (ms) | dense, GEMM only (ms) | perforated (ms) | speed-up vs dense | vs GEMM only | MAC speed-up |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for rate in [0.25, 0.5, 0.75] {
        let mut order: Vec<usize> = (0..hw * hw).collect();
        rng.shuffle(&mut order);
        let kept = ((1.0 - rate) * (hw * hw) as f64).round() as usize;
        let mut mask = vec![false; hw * hw];
        order[..kept].iter().for_each(|&p| mask[p] = true);
        let perf = PerforatedConv::new(conv.clone(), (hw, hw), mask).expect("mask");
        let block = Block::single(perf);
        let slow = block.reference_forward(&x).expect("reference");
        let mut plan = Plan::new(&block, input, 1).expect("plan");
        let fast = plan.run(&x).expect("run").to_owned();
        let err = hasten_core::relative_error(&slow, &fast);
        assert!(err < 1e-4, "perforated kernel off by {err}");
        let (mut a, mut g, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..100 {
            let t = Instant::now();
            std::hint::black_box(dense_auto.run(&x).expect("run"));
            a.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(dense_gemm.run(&x).expect("run"));
            g.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(plan.run(&x).expect("run"));
            p.push(t.elapsed());
        }
        let (a, g, p) = (median(a), median(g), median(p));
        println!(
            "| {rate} | {kept} / {} | {a:.3} | {g:.3} | {p:.3} | {:.2}× | {:.2}× | {:.2}× |",
            hw * hw,
            a / p,
            g / p,
            (hw * hw) as f64 / kept as f64
        );
    }
}

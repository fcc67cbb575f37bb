//! Fully connected layers at batch 1, 8 (skinny product) and 32 (GEMM): the
//! plan's linear kernel against
//! the single `matrixmultiply` sgemm it replaced (same layout: `Y = X·Wᵀ`,
//! bias preloaded). Medians of interleaved rounds, wall clock, one run.
//!
//! A second table times a Tensor-Train layer of the same size (modes
//! 8·8·8·8 × 8·8·8·8, ranks 8) against the dense 4096 × 4096 layer, both
//! through a plan.
//!
//! `cargo run --release -p hasten-fastconv --example linear_speed`

use std::time::{Duration, Instant};

use hasten_core::ndarray::Array4;
use hasten_core::{ActShape, Block, LinearLayer, Operator, SeededRng, TtLinear};
use hasten_fastconv::Plan;

/// The replaced kernel: one sgemm for the batch.
fn sgemm_forward(w: &[f32], bias: &[f32], x: &[f32], y: &mut [f32], batch: usize, out: usize) {
    let inp = w.len() / out;
    for row in y.chunks_exact_mut(out) {
        row.copy_from_slice(bias);
    }
    // SAFETY: X is batch × inp, W out × inp (read transposed), Y batch × out.
    unsafe {
        matrixmultiply::sgemm(
            batch,
            inp,
            out,
            1.0,
            x.as_ptr(),
            inp as isize,
            1,
            w.as_ptr(),
            1,
            inp as isize,
            1.0,
            y.as_mut_ptr(),
            out as isize,
            1,
        );
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let mut rng = SeededRng::new(0);
    println!("| layer (out × in) | batch | sgemm (ms) | plan (ms) | speed-up |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (out, inp) in [(1000, 512), (4096, 4096), (4096, 9216)] {
        let layer = LinearLayer::new(
            rng.normal_array((out, inp), 0.01),
            Some(rng.normal_array(out, 0.1)),
        )
        .expect("valid layer");
        let w: Vec<f32> = layer.weight().iter().copied().collect();
        let bias: Vec<f32> = layer.bias().expect("bias").to_vec();
        let block = Block::single(layer);
        for batch in [1, 8, 32] {
            let x: Array4<f32> = rng.normal_array((batch, inp, 1, 1), 1.0);
            let xs: Vec<f32> = x.iter().copied().collect();
            let mut y = vec![0.0; batch * out];
            let mut plan = Plan::new(&block, ActShape::new(inp, 1, 1), batch).expect("plan");
            let check = plan.run(&x).expect("run").to_owned();
            sgemm_forward(&w, &bias, &xs, &mut y, batch, out);
            let diff = check
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-3, "paths disagree by {diff}");
            let rounds = if out * inp > 1 << 22 { 30 } else { 200 };
            let (mut old, mut new) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let t = Instant::now();
                sgemm_forward(&w, &bias, &xs, &mut y, batch, out);
                old.push(t.elapsed());
                let t = Instant::now();
                std::hint::black_box(plan.run(&x).expect("run"));
                new.push(t.elapsed());
            }
            let (o, n) = (median(old), median(new));
            println!(
                "| {out} × {inp} | {batch} | {o:.3} | {n:.3} | {:.1}× |",
                o / n
            );
        }
    }
    println!();
    println!(
        "| layer | batch | MACs / sample | dense plan (ms) | TT plan (ms) | speed-up | MAC ratio |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let cores: Vec<_> = (0..4)
        .map(|k| {
            let r0 = if k == 0 { 1 } else { 8 };
            let r1 = if k == 3 { 1 } else { 8 };
            rng.normal_array((r0, 8, 8, r1), 0.3)
        })
        .collect();
    let tt = TtLinear::new(cores, None).expect("valid cores");
    let dense = LinearLayer::new(rng.normal_array((4096, 4096), 0.01), None).expect("valid layer");
    let input = ActShape::new(4096, 1, 1);
    let tt_macs = tt.cost(input).expect("cost").macs;
    let (tt, dense) = (Block::single(tt), Block::single(dense));
    for batch in [1, 8] {
        let x: Array4<f32> = rng.normal_array((batch, 4096, 1, 1), 1.0);
        let mut p_tt = Plan::new(&tt, input, batch).expect("plan");
        let mut p_dense = Plan::new(&dense, input, batch).expect("plan");
        let err = hasten_core::relative_error(
            &tt.reference_forward(&x).expect("reference"),
            &p_tt.run(&x).expect("run").to_owned(),
        );
        assert!(err < 1e-4, "TT kernel off by {err}");
        let (mut d, mut t) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            let s = Instant::now();
            std::hint::black_box(p_dense.run(&x).expect("run"));
            d.push(s.elapsed());
            let s = Instant::now();
            std::hint::black_box(p_tt.run(&x).expect("run"));
            t.push(s.elapsed());
        }
        let (d, t) = (median(d), median(t));
        println!(
            "| TT 8⁴ × 8⁴, rank 8 | {batch} | {tt_macs} | {d:.3} | {t:.3} | {:.1}× | {:.1}× |",
            d / t,
            (4096.0 * 4096.0) / tt_macs as f64
        );
    }
}

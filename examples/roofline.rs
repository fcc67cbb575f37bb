//! Roofline report for the fast f32 kernels.
//!
//! Measures, in one run, this machine's f32 GEMM peak (a 1024³ product
//! through our own microkernel, as a 1×1 convolution) and its copy bandwidth
//! (a 128 MiB buffer copied by every core), then for every standard workload
//! (ResNet-18, VGG-16, MobileNet-v1, decomposed 256-channel blocks) prints
//! GFLOP/s and the fraction of the GEMM peak — or, for memory-bound
//! depthwise layers, the fraction of copy bandwidth — and for decomposed
//! blocks the measured speed-up over the dense layer next to the MAC
//! speed-up.
//!
//! ```text
//! cargo run --release --example roofline [-- BATCH]
//! ```

use std::time::{Duration, Instant};

use hasten::core::{ActShape, Block, ConvLayer, ConvSpec, SeededRng};
use hasten::fastconv::workloads::{self, Bound, Workload};
use hasten::fastconv::{Isa, Plan};

/// A timed callable: one run of a plan (or of the copy).
type Job<'a> = Box<dyn FnMut() + 'a>;

/// Times `work` interleaved with `reference`: each round runs `work` enough
/// times to fill ~5 ms, then `reference` once; returns the best (minimum)
/// seconds per run of each over the rounds. On a shared, loaded machine the
/// minimum is the estimate least disturbed by other processes, and
/// interleaving exposes both to the same conditions.
fn interleaved(work: &mut Job<'_>, reference: &mut Job<'_>) -> (f64, f64) {
    work();
    reference();
    let t = Instant::now();
    work();
    let reps = (0.005 / t.elapsed().as_secs_f64().max(1e-6))
        .ceil()
        .clamp(1.0, 1000.0) as usize;
    let (mut tw, mut tr) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while tw.len() < 10 || (start.elapsed() < Duration::from_millis(1000) && tw.len() < 200) {
        let t = Instant::now();
        for _ in 0..reps {
            work();
        }
        tw.push(t.elapsed().as_secs_f64() / reps as f64);
        let t = Instant::now();
        reference();
        tr.push(t.elapsed().as_secs_f64());
    }
    (best(&tw), best(&tr))
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A job running `block` on a batch of `batch` random inputs.
fn plan_job<'a>(
    block: &Block,
    input: ActShape,
    batch: usize,
    isa: Isa,
) -> hasten::core::Result<Job<'a>> {
    let mut plan = Plan::with_isa(block, input, batch, isa)?;
    let x = SeededRng::new(1).normal_array(input.batched(batch), 1.0);
    plan.run(&x)?;
    Ok(Box::new(move || {
        std::hint::black_box(plan.run(&x).map(|y| y[[0, 0, 0, 0]]).ok());
    }))
}

/// The peak GEMM: 1024 × 1024 × 1024 through our microkernel (a 1×1
/// convolution 1024 → 1024 on a 32×32 image); returns the job and its FLOPs.
fn gemm_job<'a>(isa: Isa) -> hasten::core::Result<(Job<'a>, f64)> {
    let n = 1024;
    let layer = ConvLayer::from_array(
        SeededRng::new(2).normal_array((n, n, 1, 1), 0.03),
        ConvSpec::new(),
    )?;
    Ok((
        plan_job(&Block::single(layer), ActShape::new(n, 32, 32), 1, isa)?,
        2.0 * (n * n * n) as f64,
    ))
}

/// Copying a 128 MiB buffer on every core; returns the job and the bytes it
/// moves (read + write).
fn copy_job<'a>() -> (Job<'a>, f64) {
    let len = 32 << 20;
    let src = vec![1.0f32; len];
    let mut dst = vec![0.0f32; len];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = len.div_ceil(threads);
    let job = Box::new(move || {
        std::thread::scope(|s| {
            for (d, sr) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(sr));
            }
        });
        std::hint::black_box(&dst);
    });
    (job, 8.0 * len as f64)
}

fn main() -> hasten::core::Result<()> {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let isa = Isa::detect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut gemm, gemm_flops) = gemm_job(isa)?;
    let (mut copy, copy_bytes) = copy_job();
    let all: Vec<Workload> = workloads::all(7)?;
    // Per workload: seconds, reference seconds measured alongside.
    let mut rows = Vec::new();
    for w in &all {
        let mut job = plan_job(&w.block, w.input, batch, isa)?;
        let reference = match w.bound {
            Bound::Compute => &mut gemm,
            Bound::Memory => &mut copy,
        };
        rows.push(interleaved(&mut job, reference));
    }
    let (mut peaks, mut bws): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for (w, &(_, tr)) in all.iter().zip(&rows) {
        match w.bound {
            Bound::Compute => peaks.push(gemm_flops / tr / 1e9),
            Bound::Memory => bws.push(copy_bytes / tr / 1e9),
        }
    }
    let peak = median(&mut peaks);
    let bandwidth = median(&mut bws);
    println!("# Roofline: batch {batch}, {threads} threads, {isa} kernels\n");
    println!("GEMM peak (1024³ through our {isa} microkernel, median over the run of the best-of-rounds figures): **{peak:.1} GFLOP/s**  ");
    for other in Isa::supported().into_iter().filter(|&i| i != isa) {
        let (mut job, _) = gemm_job(other)?;
        let (t_other, t_best) = interleaved(&mut job, &mut gemm);
        println!(
            "GEMM 1024³ on the {other} path: {:.1} GFLOP/s ({:.0}% of {isa})  ",
            gemm_flops / t_other / 1e9,
            100.0 * t_best / t_other
        );
    }
    println!(
        "Copy bandwidth (128 MiB, read + write, median over the run of the best-of-rounds figures): **{bandwidth:.1} GB/s**\n"
    );
    println!("Times are the best of at least 10 rounds; each fraction compares a workload with its reference (GEMM or copy) run interleaved with it.\n");
    println!("| workload | MMAC/sample | time (ms) | GFLOP/s | % GEMM peak | GB/s | % copy bw | speed-up (measured / MACs) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let mut dense = std::collections::HashMap::new();
    for (w, &(t, tr)) in all.iter().zip(&rows) {
        let cost = w.block.cost(w.input)?;
        let flops = 2.0 * cost.macs as f64 * batch as f64;
        let bytes = (cost.activation_bytes + cost.weight_bytes) as f64 * batch as f64;
        // Fractions against the reference run alongside this workload.
        let (peak_here, bw_here) = match w.bound {
            Bound::Compute => (gemm_flops / tr, None),
            Bound::Memory => (peak * 1e9, Some(copy_bytes / tr)),
        };
        let peak_pct = 100.0 * flops / t / peak_here;
        let bw_pct = 100.0 * bytes / t / bw_here.unwrap_or(bandwidth * 1e9);
        // Time in units of the interleaved reference, so blocks and the
        // dense layer compare without load drift between their runs.
        let normalised = t / tr;
        dense.insert(w.name.clone(), (normalised, cost.macs));
        let speedup = match &w.replaces {
            Some(d) => {
                let (nd, md) = dense[d];
                let (measured, macs) = (nd / normalised, md as f64 / cost.macs as f64);
                format!(
                    "{measured:.2}× / {macs:.2}× (**{:.0}%**)",
                    100.0 * measured / macs
                )
            }
            None => String::new(),
        };
        let (peak_pct, bw_pct) = match w.bound {
            Bound::Compute => (format!("**{peak_pct:.0}%**"), format!("{bw_pct:.0}%")),
            Bound::Memory => (format!("{peak_pct:.0}%"), format!("**{bw_pct:.0}%**")),
        };
        println!(
            "| {} | {:.1} | {:.3} | {:.1} | {peak_pct} | {:.1} | {bw_pct} | {speedup} |",
            w.name,
            cost.macs as f64 / 1e6,
            t * 1e3,
            flops / t / 1e9,
            bytes / t / 1e9,
        );
    }
    Ok(())
}

//! Roofline report for the fast f32 kernels.
//!
//! Measures, in one run, this machine's f32 GEMM peak (a 1024³ product
//! through our own microkernel, as a 1×1 convolution) and its copy bandwidth
//! (a 128 MiB buffer copied by the thread pool), then for every standard
//! workload (ResNet-18, VGG-16, MobileNet-v1, decomposed 256-channel blocks)
//! prints GFLOP/s and the fraction of the GEMM peak — or, for memory-bound
//! depthwise layers, the fraction of copy bandwidth — and for decomposed
//! blocks the measured speed-up over the dense layer next to the MAC
//! speed-up — with the default kernels (Winograd F(4×4) / F(2×2) on) and with
//! GEMM only.
//!
//! Times are *CPU-normalised*: the CPU time all our threads spent running
//! (Linux `/proc/self/task/*/schedstat`, nanoseconds) divided by the thread
//! count. On a machine shared with other busy processes that figure is the
//! wall time the run would take if it had the cores to itself; the best
//! wall-clock time is printed alongside. Idle workers that spin before
//! sleeping count as busy, so short workloads are, if anything, understated.
//! Where `/proc` is missing the wall-clock median is used.
//!
//! ```text
//! cargo run --release --example roofline [-- BATCH [NAME-FILTER]]
//! ```

use std::time::{Duration, Instant};

use hasten::core::{ActShape, Block, ConvLayer, ConvSpec, SeededRng};
use hasten::fastconv::{fma_run, gemm_kernel_run, Isa, Plan, PlanOptions, Winograd};
use hasten::workloads::{self, Bound, Workload};
use rayon::prelude::*;

/// A timed callable: one run of a plan (or of the copy).
type Job<'a> = Box<dyn FnMut() + 'a>;

/// Seconds of CPU time spent so far by every thread of this process.
fn cpu_seconds() -> Option<f64> {
    hasten::bench::cpu_seconds(std::process::id())
}

/// Timing of one job: CPU-normalised seconds per run (median over rounds)
/// and the best wall-clock seconds per run.
#[derive(Debug, Clone, Copy)]
struct Timing {
    cpu: f64,
    wall: f64,
}

/// Runs `job` `reps` times; returns (CPU-normalised, wall) seconds per run.
fn round(job: &mut Job<'_>, reps: usize, threads: usize) -> (f64, f64) {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    for _ in 0..reps {
        job();
    }
    let wall = t0.elapsed().as_secs_f64() / reps as f64;
    let cpu = match (c0, cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) / reps as f64 / threads as f64,
        _ => wall,
    };
    (cpu, wall)
}

/// Times `work` and `reference` in alternating rounds (each round of `work`
/// fills ~5 ms), at least 10 rounds and about a second.
fn interleaved(work: &mut Job<'_>, reference: &mut Job<'_>, threads: usize) -> (Timing, Timing) {
    work();
    reference();
    let t = Instant::now();
    work();
    let reps = (0.005 / t.elapsed().as_secs_f64().max(1e-6))
        .ceil()
        .clamp(1.0, 1000.0) as usize;
    let (mut w, mut r) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while w.len() < 10 || (start.elapsed() < Duration::from_millis(1000) && w.len() < 200) {
        w.push(round(work, reps, threads));
        r.push(round(reference, 1, threads));
    }
    (summarise(&mut w), summarise(&mut r))
}

fn summarise(v: &mut [(f64, f64)]) -> Timing {
    let wall = v.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    let mut cpu: Vec<f64> = v.iter().map(|x| x.0).collect();
    Timing {
        cpu: median(&mut cpu),
        wall,
    }
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
    options: PlanOptions,
) -> hasten::core::Result<Job<'a>> {
    let mut plan = Plan::with_options(block, input, batch, options)?;
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
        plan_job(
            &Block::single(layer),
            ActShape::new(n, 32, 32),
            1,
            PlanOptions {
                isa,
                winograd: Winograd::Off,
                ..PlanOptions::default()
            },
        )?,
        2.0 * (n * n * n) as f64,
    ))
}

/// Copying a 128 MiB buffer with the thread pool; returns the job and the
/// bytes it moves (read + write).
fn copy_job<'a>() -> (Job<'a>, f64) {
    let len = 32 << 20;
    let src = vec![1.0f32; len];
    let mut dst = vec![0.0f32; len];
    let chunk = len.div_ceil(rayon::current_num_threads());
    let job = Box::new(move || {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        std::hint::black_box(&dst);
    });
    (job, 8.0 * len as f64)
}

/// The fastest of `tries` calls of `f` (GFLOP/s), the least disturbed by
/// other processes.
fn fastest(
    tries: usize,
    mut f: impl FnMut() -> hasten::core::Result<f64>,
) -> hasten::core::Result<f64> {
    (0..tries).try_fold(0.0f64, |best, _| Ok(best.max(f()?)))
}

/// Prints the physical FMA peak of one core and the rate of the `isa`
/// microkernel alone (one thread, operands packed beforehand) on the
/// products of ResNet-18's strided 3×3 layers and of 64→64 3×3 @56
/// (filters × output positions × depth), as a fraction of that peak.
fn microkernel_rates(isa: Isa) -> hasten::core::Result<()> {
    let peak = fastest(40, || Ok(fma_run(isa, 1_000_000)?.gflops()))?;
    println!("- FMA peak of one core ({isa}, independent FMA chains): **{peak:.1} GFLOP/s**");
    // About a millisecond per product, the fastest of 40 (as for the FMA
    // peak): the runs least disturbed by other processes.
    for (m, n, k) in [
        (128, 784, 576),
        (256, 196, 1152),
        (512, 49, 2304),
        (64, 3136, 576),
    ] {
        let mut tile = (0, 0);
        let rate = fastest(40, || {
            let run = gemm_kernel_run(isa, m, n, k, 1)?;
            tile = run.tile;
            Ok(run.gflops())
        })?;
        println!(
            "- {isa} microkernel alone ({}×{} tile, one thread, packed operands), {m}×{n}×{k}: {rate:.1} GFLOP/s = **{:.0}%** of that peak",
            tile.0,
            tile.1,
            100.0 * rate / peak
        );
    }
    Ok(())
}

fn main() -> hasten::core::Result<()> {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let isa = Isa::detect();
    let threads = rayon::current_num_threads();
    let clock = if cpu_seconds().is_some() {
        "CPU-normalised"
    } else {
        "wall-clock"
    };
    let (mut gemm, gemm_flops) = gemm_job(isa)?;
    let (mut copy, copy_bytes) = copy_job();
    let filter = std::env::args().nth(2).unwrap_or_default();
    let everything = workloads::all(7)?;
    // Matching workloads, plus the dense layer of every matching block.
    let keep: Vec<String> = everything
        .iter()
        .filter(|w| w.name.contains(&filter))
        .flat_map(|w| std::iter::once(w.name.clone()).chain(w.replaces.clone()))
        .collect();
    let all: Vec<Workload> = everything
        .into_iter()
        .filter(|w| keep.contains(&w.name))
        .collect();
    let mut rows = Vec::new();
    let (g, c) = interleaved(&mut gemm, &mut copy, threads);
    let (mut peaks, mut bws) = (
        vec![gemm_flops / g.cpu / 1e9],
        vec![copy_bytes / c.cpu / 1e9],
    );
    for w in &all {
        // Default kernels (Winograd on), then GEMM only for compute-bound work.
        let mut row = Vec::new();
        for winograd in [Winograd::Auto, Winograd::Off] {
            if winograd == Winograd::Off && w.bound == Bound::Memory {
                continue;
            }
            let mut job = plan_job(
                &w.block,
                w.input,
                batch,
                PlanOptions {
                    isa,
                    winograd,
                    ..PlanOptions::default()
                },
            )?;
            let (t, r) = match w.bound {
                Bound::Compute => interleaved(&mut job, &mut gemm, threads),
                Bound::Memory => interleaved(&mut job, &mut copy, threads),
            };
            match w.bound {
                Bound::Compute => peaks.push(gemm_flops / r.cpu / 1e9),
                Bound::Memory => bws.push(copy_bytes / r.cpu / 1e9),
            }
            row.push(t);
        }
        rows.push(row);
    }
    let peak = median(&mut peaks);
    let bandwidth = median(&mut bws);
    println!("Batch {batch}, {threads} threads, {isa} kernels, {clock} times.\n");
    println!("- GEMM peak (1024³ through our {isa} microkernel): **{peak:.1} GFLOP/s**");
    for other in Isa::supported().into_iter().filter(|&i| i != isa) {
        let (mut job, _) = gemm_job(other)?;
        let (t, r) = interleaved(&mut job, &mut gemm, threads);
        println!(
            "- GEMM 1024³ on the {other} path: {:.1} GFLOP/s ({:.0}% of {isa})",
            gemm_flops / t.cpu / 1e9,
            100.0 * r.cpu / t.cpu
        );
    }
    println!("- Copy bandwidth (128 MiB, read + write): **{bandwidth:.1} GB/s**");
    for simd in Isa::supported().into_iter().filter(|&i| i != Isa::Scalar) {
        microkernel_rates(simd)?;
    }
    println!();
    println!("Effective GFLOP/s count the direct convolution's 2·MACs. Default kernels use Winograd F(4×4, 3×3) or F(2×2, 3×3) where `Winograd::Auto` expects it to pay; \"GEMM only\" runs the same workload with Winograd off; block speed-ups are measured against the dense layer under the same setting.\n");
    println!("| workload | MMAC/sample | time (ms) | best wall (ms) | GFLOP/s | % GEMM peak | GEMM only: % peak | GB/s | % copy bw | speed-up: measured / MACs |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let mut dense = std::collections::HashMap::new();
    for (w, row) in all.iter().zip(&rows) {
        let t = row[0];
        let t_gemm = row.get(1).copied();
        let cost = w.block.cost(w.input)?;
        let flops = 2.0 * cost.macs as f64 * batch as f64;
        let bytes = (cost.activation_bytes + cost.weight_bytes) as f64 * batch as f64;
        let (gflops, gbs) = (flops / t.cpu / 1e9, bytes / t.cpu / 1e9);
        dense.insert(w.name.clone(), (t.cpu, t_gemm.map(|g| g.cpu), cost.macs));
        let speedup = match &w.replaces {
            Some(d) => {
                let (td, tdg, md) = dense[d];
                let macs = md as f64 / cost.macs as f64;
                let both = |dense_t: f64, block_t: f64| {
                    let measured = dense_t / block_t;
                    format!("{measured:.2}× (**{:.0}%**)", 100.0 * measured / macs)
                };
                let gemm_only = match (tdg, t_gemm) {
                    (Some(a), Some(b)) => format!(", GEMM only {}", both(a, b.cpu)),
                    _ => String::new(),
                };
                format!("{}{gemm_only} / {macs:.2}×", both(td, t.cpu))
            }
            None => String::new(),
        };
        let (p, b) = (100.0 * gflops / peak, 100.0 * gbs / bandwidth);
        let (p, b) = match w.bound {
            Bound::Compute => (format!("**{p:.0}%**"), format!("{b:.0}%")),
            Bound::Memory => (format!("{p:.0}%"), format!("**{b:.0}%**")),
        };
        let pg = t_gemm.map_or(String::new(), |g| {
            format!("{:.0}%", 100.0 * flops / g.cpu / 1e9 / peak)
        });
        println!(
            "| {} | {:.1} | {:.3} | {:.3} | {gflops:.1} | {p} | {pg} | {gbs:.1} | {b} | {speedup} |",
            w.name,
            cost.macs as f64 / 1e6,
            t.cpu * 1e3,
            t.wall * 1e3,
        );
    }
    Ok(())
}

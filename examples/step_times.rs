//! Per-step latency of a built-in network's plan: the plan's steps, each
//! step's median time over the runs (`Plan::run_timed`) and the median and
//! fastest total — where a whole network's time goes, without the
//! `step-profile` feature `thread_use` needs (a loop to run under `perf
//! record` as well).
//!
//! ```text
//! cargo run --release --example step_times [-- [NAME] [BATCH] [THREADS] [RUNS]]   # default resnet8 1 1 2000
//! ```

use hasten::bench::{cpu_model, with_threads};
use hasten::core::{Result, SeededRng};
use hasten::fastconv::{Plan, PlanOptions};
use hasten::models;

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map_or("resnet8", String::as_str);
    let number = |k: usize, default: usize| {
        args.get(k)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
            .max(1)
    };
    let (batch, threads, runs) = (number(1, 1), number(2, 1), number(3, 2000));
    let Some(arch) = models::architecture(name) else {
        eprintln!("no built-in architecture named {name}");
        std::process::exit(2);
    };
    let graph = (arch.build)(&(arch.default_config)())?;
    println!(
        "CPU: {}; {name}, batch {batch}, {threads} threads, {runs} runs",
        cpu_model()
    );
    with_threads(threads, || -> Result<()> {
        let mut plan = Plan::for_graph(&graph, batch, PlanOptions::default())?;
        print!("{plan}");
        let s = graph.inputs()[0].shape();
        let x = SeededRng::new(1).normal_array((batch, s.channels, s.height, s.width), 1.0);
        let mut steps = vec![Vec::with_capacity(runs); plan.steps().len()];
        let mut totals = Vec::with_capacity(runs);
        for _ in 0..runs {
            let times = plan.run_timed(&[&x])?;
            for (log, t) in steps.iter_mut().zip(&times) {
                log.push(t.as_secs_f64() * 1e6);
            }
            totals.push(times.iter().map(|t| t.as_secs_f64() * 1e6).sum::<f64>());
        }
        for (k, log) in steps.into_iter().enumerate() {
            println!("step {k:>3}  {:>9.1} µs", median(log));
        }
        let fastest = totals.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "total      {:>9.1} µs median, {fastest:.1} µs fastest",
            median(totals)
        );
        Ok(())
    })
}

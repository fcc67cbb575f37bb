//! Thread utilisation per plan step at batch 1: for every step of the
//! ResNet-18, MobileNet-v1, ResNet-8 and LeNet-5 plans, its wall time, how many parallel tasks
//! it ran, their summed busy time over `threads × wall` (1 = every thread
//! worked the whole step), the part of the step no task ran (serial work:
//! set-up, joins, waking the workers), and the busiest thread's share over
//! the mean (1 = balanced). Medians over the runs, so a machine shared with
//! other processes disturbs the ratios less than the absolute times.
//!
//! ```text
//! cargo run --release --features step-profile --example thread_use [-- [NAME-FILTER] [RUNS] [THREADS] [avx2]]
//! ```

use hasten::bench::{cpu_model, cpu_seconds, with_threads};
use hasten::core::{Result, SeededRng};
use hasten::fastconv::{Isa, Plan, PlanOptions, StepProfile};
use hasten::models;

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.first().cloned().unwrap_or_default();
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let threads: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let isa = if args.get(3).is_some_and(|a| a == "avx2") {
        Isa::Avx2
    } else {
        Isa::detect()
    };
    println!(
        "CPU: {}; kernels: {isa}; {threads} threads, batch 1, median of {runs} runs",
        cpu_model()
    );
    for name in ["resnet18", "mobilenet_v1", "resnet8", "lenet5"]
        .into_iter()
        .filter(|n| n.contains(&filter))
    {
        let arch = models::architecture(name).expect("a built-in architecture");
        let graph = (arch.build)(&(arch.default_config)())?;
        let s = graph.inputs()[0].shape();
        let x = SeededRng::new(1).normal_array((1, s.channels, s.height, s.width), 1.0);
        let options = PlanOptions {
            isa,
            ..PlanOptions::default()
        };
        let (plan, profiles, whole) = with_threads(threads, || -> Result<_> {
            let mut plan = Plan::for_graph(&graph, 1, options)?;
            for _ in 0..5 {
                plan.run(&x)?;
            }
            let mut profiles = Vec::new();
            for _ in 0..runs {
                profiles.push(plan.run_profiled(&[&x])?);
            }
            // Whole runs without the per-step bookkeeping: wall and CPU.
            let pid = std::process::id();
            let mut whole = Vec::new();
            for _ in 0..runs {
                let (c0, t0) = (cpu_seconds(pid), std::time::Instant::now());
                plan.run(&x)?;
                let wall = t0.elapsed().as_secs_f64();
                let cpu = cpu_seconds(pid).zip(c0).map_or(f64::NAN, |(a, b)| a - b);
                whole.push((wall, cpu));
            }
            Ok((plan, profiles, whole))
        })?;
        println!("\n{name}\n");
        println!("| step | kernel | output | tasks | wall µs | busy / (threads·wall) | no task running | busiest / mean thread |");
        println!("|---:|---|---|---:|---:|---:|---:|---:|");
        let steps = plan.steps();
        let per_step = |k: usize, f: &dyn Fn(&StepProfile) -> f64| {
            median(profiles.iter().map(|p| f(&p[k])).collect())
        };
        let (mut wall_sum, mut busy_sum, mut idle_sum) = (0.0, 0.0, 0.0);
        for (k, step) in steps.iter().enumerate() {
            let wall = per_step(k, &|p| p.wall.as_secs_f64() * 1e6);
            let busy = per_step(k, &|p| p.busy.as_secs_f64() * 1e6);
            let serial = per_step(k, &StepProfile::serial_fraction);
            wall_sum += wall;
            busy_sum += busy;
            idle_sum += serial * wall;
            let fused: String = step.fused.iter().map(|f| format!(" + {f}")).collect();
            println!(
                "| {k} | {}{fused} | {} | {:.0} | {wall:.0} | {:.2} | {:.0} % | {:.2} |",
                step.kernel,
                step.output,
                per_step(k, &|p| p.tasks as f64),
                per_step(k, &StepProfile::utilisation),
                100.0 * serial,
                per_step(k, &StepProfile::imbalance),
            );
        }
        println!(
            "\n{name}: steps sum {:.0} µs wall, busy ÷ threads {:.0} µs (utilisation {:.2}), no task running {:.0} µs",
            wall_sum,
            busy_sum / threads as f64,
            busy_sum / (threads as f64 * wall_sum),
            idle_sum
        );
        let mut per_thread = vec![0.0; threads + 1];
        for run in &profiles {
            for step in run {
                for (t, d) in step.per_thread.iter().enumerate() {
                    per_thread[t] += d.as_secs_f64() * 1e3 / runs as f64;
                }
            }
        }
        let shares: Vec<String> = per_thread.iter().map(|ms| format!("{ms:.2}")).collect();
        println!(
            "{name}: busy ms per run by rayon thread (last: outside the pool): {}",
            shares.join(", ")
        );
        let wall = median(whole.iter().map(|w| w.0).collect());
        let cpu = median(whole.iter().map(|w| w.1).collect());
        println!(
            "{name}: whole run (unprofiled) median wall {:.3} ms, CPU {:.3} ms, CPU ÷ (threads · wall) {:.2}",
            wall * 1e3,
            cpu * 1e3,
            cpu / (threads as f64 * wall)
        );
    }
    Ok(())
}

//! Quickstart: a whole ResNet-18 (seeded He-initialised weights, as
//! `hasten-models` builds it under PyTorch's module names), its per-node
//! cost table, one fast `Plan` for the whole graph checked against the
//! reference forward (equation (1) of the survey for every convolution,
//! evaluated directly), and its latency.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::{Duration, Instant};

use hasten::bench::{cpu_model, measure};
use hasten::prelude::*;

fn main() -> Result<()> {
    // ResNet-18 at 224×224, 1000 classes: 11.7 M parameters, 1.8 GMACs.
    let graph = resnet18(&ModelConfig::imagenet().with_seed(2024))?;
    let summary = graph.summary()?;
    println!("{summary}\n");

    // One plan for the whole graph: weights packed, batch norms, residual
    // additions and ReLUs fused into the convolutions, activations in one
    // arena reused by liveness. `run` allocates nothing.
    let mut plan = Plan::for_graph(&graph, 1, PlanOptions::default())?;
    let x = SeededRng::new(7).normal_array((1, 3, 224, 224), 1.0);
    let fast = plan.run(&x)?.to_owned();

    let start = Instant::now();
    let reference = graph.reference_forward(&[&x])?.remove(0);
    let reference_ms = start.elapsed().as_secs_f64() * 1e3;
    let err = relative_error(&reference, &fast);
    assert!(
        err < 1e-4,
        "the plan disagrees with the reference ({err:e})"
    );

    let latency = measure(
        || {
            plan.run(&x).expect("shapes were checked above");
        },
        10,
        Duration::from_secs(2),
    );
    let ms = latency.median_ms();
    println!(
        "ResNet-18, batch 1, {} threads on {}:",
        rayon::current_num_threads(),
        cpu_model()
    );
    println!(
        "  fast plan {ms:.2} ms (median of {} runs, {:.0} GFLOP/s); reference forward {reference_ms:.0} ms; relative error {err:.1e}",
        latency.runs,
        2.0 * summary.total.macs as f64 / (ms * 1e-3) / 1e9,
    );
    println!(
        "  activation memory: {:.1} MiB in the arena ({:.1} MiB without reuse)",
        plan.peak_activation_bytes() as f64 / (1 << 20) as f64,
        plan.naive_activation_bytes() as f64 / (1 << 20) as f64
    );
    Ok(())
}

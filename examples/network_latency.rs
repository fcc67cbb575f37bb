//! Whole-network latency: each model compiled into one `Plan` (topological
//! schedule, activation arena reused by liveness, convolution epilogues
//! absorbing batch norms, residual additions and activations, free flattens)
//! against the sum of one plan per node — the per-layer execution the graph
//! plan replaces — at batch 1 and 8, on 1 and 2 threads, with the peak
//! activation memory, the CPU model and the ISA used. The plan's output is
//! first checked against the graph's reference forward.
//!
//! ```text
//! cargo run --release --example network_latency            # every model
//! cargo run --release --example network_latency -- resnet18 # models whose name contains it
//! ```

use std::time::Duration;

use hasten::bench::{cpu_model, measure, with_threads, Latency};
use hasten::core::ndarray::Array4;
use hasten::core::{relative_error, Graph, Result, SeededRng};
use hasten::fastconv::{Isa, Plan, PlanOptions};
use hasten::models;

/// Random inputs of the shapes `graph` takes, for a batch of `batch`.
fn inputs_for(graph: &Graph, batch: usize, rng: &mut SeededRng) -> Vec<Array4<f32>> {
    graph
        .inputs()
        .iter()
        .map(|i| {
            let s = i.shape();
            rng.normal_array((batch, s.channels, s.height, s.width), 1.0)
        })
        .collect()
}

/// The median latency of running `graph` as one plan.
fn time_plan(graph: &Graph, batch: usize, budget: Duration) -> Result<(Latency, Plan)> {
    let mut plan = Plan::for_graph(graph, batch, PlanOptions::default())?;
    let xs = inputs_for(graph, batch, &mut SeededRng::new(1));
    let refs: Vec<&Array4<f32>> = xs.iter().collect();
    let mut failed = None;
    let latency = measure(
        || {
            if let Err(e) = plan.run_all(&refs) {
                failed = Some(e);
            }
        },
        5,
        budget,
    );
    match failed {
        Some(e) => Err(e),
        None => Ok((latency, plan)),
    }
}

/// The sum of the median latencies of one plan per node.
fn per_node_ms(graph: &Graph, batch: usize) -> Result<f64> {
    let mut total = 0.0;
    for node in graph.nodes() {
        let single = graph.node_graph(node.name())?;
        total += time_plan(&single, batch, Duration::from_millis(150))?
            .0
            .median_ms();
    }
    Ok(total)
}

/// Relative error of the plan's output against the reference forward, batch 1.
fn check(graph: &Graph) -> Result<f64> {
    let xs = inputs_for(graph, 1, &mut SeededRng::new(2));
    let refs: Vec<&Array4<f32>> = xs.iter().collect();
    let expected = graph.reference_forward(&refs)?;
    let mut plan = Plan::for_graph(graph, 1, PlanOptions::default())?;
    let got = plan.run_all(&refs)?.to_vec();
    Ok(relative_error(&got[0], &expected[0]))
}

fn main() -> Result<()> {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let names = [
        "resnet18",
        "mobilenet_v1",
        "lenet5",
        "resnet8",
        "small_vgg",
        "small_mobilenet",
    ];
    println!("CPU: {}; kernels: {:?}", cpu_model(), Isa::detect());
    println!(
        "{:<16} {:>5} {:>7} {:>8} {:>10} {:>13} {:>8} {:>11} {:>12} {:>9}",
        "model",
        "batch",
        "threads",
        "GMACs",
        "graph ms",
        "per-node ms",
        "saved",
        "peak MiB",
        "unshared MiB",
        "GFLOP/s"
    );
    for name in names.into_iter().filter(|n| n.contains(&filter)) {
        let arch = models::architecture(name).expect("a built-in architecture");
        let graph = (arch.build)(&(arch.default_config)())?;
        let err = check(&graph)?;
        assert!(
            err < 1e-4,
            "{name}: plan differs from the reference by {err:e}"
        );
        let macs = graph.cost()?.macs as f64;
        for batch in [1, 8] {
            for threads in [1, 2] {
                let (whole, plan, per_node) = with_threads(threads, || -> Result<_> {
                    let (whole, plan) = time_plan(&graph, batch, Duration::from_secs(1))?;
                    Ok((whole, plan, per_node_ms(&graph, batch)?))
                })?;
                let ms = whole.median_ms();
                let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
                println!(
                    "{:<16} {:>5} {:>7} {:>8.3} {:>10.3} {:>13.3} {:>7.0}% {:>11.2} {:>12.2} {:>9.1}",
                    name,
                    batch,
                    threads,
                    macs * batch as f64 / 1e9,
                    ms,
                    per_node,
                    100.0 * (1.0 - ms / per_node),
                    mib(plan.peak_activation_bytes()),
                    mib(plan.naive_activation_bytes()),
                    2.0 * macs * batch as f64 / (ms * 1e-3) / 1e9,
                );
            }
        }
        println!("{name}: plan output vs reference forward, relative error {err:.1e}");
    }
    Ok(())
}

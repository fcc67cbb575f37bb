//! Compress the built-in ResNet-18 (seeded weights, 3×224×224, no data
//! needed) by a recipe — by default `recipes/tucker2-int8.toml`: Tucker-2 on
//! the residual stages' 3×3 convolutions, then int8 on the factors — and
//! print the per-layer and total MAC speed-up, the weight bytes and the
//! measured latency of the original and compressed networks (batch 1 and 8,
//! fast plans, every core), how many int8 steps the plan chains, then
//! batch-1 latency of both networks with the plans forced to each SIMD level
//! this CPU has (AVX-512, AVX2), the two networks timed in alternation
//! (minimum and median wall time, median process CPU time).
//!
//! `cargo run --release --example compress [-- RECIPE.toml|RECIPE.json [MODEL]]`
//! (`recipes/resnet18-int8.toml`: every convolution but the stem int8;
//! `MODEL`: another built-in architecture with its default input and
//! seeded weights instead of ResNet-18, e.g. `resnet8` or `lenet5` at 28×28)

use std::path::PathBuf;

use std::time::Instant;

use hasten::bench::cpu_seconds;
use hasten::core::{Graph, SeededRng};
use hasten::fastconv::{Isa, Plan, PlanOptions, INT8_CHAIN};
use hasten::models::architecture;
use hasten::pipeline::{compress, Recipe};

/// Batch-1 runs of each graph's plan on `isa`, one run of each per round:
/// per graph the minimum and median wall ms and the median process CPU ms
/// (both threads' busy time, which a shared machine does not inflate).
fn medians_on(
    isa: Isa,
    graphs: [&Graph; 2],
    rounds: usize,
) -> Result<[[f64; 3]; 2], Box<dyn std::error::Error>> {
    let options = PlanOptions {
        isa,
        ..PlanOptions::default()
    };
    let mut plans = [
        Plan::for_graph(graphs[0], 1, options)?,
        Plan::for_graph(graphs[1], 1, options)?,
    ];
    let shape = graphs[0].inputs()[0].shape();
    let x = SeededRng::new(0).normal_array(shape.batched(1), 1.0);
    let cpu = || cpu_seconds(std::process::id()).unwrap_or(f64::NAN) * 1e3;
    let mut times = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    for round in 0..=rounds {
        for (plan, (wall, busy)) in plans.iter_mut().zip(times.iter_mut()) {
            let (start, cpu0) = (Instant::now(), cpu());
            plan.run_all(&[&x])?;
            if round > 0 {
                wall.push(start.elapsed().as_secs_f64() * 1e3);
                busy.push(cpu() - cpu0);
            }
        }
    }
    Ok(times.map(|(mut wall, mut busy)| {
        wall.sort_by(f64::total_cmp);
        busy.sort_by(f64::total_cmp);
        [wall[0], wall[wall.len() / 2], busy[busy.len() / 2]]
    }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/tucker2-int8.toml"),
        PathBuf::from,
    );
    let recipe = Recipe::from_path(&path)?;
    let model = std::env::args().nth(2).unwrap_or_else(|| "resnet18".into());
    let arch = architecture(&model).ok_or_else(|| format!("no built-in model {model}"))?;
    let graph = (arch.build)(&(arch.default_config)().with_seed(0))?;
    println!(
        "{} by {} ({} steps, no data: no fine-tuning)\n",
        arch.description,
        path.file_name().map_or(path.display().to_string(), |n| n
            .to_string_lossy()
            .into_owned()),
        recipe.steps.len()
    );
    let (compressed, report) = compress(&graph, &recipe, None)?;
    print!("{report}");
    let plan = Plan::for_graph(&compressed, 1, PlanOptions::default())?;
    let int8: Vec<_> = plan
        .steps()
        .into_iter()
        .filter(|s| s.kernel == "low-bit int8_conv")
        .collect();
    let chained = int8
        .iter()
        .filter(|s| s.fused.iter().any(|f| f == INT8_CHAIN))
        .count();
    println!(
        "\nint8 steps in the plan: {}, of which {chained} hand u8 codes to the next",
        int8.len()
    );
    println!(
        "\nBatch 1 by SIMD level ({} threads, 15 alternating rounds; wall min / median, CPU median):",
        rayon::current_num_threads()
    );
    for isa in Isa::supported().into_iter().filter(|&i| i != Isa::Scalar) {
        let [a, b] = medians_on(isa, [&graph, &compressed], 15)?;
        println!(
            "  {isa}: original {:.1} / {:.1} ms, CPU {:.1} ms; compressed {:.1} / {:.1} ms, CPU {:.1} ms \
             ({:.2}x min, {:.2}x median, {:.2}x CPU)",
            a[0],
            a[1],
            a[2],
            b[0],
            b[1],
            b[2],
            a[0] / b[0],
            a[1] / b[1],
            a[2] / b[2]
        );
    }
    Ok(())
}

//! Measured latency of the original and compressed graphs: each compiled
//! into a `hasten_fastconv` [`Plan`] and timed with [`crate::bench::plan_latency`]
//! on the same seeded batch.

use hasten_core::{Graph, SeededRng};
use hasten_fastconv::{Plan, PlanOptions};

use super::error::Result;
use super::recipe::LatencySettings;
use super::report::LatencyRow;
use crate::bench::plan_latency;

/// Median milliseconds of at least `runs` runs of `graph`'s plan on `x`.
fn median_ms(graph: &Graph, x: &hasten_core::ndarray::Array4<f32>, runs: usize) -> Result<f64> {
    let mut plan = Plan::for_graph(graph, x.shape()[0], PlanOptions::default())?;
    Ok(plan_latency(&mut plan, x, runs)?.median_ms())
}

/// Median latency of `original` and `compressed`, one row per batch size
/// of `settings`, each graph compiled into a fast plan and timed on the
/// same seeded batch in the current rayon pool; empty for a graph with
/// other than one input.
///
/// # Errors
/// When a graph cannot be compiled into a plan or a run fails.
pub fn measure_latency(
    original: &Graph,
    compressed: &Graph,
    settings: &LatencySettings,
) -> Result<Vec<LatencyRow>> {
    let [input] = original.inputs() else {
        return Ok(Vec::new());
    };
    let shape = input.shape();
    let threads = rayon::current_num_threads();
    let mut rows = Vec::with_capacity(settings.batches.len());
    for &batch in &settings.batches {
        let x = SeededRng::new(0).normal_array(shape.batched(batch), 1.0);
        rows.push(LatencyRow {
            batch,
            threads,
            original_ms: median_ms(original, &x, settings.runs)?,
            compressed_ms: median_ms(compressed, &x, settings.runs)?,
        });
    }
    Ok(rows)
}

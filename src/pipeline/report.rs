//! [`CompressionReport`]: what a recipe did to a network — per node the
//! method, MACs, parameters and weight bytes before and after and the
//! weight-space error; the whole network's totals; the accuracy before,
//! after the transforms and after fine-tuning where data was given; and the
//! measured latency of the original and compressed graphs. Prints as a
//! table; serialises to JSON.

use std::fmt;

use hasten_core::Cost;
use serde::{Deserialize, Serialize};

use super::recipe::Mode;

/// MACs, parameters and weight bytes of one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Costs {
    /// Multiply–accumulates.
    pub macs: u64,
    /// Stored parameters.
    pub params: u64,
    /// Bytes of weight storage.
    pub weight_bytes: u64,
}

impl From<Cost> for Costs {
    fn from(c: Cost) -> Self {
        Costs {
            macs: c.macs,
            params: c.params,
            weight_bytes: c.weight_bytes,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::INFINITY
    } else {
        a as f64 / b as f64
    }
}

/// One compressed node (or op `node.index` inside a block node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    /// The node, or `node.index` for an op inside a block.
    pub node: String,
    /// The method, as the recipe names it.
    pub method: String,
    /// Costs before.
    pub before: Costs,
    /// Costs after.
    pub after: Costs,
    /// `‖W − Ŵ‖_F / ‖W‖_F`, where the method reports it.
    pub weight_error: Option<f64>,
}

impl NodeRow {
    /// `MACs before / MACs after`.
    pub fn mac_speedup(&self) -> f64 {
        ratio(self.before.macs, self.after.macs)
    }
}

/// What happened, in order: the test of the pipeline's two modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event", content = "step")]
pub enum Event {
    /// Step (from 1) transformed its nodes.
    Transform(usize),
    /// Fine-tuning ran after this step.
    FineTune(usize),
    /// Fine-tuning after this step was skipped (ops without a backward).
    FineTuneSkipped(usize),
    /// This quantizer step, trained quantization-aware, was frozen into
    /// its packed ops.
    Freeze(usize),
    /// Batch-norm statistics were re-estimated after this step.
    RecalibrateBn(usize),
}

/// One recipe step's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step, from 1.
    pub step: usize,
    /// Its method.
    pub method: String,
    /// Its selection, in words.
    pub selection: String,
    /// The selected nodes it left alone (no convolution or linear layer).
    pub skipped: Vec<String>,
    /// Graph costs before and after the step.
    pub before: Costs,
    /// Graph costs after the step.
    pub after: Costs,
    /// Test accuracy right after the step's transform, with data.
    pub accuracy_after_transform: Option<f64>,
    /// Test accuracy after the fine-tuning that followed it, if any.
    pub accuracy_after_fine_tune: Option<f64>,
}

/// Measured latency of one batch size, medians in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    /// Samples per batch.
    pub batch: usize,
    /// Threads of the pool the plans ran in.
    pub threads: usize,
    /// The original graph's fast plan.
    pub original_ms: f64,
    /// The compressed graph's fast plan.
    pub compressed_ms: f64,
}

/// What a recipe did to a network: per node and in total, with accuracy
/// where data was given and measured latency; a table by `Display`, JSON by
/// [`CompressionReport::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionReport {
    /// One-shot or gradual.
    pub mode: Mode,
    /// Per compressed node (or inner op), in the order of the steps.
    pub nodes: Vec<NodeRow>,
    /// Per step.
    pub steps: Vec<StepReport>,
    /// Transforms and fine-tunings in the order they ran.
    pub events: Vec<Event>,
    /// The original graph's cost per sample.
    pub before: Costs,
    /// The compressed graph's cost per sample.
    pub after: Costs,
    /// Test accuracy of the original graph, with data.
    pub accuracy_before: Option<f64>,
    /// Test accuracy of the compressed graph (after any fine-tuning).
    pub accuracy_after: Option<f64>,
    /// Measured latencies.
    pub latency: Vec<LatencyRow>,
    /// The CPU the latencies were measured on.
    pub cpu: String,
    /// Anything the reader must know (fine-tuning skipped, …).
    pub notes: Vec<String>,
}

impl CompressionReport {
    /// Whole-network `MACs before / MACs after`.
    pub fn mac_speedup(&self) -> f64 {
        ratio(self.before.macs, self.after.macs)
    }

    /// Whole-network `weight bytes before / weight bytes after`.
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.before.weight_bytes, self.after.weight_bytes)
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report holds only plain data")
    }
}

fn percent(a: Option<f64>) -> String {
    a.map_or_else(|| "-".into(), |v| format!("{:.2} %", 100.0 * v))
}

impl fmt::Display for CompressionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<28} {:<16} {:>12} {:>12} {:>8} {:>11} {:>11} {:>9}",
            "node",
            "method",
            "MACs before",
            "MACs after",
            "speedup",
            "bytes bef.",
            "bytes aft.",
            "w. error"
        )?;
        for r in &self.nodes {
            writeln!(
                f,
                "{:<28} {:<16} {:>12} {:>12} {:>8} {:>11} {:>11} {:>9}",
                r.node,
                r.method,
                r.before.macs,
                r.after.macs,
                if r.after.macs == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}×", r.mac_speedup())
                },
                r.before.weight_bytes,
                r.after.weight_bytes,
                r.weight_error
                    .map_or_else(|| "-".into(), |e| format!("{e:.4}"))
            )?;
        }
        writeln!(
            f,
            "total ({} mode): MACs {} → {} ({:.2}×), params {} → {}, weight bytes {} → {} ({:.2}×)",
            match self.mode {
                Mode::OneShot => "one-shot",
                Mode::Gradual => "gradual",
            },
            self.before.macs,
            self.after.macs,
            self.mac_speedup(),
            self.before.params,
            self.after.params,
            self.before.weight_bytes,
            self.after.weight_bytes,
            self.compression_ratio()
        )?;
        for s in &self.steps {
            if s.accuracy_after_transform.is_some() {
                writeln!(
                    f,
                    "step {} ({}): accuracy after transform {}, after fine-tuning {}",
                    s.step,
                    s.method,
                    percent(s.accuracy_after_transform),
                    percent(s.accuracy_after_fine_tune)
                )?;
            }
        }
        if self.accuracy_before.is_some() {
            writeln!(
                f,
                "accuracy: {} → {}",
                percent(self.accuracy_before),
                percent(self.accuracy_after)
            )?;
        }
        for l in &self.latency {
            writeln!(
                f,
                "latency batch {} ({} threads): {:.3} ms → {:.3} ms ({:.2}× measured)",
                l.batch,
                l.threads,
                l.original_ms,
                l.compressed_ms,
                l.original_ms / l.compressed_ms
            )?;
        }
        if !self.latency.is_empty() {
            writeln!(f, "cpu: {}", self.cpu)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

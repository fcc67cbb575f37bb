//! Where a low-rank decomposition's MAC cut goes at run time (survey
//! section 2, Table 1): decomposes the 3×3 convolutions of an ONNX model
//! (all but the first) with CP (four-way and three-way) and Tucker-2 at the
//! given MAC speed-ups, then
//! times every decomposed layer alone at batch 1 — the original layer's
//! plan and the block's plan, step by step (`Plan::run_timed`), alternating —
//! and prints for each step its kernel, MACs, median time and GFLOP/s as a
//! fraction of a large 1×1 convolution's (this machine's GEMM roof,
//! measured in the same run).
//!
//! ```text
//! cargo run --release --example lowrank_steps -- MODEL.onnx [SPEEDUP …]
//! ```

use hasten::bench::{cpu_model, with_threads};
use hasten::core::graph::{GraphBuilder, NodeOp};
use hasten::core::ndarray::Array4;
use hasten::core::{ActShape, ConvLayer, ConvSpec, Graph, SeededRng};
use hasten::fastconv::{Plan, PlanOptions};
use hasten::onnx::{import_file, ImportOptions};
use hasten::pipeline::{compress, Recipe};

/// Alternating rounds per layer, timed runs per round.
const ROUNDS: usize = 9;
const RUNS: usize = 60;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The one-node graph of `node` of `network` at its input shape, planned at
/// batch 1.
fn alone(network: &Graph, node: &str) -> Result<(Plan, ActShape), Error> {
    let n = network.node(node).ok_or("no such node")?;
    let shape = network.value_shape(n.inputs()[0]);
    let mut b = GraphBuilder::new();
    let x = b.input("x", shape);
    let y = b.node(node, n.op().clone(), &[x]);
    b.output(y);
    Ok((
        Plan::for_graph(&b.build()?, 1, PlanOptions::default())?,
        shape,
    ))
}

/// Per-step medians (ms) of `RUNS` timed runs of `plan` on `x`.
fn step_ms(plan: &mut Plan, x: &Array4<f32>) -> Result<Vec<f64>, Error> {
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); plan.steps().len()];
    for _ in 0..RUNS {
        for (k, t) in plan.run_timed(&[x])?.into_iter().enumerate() {
            per[k].push(t.as_secs_f64() * 1e3);
        }
    }
    Ok(per.into_iter().map(median).collect())
}

/// GFLOP/s of a 256 → 256 1×1 convolution on a 28×28 plane (the GEMM roof
/// the factor convolutions are compared with).
fn gemm_roof() -> Result<f64, Error> {
    let w = SeededRng::new(0).normal_array((256, 256, 1, 1), 0.05);
    let conv = ConvLayer::from_array(w, ConvSpec::new())?;
    let block = hasten::core::Block::new(vec![conv.into()])?;
    let shape = ActShape::new(256, 28, 28);
    let mut plan = Plan::new(&block, shape, 1)?;
    let x = SeededRng::new(1).normal_array(shape.batched(1), 1.0);
    let mut t = Vec::new();
    for _ in 0..9 {
        t.push(median(step_ms(&mut plan, &x)?));
    }
    let flops = 2.0 * 256.0 * 256.0 * 784.0;
    Ok(flops / (median(t) * 1e-3) / 1e9)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .ok_or("usage: lowrank_steps MODEL.onnx [SPEEDUP …]")?;
    let speedups: Vec<f64> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?
    } else {
        vec![2.0, 4.0]
    };
    let graph = import_file(std::path::Path::new(model), &ImportOptions::default())?;
    with_threads(2, || -> Result<(), Error> {
        let roof = gemm_roof()?;
        println!(
            "CPU: {}; 2 threads, batch 1; GEMM roof (256→256 1×1 on 28×28): {roof:.1} GFLOP/s",
            cpu_model()
        );
        for (method, extra) in [
            ("cp", ""),
            ("cp", ", form = \"three-way\""),
            ("tucker2", ""),
        ] {
            for &s in &speedups {
                let recipe = Recipe::from_toml(&format!(
                    "latency = {{ batches = [] }}\n[[steps]]\nselect = {{ kinds = [\"conv\"], except_first = 1 }}\nmethod = {{ name = \"{method}\", rank = {{ speedup = {s} }}{extra} }}\n"
                ))?;
                let (small, _) = compress(&graph, &recipe, None)?;
                println!("\n## {method}{extra}, {s}× fewer MACs per layer\n");
                println!("| layer | step | kernel | in → out | MACs | ms | GFLOP/s | of roof |");
                println!("|---|---|---|---|---:|---:|---:|---:|");
                let (mut before_sum, mut after_sum) = (0.0, 0.0);
                for node in small.nodes() {
                    if !matches!(node.op(), NodeOp::Block(_)) {
                        continue;
                    }
                    let name = node.name();
                    let (mut before, shape) = alone(&graph, name)?;
                    let (mut after, _) = alone(&small, name)?;
                    let x = SeededRng::new(2).normal_array(shape.batched(1), 1.0);
                    let (mut b, mut a) = (Vec::new(), Vec::new());
                    for _ in 0..ROUNDS {
                        b.push(step_ms(&mut before, &x)?);
                        a.push(step_ms(&mut after, &x)?);
                    }
                    let ops = [graph.node(name).ok_or("gone")?.op(), node.op()];
                    for ((plan, rounds, tag), op) in
                        [(&before, b, "original"), (&after, a, "block")]
                            .into_iter()
                            .zip(ops)
                    {
                        let steps = plan.steps();
                        let mut total = 0.0;
                        for (k, st) in steps.iter().enumerate() {
                            let ms = median(rounds.iter().map(|r| r[k]).collect());
                            total += ms;
                            let macs = step_macs(op, shape, &st.nodes);
                            let gflops = 2.0 * macs as f64 / (ms * 1e-3) / 1e9;
                            println!(
                                "| {name} ({tag}) | {k} | {} | {}×{}×{} → {}×{}×{} | {macs} | {ms:.4} | {gflops:.1} | {:.0} % |",
                                st.kernel,
                                st.input.channels,
                                st.input.height,
                                st.input.width,
                                st.output.channels,
                                st.output.height,
                                st.output.width,
                                100.0 * gflops / roof
                            );
                        }
                        if tag == "original" {
                            before_sum += total;
                        } else {
                            after_sum += total;
                        }
                    }
                }
                println!(
                    "\nsum of step medians: original {before_sum:.4} ms, decomposed {after_sum:.4} ms, {:.2}×; MACs {:.2}×",
                    before_sum / after_sum,
                    graph_conv_macs(&graph, &small)?
                );
            }
        }
        Ok(())
    })
}

/// MACs of the step computing `nodes[0]` of the one-node graph of `op` at
/// `input`: a block op's (`…[k]`) or the whole op's.
fn step_macs(op: &NodeOp, input: ActShape, nodes: &[String]) -> u64 {
    let index = nodes.first().and_then(|n| {
        let open = n.rfind('[')?;
        n[open + 1..].strip_suffix(']')?.parse::<usize>().ok()
    });
    match (op, index) {
        (NodeOp::Block(b), Some(k)) => b.op_costs(input).map_or(0, |c| c[k].macs),
        (NodeOp::Block(_), None) => 0,
        _ => op.cost(&[input]).map_or(0, |c| c.macs),
    }
}

/// MAC ratio of the decomposed layers (original over compressed).
fn graph_conv_macs(original: &Graph, small: &Graph) -> Result<f64, Error> {
    let (mut a, mut b) = (0u64, 0u64);
    for node in small.nodes() {
        if matches!(node.op(), NodeOp::Block(_)) {
            let n = original.node(node.name()).ok_or("gone")?;
            let shape = [original.value_shape(n.inputs()[0])];
            b += node.op().cost(&shape)?.macs;
            a += n.op().cost(&shape)?.macs;
        }
    }
    Ok(a as f64 / b as f64)
}

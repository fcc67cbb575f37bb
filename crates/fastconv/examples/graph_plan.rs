//! A ResNet-18-shaped graph compiled as one plan: the steps with their
//! fusions, the activation arena against a buffer per node, and the time of
//! a run with fusion on and off.
//!
//! `cargo run -p hasten-fastconv --release --example graph_plan [size] [batch]`

use std::time::Instant;

use hasten_core::graph::{Graph, GraphBuilder, Value};
use hasten_core::{
    ActShape, BatchNorm, ConvLayer, ConvSpec, Flatten, GlobalAvgPool, LinearLayer, MaxPool,
    PoolSpec, Relu, SeededRng,
};
use hasten_fastconv::{Plan, PlanOptions};

fn conv(rng: &mut SeededRng, t: usize, c: usize, k: usize, stride: usize) -> ConvLayer {
    let spec = ConvSpec::new().with_stride(stride).with_padding(k / 2);
    let w = rng.normal_array((t, c, k, k), (2.0 / (c * k * k) as f64).sqrt());
    ConvLayer::from_array(w, spec).expect("valid layer")
}

fn bn(rng: &mut SeededRng, c: usize) -> BatchNorm {
    BatchNorm::new(
        rng.uniform_array(c, 0.5, 1.0),
        rng.normal_array(c, 0.1),
        rng.normal_array(c, 0.1),
        rng.uniform_array(c, 0.5, 1.5),
        1e-5,
    )
    .expect("valid batch norm")
}

/// ResNet-18: stem, four stages of two basic blocks, pooled linear head.
fn resnet18(rng: &mut SeededRng, size: usize) -> hasten_core::Result<Graph> {
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, size, size));
    let mut y = b.op("conv1", conv(rng, 64, 3, 7, 2), x);
    y = b.op("bn1", bn(rng, 64), y);
    y = b.op("relu", Relu, y);
    let pool = MaxPool::new(PoolSpec::square(3).with_stride(2).with_padding(1))?;
    y = b.op("maxpool", pool, y);
    let mut c = 64;
    for (stage, out) in [64, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if block == 0 && stage > 0 { 2 } else { 1 };
            let p = format!("layer{}.{block}", stage + 1);
            let mut z = b.op(format!("{p}.conv1"), conv(rng, out, c, 3, stride), y);
            z = b.op(format!("{p}.bn1"), bn(rng, out), z);
            z = b.op(format!("{p}.relu1"), Relu, z);
            z = b.op(format!("{p}.conv2"), conv(rng, out, out, 3, 1), z);
            z = b.op(format!("{p}.bn2"), bn(rng, out), z);
            let shortcut: Value = if stride != 1 || c != out {
                let d = b.op(format!("{p}.downsample.0"), conv(rng, out, c, 1, stride), y);
                b.op(format!("{p}.downsample.1"), bn(rng, out), d)
            } else {
                y
            };
            z = b.add(format!("{p}.add"), &[z, shortcut]);
            y = b.op(format!("{p}.relu2"), Relu, z);
            c = out;
        }
    }
    y = b.op("avgpool", GlobalAvgPool, y);
    y = b.op("flatten", Flatten, y);
    let fc = LinearLayer::new(
        rng.normal_array((1000, 512), 0.03),
        Some(rng.normal_array(1000, 0.01)),
    )?;
    y = b.op("fc", fc, y);
    b.output(y);
    b.build()
}

/// Median seconds of `runs` runs after one warm-up.
fn time(
    plan: &mut Plan,
    x: &hasten_core::ndarray::Array4<f32>,
    runs: usize,
) -> hasten_core::Result<f64> {
    plan.run(x)?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        plan.run(x)?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[runs / 2])
}

fn main() -> hasten_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(224);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = SeededRng::new(0);
    let graph = resnet18(&mut rng, size)?;
    let x = rng.normal_array((batch, 3, size, size), 1.0);
    let mut fused = Plan::for_graph(&graph, batch, PlanOptions::default())?;
    let unfused_options = PlanOptions {
        fuse: false,
        ..PlanOptions::default()
    };
    let mut unfused = Plan::for_graph(&graph, batch, unfused_options)?;
    println!("{fused}");
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "activation memory, batch {batch}: arena {:.2} MiB fused, {:.2} MiB unfused; a buffer per node {:.2} MiB",
        mib(fused.peak_activation_bytes()),
        mib(unfused.peak_activation_bytes()),
        mib(fused.naive_activation_bytes()),
    );
    let tf = time(&mut fused, &x, 5)?;
    let tu = time(&mut unfused, &x, 5)?;
    println!(
        "run: {:.2} ms fused ({} steps), {:.2} ms unfused ({} steps)",
        tf * 1e3,
        fused.steps().len(),
        tu * 1e3,
        unfused.steps().len()
    );
    let times = unfused.run_timed(&[&x])?;
    let mut rows: Vec<_> = unfused.steps().into_iter().zip(times).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    println!("slowest unfused steps:");
    for (s, t) in rows.iter().take(5) {
        println!(
            "  {:>8.3} ms  {}  [{}]",
            t.as_secs_f64() * 1e3,
            s.kernel,
            s.nodes.join(", ")
        );
    }
    Ok(())
}

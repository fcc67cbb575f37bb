//! Per-layer speed against onnxruntime, side by side: every distinct
//! convolution of ResNet-18, VGG-16 and MobileNet-v1 (the `hasten-models`
//! builders, 224² inputs) compiled as its own plan — with the AVX-512 kernels
//! and with the AVX2+FMA kernels forced — and exported as a one-node ONNX
//! model timed by onnxruntime (`scripts/ort_bench.py --serve`, one process for
//! the whole run). The three are timed in interleaved rounds (order rotated
//! each round) and the median of the rounds is printed, so noise from a
//! shared machine hits all of them alike. Times are CPU-normalised, as in the
//! roofline example: the CPU time of every thread of the timed process
//! ([`hasten::bench::cpu_seconds`]) per run, divided by the thread count —
//! the wall time the run would take with the cores to itself. onnxruntime's
//! idle threads sleep rather than spin, so only its work counts; rayon's
//! brief spinning counts against Hasten. Where `/proc` is missing, wall time.
//! Next to the times: the ratio Hasten / onnxruntime (below 1 is faster),
//! GFLOP/s and the percentage of the physical FMA peak of the same ISA on the
//! same threads ([`hasten::fastconv::fma_run`], the fastest of many short
//! single-thread runs times the thread count), then each network's
//! convolution sum with every layer counted as often as it occurs.
//!
//! With `networks` as the filter it compares whole small networks instead:
//! ResNet-8 (the `.onnx` file at `data/resnet8-fashion.onnx` when present,
//! else the built-in one exported) and LeNet-5 on 28×28 inputs, at batch 1
//! and 8, each network one plan against onnxruntime on the same ONNX model,
//! interleaved the same way (onnxruntime with its default spinning threads);
//! it prints the medians of the wall time per run (the latency) and of the
//! CPU-normalised time.
//!
//! ```text
//! scripts/setup-python.sh   # once: .venv with onnxruntime (or set HASTEN_PYTHON)
//! cargo run --release --example conv_vs_ort [-- [NAME-FILTER] [ROUNDS] [THREADS]]
//! cargo run --release --example conv_vs_ort -- networks [ROUNDS] [THREADS]
//! HASTEN_WINOGRAD=f4 cargo run --release --example conv_vs_ort -- "3x3 @"
//! ```
//!
//! `HASTEN_WINOGRAD` (`auto`, the default, `off`, `f2` or `f4`) sets the
//! plans' [`Winograd`] option, to compare the Winograd tiles on the same
//! layers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use hasten::bench::{cpu_model, cpu_seconds, with_threads};
use hasten::core::ndarray::Array4;
use hasten::core::{Graph, NodeOp, Op, Result, SeededRng};
use hasten::fastconv::{fma_run, Isa, Plan, PlanOptions, Winograd};
use hasten::models;

/// Target time of one round of one contender.
const ROUND: Duration = Duration::from_millis(25);

/// The default plan options with the Winograd setting of `HASTEN_WINOGRAD`.
fn plan_options() -> PlanOptions {
    let winograd = match std::env::var("HASTEN_WINOGRAD").as_deref() {
        Ok("off") => Winograd::Off,
        Ok("f2") => Winograd::F2,
        Ok("f4") => Winograd::F4,
        _ => Winograd::Auto,
    };
    PlanOptions {
        winograd,
        ..PlanOptions::default()
    }
}

/// A distinct convolution shape and the networks' layers that have it.
struct Layer {
    label: String,
    graph: Graph,
    /// Multiply-accumulates of one run (batch 1).
    macs: u64,
    /// `(network, occurrences)`.
    uses: BTreeMap<&'static str, usize>,
    kernel: String,
}

/// onnxruntime behind `scripts/ort_bench.py --serve`.
struct Ort {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Ort {
    fn start() -> std::io::Result<Ort> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(hasten::bench::python(root))
            .arg(root.join("scripts/ort_bench.py"))
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(Ort {
            child,
            stdin,
            stdout,
        })
    }

    /// CPU-normalised ms per run of `runs` runs of `model` on a
    /// `1 × c × h × w` input (the script's median wall time where `/proc`
    /// is missing).
    fn ms(&mut self, model: &Path, dims: [usize; 3], threads: usize, runs: usize) -> f64 {
        self.timed(model, 1, dims, threads, runs, false).1
    }

    /// The median wall ms of `runs` runs of `model` on a `batch × c × h × w`
    /// input and the CPU-normalised ms per run (the wall median where
    /// `/proc` is missing); idle threads spinning when `spin`.
    fn timed(
        &mut self,
        model: &Path,
        batch: usize,
        dims: [usize; 3],
        threads: usize,
        runs: usize,
        spin: bool,
    ) -> (f64, f64) {
        let [c, h, w] = dims;
        let before = cpu_seconds(self.child.id());
        let spin = if spin { " spin" } else { "" };
        writeln!(
            self.stdin,
            "{} {batch} {c} {h} {w} {threads} {runs}{spin}",
            model.display()
        )
        .expect("onnxruntime process accepts requests");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("onnxruntime process answers");
        let wall: f64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("median_ms="))
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("onnxruntime failed: {}", line.trim()));
        match (before, cpu_seconds(self.child.id())) {
            (Some(a), Some(b)) => (wall, (b - a) * 1e3 / (runs * threads) as f64),
            _ => (wall, wall),
        }
    }
}

impl Drop for Ort {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every distinct convolution of the three networks, first occurrence first.
fn layers() -> Result<Vec<Layer>> {
    let mut out: Vec<(String, Layer)> = Vec::new();
    for net in ["resnet18", "vgg16", "mobilenet_v1"] {
        let arch = models::architecture(net).expect("a built-in architecture");
        let graph = (arch.build)(&(arch.default_config)())?;
        for node in graph.nodes() {
            let NodeOp::Op(Op::Conv(conv)) = node.op() else {
                continue;
            };
            let input = node.input_shapes()[0];
            let spec = conv.spec();
            let [t, c_g, kh, kw] = conv.weight().dims();
            let key = format!(
                "{input:?}{:?}{spec:?}{}",
                conv.weight().dims(),
                conv.bias().is_some()
            );
            if let Some((_, layer)) = out.iter_mut().find(|(k, _)| *k == key) {
                *layer.uses.entry(net).or_default() += 1;
                continue;
            }
            let (c, hw) = (input.channels, input.height);
            let (sh, sw) = spec.stride;
            let mut label = if spec.groups == c && c_g == 1 {
                format!("dw {c} {kh}x{kw}")
            } else {
                format!("{c}->{t} {kh}x{kw}")
            };
            if (sh, sw) != (1, 1) {
                label += &format!("/{sh}");
            }
            label += &format!(" @{hw}");
            let single = graph.node_graph(node.name())?;
            let kernel = Plan::for_graph(&single, 1, plan_options())?
                .steps()
                .first()
                .map_or_else(String::new, |s| s.kernel.clone());
            out.push((
                key,
                Layer {
                    label,
                    macs: node.cost()?.macs,
                    graph: single,
                    uses: BTreeMap::from([(net, 1)]),
                    kernel,
                },
            ));
        }
    }
    Ok(out.into_iter().map(|(_, l)| l).collect())
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// GFLOP/s of the FMA loop on one core (the fastest of 40 short runs, the
/// least disturbed by other processes) times `threads`.
fn fma_peak(isa: Isa, threads: usize) -> Result<f64> {
    let mut best: f64 = 0.0;
    for _ in 0..40 {
        best = best.max(fma_run(isa, 1_000_000)?.gflops());
    }
    Ok(best * threads as f64)
}

/// CPU-normalised ms per run of `runs` runs of `plan` (wall time where
/// `/proc` is missing).
fn plan_ms(plan: &mut Plan, x: &Array4<f32>, runs: usize, threads: usize) -> f64 {
    let pid = std::process::id();
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    for _ in 0..runs {
        plan.run(x).expect("the plan runs");
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / runs as f64;
    match (c0, cpu_seconds(pid)) {
        (Some(a), Some(b)) => (b - a) * 1e3 / (runs * threads) as f64,
        _ => wall,
    }
}

/// The median wall ms of `runs` runs of `plan` on `x` and the
/// CPU-normalised ms per run (the wall median where `/proc` is missing).
fn plan_timed(plan: &mut Plan, x: &Array4<f32>, runs: usize, threads: usize) -> (f64, f64) {
    let pid = std::process::id();
    let c0 = cpu_seconds(pid);
    let mut walls: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            plan.run(x).expect("the plan runs");
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let wall = median(&mut walls);
    match (c0, cpu_seconds(pid)) {
        (Some(a), Some(b)) => (wall, (b - a) * 1e3 / (runs * threads) as f64),
        _ => (wall, wall),
    }
}

/// Whole small networks against onnxruntime on the same ONNX models, batch
/// 1 and 8, `rounds` interleaved rounds of about [`ROUND`] each (order
/// alternated), medians of the rounds' wall medians and CPU-normalised times;
/// onnxruntime's idle threads spin (its default), so its CPU time includes
/// the spinning, as Hasten's includes rayon's.
fn networks(
    ort: &mut Ort,
    rounds: usize,
    threads: usize,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir();
    let resnet8 = root.join("data/resnet8-fashion.onnx");
    // (label, graph, ONNX model, whether this run wrote the model).
    let mut nets: Vec<(&str, Graph, std::path::PathBuf, bool)> = Vec::new();
    for name in ["resnet8", "lenet5"] {
        if name == "resnet8" && resnet8.exists() {
            let graph = hasten::onnx::import_file(&resnet8, &Default::default())?;
            nets.push((
                "ResNet-8 (data/resnet8-fashion.onnx)",
                graph,
                resnet8.clone(),
                false,
            ));
            continue;
        }
        let arch = models::architecture(name).expect("a built-in architecture");
        let graph = (arch.build)(&(arch.default_config)())?;
        let path = dir.join(format!(
            "hasten-net-vs-ort-{}-{name}.onnx",
            std::process::id()
        ));
        hasten::onnx::export_file(&graph, &path)?;
        nets.push((name, graph, path, true));
    }
    println!(
        "CPU: {}; {threads} threads, kernels {}, median of {rounds} interleaved rounds",
        cpu_model(),
        Isa::detect()
    );
    println!("| network | batch | Hasten ms | onnxruntime ms | Hasten / ort | Hasten CPU-normalised ms | ort CPU-normalised ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, graph, onnx, written) in &nets {
        let s = graph.inputs()[0].shape();
        let dims = [s.channels, s.height, s.width];
        for batch in [1, 8] {
            let x = SeededRng::new(1).normal_array(s.batched(batch), 1.0);
            let (ours, theirs) = with_threads(threads, || -> Result<_> {
                let mut plan = Plan::for_graph(graph, batch, PlanOptions::default())?;
                plan_timed(&mut plan, &x, 5, threads);
                let one = plan_timed(&mut plan, &x, 5, threads).0;
                let runs = ((ROUND.as_secs_f64() * 1e3 / one) as usize).clamp(5, 2000);
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                for r in 0..rounds {
                    if r % 2 == 0 {
                        ours.push(plan_timed(&mut plan, &x, runs, threads));
                        theirs.push(ort.timed(onnx, batch, dims, threads, runs, true));
                    } else {
                        theirs.push(ort.timed(onnx, batch, dims, threads, runs, true));
                        ours.push(plan_timed(&mut plan, &x, runs, threads));
                    }
                }
                Ok((ours, theirs))
            })?;
            let med = |v: &[(f64, f64)], cpu: bool| {
                median(
                    &mut v
                        .iter()
                        .map(|t| if cpu { t.1 } else { t.0 })
                        .collect::<Vec<_>>(),
                )
            };
            let (ours_ms, theirs_ms) = (med(&ours, false), med(&theirs, false));
            println!(
                "| {label} | {batch} | {ours_ms:.3} | {theirs_ms:.3} | {:.2} | {:.3} | {:.3} |",
                ours_ms / theirs_ms,
                med(&ours, true),
                med(&theirs, true)
            );
            std::io::stdout().flush().ok();
        }
        if *written {
            let _ = std::fs::remove_file(onnx);
        }
    }
    Ok(())
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.first().cloned().unwrap_or_default();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    let threads: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    if filter == "networks" {
        let mut ort = Ort::start().map_err(|e| format!("cannot start python: {e}"))?;
        return networks(&mut ort, rounds, threads);
    }
    let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2]
        .into_iter()
        .filter(|i| i.is_supported())
        .collect();
    if isas.is_empty() {
        return Err("this CPU has neither AVX-512 nor AVX2+FMA".into());
    }
    let mut ort = Ort::start().map_err(|e| format!("cannot start python: {e}"))?;
    let peaks: Vec<f64> = isas
        .iter()
        .map(|&i| fma_peak(i, threads))
        .collect::<Result<_>>()?;
    println!(
        "CPU: {}; batch 1, {threads} threads, median of {rounds} interleaved rounds",
        cpu_model()
    );
    for (isa, p) in isas.iter().zip(&peaks) {
        println!("FMA peak ({isa}, {threads} threads): {p:.1} GFLOP/s");
    }
    print!("| layer | kernel | uses | MFLOP | ort ms |");
    for isa in &isas {
        print!(" {isa} ms | / ort | GFLOP/s | % peak |");
    }
    println!();
    println!("|{}", "---|".repeat(4 + 1 + 4 * isas.len()));
    let dir = std::env::temp_dir();
    // (network, ISA or ort) → summed ms.
    let mut sums: BTreeMap<(&'static str, usize), f64> = BTreeMap::new();
    for (index, layer) in layers()?
        .iter()
        .enumerate()
        .filter(|(_, l)| l.label.contains(&filter))
    {
        let shape = layer.graph.inputs()[0].shape();
        let x: Array4<f32> =
            SeededRng::new(1).normal_array((1, shape.channels, shape.height, shape.width), 1.0);
        let onnx = dir.join(format!(
            "hasten-conv-vs-ort-{}-{index}.onnx",
            std::process::id()
        ));
        hasten::onnx::export_file(&layer.graph, &onnx)?;
        let dims = [shape.channels, shape.height, shape.width];
        let (times, ort_ms) = with_threads(threads, || -> Result<_> {
            let mut plans = isas
                .iter()
                .map(|&isa| {
                    Plan::for_graph(
                        &layer.graph,
                        1,
                        PlanOptions {
                            isa,
                            ..plan_options()
                        },
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            // Runs per round from a warm-up run of the first plan.
            plan_ms(&mut plans[0], &x, 2, threads);
            let one = plan_ms(&mut plans[0], &x, 1, threads);
            let runs = ((ROUND.as_secs_f64() * 1e3 / one) as usize).clamp(1, 50);
            let mut ours = vec![Vec::new(); plans.len()];
            let mut theirs = Vec::new();
            for r in 0..rounds {
                for k in 0..=plans.len() {
                    let who = (k + r) % (plans.len() + 1);
                    if who == plans.len() {
                        theirs.push(ort.ms(&onnx, dims, threads, runs));
                    } else {
                        ours[who].push(plan_ms(&mut plans[who], &x, runs, threads));
                    }
                }
            }
            Ok((
                ours.iter_mut().map(|v| median(v)).collect::<Vec<_>>(),
                median(&mut theirs),
            ))
        })?;
        let _ = std::fs::remove_file(&onnx);
        let mflop = 2.0 * layer.macs as f64 / 1e6;
        let uses: Vec<String> = layer.uses.iter().map(|(n, k)| format!("{n}×{k}")).collect();
        print!(
            "| {} | {} | {} | {mflop:.0} | {ort_ms:.3} |",
            layer.label,
            layer.kernel,
            uses.join(" ")
        );
        for (i, (ms, peak)) in times.iter().zip(&peaks).enumerate() {
            let gflops = mflop / ms;
            print!(
                " {ms:.3} | {:.2} | {gflops:.1} | {:.0}% |",
                ms / ort_ms,
                100.0 * gflops / peak
            );
            for (net, &k) in &layer.uses {
                *sums.entry((net, i)).or_default() += k as f64 * ms;
            }
        }
        for (net, &k) in &layer.uses {
            *sums.entry((net, usize::MAX)).or_default() += k as f64 * ort_ms;
        }
        println!();
        std::io::stdout().flush().ok();
    }
    println!();
    for net in ["resnet18", "vgg16", "mobilenet_v1"] {
        let Some(&ort_sum) = sums.get(&(net, usize::MAX)) else {
            continue;
        };
        print!("{net} convolution sum: onnxruntime {ort_sum:.2} ms");
        for (i, isa) in isas.iter().enumerate() {
            let ours = sums[&(net, i)];
            print!("; {isa} {ours:.2} ms ({:.2}× ort)", ours / ort_sum);
        }
        println!();
    }
    Ok(())
}

//! Pruning report (survey section 6): every sparsity structure and criterion
//! of `hasten-prune` applied to ResNet-18-sized layers with seeded synthetic
//! weights, printing per row the fraction removed, the MAC speed-up, the
//! speed-up measured with `hasten-fastconv` and the relative output error.
//!
//! ```text
//! cargo run --release --example prune
//! ```
//!
//! The weights are synthetic (He-initialised, with filter scales spread over
//! two decades and a few channels biased towards being dead after the ReLU),
//! so the criteria have structure to find; the output errors are therefore
//! illustrative, not accuracies of a trained network. Ops without a fast
//! kernel in `hasten-fastconv` run its reference fallback, which the measured
//! column shows as it is.

use std::time::Instant;

use hasten::core::ndarray::{Array1, Array4, Axis};
use hasten::core::{
    relative_error, ActShape, BatchNorm, Block, ConvLayer, ConvSpec, Layer, Op, Relu, Result,
    SeededRng, Transform,
};
use hasten::fastconv::Plan;
use hasten::prune::criteria::{
    activation_energy, apoz_scores, magnitude, obd, random_scores, taylor, thinet_prune, Norm,
};
use hasten::prune::perforation::{perforation_impacts, MaskKind, Perforation};
use hasten::prune::removal::{
    ConnectionGroups, GroupwisePrune, KernelTrim, MagnitudeSparse, ResidualNet,
};
use hasten::prune::select::top_k;
use hasten::prune::{
    prune_filters, prune_network, ChainLayer, ChainNet, Consumer, PruneConfig, Schedule, Scope,
    Slicing, Target,
};

/// Ratios of base time over candidate time: of the medians, and of the
/// fastest runs (the contention-free estimate on a loaded machine).
#[derive(Clone, Copy)]
struct Speedup {
    median: f64,
    best: f64,
}

impl std::fmt::Display for Speedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}× | {:.2}×", self.median, self.best)
    }
}

/// Measured speed-up of `cand` over `base` with `hasten-fastconv` plans:
/// the two are run alternately up to `reps` times (so both see the same
/// machine load) and the ratio of their median times is returned.
fn speedup(base: &Block, cand: &Block, x: &Array4<f32>, reps: usize) -> Result<Speedup> {
    let shape = ActShape::new(x.shape()[1], x.shape()[2], x.shape()[3]);
    let mut plans = [
        Plan::new(base, shape, x.shape()[0])?,
        Plan::new(cand, shape, x.shape()[0])?,
    ];
    let mut times = [Vec::new(), Vec::new()];
    let start = Instant::now();
    for rep in 0..=reps {
        // Slow (reference-fallback) ops: stop after 3 timed runs past 3 s.
        if rep > 3 && start.elapsed().as_secs_f64() > 3.0 {
            break;
        }
        for (k, plan) in plans.iter_mut().enumerate() {
            let s = Instant::now();
            let v = plan.run(x)?[[0, 0, 0, 0]];
            std::hint::black_box(v);
            if rep > 0 {
                times[k].push(s.elapsed().as_secs_f64());
            }
        }
    }
    for t in times.iter_mut() {
        t.sort_by(f64::total_cmp);
    }
    let (a, b) = (&times[0], &times[1]);
    Ok(Speedup {
        median: a[a.len() / 2] / b[b.len() / 2],
        best: a[0] / b[0],
    })
}

fn fast(block: &Block, x: &Array4<f32>) -> Result<Array4<f32>> {
    hasten::fastconv::forward(block, x)
}

struct Row {
    structure: String,
    criterion: String,
    removed: f64,
    mac_speedup: f64,
    measured: Speedup,
    error: f64,
}

fn print(rows: &[Row]) {
    println!(
        "| structure | criterion | removed | MAC speed-up | measured (median) | measured (best) | output rel. error |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.2}× | {} | {:.4} |",
            r.structure, r.criterion, r.removed, r.mac_speedup, r.measured, r.error
        );
    }
}

/// He-initialised OIHW weights, `std = sqrt(2 / fan_in)`.
fn he(rng: &mut SeededRng, t: usize, c: usize, k: usize) -> Array4<f32> {
    rng.normal_array((t, c, k, k), (2.0 / (c * k * k) as f64).sqrt())
}

/// A He-initialised conv whose filters carry scales spread over two decades.
fn conv(rng: &mut SeededRng, t: usize, c: usize, k: usize) -> Result<ConvLayer> {
    let mut w = he(rng, t, c, k);
    for mut f in w.axis_iter_mut(Axis(0)) {
        let s = 10f64.powf(rng.uniform_in(-1.0, 1.0)) as f32;
        f.mapv_inplace(|v| v * s);
    }
    ConvLayer::new(
        hasten::core::Conv4d::new(w)?,
        Some(rng.normal_array(t, 0.05)),
        ConvSpec::new().with_padding(k / 2),
    )
}

/// A batch-norm whose shifts leave about a tenth of the channels mostly dead.
fn bn(rng: &mut SeededRng, t: usize) -> Result<BatchNorm> {
    let beta: Array1<f32> = (0..t)
        .map(|_| {
            if rng.uniform() < 0.1 {
                -2.0
            } else {
                0.1 * rng.normal() as f32
            }
        })
        .collect();
    BatchNorm::new(
        rng.uniform_array(t, 0.5, 1.5),
        beta,
        Array1::zeros(t),
        Array1::ones(t),
        1e-5,
    )
}

/// `∂(½‖y‖²)/∂a` for `y = conv(a)` without bias: the transposed convolution of `y`.
fn conv_input_grad(layer: &ConvLayer, a: &Array4<f32>, y: &Array4<f32>) -> Array4<f32> {
    let w = layer.weight().array();
    let [t_n, c_n, kh, kw] = layer.weight().dims();
    let p = layer.spec().padding;
    let (h, wd) = (a.shape()[2] as isize, a.shape()[3] as isize);
    let mut g = Array4::<f32>::zeros(a.raw_dim());
    for n in 0..a.shape()[0] {
        for t in 0..t_n {
            for oy in 0..y.shape()[2] {
                for ox in 0..y.shape()[3] {
                    let v = y[[n, t, oy, ox]];
                    for c in 0..c_n {
                        for i in 0..kh {
                            let iy = (oy + i) as isize - p.top as isize;
                            if iy < 0 || iy >= h {
                                continue;
                            }
                            for j in 0..kw {
                                let ix = (ox + j) as isize - p.left as isize;
                                if ix >= 0 && ix < wd {
                                    g[[n, c, iy as usize, ix as usize]] += w[[t, c, i, j]] * v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    g
}

fn main() -> Result<()> {
    let mut rng = SeededRng::new(2024);
    let reps = 41;
    let mut rows = Vec::new();

    // --- Filter pruning on a ResNet-18 stage-2 pair: conv → BN → ReLU → conv, 128 ch, 28×28.
    let (c, hw) = (128usize, 28usize);
    let producer = conv(&mut rng, c, c, 3)?;
    let norm = bn(&mut rng, c)?;
    let consumer_layer = conv(&mut rng, c, c, 3)?;
    let consumer = Consumer::Conv(consumer_layer.clone());
    let chain = |p: &ConvLayer, b: &BatchNorm, q: &Consumer| -> Result<Block> {
        Block::new(vec![
            p.clone().into(),
            b.clone().into(),
            Relu.into(),
            q.to_op(),
        ])
    };
    let x = rng.normal_array((1, c, hw, hw), 1.0);
    let full = chain(&producer, &norm, &consumer)?;
    let input = ActShape::new(c, hw, hw);
    let y_full = fast(&full, &x)?;
    // Activations and gradients for the data-driven criteria: the loss is
    // ½‖y‖² of the consumer output (bias excluded), a stand-in for a task loss.
    let a = fast(
        &Block::new(vec![
            producer.clone().into(),
            norm.clone().into(),
            Relu.into(),
        ])?,
        &x,
    )?;
    let consumer_nobias = ConvLayer::new(
        consumer_layer.weight().clone(),
        None,
        *consumer_layer.spec(),
    )?;
    let y_nb = fast(&Block::single(consumer_nobias.clone()), &a)?;
    let grad = conv_input_grad(&consumer_nobias, &a, &y_nb);
    // OBD with the Gauss–Newton Hessian diagonal of the producer's layer-local
    // squared error: h[t,c,i,j] = Σ_{y,x} U[c, y+i−1, x+j−1]².
    let mut hess = Array4::<f32>::zeros(producer.weight().array().raw_dim());
    for cc in 0..c {
        for i in 0..3 {
            for j in 0..3 {
                let mut s = 0.0f32;
                for yy in 0..hw {
                    for xx in 0..hw {
                        let (iy, ix) = (yy + i, xx + j);
                        if (1..=hw).contains(&iy) && (1..=hw).contains(&ix) {
                            s += x[[0, cc, iy - 1, ix - 1]].powi(2);
                        }
                    }
                }
                hess.slice_mut(hasten::core::ndarray::s![.., cc, i, j])
                    .fill(s);
            }
        }
    }
    let keep_n = c / 2;
    let criteria: Vec<(&str, Vec<f64>)> = vec![
        ("random", random_scores(c, &mut rng.fork(1))),
        (
            "magnitude L1 (14)",
            magnitude(producer.weight(), Slicing::Filter, Norm::L1),
        ),
        (
            "magnitude L2 (14)",
            magnitude(producer.weight(), Slicing::Filter, Norm::L2),
        ),
        ("activation energy (15)", activation_energy(&a)?),
        ("APoZ [73]", apoz_scores(&a)?),
        ("Taylor (17)", taylor(&a, &grad)?),
        ("OBD (16)", obd(producer.weight(), &hess, Slicing::Filter)?),
    ];
    for (name, scores) in criteria {
        let keep = top_k(&scores, keep_n)?;
        let p = prune_filters(&producer, Some(&norm), &consumer, &keep)?;
        let pruned = chain(&p.producer, p.bn.as_ref().expect("bn kept"), &p.consumer)?;
        rows.push(Row {
            structure: "filter (chain)".into(),
            criterion: name.into(),
            removed: 0.5,
            mac_speedup: full.cost(input)?.macs as f64 / pruned.cost(input)?.macs as f64,
            measured: speedup(&full, &pruned, &x, reps)?,
            error: relative_error(&y_full, &fast(&pruned, &x)?),
        });
    }
    let (p, sel) = thinet_prune(
        &producer,
        Some(&norm),
        &consumer,
        &a,
        keep_n,
        4000,
        &mut rng.fork(2),
    )?;
    let pruned = chain(&p.producer, p.bn.as_ref().expect("bn kept"), &p.consumer)?;
    rows.push(Row {
        structure: "filter (chain)".into(),
        criterion: format!(
            "ThiNet [74] + LS scaling (sampled err {:.4})",
            sel.error_scaled.sqrt()
        ),
        removed: 0.5,
        mac_speedup: full.cost(input)?.macs as f64 / pruned.cost(input)?.macs as f64,
        measured: speedup(&full, &pruned, &x, reps)?,
        error: relative_error(&y_full, &fast(&pruned, &x)?),
    });

    // --- Single-layer transforms on the consumer layer (128 → 128, 3×3, 28×28).
    let layer = Layer::Conv(consumer_layer.clone());
    let dense = Block::single(consumer_layer.clone());
    let y_dense = fast(&dense, &a)?;
    let mut single =
        |structure: &str, criterion: &str, t: &dyn Transform, removed: f64| -> Result<()> {
            let out = t.apply(&layer, input)?;
            rows.push(Row {
                structure: structure.into(),
                criterion: criterion.into(),
                removed,
                mac_speedup: out.report.mac_speedup(),
                measured: speedup(&dense, &out.block, &a, reps)?,
                error: relative_error(&y_dense, &fast(&out.block, &a)?),
            });
            Ok(())
        };
    for g in [2usize, 4] {
        single(
            "connection → grouped",
            &format!("block-diagonal, {g} groups"),
            &ConnectionGroups { groups: g },
            1.0 - 1.0 / g as f64,
        )?;
    }
    for f in [0.5, 0.75] {
        single(
            "group-wise [66]",
            "magnitude L2",
            &GroupwisePrune { fraction: f },
            f,
        )?;
    }
    for f in [0.9, 0.95] {
        single(
            "unstructured CSR",
            "magnitude |w|",
            &MagnitudeSparse { fraction: f },
            f,
        )?;
    }
    single(
        "perforation [68]",
        "grid 2×2",
        &Perforation {
            mask: MaskKind::Grid((2, 2)),
        },
        0.75,
    )?;
    single(
        "perforation [68]",
        "uniform",
        &Perforation {
            mask: MaskKind::Uniform {
                fraction: 0.5,
                seed: 7,
            },
        },
        0.5,
    )?;
    let impacts = perforation_impacts(&y_nb, &y_nb)?; // ∂(½‖y‖²)/∂y = y
    single(
        "perforation [68]",
        "impact (17)",
        &Perforation {
            mask: MaskKind::Impact {
                impacts,
                fraction: 0.5,
            },
        },
        0.5,
    )?;

    // --- Kernel shape: a 5×5 layer (AlexNet conv2-like, 64 → 192, 27×27) trimmed to 3×3.
    // Taps carry a Gaussian envelope exp(−r²/2) around the centre, as the
    // energy of trained filters concentrates there.
    let mut w5 = he(&mut rng, 192, 64, 5);
    for ((_, _, i, j), v) in w5.indexed_iter_mut() {
        let r2 = (i as f32 - 2.0).powi(2) + (j as f32 - 2.0).powi(2);
        *v *= (-r2 / 2.0).exp();
    }
    let k5 = ConvLayer::from_array(w5, ConvSpec::new().with_padding(2))?;
    let x5 = rng.normal_array((1, 64, 27, 27), 1.0);
    let in5 = ActShape::new(64, 27, 27);
    let out = KernelTrim { size: (3, 3) }.apply(&Layer::Conv(k5.clone()), in5)?;
    let d5 = Block::single(k5);
    rows.push(Row {
        structure: "kernel shape 5×5 → 3×3".into(),
        criterion: "tap energy (14)".into(),
        removed: 16.0 / 25.0,
        mac_speedup: out.report.mac_speedup(),
        measured: speedup(&d5, &out.block, &x5, reps)?,
        error: relative_error(&fast(&d5, &x5)?, &fast(&out.block, &x5)?),
    });

    // --- Residual blocks: 4 blocks of (conv, ReLU, conv) at 64 × 28 × 28, one nearly idle.
    let shape = ActShape::new(64, 28, 28);
    let mut blocks = Vec::new();
    for b in 0..4 {
        // Branches scaled by 0.2 (1e-3 for block 2) keep the sum of 4 blocks bounded.
        let scale = if b == 2 { 1e-3 } else { 0.2 };
        let pad = ConvSpec::new().with_padding(1);
        let c1 = ConvLayer::from_array(he(&mut rng, 64, 64, 3), pad)?;
        let c2 = ConvLayer::from_array(he(&mut rng, 64, 64, 3).mapv(|v| v * scale), pad)?;
        blocks.push(Block::new(vec![Op::from(c1), Relu.into(), c2.into()])?);
    }
    let net = ResidualNet::new(shape, blocks)?;
    let xr = rng.normal_array((1, 64, 28, 28), 1.0);
    let scores = net.branch_energy(&xr)?;
    let (small, _) = net.prune(&scores, 0.25)?;
    let run_net = |n: &ResidualNet| -> Result<f64> {
        let s = Instant::now();
        let mut y = xr.clone();
        for b in n.blocks() {
            y = &y + &fast(b.branch(), &y)?;
        }
        std::hint::black_box(&y);
        Ok(s.elapsed().as_secs_f64())
    };
    let (mut t_net, mut t_small) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        t_net.push(run_net(&net)?);
        t_small.push(run_net(&small)?);
    }
    t_net.sort_by(f64::total_cmp);
    t_small.sort_by(f64::total_cmp);
    let residual_speedup = Speedup {
        median: t_net[reps / 2] / t_small[reps / 2],
        best: t_net[0] / t_small[0],
    };
    rows.push(Row {
        structure: "residual block".into(),
        criterion: "branch energy (15)".into(),
        removed: 0.25,
        mac_speedup: 4.0 / 3.0,
        measured: residual_speedup,
        error: relative_error(&net.forward(&xr)?, &small.forward(&xr)?),
    });

    // --- The driver on a 4-layer chain (stage-2 widths), 50 % of MACs, L1 scores.
    let layers: Vec<ChainLayer> = (0..4)
        .map(|_| -> Result<ChainLayer> {
            Ok(ChainLayer {
                conv: conv(&mut rng, 128, 128, 3)?,
                bn: Some(bn(&mut rng, 128)?),
                relu: true,
            })
        })
        .collect::<Result<_>>()?;
    let cnet = ChainNet::new(layers, None, input)?;
    let xc = rng.normal_array((1, 128, 28, 28), 1.0);
    let yc = fast(&cnet.block()?, &xc)?;
    for (scope, sname) in [(Scope::PerLayer, "per layer"), (Scope::Global, "global")] {
        for multiple in [1usize, 16] {
            let config = PruneConfig {
                target: Target::Macs(0.5),
                schedule: Schedule::Iterative { steps: 2 },
                scope,
                multiple,
            };
            let (p, rep) = prune_network(
                &cnet,
                input,
                &config,
                hasten::prune::driver::filter_magnitude(Norm::L1),
            )?;
            rows.push(Row {
                structure: format!("driver, 50 % MACs, {sname}, ×{multiple}"),
                criterion: format!("L1, 2 steps, kept {:?}", rep.channels_after),
                removed: rep.fraction_removed(),
                mac_speedup: rep.mac_speedup(),
                measured: speedup(&cnet.block()?, &p.block()?, &xc, reps)?,
                error: relative_error(&yc, &fast(&p.block()?, &xc)?),
            });
        }
    }

    print(&rows);

    // --- Density sweep: group-wise and CSR against dense on a ResNet-18
    // layer3 3×3 convolution (256 → 256, 14×14), interleaved medians.
    let (ch, hw3) = (256usize, 14usize);
    let l3 = ConvLayer::from_array(he(&mut rng, ch, ch, 3), ConvSpec::new().with_padding(1))?;
    let in3 = ActShape::new(ch, hw3, hw3);
    let x3 = rng.normal_array((1, ch, hw3, hw3), 1.0);
    let d3 = Block::single(l3.clone());
    let l3 = Layer::Conv(l3);
    println!();
    println!("| density | group-wise MACs | group-wise median | group-wise best | CSR MACs | CSR median | CSR best |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for density in [0.05, 0.1, 0.25, 0.5, 0.75, 0.9] {
        let gw = GroupwisePrune {
            fraction: 1.0 - density,
        }
        .apply(&l3, in3)?;
        let sp = MagnitudeSparse {
            fraction: 1.0 - density,
        }
        .apply(&l3, in3)?;
        println!(
            "| {density:.2} | {:.2}× | {} | {:.2}× | {} |",
            gw.report.mac_speedup(),
            speedup(&d3, &gw.block, &x3, reps)?,
            sp.report.mac_speedup(),
            speedup(&d3, &sp.block, &x3, reps)?,
        );
    }
    Ok(())
}

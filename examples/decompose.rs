//! Every decomposition of section 2 of the survey on one ResNet-18-shaped
//! layer (3×3, 256→256, 14×14 input, padding 1) with seeded weights whose
//! channel spectrum decays like a trained layer's.
//!
//! One row per method: the channel counts inside the block (the ranks), MAC
//! speed-up, parameter ratio, weight error, the relative output error against
//! the dense layer on a ReLU input, decomposition time, and the
//! measured block time against the dense layer's, batch 1, medians of
//! repeated runs: `hasten::fastconv::forward` (plans and packs the weights on
//! every call) and a pre-packed `fastconv::Plan` (steady-state inference).
//!
//! `cargo run --release --example decompose`

use std::time::Instant;

use hasten::core::ndarray::{Array1, Array4, Axis};
use hasten::core::{
    relative_error, ActShape, Block, Compressed, ConvLayer, ConvSpec, Layer, SeededRng, Transform,
};
use hasten::tensor_decomp::asymmetric::{layer_responses, sample_patches};
use hasten::tensor_decomp::cp::{
    CpAlgorithm, CpConv, CpOptions, CpVariant, LmOptions, PowerOptions,
};
use hasten::tensor_decomp::{
    AsymmetricReconstruction, BiclusterCp, BiclusterSvd, Monochromatic, RankSpec, SeparableFilters,
    TruncatedSvd, TtConv, Tucker2,
};

/// A 256×256×3×3 kernel: `Σ_k σ_k a_k ⊗ B_k` with `σ_k = (1 + k)^{−1}` over
/// 256 channel components, each spatial slice mostly rank one (smooth) plus
/// 10 % noise — the channel and spatial structure trained kernels show.
fn kernel(rng: &mut SeededRng) -> Array4<f32> {
    let (n, c, k) = (256, 256, 256);
    let sigma = Array1::from_shape_fn(k, |i| 1.0 / (1.0 + i as f64));
    let a =
        rng.normal_array_f64((n, k), 1.0 / (n as f64).sqrt()) * sigma.view().insert_axis(Axis(0));
    let mut b = Array4::<f64>::zeros((k, c, 3, 3));
    for kk in 0..k {
        for ch in 0..c {
            let (u, v) = (rng.normal_array_f64(3, 1.0), rng.normal_array_f64(3, 1.0));
            for i in 0..3 {
                for j in 0..3 {
                    b[[kk, ch, i, j]] = u[i] * v[j] + 0.1 * rng.normal();
                }
            }
        }
    }
    let w = a.dot(&b.into_shape_with_order((k, c * 9)).expect("standard"));
    w.mapv(|v| (v * 0.05) as f32)
        .into_shape_with_order((n, c, 3, 3))
        .expect("standard")
}

fn median_ms(block: &Block, x: &Array4<f32>, runs: usize) -> hasten::core::Result<f64> {
    hasten::fastconv::forward(block, x)?; // warm-up
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            hasten::fastconv::forward(block, x).map(|_| s.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<hasten::core::Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Steady-state time: a pre-packed `fastconv::Plan` run repeatedly.
fn plan_ms(block: &Block, x: &Array4<f32>, runs: usize) -> hasten::core::Result<f64> {
    let shape = ActShape::new(x.shape()[1], x.shape()[2], x.shape()[3]);
    let mut plan = hasten::fastconv::Plan::new(block, shape, x.shape()[0])?;
    plan.run(x)?; // warm-up
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        plan.run(x)?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn rank_of(c: &Compressed) -> String {
    // The channel counts between the ops of the block.
    let shapes = c.block.shapes(c.report.input).expect("valid block");
    let inner: Vec<String> = shapes[1..shapes.len() - 1]
        .iter()
        .map(|s| s.channels.to_string())
        .collect();
    if inner.is_empty() {
        "-".into()
    } else {
        inner.join("/")
    }
}

fn main() -> hasten::core::Result<()> {
    let mut rng = SeededRng::new(2018);
    let input = ActShape::new(256, 14, 14);
    let conv = ConvLayer::new(
        hasten::core::Conv4d::new(kernel(&mut rng))?,
        Some(rng.normal_array(256, 0.1)),
        ConvSpec::new().with_padding(1),
    )?;
    let layer = Layer::Conv(conv.clone());
    let x: Array4<f32> = rng
        .normal_array(input.batched(1), 1.0)
        .mapv(|v: f32| v.max(0.0));

    // Activation samples for the asymmetric reconstruction: patches from a
    // batch of ReLU inputs and the layer's own responses.
    let batch: Array4<f32> = rng
        .normal_array(input.batched(8), 1.0)
        .mapv(|v: f32| v.max(0.0));
    let patches = sample_patches(&conv, &batch, 4000, 1)?;
    let targets = layer_responses(&conv, patches.view())?;

    let runs = 30;
    let dense_block = Block::single(conv.clone());
    let dense_ms = median_ms(&dense_block, &x, runs)?;
    let dense_plan_ms = plan_ms(&dense_block, &x, runs)?;
    let dense_out = hasten::fastconv::forward(&dense_block, &x)?;
    let als = CpOptions::default().with_max_iter(50);
    let methods: Vec<(&str, Box<dyn Transform>)> = vec![
        (
            "channel SVD, 4x",
            Box::new(TruncatedSvd::new(RankSpec::Speedup(4.0))),
        ),
        (
            "channel SVD, EVBMF",
            Box::new(TruncatedSvd::new(RankSpec::Evbmf)),
        ),
        (
            "separable [15], 4x",
            Box::new(SeparableFilters::new(RankSpec::Speedup(4.0))),
        ),
        (
            "CP-ALS [18], 4x",
            Box::new(CpConv::new(RankSpec::Speedup(4.0)).with_als_options(als.clone())),
        ),
        (
            "CP-ALS, rank 64",
            Box::new(CpConv::new(RankSpec::Fixed(64)).with_als_options(als.clone())),
        ),
        (
            "CP 3-way, 4x",
            Box::new(
                CpConv::new(RankSpec::Speedup(4.0))
                    .with_variant(CpVariant::ThreeWay)
                    .with_als_options(als.clone()),
            ),
        ),
        (
            "CP deflation [17], r64",
            Box::new(
                CpConv::new(RankSpec::Fixed(64))
                    .with_algorithm(CpAlgorithm::Deflation)
                    .with_als_options(CpOptions::default().with_max_iter(25)),
            ),
        ),
        (
            "CP power [19], r64",
            Box::new(
                CpConv::new(RankSpec::Fixed(64))
                    .with_algorithm(CpAlgorithm::Power)
                    .with_power_options(PowerOptions {
                        restarts: 3,
                        iterations: 10,
                        polish: 15,
                        seed: 0,
                    }),
            ),
        ),
        (
            "CP-ALS + LM [18], r64",
            Box::new(
                CpConv::new(RankSpec::Fixed(64))
                    .with_als_options(als.clone())
                    .with_lm_refinement(LmOptions {
                        max_iter: 10,
                        ..LmOptions::default()
                    }),
            ),
        ),
        (
            "Tucker-2 [24], EVBMF",
            Box::new(Tucker2::new(RankSpec::Evbmf)),
        ),
        (
            "Tucker-2, 4x",
            Box::new(Tucker2::new(RankSpec::Speedup(4.0))),
        ),
        ("TT conv, 4x", Box::new(TtConv::new(RankSpec::Speedup(4.0)))),
        (
            "monochromatic [17], C1=64",
            Box::new(Monochromatic::new(64)),
        ),
        (
            "bicluster+SVD [17]",
            Box::new(BiclusterSvd::new(4, 4, 16, 16)),
        ),
        (
            "bicluster+CP [17], K=8",
            Box::new(
                BiclusterCp::new(4, 4, RankSpec::Fixed(8))
                    .with_cp_options(CpOptions::default().with_max_iter(25)),
            ),
        ),
        (
            "asymmetric [23] lin, 4x",
            Box::new(AsymmetricReconstruction::new(
                RankSpec::Speedup(4.0),
                patches.clone(),
                targets.clone(),
            )),
        ),
        (
            "asymmetric [23] ReLU, 4x",
            Box::new(
                AsymmetricReconstruction::new(
                    RankSpec::Speedup(4.0),
                    patches.clone(),
                    targets.clone(),
                )
                .nonlinear(true),
            ),
        ),
    ];
    println!(
        "layer 3x3 256->256 on 14x14 (pad 1), batch 1: {:.1} MMACs; dense: fastconv::forward {:.3} ms, pre-packed plan {:.3} ms (medians of {runs})\n",
        layer.cost(input)?.macs as f64 / 1e6,
        dense_ms,
        dense_plan_ms
    );
    println!(
        "{:<26} {:>15} {:>7} {:>7} {:>8} {:>8} {:>7} {:>9} {:>7} {:>8} {:>7}",
        "method",
        "channels",
        "MAC x",
        "param x",
        "w-error",
        "out-err",
        "fit s",
        "fwd ms",
        "fwd x",
        "plan ms",
        "plan x"
    );
    for (name, t) in methods {
        let start = Instant::now();
        let c = t.apply(&layer, input)?;
        let fit_s = start.elapsed().as_secs_f64();
        let block_ms = median_ms(&c.block, &x, runs)?;
        let block_plan_ms = plan_ms(&c.block, &x, runs)?;
        // The fast executor agrees with the block's reference semantics …
        let fast = hasten::fastconv::forward(&c.block, &x)?;
        let reference = c.block.reference_forward(&x)?;
        let agree = relative_error(&reference, &fast);
        assert!(agree < 1e-4, "{name}: fastconv vs reference {agree:e}");
        // … and the output error against the dense layer is what the
        // approximation costs on this input.
        let out_err = relative_error(&dense_out, &fast);
        println!(
            "{:<26} {:>15} {:>7.2} {:>7.2} {:>8.4} {:>8.4} {:>7.2} {:>9.3} {:>7.2} {:>8.3} {:>7.2}",
            name,
            rank_of(&c),
            c.report.mac_speedup(),
            c.report.param_ratio(),
            c.report.weight_error.unwrap_or(f64::NAN),
            out_err,
            fit_s,
            block_ms,
            dense_ms / block_ms,
            block_plan_ms,
            dense_plan_ms / block_plan_ms
        );
    }
    Ok(())
}

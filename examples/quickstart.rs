//! Quickstart: the convolution layers of a ResNet-18 (seeded weights), each run
//! through the reference forward (equation (1) of the survey, evaluated
//! directly) and through `hasten-fastconv`, checked to agree and timed.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::Instant;

use hasten::core::{
    relative_error, ActShape, Block, ConvLayer, ConvSpec, LinearLayer, Result, SeededRng,
};
use hasten::fastconv;

/// One layer of ResNet-18 at 224×224 input: name, input shape, layer.
struct NamedLayer {
    name: String,
    input: ActShape,
    block: Block,
}

fn conv(rng: &mut SeededRng, c: usize, t: usize, k: usize, stride: usize) -> Result<ConvLayer> {
    // He initialisation: std = sqrt(2 / fan_in).
    let std = (2.0 / (c * k * k) as f64).sqrt();
    ConvLayer::from_array(
        rng.normal_array((t, c, k, k), std),
        ConvSpec::new().with_stride(stride).with_padding(k / 2),
    )
}

fn resnet18(rng: &mut SeededRng) -> Result<Vec<NamedLayer>> {
    let mut layers = Vec::new();
    let mut push = |name: String, input: ActShape, block: Block| {
        layers.push(NamedLayer { name, input, block });
    };
    push(
        "conv1".into(),
        ActShape::new(3, 224, 224),
        Block::single(conv(rng, 3, 64, 7, 2)?),
    );
    let mut channels = 64;
    let mut size = 56;
    for (stage, width) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for unit in 0..2 {
            let stride = if stage > 0 && unit == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{unit}", stage + 1);
            push(
                format!("{prefix}.conv1"),
                ActShape::new(channels, size, size),
                Block::single(conv(rng, channels, width, 3, stride)?),
            );
            if stride == 2 {
                push(
                    format!("{prefix}.downsample"),
                    ActShape::new(channels, size, size),
                    Block::single(conv(rng, channels, width, 1, 2)?),
                );
                size /= 2;
            }
            push(
                format!("{prefix}.conv2"),
                ActShape::new(width, size, size),
                Block::single(conv(rng, width, width, 3, 1)?),
            );
            channels = width;
        }
    }
    let fc = LinearLayer::new(rng.normal_array((1000, 512), (1.0f64 / 512.0).sqrt()), None)?;
    push("fc".into(), ActShape::flat(512), Block::single(fc));
    Ok(layers)
}

fn main() -> Result<()> {
    let mut rng = SeededRng::new(2024);
    let layers = resnet18(&mut rng)?;
    println!(
        "{:<22} {:>14} {:>14} {:>10} {:>9} {:>10} {:>10} {:>8} {:>10}",
        "layer", "input", "output", "MMACs", "params", "ref ms", "fast ms", "speedup", "rel err"
    );
    let (mut total_ref, mut total_fast, mut total_macs) = (0.0, 0.0, 0u64);
    for layer in &layers {
        let x = rng.normal_array(layer.input.batched(1), 1.0);
        let out = layer.block.output_shape(layer.input)?;
        let cost = layer.block.cost(layer.input)?;

        let start = Instant::now();
        let reference = layer.block.reference_forward(&x)?;
        let ref_ms = start.elapsed().as_secs_f64() * 1e3;

        // A plan packs the weights and allocates its buffers once; `run` then
        // executes without allocating. Time the median of a few runs.
        let mut plan = fastconv::Plan::new(&layer.block, layer.input, 1)?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            plan.run(&x)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let fast_ms = times[times.len() / 2];
        let fast = plan.run(&x)?.to_owned();

        let err = relative_error(&reference, &fast);
        assert!(
            err < 1e-4,
            "{}: fast forward disagrees with the reference ({err:e})",
            layer.name
        );
        total_ref += ref_ms;
        total_fast += fast_ms;
        total_macs += cost.macs;
        println!(
            "{:<22} {:>14} {:>14} {:>10.1} {:>9} {:>10.2} {:>10.3} {:>7.0}× {:>10.1e}",
            layer.name,
            layer.input.to_string(),
            out.to_string(),
            cost.macs as f64 / 1e6,
            cost.params,
            ref_ms,
            fast_ms,
            ref_ms / fast_ms,
            err
        );
    }
    println!(
        "\nResNet-18 convolutions + fc: {:.2} GMACs; reference {:.0} ms, fastconv {:.1} ms (sum of per-layer medians) ({:.1} GFLOP/s), all layers agree within 1e-4.",
        total_macs as f64 / 1e9,
        total_ref,
        total_fast,
        2.0 * total_macs as f64 / total_fast / 1e6
    );
    Ok(())
}

//! Quickstart: the survey's workflow in miniature.
//!
//! 1. Always (no data needed): a whole ResNet-18 (seeded He-initialised
//!    weights, PyTorch's module names) is checked fast plan against the
//!    reference forward (equation (1) of the survey for every convolution,
//!    evaluated directly), then compressed by Tucker-2 on its residual
//!    stages (Kim et al., survey section 2) through `hasten::pipeline`; it
//!    prints the per-layer and total MAC speed-ups and the measured latency
//!    of both networks.
//! 2. When MNIST is in `data/mnist` (`bash scripts/fetch-datasets.sh`):
//!    LeNet-5 is trained for three epochs, half of its MACs are pruned away
//!    by channel pruning on APoZ (section 3) with one epoch of fine-tuning, and the
//!    test accuracy is printed next to the latency, before and after.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::path::Path;
use std::time::Instant;

use hasten::bench::cpu_model;
use hasten::pipeline::{compress, FineTuneData, Recipe};
use hasten::prelude::*;
use hasten::train::data::{load_mnist, mnist_present, Augment};
use hasten::train::optim::Adam;
use hasten::train::schedule::Cosine;
use hasten::train::{TrainConfig, Trainer};

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Tucker-2 on the 3×3 convolutions of the residual stages, ranks chosen
/// for half of each layer's MACs; latency of both networks at batch 1.
const RESNET_RECIPE: &str = r#"
    latency = { batches = [1], runs = 20 }
    [[steps]]
    select = { names = ["layer*.conv*"] }
    method = { name = "tucker2", rank = { speedup = 2.0 } }
"#;

/// Channel pruning to half of LeNet-5's MACs, channels ranked by their
/// average percentage of zeros (APoZ, Hu et al., survey section 3) on 512
/// training images, then one epoch of fine-tuning on 30 000 images.
const LENET_RECIPE: &str = r#"
    fine_tune = { epochs = 1, lr = 0.001, batch = 64 }
    latency = { batches = [1], runs = 300 }
    calibration = { samples = 512 }
    [[steps]]
    method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "apoz" }
"#;

/// MNIST's training-set pixel mean and standard deviation.
const MNIST_MEAN: f32 = 0.1307;
const MNIST_STD: f32 = 0.3081;

fn main() -> AnyResult<()> {
    println!(
        "CPU: {}, {} threads\n",
        cpu_model(),
        rayon::current_num_threads()
    );
    resnet18_in_miniature()?;
    let data = Path::new("data/mnist");
    if mnist_present(data) {
        lenet5_on_mnist(data)?;
    } else {
        println!(
            "\nMNIST not found in {}: run `bash scripts/fetch-datasets.sh`, then this example also trains LeNet-5, prunes it and prints accuracy next to latency.",
            data.display()
        );
    }
    Ok(())
}

/// Part 1: plan against reference, then Tucker-2 compression and latency.
fn resnet18_in_miniature() -> AnyResult<()> {
    // ResNet-18 at 224×224, 1000 classes: 11.7 M parameters, 1.8 GMACs.
    let graph = resnet18(&ModelConfig::imagenet().with_seed(2024))?;
    let summary = graph.summary()?;

    // One plan for the whole graph: weights packed, batch norms, residual
    // additions and ReLUs fused into the convolutions, activations in one
    // arena reused by liveness. `run` allocates nothing.
    let mut plan = Plan::for_graph(&graph, 1, PlanOptions::default())?;
    let x = SeededRng::new(7).normal_array((1, 3, 224, 224), 1.0);
    let fast = plan.run(&x)?.to_owned();
    let start = Instant::now();
    let reference = graph.reference_forward(&[&x])?.remove(0);
    let reference_ms = start.elapsed().as_secs_f64() * 1e3;
    let err = relative_error(&reference, &fast);
    if err >= 1e-4 {
        return Err(format!("the plan disagrees with the reference ({err:e})").into());
    }
    println!(
        "ResNet-18: {} parameters, {:.2} GMACs; fast plan = reference forward (relative error {err:.1e}; the reference took {reference_ms:.0} ms); activation arena {:.1} MiB ({:.1} MiB without reuse)\n",
        summary.total.params,
        summary.total.macs as f64 / 1e9,
        plan.peak_activation_bytes() as f64 / (1 << 20) as f64,
        plan.naive_activation_bytes() as f64 / (1 << 20) as f64
    );

    println!("ResNet-18 compressed by Tucker-2 (half the MACs of each residual 3×3 convolution):");
    let (_, report) = compress(&graph, &Recipe::from_toml(RESNET_RECIPE)?, None)?;
    print!("{report}");
    Ok(())
}

/// Part 2: LeNet-5 trained on MNIST, pruned to half its MACs, fine-tuned.
fn lenet5_on_mnist(dir: &Path) -> AnyResult<()> {
    let splits = load_mnist(dir)?;
    let train = splits.train.normalized(&[MNIST_MEAN], &[MNIST_STD])?;
    let test = splits.test.normalized(&[MNIST_MEAN], &[MNIST_STD])?;
    let config = TrainConfig {
        epochs: 3,
        batch_size: 128,
        eval_batch_size: 500,
        seed: 2024,
        augment: Augment::new(),
        ..TrainConfig::default()
    };
    let steps = config.epochs * train.labels().len().div_ceil(config.batch_size);
    let graph = lenet5(&ModelConfig::mnist().with_seed(7))?;
    let mut trainer = Trainer::new(graph, Adam::new(), Cosine::new(2e-3, 0.0, steps)?, config)?;
    println!("\nLeNet-5 on MNIST: training 3 epochs (Adam, batch 128)");
    let start = Instant::now();
    trainer.fit(&train, &test, |e| {
        println!(
            "  epoch {}: test accuracy {:.2} %",
            e.epoch + 1,
            100.0 * e.test_accuracy
        )
    })?;
    println!("  trained in {:.0} s", start.elapsed().as_secs_f64());
    let graph = trainer.graph()?;

    println!(
        "LeNet-5 pruned to half its MACs (channels ranked by APoZ), fine-tuned 1 epoch on 30 000 images:"
    );
    let data = FineTuneData {
        train: train.head(30_000),
        test,
    };
    let (_, report) = compress(&graph, &Recipe::from_toml(LENET_RECIPE)?, Some(&data))?;
    print!("{report}");
    if let (Some(before), Some(after)) = (report.accuracy_before, report.accuracy_after) {
        println!(
            "  test accuracy {:.2} % → {:.2} % ({:+.2} points) for {:.2}× fewer MACs",
            100.0 * before,
            100.0 * after,
            100.0 * (after - before),
            report.mac_speedup()
        );
    }
    Ok(())
}

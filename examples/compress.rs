//! Compress the built-in ResNet-18 (seeded weights, 3×224×224, no data
//! needed) by a recipe — by default `recipes/tucker2-int8.toml`: Tucker-2 on
//! the residual stages' 3×3 convolutions, then int8 on the factors — and
//! print the per-layer and total MAC speed-up, the weight bytes and the
//! measured latency of the original and compressed networks (batch 1 and 8,
//! fast plans, every core).
//!
//! `cargo run --release --example compress [-- RECIPE.toml|RECIPE.json]`

use std::path::PathBuf;

use hasten::models::{resnet18, ModelConfig};
use hasten::pipeline::{compress, Recipe};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/tucker2-int8.toml"),
        PathBuf::from,
    );
    let recipe = Recipe::from_path(&path)?;
    let graph = resnet18(&ModelConfig::imagenet().with_seed(0))?;
    println!(
        "ResNet-18 by {} ({} steps, no data: no fine-tuning)\n",
        path.file_name().map_or(path.display().to_string(), |n| n
            .to_string_lossy()
            .into_owned()),
        recipe.steps.len()
    );
    let (_, report) = compress(&graph, &recipe, None)?;
    print!("{report}");
    Ok(())
}

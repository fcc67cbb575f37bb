//! `hasten eval`: top-1 accuracy on an MNIST-format IDX test set.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hasten_core::ndarray::Axis;
use hasten_train::data::ImageSet;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{fail, Context, Result};
use crate::model::{
    check_batch, check_normalization, check_shape, compile, load, single_input, ModelArgs,
};

/// The file `dir/name`, or `dir/name.gz` when only that exists.
fn idx_path(dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if !raw.exists() && gz.exists() {
        gz
    } else {
        raw
    }
}

pub(crate) fn eval(
    args: &ModelArgs,
    dir: &Path,
    mean: f32,
    std: f32,
    batch: usize,
    limit: Option<usize>,
) -> Result<()> {
    check_batch(batch)?;
    check_normalization(mean, std)?;
    if limit == Some(0) {
        return Err(fail("--limit must be at least 1"));
    }
    if !dir.is_dir() {
        return Err(fail(format!("{}: no such directory", dir.display())));
    }
    let graph = load(args, batch)?;
    let shape = single_input(&graph)?;
    let classes = graph
        .output_shapes()
        .first()
        .map(|s| s.channels * s.height * s.width)
        .ok_or_else(|| fail("the model has no outputs"))?;
    let mut set = ImageSet::from_idx_files(
        &idx_path(dir, "t10k-images-idx3-ubyte"),
        &idx_path(dir, "t10k-labels-idx1-ubyte"),
        classes,
    )
    .context(|| format!("cannot load the test set in {}", dir.display()))?;
    if let Some(k) = limit {
        set = set.head(k);
    }
    let images = set.images();
    check_shape(shape, images.shape(), "the test images")?;
    let n = images.shape()[0];
    let full = batch.min(n);
    let mut plan = compile(&graph, full)?;
    let mut tail_plan = None;
    let bar = ProgressBar::new(n as u64);
    if !std::io::stdout().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} images {elapsed}") {
        bar.set_style(style);
    }
    let mut correct = 0usize;
    for (k, chunk) in images.axis_chunks_iter(Axis(0), full).enumerate() {
        let x = chunk.mapv(|v| (v - mean) / std);
        let m = x.shape()[0];
        let p = if m == full {
            &mut plan
        } else {
            tail_plan.get_or_insert(compile(&graph, m)?)
        };
        let outputs = p
            .run_all(&[&x])
            .context(|| "running the plan failed".into())?;
        let y = outputs
            .get(0)
            .ok_or_else(|| fail("the model has no outputs"))?;
        for (i, row) in y.outer_iter().enumerate() {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (j, &v)| {
                        if v > acc.1 {
                            (j, v)
                        } else {
                            acc
                        }
                    },
                )
                .0;
            if best == set.labels()[k * full + i] {
                correct += 1;
            }
        }
        bar.inc(m as u64);
    }
    bar.finish_and_clear();
    println!(
        "accuracy: {:.2} % ({correct}/{n})",
        100.0 * correct as f64 / n as f64
    );
    Ok(())
}

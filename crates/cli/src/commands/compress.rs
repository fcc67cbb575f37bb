//! `hasten compress`: a recipe applied to the model by `hasten::pipeline`,
//! with fine-tuning and accuracy on MNIST-format data when given; prints the
//! report and exports the compressed network to ONNX (and, when asked, its
//! dense parameters to a weight file).

use std::path::Path;

use hasten::pipeline::{FineTuneData, Recipe};
use hasten_train::data::{load_mnist, ImageSet};

use crate::error::{fail, Context, Result};
use crate::model::{check_normalization, load, ModelArgs};

/// `set` with its pixels mapped to `(v − mean) / std`.
fn normalized(set: &ImageSet, mean: f32, std: f32) -> Result<ImageSet> {
    ImageSet::new(
        set.images().mapv(|v| (v - mean) / std),
        set.labels().to_vec(),
        set.classes(),
    )
    .context(|| "cannot normalise the data".into())
}

/// Loads and normalises the splits in `dir`, keeping at most `limit`
/// training samples.
pub(crate) fn load_data(
    dir: &Path,
    mean: f32,
    std: f32,
    limit: Option<usize>,
) -> Result<FineTuneData> {
    check_normalization(mean, std)?;
    if limit == Some(0) {
        return Err(fail("--train-limit must be at least 1"));
    }
    if !dir.is_dir() {
        return Err(fail(format!("{}: no such directory", dir.display())));
    }
    let splits =
        load_mnist(dir).context(|| format!("cannot load the data set in {}", dir.display()))?;
    let train = match limit {
        Some(k) => splits.train.head(k),
        None => splits.train,
    };
    Ok(FineTuneData {
        train: normalized(&train, mean, std)?,
        test: normalized(&splits.test, mean, std)?,
    })
}

pub(crate) fn compress(
    args: &ModelArgs,
    recipe: &Path,
    data: Option<(&Path, f32, f32, Option<usize>)>,
    output: &Path,
    report_path: Option<&Path>,
    weights_out: Option<&Path>,
) -> Result<()> {
    let recipe = Recipe::from_path(recipe)
        .context(|| format!("cannot use the recipe {}", recipe.display()))?;
    let graph = load(args, 1)?;
    let data = data
        .map(|(dir, mean, std, limit)| load_data(dir, mean, std, limit))
        .transpose()?;
    println!(
        "compressing {} by {} step(s){}",
        args.model,
        recipe.steps.len(),
        if data.is_some() {
            ", with fine-tuning"
        } else {
            ""
        }
    );
    let (compressed, report) = hasten::pipeline::compress(&graph, &recipe, data.as_ref())
        .context(|| "compression failed".into())?;
    hasten_onnx::export_file(&compressed, output)
        .context(|| format!("cannot export {}", output.display()))?;
    if let Some(p) = report_path {
        std::fs::write(p, report.to_json()).context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = weights_out {
        hasten_onnx::weights::save_weights(&compressed, p)
            .context(|| format!("cannot write {}", p.display()))?;
    }
    print!("{report}");
    println!("wrote {}", output.display());
    if let Some(p) = weights_out {
        println!("wrote {}", p.display());
    }
    Ok(())
}

//! Fine-tuning that does not undo the compression it follows, on real data
//! slices (skipped with a message when the data sets are absent):
//! - fixed-point 4-bit weights with LSQ-scaled step-size gradients (Esser et
//!   al.; survey section 5) keep at least the post-training accuracy of
//!   LeNet-5 on MNIST, where the unscaled gradients collapsed it to chance;
//! - CP-decomposed residual convolutions of the trained ResNet-8 (survey
//!   section 2) keep their post-decomposition accuracy when the factors are
//!   fine-tuned at a tenth of the network's rate, where the full rate loses
//!   accuracy (the instability Lebedev et al. report).

use std::path::Path;

use hasten::core::Graph;
use hasten::models::{lenet5, ModelConfig};
use hasten::onnx::{import_file, ImportOptions};
use hasten::pipeline::{compress, FineTuneData, Recipe};
use hasten::train::data::{load_mnist, mnist_present, Splits};
use hasten::train::optim::Adam;
use hasten::train::schedule::Constant;
use hasten::train::{TrainConfig, Trainer};

/// The first `train` / `test` images of the data set in `data/name`,
/// normalised with `mean` / `std`; `None` (with a message) when absent.
fn slices(name: &str, train: usize, test: usize, mean: f32, std: f32) -> Option<FineTuneData> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name);
    if !mnist_present(&dir) {
        eprintln!(
            "skipped: {name} not in {} (scripts/fetch-datasets.sh)",
            dir.display()
        );
        return None;
    }
    let s = load_mnist(&dir).unwrap();
    Some(Splits {
        train: s.train.head(train).normalized(&[mean], &[std]).unwrap(),
        test: s.test.head(test).normalized(&[mean], &[std]).unwrap(),
    })
}

/// Accuracy right after the single step's transform and after its
/// fine-tuning.
fn before_and_after(graph: &Graph, recipe: &str, data: &FineTuneData) -> (f64, f64) {
    let (_, report) = compress(graph, &Recipe::from_toml(recipe).unwrap(), Some(data)).unwrap();
    let step = &report.steps[0];
    (
        step.accuracy_after_transform.unwrap(),
        step.accuracy_after_fine_tune.unwrap(),
    )
}

#[test]
fn fixed_point_fine_tuning_keeps_the_post_training_accuracy() {
    let Some(data) = slices("mnist", 6000, 2000, 0.1307, 0.3081) else {
        return;
    };
    let config = TrainConfig {
        epochs: 2,
        batch_size: 64,
        seed: 5,
        ..TrainConfig::default()
    };
    let net = lenet5(&ModelConfig::mnist().with_seed(7)).unwrap();
    let mut t = Trainer::new(net, Adam::new(), Constant::new(2e-3).unwrap(), config).unwrap();
    t.fit(&data.train, &data.test, |_| {}).unwrap();
    let trained = t.graph().unwrap();
    let recipe = r#"
mode = "one-shot"
fine_tune = { epochs = 1, lr = 0.001, batch = 64 }
latency = { batches = [] }
[[steps]]
method = { name = "fixed-point", bits = 4, granularity = "per-channel" }
"#;
    let (post, tuned) = before_and_after(&trained, recipe, &data);
    eprintln!("fixed-point 4-bit: {post:.4} after the transform, {tuned:.4} fine-tuned");
    assert!(post > 0.8, "post-training 4-bit accuracy {post}");
    assert!(tuned >= post, "{tuned} < {post}");
}

#[test]
fn cp_factors_at_a_tenth_of_the_rate_keep_the_decomposed_accuracy() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/resnet8-fashion.onnx");
    if !model.exists() {
        eprintln!(
            "skipped: {} absent (examples/train_fashion)",
            model.display()
        );
        return;
    }
    let Some(data) = slices("fashion-mnist", 2000, 1000, 0.2860, 0.3530) else {
        return;
    };
    let graph = import_file(&model, &ImportOptions::default()).unwrap();
    let recipe = |scale: &str| {
        format!(
            r#"
mode = "one-shot"
fine_tune = {{ epochs = 1, lr = 0.001, batch = 64{scale} }}
latency = {{ batches = [] }}
[[steps]]
select = {{ names = ["layer*.conv*"] }}
method = {{ name = "cp", rank = {{ speedup = 2.0 }} }}
"#
        )
    };
    let (post, full) = before_and_after(&graph, &recipe(""), &data);
    let (post_again, slow) = before_and_after(&graph, &recipe(", factor_lr_scale = 0.1"), &data);
    eprintln!("CP: {post:.4} decomposed, {full:.4} at the full rate, {slow:.4} at 0.1x");
    assert_eq!(post, post_again, "the decomposition is deterministic");
    assert!(full < post, "the full rate did not lose: {full} vs {post}");
    assert!(slow >= post, "{slow} < {post}");
}

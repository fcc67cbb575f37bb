//! The shipped combined recipe (`recipes/resnet8-combined.toml`: channel
//! pruning → Tucker-2 → int8, gradual, batch norms recalibrated, fine-tuned
//! by distillation) runs end to end on the small ResNet and a small data
//! slice, and its result exports to ONNX that Hasten's importer turns back
//! into a network computing the same function.

use hasten::core::grad::Mode;
use hasten::core::ndarray::Array4;
use hasten::core::{relative_error, SeededRng};
use hasten::models::{resnet8, ModelConfig};
use hasten::onnx::{export_bytes, import_bytes, ImportOptions};
use hasten::pipeline::{compress, Event, Recipe};
use hasten::train::data::{ImageSet, Splits};
use hasten::train::{ParamStore, TrainTape};

#[test]
fn the_combined_recipe_compresses_resnet8_and_its_onnx_export_reproduces_it() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/resnet8-combined.toml");
    let mut recipe = Recipe::from_path(&path).unwrap();
    recipe.latency.batches.clear();
    if let Some(f) = &mut recipe.fine_tune {
        f.batch = 16;
    }
    recipe.recalibrate_bn = 2;
    recipe.calibration.samples = 16;
    let g = resnet8(&ModelConfig::mnist().with_random_batch_norm()).unwrap();
    let mut rng = SeededRng::new(21);
    let mut set = |n: usize| {
        let images = rng.uniform_array((n, 1, 28, 28), 0.0, 1.0);
        ImageSet::new(images, (0..n).map(|i| i % 10).collect(), 10).unwrap()
    };
    let data = Splits {
        train: set(32),
        test: set(16),
    };
    let (c, report) = compress(&g, &recipe, Some(&data)).unwrap();
    use Event::{FineTune, RecalibrateBn, Transform};
    assert_eq!(
        report.events,
        [
            Transform(1),
            RecalibrateBn(1),
            FineTune(1),
            Transform(2),
            RecalibrateBn(2),
            FineTune(2),
            Transform(3),
            RecalibrateBn(3),
            FineTune(3),
        ]
    );
    let (before, after) = (g.cost().unwrap(), c.cost().unwrap());
    assert!(
        after.macs * 2 < before.macs,
        "{} → {} MACs",
        before.macs,
        after.macs
    );
    assert!(c.nodes().iter().any(|n| n.kind() == "block"));
    // The int8 layers it ends with (inside the Tucker blocks too) train on
    // the f32 kernels: its fine-tuning after the int8 step, and any later
    // one, runs no node on the f64 reference.
    let int8 = c
        .nodes()
        .iter()
        .flat_map(|n| hasten::core::grad::inner_ops(n.op()))
        .filter(|op| matches!(op, hasten::core::Op::Int8Conv(_)))
        .count();
    assert!(int8 > 10, "{int8} int8 ops");
    let store = ParamStore::from_graph(&c);
    let x: Array4<f32> = SeededRng::new(4).uniform_array((2, 1, 28, 28), 0.0, 1.0);
    let tape = TrainTape::forward(&c, &store, &[x], Mode::train(1)).unwrap();
    assert!(
        tape.reference_nodes().is_empty(),
        "{:?}",
        tape.reference_nodes()
    );
    // Export, re-import, same function.
    let back = import_bytes(&export_bytes(&c).unwrap(), &ImportOptions::default()).unwrap();
    let x: Array4<f32> = SeededRng::new(5).uniform_array((3, 1, 28, 28), 0.0, 1.0);
    let a = c.reference_forward(&[&x]).unwrap().remove(0);
    let b = back.reference_forward(&[&x]).unwrap().remove(0);
    let err = relative_error(&a, &b);
    assert!(err < 1e-5, "ONNX round trip: relative error {err:e}");
}

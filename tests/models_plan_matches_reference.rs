//! Every builder of `hasten-models`, compiled into one fastconv `Plan`, equals
//! the graph's reference forward (relative error < 1e-4) — fused and
//! unfused, at batch 1 and 3, with random batch-norm statistics so the fused
//! batch norms are not identities; the small models on every ISA path this
//! CPU has.

use hasten::core::ndarray::Array4;
use hasten::core::{relative_error, Graph, SeededRng};
use hasten::fastconv::{Isa, Plan, PlanOptions};
use hasten::models::{ModelConfig, ARCHITECTURES};

fn plan_error(graph: &Graph, batch: usize, options: PlanOptions) -> f64 {
    let shape = graph.inputs()[0].shape();
    let x: Array4<f32> = SeededRng::new(batch as u64).normal_array(shape.batched(batch), 1.0);
    let expected = graph.reference_forward(&[&x]).unwrap().remove(0);
    let mut plan = Plan::for_graph(graph, batch, options).unwrap();
    let got = plan.run(&x).unwrap().to_owned();
    assert!(got.iter().all(|v| v.is_finite()));
    relative_error(&expected, &got)
}

/// The builder's graph at a test-sized input: ImageNet models at 32×32 (their
/// stages and strides unchanged), the 28×28 models as they are.
fn test_graph(name: &str) -> Option<Graph> {
    let arch = ARCHITECTURES.iter().find(|a| a.name == name).unwrap();
    let config: ModelConfig = (arch.default_config)()
        .with_seed(3)
        .with_random_batch_norm();
    let config = if config.input.height > 32 {
        config.with_input_size(32)
    } else {
        config
    };
    (arch.build)(&config).ok()
}

#[test]
fn every_builder_runs_as_one_plan() {
    for arch in ARCHITECTURES {
        let Some(graph) = test_graph(arch.name) else {
            // VGG-16 has no adaptive pooling: it needs 224×224 inputs, whose
            // reference forward (15.5 GMACs evaluated directly) is left to
            // the release-mode test below.
            assert_eq!(arch.name, "vgg16", "{} does not build at 32×32", arch.name);
            continue;
        };
        for fuse in [true, false] {
            for batch in [1, 3] {
                let options = PlanOptions {
                    fuse,
                    ..PlanOptions::default()
                };
                let err = plan_error(&graph, batch, options);
                assert!(
                    err < 1e-4,
                    "{} (fuse {fuse}, batch {batch}): {err:e}",
                    arch.name
                );
            }
        }
    }
}

#[test]
fn small_models_on_every_isa_path() {
    for name in ["lenet5", "resnet8", "small_vgg", "small_mobilenet"] {
        let graph = test_graph(name).unwrap();
        for isa in Isa::supported() {
            let options = PlanOptions {
                isa,
                ..PlanOptions::default()
            };
            let err = plan_error(&graph, 2, options);
            assert!(err < 1e-4, "{name} on {isa:?}: {err:e}");
        }
    }
}

#[test]
fn vgg16_at_224() {
    if cfg!(debug_assertions) {
        println!("vgg16_at_224: skipped in debug builds (its reference forward takes minutes); run `cargo test --release --test models_plan_matches_reference`");
        return;
    }
    let arch = ARCHITECTURES.iter().find(|a| a.name == "vgg16").unwrap();
    let graph = (arch.build)(&ModelConfig::imagenet().with_seed(5)).unwrap();
    let err = plan_error(&graph, 1, PlanOptions::default());
    assert!(err < 1e-4, "vgg16: {err:e}");
}

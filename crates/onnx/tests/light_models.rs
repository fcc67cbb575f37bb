//! The real topologies of the PyPI onnx package's backend test data
//! (`onnx/backend/test/data/light`: ResNet-50, SqueezeNet, ShuffleNet,
//! VGG-19, DenseNet-121, Inception, AlexNet, ZFNet), with seeded random
//! weights in place of their `ConstantOfShape` placeholders, prepared and run
//! with onnxruntime by `scripts/light_models.py`, then imported and run with
//! the reference forward. Models using an op Hasten lacks (LRN) must be
//! refused with a typed error naming it. The reference forward is slow in
//! debug builds, so the heavy networks (ResNet-50, VGG-19, DenseNet-121,
//! Inception-v2) run only with `HASTEN_LIGHT_ALL=1`, best in release:
//! `HASTEN_LIGHT_ALL=1 cargo test --release -p hasten-onnx --test
//! light_models -- --nocapture` prints each model's import and forward time.

mod common;

use std::process::Command;

use hasten_core::relative_error;
use hasten_onnx::{import_file, ImportOptions, OnnxError};
use ndarray::{Array4, ArrayD};

const LIGHT: &[&str] = &["light_squeezenet", "light_shufflenet"];
const HEAVY: &[&str] = &[
    "light_resnet50",
    "light_vgg19",
    "light_densenet121",
    "light_inception_v2",
];
const LRN: &[&str] = &["light_bvlc_alexnet", "light_zfnet512", "light_inception_v1"];

#[test]
fn light_topologies_match_onnxruntime() {
    let Some(python) = common::python_with_ort("onnx backend light models") else {
        return;
    };
    let dir = common::scratch("light");
    let status = Command::new(python)
        .arg(common::workspace_root().join("scripts/light_models.py"))
        .arg(&dir)
        .status()
        .expect("run light_models.py");
    assert!(status.success(), "light_models.py failed");
    let all = std::env::var_os("HASTEN_LIGHT_ALL").is_some();
    if !all {
        eprintln!("SKIPPED (set HASTEN_LIGHT_ALL=1 to run): {HEAVY:?}");
    }
    let run: Vec<&str> = LIGHT
        .iter()
        .chain(if all { HEAVY } else { &[] })
        .copied()
        .collect();
    for name in run {
        let x: ArrayD<f32> = ndarray_npy::read_npy(dir.join(format!("{name}_input.npy"))).unwrap();
        let want: ArrayD<f32> =
            ndarray_npy::read_npy(dir.join(format!("{name}_output.npy"))).unwrap();
        let x: Array4<f32> = x.into_dimensionality().unwrap();
        let start = std::time::Instant::now();
        let g = import_file(dir.join(format!("{name}.onnx")), &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let imported = start.elapsed();
        let got = g.reference_forward(&[&x]).unwrap().remove(0);
        let forward = start.elapsed() - imported;
        let got = got.into_shape_with_order(want.raw_dim()).unwrap();
        let err = relative_error(&want, &got);
        eprintln!(
            "{name}: {} nodes, relative error {err:.2e}, import {:.2} s, reference forward {:.2} s",
            g.nodes().len(),
            imported.as_secs_f64(),
            forward.as_secs_f64()
        );
        assert!(err < 1e-4, "{name}: relative error {err}");
    }
    for name in LRN {
        match import_file(dir.join(format!("{name}.onnx")), &ImportOptions::default()) {
            Err(OnnxError::UnsupportedOp { op_type, .. }) => assert_eq!(op_type, "LRN", "{name}"),
            other => panic!("{name}: expected LRN to be refused, got {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

//! The real EfficientNet-Lite0: import it and reproduce the original
//! framework's logits.

mod common;

use hasten_core::{relative_error, NodeOp, Op};
use hasten_onnx::{import_file, ImportOptions};
use ndarray::{s, Array2, Array4};
use ndarray_npy::read_npy;

#[test]
fn efficientnet_lite0_reproduces_logits() {
    let Some(dir) = common::model_dir("efficientnet_lite0") else {
        return;
    };
    let graph = import_file(dir.join("model.onnx"), &ImportOptions::default()).expect("import");
    // The TF-"same" shape subgraphs fold away and their zero pads merge into
    // the stride-2 convolutions.
    let kinds: Vec<&str> = graph.nodes().iter().map(|n| n.kind()).collect();
    assert!(!kinds.contains(&"pad"), "{kinds:?}");
    let convs = graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op(), NodeOp::Op(Op::Conv(_))))
        .count();
    assert_eq!(convs, 49);
    // Every initializer of the file (4 631 000 values) lands in a layer.
    assert_eq!(graph.parameter_count(), 4_631_000);

    let inputs: Array4<f32> = read_npy(dir.join("inputs.npy")).expect("inputs.npy");
    let logits: Array2<f32> = read_npy(dir.join("logits.npy")).expect("logits.npy");
    let images = 2;
    let x = inputs.slice(s![..images, .., .., ..]).to_owned();
    let y = graph.reference_forward(&[&x]).expect("forward").remove(0);
    assert_eq!(y.shape(), &[images, 1000, 1, 1]);
    for i in 0..images {
        let got = y.slice(s![i, .., 0, 0]);
        let want = logits.slice(s![i, ..]);
        let err = relative_error(&want, &got);
        eprintln!("image {i}: relative error {err:.3e}");
        assert!(err < 1e-4, "image {i}: relative error {err}");
    }
}

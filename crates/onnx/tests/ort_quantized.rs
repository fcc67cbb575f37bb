//! Models quantized by onnxruntime's own static int8 quantization
//! (`onnxruntime.quantization.quantize_static` through
//! `scripts/ort_quantize.py`, uint8 activations, per-channel int8 weights)
//! import onto Hasten's `Int8Conv` and give onnxruntime's outputs, in both
//! formats: QOperator (`QuantizeLinear → QLinearConv … → DequantizeLinear`)
//! and QDQ (`QuantizeLinear → DequantizeLinear` pairs around float `Conv`s
//! with `DequantizeLinear` int8 weights and int32 biases).
//! Without a Python that has onnxruntime the test skips with a message.

mod common;

use std::process::Command;

use hasten_core::graph::{Graph, GraphBuilder};
use hasten_core::op::{Op, Relu};
use hasten_core::{ActShape, ConvLayer, ConvSpec, NodeOp, SeededRng};
use hasten_onnx::{export_file, import_file, ImportOptions};
use ndarray::{Array4, ArrayD};

/// Three convolutions (3×3 same, 3×3 stride 2, 1×1) with ReLUs between them:
/// onnxruntime fuses each ReLU into the preceding QLinearConv's output range.
fn float_model(rng: &mut SeededRng) -> Graph {
    let conv = |rng: &mut SeededRng, t: usize, c: usize, k: usize, stride: usize| {
        ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((t, c, k, k), 0.3)).unwrap(),
            Some(rng.normal_array(t, 0.1)),
            ConvSpec::new().with_stride(stride).with_padding(k / 2),
        )
        .unwrap()
    };
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(3, 12, 12));
    let h = b.op("conv1", conv(rng, 8, 3, 3, 1), x);
    let h = b.op("relu1", Relu, h);
    let h = b.op("conv2", conv(rng, 12, 8, 3, 2), h);
    let h = b.op("relu2", Relu, h);
    let y = b.op("conv3", conv(rng, 5, 12, 1, 1), h);
    b.output(y);
    b.build().unwrap()
}

#[test]
fn onnxruntime_static_int8_qoperator_model_imports_and_matches() {
    quantized_model_imports_and_matches("qoperator");
}

#[test]
fn onnxruntime_static_int8_qdq_model_imports_and_matches() {
    quantized_model_imports_and_matches("qdq");
}

/// Quantizes [`float_model`] with onnxruntime in `format`, imports it and
/// compares with onnxruntime's output of the quantized model.
fn quantized_model_imports_and_matches(format: &str) {
    let what = format!("onnxruntime static int8 quantization ({format})");
    let Some(python) = common::python_with_ort(&what) else {
        return;
    };
    let mut rng = SeededRng::new(11);
    let graph = float_model(&mut rng);
    let dir = common::scratch(&format!("ort-quantized-{format}"));
    let (float_path, quant_path) = (dir.join("float.onnx"), dir.join("int8.onnx"));
    export_file(&graph, &float_path).unwrap();
    let calib: Array4<f32> = rng.normal_array((16, 3, 12, 12), 1.0);
    let x: Array4<f32> = rng.normal_array((3, 3, 12, 12), 1.0);
    let (calib_path, x_path, y_path) =
        (dir.join("calib.npy"), dir.join("x.npy"), dir.join("y.npy"));
    ndarray_npy::write_npy(&calib_path, &calib).unwrap();
    ndarray_npy::write_npy(&x_path, &x).unwrap();
    let out = Command::new(python)
        .arg(common::workspace_root().join("scripts/ort_quantize.py"))
        .args([&float_path, &calib_path, &quant_path])
        .arg(format)
        .args([&x_path, &y_path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ort_quantize.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let quantized = import_file(&quant_path, &ImportOptions::default()).unwrap();
    let int8_convs: Vec<_> = quantized
        .nodes()
        .iter()
        .filter_map(|n| match n.op() {
            NodeOp::Op(Op::Int8Conv(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(
        int8_convs.len(),
        3,
        "{format}: every convolution becomes an Int8Conv"
    );
    // The model's output is the last convolution's uint8 output, dequantized.
    let step = int8_convs[2].output_params().expect("requantized").scale();

    let want: ArrayD<f32> = ndarray_npy::read_npy(&y_path).unwrap();
    let got = quantized.reference_forward(&[&x]).unwrap().remove(0);
    assert_eq!(want.shape(), got.shape());
    // The output is dequantized uint8: both sides land on the same grid of
    // `scale · (q − zero point)`. Requantization rounds `acc · s_x s_w / s_y`
    // to the nearest integer; onnxruntime multiplies in f32, Hasten in f64,
    // so a value within f32 rounding of a half-way point may round the
    // other way: at most one grid step, and rarely.
    let mut off_by_one = 0;
    for (&a, &b) in want.iter().zip(got.iter()) {
        let steps = ((a - b) / step).abs();
        assert!(
            steps < 1.0 + 1e-3,
            "{format}: {a} vs {b}: {steps} output steps apart"
        );
        if steps > 0.5 {
            off_by_one += 1;
        }
    }
    eprintln!(
        "{format}: {off_by_one} of {} outputs one step off",
        want.len()
    );
    assert!(
        off_by_one * 100 <= want.len(),
        "{off_by_one} of {} outputs one step off",
        want.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

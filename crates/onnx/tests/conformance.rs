//! ONNX backend node test cases (Debian's `libonnx-testdata`, or the folder
//! in `HASTEN_ONNX_NODE_TESTS`): every case of a supported op type is
//! imported — the first graph input as the activation, the other inputs as
//! initializers from `test_data_set_0` — run with the reference forward and
//! compared with the expected output. A case may be refused with a typed
//! error (an input of a rank Hasten does not hold, say), but never give a
//! wrong answer; the cases listed in `REQUIRED` must pass.

use std::path::{Path, PathBuf};

use hasten_onnx::proto::{ModelProto, TensorProto};
use hasten_onnx::{import_model, ImportOptions, Tensor};
use ndarray::{Array4, ArrayD, IxDyn};
use prost::Message;

/// Op-type prefixes of the cases tried.
const OPS: &[&str] = &[
    "test_conv_",
    "test_batchnorm_",
    "test_relu",
    "test_clip",
    "test_maxpool_2d",
    "test_averagepool_2d",
    "test_flatten_",
    "test_reshape_",
    "test_gemm_",
    "test_matmul_2d",
    "test_constant_pad",
    "test_dropout_",
    "test_identity",
    "test_softmax_",
    "test_sigmoid",
    "test_hardsigmoid",
    "test_hardswish",
    "test_qlinearconv",
    "test_sum_",
    "test_basic_conv_",
    "test_shufflenet",
];

/// Cases that must import and match.
const REQUIRED: &[&str] = &[
    "test_basic_conv_with_padding",
    "test_basic_conv_without_padding",
    "test_conv_with_strides_padding",
    "test_conv_with_strides_no_padding",
    "test_conv_with_strides_and_asymmetric_padding",
    "test_conv_with_autopad_same",
    "test_batchnorm_example",
    "test_batchnorm_epsilon",
    "test_maxpool_2d_default",
    "test_maxpool_2d_ceil",
    "test_maxpool_2d_pads",
    "test_maxpool_2d_precomputed_pads",
    "test_maxpool_2d_precomputed_same_upper",
    "test_maxpool_2d_precomputed_strides",
    "test_maxpool_2d_same_lower",
    "test_maxpool_2d_same_upper",
    "test_maxpool_2d_strides",
    "test_averagepool_2d_default",
    "test_averagepool_2d_ceil",
    "test_averagepool_2d_pads",
    "test_averagepool_2d_pads_count_include_pad",
    "test_averagepool_2d_precomputed_pads",
    "test_averagepool_2d_precomputed_pads_count_include_pad",
    "test_averagepool_2d_precomputed_same_upper",
    "test_averagepool_2d_precomputed_strides",
    "test_averagepool_2d_same_lower",
    "test_averagepool_2d_same_upper",
    "test_averagepool_2d_strides",
    "test_gemm_default_no_bias",
    "test_gemm_default_vector_bias",
    "test_gemm_default_scalar_bias",
    "test_gemm_default_single_elem_vector_bias",
    "test_gemm_default_zero_bias",
    "test_gemm_alpha",
    "test_gemm_transposeB",
    "test_matmul_2d",
    "test_flatten_axis1",
    "test_flatten_default_axis",
    "test_constant_pad",
];

fn node_tests_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("HASTEN_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/libonnx-testdata/data/node"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: ONNX node tests not found at {} (apt-get install libonnx-testdata, \
             or set HASTEN_ONNX_NODE_TESTS)",
            dir.display()
        );
        None
    }
}

fn read_tensor(path: &Path) -> TensorProto {
    TensorProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

enum Outcome {
    Pass(f64),
    Refused(String),
    Wrong(String),
}

fn run_case(dir: &Path) -> Outcome {
    let mut model =
        ModelProto::decode(std::fs::read(dir.join("model.onnx")).unwrap().as_slice()).unwrap();
    let data = dir.join("test_data_set_0");
    let graph = model.graph.as_mut().unwrap();
    let mut first: Option<ArrayD<f32>> = None;
    let mut keep = Vec::new();
    for (k, input) in graph.input.clone().into_iter().enumerate() {
        let path = data.join(format!("input_{k}.pb"));
        if !path.is_file() {
            continue;
        }
        let mut t = read_tensor(&path);
        if k == 0 {
            match Tensor::from_proto(&t) {
                Ok(Tensor::F32(a)) => first = Some(a),
                _ => return Outcome::Refused("first input is not float".into()),
            }
            keep.push(input);
        } else {
            t.name = Some(input.name().to_string());
            graph.initializer.push(t);
        }
    }
    graph.input = keep;
    let Some(x) = first else {
        return Outcome::Refused("no input data".into());
    };
    let shape = x.shape().to_vec();
    let options = ImportOptions::default()
        .with_batch_size(shape[0])
        .with_input_shape(graph.input[0].name(), shape.clone());
    let g = match import_model(&model, &options) {
        Ok(g) => g,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let x4: Array4<f32> = match shape.as_slice() {
        [n, c, h, w] => x.into_shape_with_order((*n, *c, *h, *w)).unwrap(),
        [n, f] => x.into_shape_with_order((*n, *f, 1, 1)).unwrap(),
        _ => return Outcome::Refused(format!("input rank {}", shape.len())),
    };
    let got = match g.reference_forward(&[&x4]) {
        Ok(mut y) => y.remove(0),
        Err(e) => return Outcome::Wrong(format!("forward failed: {e}")),
    };
    let want = match Tensor::from_proto(&read_tensor(&data.join("output_0.pb"))) {
        Ok(t) => t.to_f32(),
        Err(e) => return Outcome::Refused(format!("expected output: {e}")),
    };
    if want.len() != got.len() {
        return Outcome::Wrong(format!(
            "output has {} values, expected {:?}",
            got.len(),
            want.shape()
        ));
    }
    let got = got.into_shape_with_order(IxDyn(want.shape())).unwrap();
    let err = hasten_core::relative_error(&want, &got);
    if err < 1e-5 {
        Outcome::Pass(err)
    } else {
        Outcome::Wrong(format!("relative error {err:.3e}"))
    }
}

#[test]
fn onnx_node_test_cases() {
    let Some(root) = node_tests_dir() else {
        return;
    };
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            OPS.iter().any(|op| name.starts_with(op)) && !name.ends_with("_expanded")
        })
        .collect();
    cases.sort();
    let (mut passed, mut refused, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        match run_case(dir) {
            Outcome::Pass(e) => passed.push((name, e)),
            Outcome::Refused(why) => refused.push((name, why)),
            Outcome::Wrong(why) => wrong.push((name, why)),
        }
    }
    for (n, e) in &passed {
        eprintln!("pass     {n} ({e:.1e})");
    }
    for (n, why) in &refused {
        eprintln!("refused  {n}: {why}");
    }
    for (n, why) in &wrong {
        eprintln!("WRONG    {n}: {why}");
    }
    eprintln!(
        "{} passed, {} refused, {} wrong",
        passed.len(),
        refused.len(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
    for r in REQUIRED {
        assert!(
            passed.iter().any(|(n, _)| n == r),
            "required case {r} did not pass"
        );
    }
}

//! The readers on hostile input: arbitrary, truncated and garbled bytes,
//! huge and negative dims, data length mismatches. Each returns a typed
//! error (or a valid result) — never a panic, never an allocation the bytes
//! do not justify.

use hasten_core::{ActShape, ConvLayer, ConvSpec, GraphBuilder, Relu, SeededRng};
use hasten_onnx::proto::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use hasten_onnx::weights::{read_npy, read_npz, read_safetensors, write_npz, write_safetensors};
use hasten_onnx::{export_bytes, import_bytes, import_model, ImportOptions, OnnxError, Tensor};
use ndarray::ArrayD;
use proptest::prelude::*;
use prost::Message;

fn small_model() -> Vec<u8> {
    let mut rng = SeededRng::new(0);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(2, 5, 5));
    let conv = ConvLayer::from_array(rng.normal_array((3, 2, 3, 3), 0.3), ConvSpec::new()).unwrap();
    let y = b.op("conv", conv, x);
    let y = b.op("relu", Relu, y);
    b.output(y);
    export_bytes(&b.build().unwrap()).unwrap()
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: Some(format!("/{output}/{op}")),
        op_type: Some(op.into()),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn input_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v),
                                None => Value::DimParam("batch".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(opset: i64, nodes: Vec<NodeProto>, inits: Vec<TensorProto>, output: &str) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![input_info("x", &[None, Some(2), Some(6), Some(6)])],
            output: vec![input_info(output, &[None, Some(2), Some(6), Some(6)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn i64_init(name: &str, v: &[i64]) -> TensorProto {
    Tensor::I64(ndarray::Array1::from(v.to_vec()).into_dyn()).to_proto(name)
}

/// A TF-"same" style shape subgraph: pads computed from `Shape(x)`, fed to
/// `Pad`, then a max pool — folds to a constant `Pad`.
#[test]
fn shape_subgraph_folds_for_the_declared_shape() {
    let nodes = vec![
        node("Shape", &["x"], "s", vec![]),
        node("Gather", &["s", "two"], "h", vec![int_attr("axis", 0)]),
        node("Sub", &["h", "five"], "hm5", vec![]),
        node("Unsqueeze", &["hm5", "zero"], "p", vec![]),
        node(
            "Concat",
            &["z4", "z2", "p", "p"],
            "pads8",
            vec![int_attr("axis", 0)],
        ),
        node("Cast", &["pads8"], "pads", vec![int_attr("to", 7)]),
        node("Pad", &["x", "pads"], "padded", vec![]),
        node(
            "MaxPool",
            &["padded"],
            "y",
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("strides", &[1, 1]),
            ],
        ),
    ];
    let inits = vec![
        Tensor::I64(ndarray::arr0(2i64).into_dyn()).to_proto("two"),
        Tensor::I64(ndarray::arr0(5i64).into_dyn()).to_proto("five"),
        i64_init("zero", &[0]),
        i64_init("z4", &[0, 0, 0, 0]),
        i64_init("z2", &[0, 0]),
    ];
    let m = model(13, nodes, inits, "y");
    let g = import_model(&m, &ImportOptions::default()).unwrap();
    // pads = [0,0,0,1, 0,0,0,1]: one row and column after; 7×7 pooled to 6×6.
    let kinds: Vec<&str> = g.nodes().iter().map(|n| n.kind()).collect();
    assert_eq!(kinds, ["pad", "max_pool"]);
    assert_eq!(g.output_shapes(), vec![ActShape::new(2, 6, 6)]);
}

#[test]
fn unsupported_ops_and_opsets_are_typed_errors() {
    let m = model(
        13,
        vec![node("LpNormalization", &["x"], "y", vec![])],
        vec![],
        "y",
    );
    match import_model(&m, &ImportOptions::default()) {
        Err(OnnxError::UnsupportedOp {
            op_type,
            node,
            opset,
            ..
        }) => {
            assert_eq!(
                (op_type.as_str(), node.as_str(), opset),
                ("LpNormalization", "/y/LpNormalization", 13)
            );
        }
        other => panic!("{other:?}"),
    }
    let m = model(10, vec![node("Relu", &["x"], "y", vec![])], vec![], "y");
    assert!(matches!(
        import_model(&m, &ImportOptions::default()),
        Err(OnnxError::UnsupportedOpset { version: 10, .. })
    ));
    // Foldable only on constants.
    let m = model(13, vec![node("Neg", &["x"], "y", vec![])], vec![], "y");
    assert!(matches!(
        import_model(&m, &ImportOptions::default()),
        Err(OnnxError::UnsupportedOp { .. })
    ));
}

#[test]
fn huge_negative_and_mismatched_dims_are_rejected_before_allocating() {
    let relu = || vec![node("Relu", &["x"], "y", vec![])];
    let with_init = |t: TensorProto| model(13, relu(), vec![t], "y");
    let mut huge = TensorProto {
        name: Some("w".into()),
        data_type: Some(1),
        dims: vec![1 << 31, 1 << 31, 1 << 31],
        raw_data: Some(vec![0; 8]),
        ..Default::default()
    };
    assert!(matches!(
        import_model(&with_init(huge.clone()), &ImportOptions::default()),
        Err(OnnxError::TensorData { .. })
    ));
    huge.dims = vec![-4];
    assert!(matches!(
        import_model(&with_init(huge.clone()), &ImportOptions::default()),
        Err(OnnxError::TensorData { .. })
    ));
    huge.dims = vec![3];
    assert!(matches!(
        import_model(&with_init(huge.clone()), &ImportOptions::default()),
        Err(OnnxError::TensorData { .. })
    ));
    huge.raw_data = None;
    huge.float_data = vec![1.0; 2];
    assert!(matches!(
        import_model(&with_init(huge.clone()), &ImportOptions::default()),
        Err(OnnxError::TensorData { .. })
    ));
    huge.data_location = Some(1);
    assert!(matches!(
        import_model(&with_init(huge), &ImportOptions::default()),
        Err(OnnxError::ExternalData { .. })
    ));
    // A ConstantOfShape asking for 2^60 elements is refused by the folder.
    let nodes = vec![
        node("ConstantOfShape", &["shape"], "big", vec![]),
        node("Add", &["x", "big"], "y", vec![]),
    ];
    let m = model(13, nodes, vec![i64_init("shape", &[1 << 30, 1 << 30])], "y");
    assert!(matches!(
        import_model(&m, &ImportOptions::default()),
        Err(OnnxError::UnsupportedOp { .. })
    ));
}

#[test]
fn weight_files_with_lying_headers() {
    // safetensors: a header that claims more data than the file holds.
    let params = vec![("w".to_string(), ArrayD::<f32>::ones(vec![4, 4]))];
    let bytes = write_safetensors(&params).unwrap();
    let text = String::from_utf8_lossy(&bytes).replace("[4,4]", "[4,9]");
    assert!(matches!(
        read_safetensors(text.as_bytes()),
        Err(OnnxError::WeightFile { .. })
    ));
    let mut short = bytes.clone();
    short.truncate(bytes.len() - 3);
    assert!(read_safetensors(&short).is_err());
    // An 8-byte header length of 2^63.
    let mut lie = (1u64 << 63).to_le_bytes().to_vec();
    lie.extend_from_slice(b"{}");
    assert!(read_safetensors(&lie).is_err());
    // npz whose entry is cut.
    let npz = write_npz(&params).unwrap();
    assert!(read_npz(&npz[..npz.len() / 2]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = import_bytes(&data, &ImportOptions::default());
        let _ = read_safetensors(&data);
        let _ = read_npy(&data);
        let _ = read_npz(&data);
    }

    #[test]
    fn truncated_models_fail_cleanly(cut in 0usize..1000) {
        let bytes = small_model();
        let cut = cut.min(bytes.len().saturating_sub(1));
        prop_assert!(import_bytes(&bytes[..cut], &ImportOptions::default()).is_err());
    }

    #[test]
    fn garbled_models_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = small_model();
        let n = bytes.len();
        for (at, v) in flips {
            bytes[at % n] ^= v | 1;
        }
        let _ = import_bytes(&bytes, &ImportOptions::default());
        // Whatever decodes must re-encode and decode again.
        if let Ok(m) = ModelProto::decode(bytes.as_slice()) {
            prop_assert!(ModelProto::decode(m.encode_to_vec().as_slice()).is_ok());
        }
    }

    #[test]
    fn garbled_weight_files_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in 0usize..4096) {
        let params = vec![
            ("a".to_string(), ArrayD::<f32>::ones(vec![3, 5])),
            ("b".to_string(), ArrayD::<f32>::zeros(vec![7])),
        ];
        for mut bytes in [write_safetensors(&params).unwrap(), write_npz(&params).unwrap(), hasten_onnx::weights::write_npy(&params[0].1).unwrap()] {
            let n = bytes.len();
            for &(at, v) in &flips {
                bytes[at % n] ^= v | 1;
            }
            let _ = read_safetensors(&bytes);
            let _ = read_npz(&bytes);
            let _ = read_npy(&bytes);
            let c = cut.min(n);
            let _ = read_safetensors(&bytes[..c]);
            let _ = read_npz(&bytes[..c]);
            let _ = read_npy(&bytes[..c]);
        }
    }
}

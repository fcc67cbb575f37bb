//! QDQ import: `QuantizeLinear` / `DequantizeLinear` around float layers map
//! onto `Int8Conv` exactly, so import(export(g)) gives back the int8 layers
//! of `g` (same weights, scales, zero points, bias, requantization) and
//! bit-identical outputs; a dequantized constant folds to f32; fake
//! quantization of a float activation is a typed error naming the node.

use hasten_core::graph::{inner_ops, prefix, Graph, GraphBuilder, NodeFilter};
use hasten_core::op::{Flatten, IntType, QuantParams, Relu};
use hasten_core::{ActShape, ConvLayer, ConvSpec, LinearLayer, NodeOp, Op, SeededRng};
use hasten_models::ModelConfig;
use hasten_onnx::proto::{
    tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use hasten_onnx::{export_bytes, import_bytes, import_model, ImportOptions, OnnxError, Tensor};
use hasten_quant::{Granularity, Int8Quantize};
use ndarray::{Array1, Array4, ArrayD};

fn u8p(s: f32, z: i32) -> QuantParams {
    QuantParams::new(s, z, IntType::U8).unwrap()
}

/// Every int8 node of `g` comes back equal, the rest of the graph computes
/// the same function bit for bit.
fn assert_reimports_exactly(g: &Graph, x: &Array4<f32>) {
    let back = import_bytes(&export_bytes(g).unwrap(), &ImportOptions::default()).unwrap();
    let mut int8 = 0;
    for n in g.nodes() {
        // A transformed layer is a block; the export names its op `i` `node.i`.
        for (i, op) in inner_ops(n.op()).iter().enumerate() {
            if let Op::Int8Conv(q) = op {
                int8 += 1;
                let name = prefix(n.name(), n.op(), i);
                let m = back
                    .nodes()
                    .iter()
                    .find(|m| m.name() == name)
                    .unwrap_or_else(|| panic!("`{name}` lost on re-import"));
                assert_eq!(m.op(), &NodeOp::Op(Op::Int8Conv(q.clone())), "`{name}`");
            }
        }
    }
    assert!(int8 > 0, "the graph has int8 layers");
    let want = g.reference_forward(&[x]).unwrap();
    let got = back.reference_forward(&[x]).unwrap();
    assert_eq!(want, got);
}

/// conv (float) → int8 conv without requantization → int8 conv with
/// requantization → ReLU → flatten → int8 linear: a quantized layer reading
/// a float layer, an int8 layer reading an int8 layer's float output, a
/// requantized output read by a float op, and the `Gemm` form.
fn chain(rng: &mut SeededRng) -> Graph {
    let conv = |rng: &mut SeededRng, t: usize, c: usize, stride: usize| {
        ConvLayer::new(
            hasten_core::Conv4d::new(rng.normal_array((t, c, 3, 3), 0.3)).unwrap(),
            Some(rng.normal_array(t, 0.1)),
            ConvSpec::new().with_stride(stride).with_padding(1),
        )
        .unwrap()
    };
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(3, 8, 8));
    let h = b.op("conv0", conv(rng, 6, 3, 1), x);
    let h = b.op("conv1", conv(rng, 8, 6, 2), h);
    let h = b.op("conv2", conv(rng, 4, 8, 1), h);
    let h = b.op("relu", Relu, h);
    let h = b.op("flatten", Flatten, h);
    let fc = LinearLayer::new(rng.normal_array((5, 64), 0.1), None).unwrap();
    let y = b.op("fc", fc, h);
    b.output(y);
    b.build().unwrap()
}

#[test]
fn int8_layers_reimport_exactly() {
    let mut rng = SeededRng::new(3);
    let mut g = chain(&mut rng);
    let apply = |g: &mut Graph, t: Int8Quantize, name: &str| {
        let r = g.apply_transform(&t, &NodeFilter::name(name)).unwrap();
        assert_eq!(r.nodes.len(), 1, "{name} quantized");
    };
    apply(
        &mut g,
        Int8Quantize::new(u8p(0.04, 120), None, Granularity::PerChannel),
        "conv1",
    );
    apply(
        &mut g,
        Int8Quantize::new(
            QuantParams::new(0.05, -3, IntType::I8).unwrap(),
            Some(u8p(0.08, 0)),
            Granularity::PerTensor,
        ),
        "conv2",
    );
    apply(
        &mut g,
        Int8Quantize::new(u8p(0.08, 0), None, Granularity::PerChannel),
        "fc",
    );
    let x = rng.normal_array((2, 3, 8, 8), 1.0);
    assert_reimports_exactly(&g, &x);
}

#[test]
fn int8_resnet8_reimports_exactly() {
    let base = hasten_models::resnet8(&ModelConfig::mnist().with_random_batch_norm()).unwrap();
    let x = SeededRng::new(5).normal_array(base.inputs()[0].shape().batched(2), 1.0);
    for t in [
        Int8Quantize::new(u8p(0.05, 128), None, Granularity::PerChannel),
        Int8Quantize::new(u8p(0.05, 128), Some(u8p(0.1, 100)), Granularity::PerTensor),
    ] {
        let mut g = base.clone();
        let filter = NodeFilter::kind("conv").except_first(1);
        g.apply_transform(&t, &filter).unwrap();
        assert_reimports_exactly(&g, &x);
    }
}

fn info(name: &str, c: i64) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    let dim = |v: Option<i64>| Dimension {
        value: Some(match v {
            Some(v) => Value::DimValue(v),
            None => Value::DimParam("N".into()),
        }),
        ..Default::default()
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: vec![dim(None), dim(Some(c)), dim(Some(4)), dim(Some(4))],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(name.into()),
        op_type: Some(op.into()),
        ..Default::default()
    }
}

/// A model on `x: [N, 2, 4, 4]` with the scale / zero point initializers
/// `s`, `z` and int8 weight `wq` (2×2×1×1, scale `ws`).
fn model(nodes: Vec<NodeProto>, output: &str, out_c: i64) -> ModelProto {
    let scalar_f = |v: f32| Tensor::F32(ndarray::arr0(v).into_dyn());
    let wq = ArrayD::from_shape_vec(vec![2, 2, 1, 1], vec![3i8, -7, 127, 1]).unwrap();
    let inits = vec![
        scalar_f(0.1).to_proto("s"),
        Tensor::U8(ndarray::arr0(128u8).into_dyn()).to_proto("z"),
        Tensor::I8(wq).to_proto("wq"),
        Tensor::F32(Array1::from(vec![0.5f32, 0.25]).into_dyn()).to_proto("ws"),
    ];
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![info("x", 2)],
            output: vec![info(output, out_c)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_dequantized_constant_weight_of_a_float_input_folds_to_f32() {
    let mut dq = node("DequantizeLinear", "w_dq", &["wq", "ws"], "w");
    dq.attribute.push(hasten_onnx::proto::AttributeProto {
        name: Some("axis".into()),
        r#type: Some(hasten_onnx::proto::attribute_proto::AttributeType::Int as i32),
        i: Some(0),
        ..Default::default()
    });
    let m = model(vec![dq, node("Conv", "conv", &["x", "w"], "y")], "y", 2);
    let g = import_model(&m, &ImportOptions::default()).unwrap();
    let conv = g
        .nodes()
        .iter()
        .find_map(|n| match n.op() {
            NodeOp::Op(Op::Conv(c)) => Some(c.clone()),
            _ => None,
        })
        .expect("a float convolution");
    // Row t scaled by ws[t] (axis 0): [3, −7]·0.5, [127, 1]·0.25.
    let want = [1.5f32, -3.5, 31.75, 0.25];
    assert_eq!(
        conv.weight().array().iter().copied().collect::<Vec<_>>(),
        want
    );
}

#[test]
fn fake_quantization_of_a_float_activation_is_a_typed_error() {
    let m = model(
        vec![
            node("QuantizeLinear", "x_q", &["x", "s", "z"], "xq"),
            node("DequantizeLinear", "x_dq", &["xq", "s", "z"], "xd"),
            node("Relu", "relu", &["xd"], "y"),
        ],
        "y",
        2,
    );
    match import_model(&m, &ImportOptions::default()) {
        Err(OnnxError::UnsupportedOp { op_type, node, .. }) => {
            assert_eq!(
                (op_type.as_str(), node.as_str()),
                ("DequantizeLinear", "x_dq")
            );
        }
        other => panic!("expected an unsupported-op error, got {other:?}"),
    }
    // The same pair as a graph output.
    let m = model(
        vec![
            node("QuantizeLinear", "x_q", &["x", "s", "z"], "xq"),
            node("DequantizeLinear", "x_dq", &["xq", "s", "z"], "y"),
        ],
        "y",
        2,
    );
    assert!(matches!(
        import_model(&m, &ImportOptions::default()),
        Err(OnnxError::UnsupportedOp { node, .. }) if node == "x_dq"
    ));
}

#[test]
fn a_qdq_pair_around_a_conv_with_a_float_bias_is_refused() {
    let m = {
        let mut m = model(
            vec![
                node("QuantizeLinear", "x_q", &["x", "s", "z"], "xq"),
                node("DequantizeLinear", "x_dq", &["xq", "s", "z"], "xd"),
                node("DequantizeLinear", "w_dq", &["wq", "s"], "w"),
                node("Conv", "conv", &["xd", "w", "b"], "y"),
            ],
            "y",
            2,
        );
        let b = Tensor::F32(Array1::from(vec![0.1f32, 0.2]).into_dyn()).to_proto("b");
        m.graph.as_mut().unwrap().initializer.push(b);
        m
    };
    assert!(matches!(
        import_model(&m, &ImportOptions::default()),
        Err(OnnxError::UnsupportedOp { node, .. }) if node == "conv"
    ));
}

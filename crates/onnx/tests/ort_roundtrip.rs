//! Export → onnxruntime and export → import round trips: the model builders,
//! a graph with every exportable plain op, and a compressed graph of every
//! method family. onnxruntime runs through `scripts/ort_run.py`; without a
//! Python that has onnxruntime those comparisons skip with a message, the
//! Rust-only round trips still run.

mod common;

use std::path::Path;
use std::process::Command;

use hasten_core::graph::{Graph, GraphBuilder, NodeFilter};
use hasten_core::op::{
    AvgPool, ChannelGather, ChannelShuffle, Clip, Dropout, Flatten, GlobalAvgPool, HardSigmoid,
    HardSwish, Identity, IntType, MaxPool, Pad, PoolSpec, QuantParams, Relu, Shift, Sigmoid, Silu,
    Softmax,
};
use hasten_core::{
    relative_error, ActShape, BatchNorm, ConvLayer, ConvSpec, LinearLayer, Padding, SeededRng,
    Transform,
};
use hasten_models::ModelConfig;
use hasten_onnx::{export_bytes, export_file, import_bytes, ImportOptions};
use ndarray::{Array1, Array4, ArrayD};

/// Runs `graph` exported to ONNX in onnxruntime on `x`; `None` when
/// onnxruntime is unavailable (after a skip message).
fn onnxruntime(graph: &Graph, x: &Array4<f32>, tag: &str) -> Option<ArrayD<f32>> {
    let python = common::python_with_ort(&format!("onnxruntime comparison `{tag}`"))?;
    let dir = common::scratch(tag);
    let model = dir.join("model.onnx");
    export_file(graph, &model).expect("export");
    let input = dir.join("input.npy");
    ndarray_npy::write_npy(&input, x).expect("write input");
    let script = common::workspace_root().join("scripts/ort_run.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&model)
        .arg(dir.join("out"))
        .arg(&input)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{tag}: onnxruntime failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y: ArrayD<f32> = ndarray_npy::read_npy(dir.join("out/output_0.npy")).expect("read output");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    Some(y)
}

/// Hasten's reference output against onnxruntime's (relative error < 1e-4),
/// and import(export(g)) against g (< 1e-6) when `reimport`.
fn check(graph: &Graph, x: &Array4<f32>, tag: &str, reimport: bool) {
    let want = graph.reference_forward(&[x]).expect("reference").remove(0);
    // Re-import either gives the same function or a typed error (for
    // `reimport = false` graphs only): it never silently changes the model.
    match import_bytes(
        &export_bytes(graph).expect("export"),
        &ImportOptions::default(),
    ) {
        Ok(back) => {
            let got = back
                .reference_forward(&[x])
                .expect("re-imported forward")
                .remove(0);
            let err = relative_error(&want, &got);
            assert!(err < 1e-6, "{tag}: import(export(g)) differs by {err}");
        }
        Err(e) => assert!(!reimport, "{tag}: re-import failed: {e}"),
    }
    if let Some(got) = onnxruntime(graph, x, tag) {
        assert_eq!(got.len(), want.len(), "{tag}: output sizes");
        let got = got
            .into_shape_with_order(want.raw_dim())
            .expect("same size");
        let err = relative_error(&want, &got);
        eprintln!("{tag}: onnxruntime relative error {err:.2e}");
        assert!(err < 1e-4, "{tag}: onnxruntime differs by {err}");
    }
}

fn input(shape: ActShape, batch: usize, seed: u64) -> Array4<f32> {
    SeededRng::new(seed).normal_array(shape.batched(batch), 1.0)
}

#[test]
fn model_builders_match_onnxruntime_and_reimport() {
    let mnist = ModelConfig::mnist().with_random_batch_norm();
    let imagenet_small = ModelConfig::imagenet()
        .with_input_size(64)
        .with_num_classes(10)
        .with_random_batch_norm();
    let cases: Vec<(&str, Graph)> = vec![
        ("lenet5", hasten_models::lenet5(&mnist).unwrap()),
        ("resnet8", hasten_models::resnet8(&mnist).unwrap()),
        ("small_vgg", hasten_models::small_vgg(&mnist).unwrap()),
        (
            "small_mobilenet",
            hasten_models::small_mobilenet(&mnist).unwrap(),
        ),
        (
            "resnet18",
            hasten_models::resnet18(&imagenet_small).unwrap(),
        ),
        (
            "mobilenet_v1",
            hasten_models::mobilenet_v1(&imagenet_small.with_width_multiplier(0.25)).unwrap(),
        ),
    ];
    for (tag, graph) in cases {
        let x = input(graph.inputs()[0].shape(), 2, 7);
        check(&graph, &x, tag, true);
        // Parameter names survive the round trip.
        let back = import_bytes(&export_bytes(&graph).unwrap(), &ImportOptions::default()).unwrap();
        let names = |g: &Graph| {
            g.parameters()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&graph), names(&back), "{tag}: parameter names");
    }
}

/// A graph with every plain op the exporter writes.
fn every_op_graph() -> Graph {
    let mut rng = SeededRng::new(3);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(4, 11, 11));
    let conv = |rng: &mut SeededRng, o: usize, i: usize, k: usize, spec: ConvSpec, bias: bool| {
        let w = hasten_core::Conv4d::new(rng.normal_array((o, i, k, k), 0.3)).unwrap();
        let b = bias.then(|| Array1::from(rng.normal_array(o, 0.1).to_vec()));
        ConvLayer::new(w, b, spec).unwrap()
    };
    let bn = |rng: &mut SeededRng, c: usize| {
        let v = |rng: &mut SeededRng, s: f64| Array1::from(rng.normal_array(c, s).to_vec());
        let var = v(rng, 0.3).mapv(|a: f32| a.abs() + 0.5);
        BatchNorm::new(
            v(rng, 0.3).mapv(|a| a + 1.0),
            v(rng, 0.3),
            v(rng, 0.3),
            var,
            1e-5,
        )
        .unwrap()
    };
    let spec = ConvSpec::new()
        .with_stride_hw(2, 1)
        .with_padding_sides(Padding {
            top: 1,
            bottom: 2,
            left: 0,
            right: 1,
        })
        .with_dilation(2);
    let y = b.op("conv1", conv(&mut rng, 8, 4, 3, spec, true), x);
    let y = b.op("bn1", bn(&mut rng, 8), y);
    let y = b.op("clip", Clip::new(-0.5, 1.5).unwrap(), y);
    let y = b.op(
        "pad",
        Pad::new(
            Padding {
                top: 1,
                bottom: 0,
                left: 2,
                right: 1,
            },
            0.25,
        )
        .unwrap(),
        y,
    );
    let y = b.op(
        "maxpool",
        MaxPool::new(
            PoolSpec::new(3, 2)
                .with_stride_hw(2, 1)
                .with_padding(1)
                .with_ceil_mode(true),
        )
        .unwrap(),
        y,
    );
    let dw = b.op(
        "dw",
        conv(
            &mut rng,
            8,
            1,
            3,
            ConvSpec::new().with_padding(1).with_groups(8),
            false,
        ),
        y,
    );
    let hs = b.op("hardswish", HardSwish, dw);
    let sh = b.op("shuffle", ChannelShuffle::new(4).unwrap(), hs);
    let shift = b.op("shift", Shift::grouped(8, 3).unwrap(), sh);
    let silu = b.op("silu", Silu, shift);
    // Squeeze–excitation gate.
    let gap = b.op("se.pool", GlobalAvgPool, silu);
    let fc1 = b.op(
        "se.fc1",
        conv(&mut rng, 4, 8, 1, ConvSpec::new(), true),
        gap,
    );
    let r = b.op("se.relu", Relu, fc1);
    let fc2 = b.op("se.fc2", conv(&mut rng, 8, 4, 1, ConvSpec::new(), true), r);
    let gate = b.op("se.gate", HardSigmoid::new(0.25, 0.5).unwrap(), fc2);
    let y = b.mul("se.mul", silu, gate);
    let res = b.add("residual", &[y, sh, dw]);
    let gathered = b.op(
        "gather",
        ChannelGather::new(vec![7, 0, 3, 3, 5], 8).unwrap(),
        res,
    );
    let sig = b.op("sigmoid", Sigmoid, gathered);
    let cat = b.concat("cat", &[res, sig]);
    let avg = b.op(
        "avgpool",
        AvgPool::new(PoolSpec::square(3).with_stride(2).with_padding(1), true).unwrap(),
        cat,
    );
    let avg2 = b.op(
        "avgpool2",
        AvgPool::new(PoolSpec::square(2).with_padding(1), false).unwrap(),
        avg,
    );
    let id = b.op("identity", Identity, avg2);
    let drop = b.op("dropout", Dropout::new(0.2).unwrap(), id);
    let flat = b.op("flatten", Flatten, drop);
    let feats = 13 * 3 * 7;
    let fc = LinearLayer::new(
        rng.normal_array((10, feats), 0.05),
        Some(Array1::from(rng.normal_array(10, 0.1).to_vec())),
    )
    .unwrap();
    let logits = b.op("fc", fc, flat);
    let bn1d = b.op("bn_logits", bn(&mut rng, 10), logits);
    let prob = b.op("softmax", Softmax, bn1d);
    b.output(prob);
    b.build().unwrap()
}

#[test]
fn every_plain_op_matches_onnxruntime_and_reimports() {
    let graph = every_op_graph();
    let x = input(graph.inputs()[0].shape(), 3, 11);
    check(&graph, &x, "every_op", true);
}

#[test]
fn compressed_graphs_match_onnxruntime() {
    use hasten_prune::perforation::{MaskKind, Perforation};
    use hasten_prune::removal::{GroupwisePrune, MagnitudeSparse};
    use hasten_quant::{
        Binarize, FixedPoint, Granularity, Int8Quantize, Lcnn, Mode, ProductQuantize, ScalarKMeans,
        Solver, Ternarize,
    };
    use hasten_tensor_decomp::{RankSpec, TtMatrix, Tucker2};

    let u8p = |s: f32, z: i32| QuantParams::new(s, z, IntType::U8).unwrap();
    let transforms: Vec<(&str, Box<dyn Transform>, bool)> = vec![
        ("tucker2", Box::new(Tucker2::with_ranks(4, 4)), true),
        (
            "int8",
            Box::new(Int8Quantize::new(
                u8p(0.05, 128),
                None,
                Granularity::PerChannel,
            )),
            true,
        ),
        (
            "int8_requant",
            Box::new(Int8Quantize::new(
                u8p(0.05, 128),
                Some(u8p(0.1, 100)),
                Granularity::PerTensor,
            )),
            true,
        ),
        ("binary", Box::new(Binarize::binary_weights()), true),
        ("xnor", Box::new(Binarize::xnor_net()), false),
        ("bnn", Box::new(Binarize::bnn()), false),
        (
            "ternary",
            Box::new(Ternarize::twn(Granularity::PerChannel)),
            true,
        ),
        (
            "fixed_point",
            Box::new(FixedPoint::new(4, Mode::Affine, Granularity::PerChannel).unwrap()),
            true,
        ),
        (
            "kmeans",
            Box::new(
                ScalarKMeans::new(
                    8,
                    Granularity::PerTensor,
                    Solver::Lloyd {
                        max_iter: 10,
                        seed: 1,
                    },
                )
                .unwrap(),
            ),
            true,
        ),
        (
            "product",
            Box::new(ProductQuantize::new(2, 4, 10, 1).unwrap()),
            true,
        ),
        ("lcnn", Box::new(Lcnn::new(8, 2, 5, 1).unwrap()), true),
        ("sparse", Box::new(MagnitudeSparse { fraction: 0.7 }), true),
        (
            "groupwise",
            Box::new(GroupwisePrune { fraction: 0.5 }),
            true,
        ),
        (
            "perforation",
            Box::new(Perforation {
                mask: MaskKind::Grid((2, 2)),
            }),
            false,
        ),
    ];
    let base = hasten_models::resnet8(&ModelConfig::mnist().with_random_batch_norm()).unwrap();
    let x = input(base.inputs()[0].shape(), 2, 5);
    for (tag, t, reimport) in transforms {
        let mut g = base.clone();
        let filter = NodeFilter::kind("conv").except_first(1);
        let report = g
            .apply_transform(t.as_ref(), &filter)
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert!(!report.nodes.is_empty(), "{tag}: nothing transformed");
        check(&g, &x, tag, reimport);
    }
    // Tensor-Train on the classifier.
    let mut g = base.clone();
    let fc = g.node("fc").unwrap().op().as_op().cloned().unwrap();
    let (out, inp) = match &fc {
        hasten_core::Op::Linear(l) => (l.out_features(), l.in_features()),
        _ => unreachable!("resnet8's fc is linear"),
    };
    assert_eq!((out, inp), (10, 64));
    g.apply_transform(
        &TtMatrix::new(vec![2, 5], vec![8, 8], RankSpec::Fixed(2)),
        &NodeFilter::name("fc"),
    )
    .unwrap();
    check(&g, &x, "tt_matrix", true);
}

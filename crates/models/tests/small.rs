//! Forward passes: the small MNIST-sized models, and the ImageNet ResNets
//! and MobileNet at reduced inputs — finite outputs, determinism per seed,
//! batch-norm initialisation and batch-norm folding.

use std::collections::BTreeSet;

use hasten_core::ndarray::Array4;
use hasten_core::{relative_error, ActShape, Graph, NodeOp, Op, SeededRng};
use hasten_models::{
    by_name, lenet5, mobilenet_v1, randomize_batch_norms, resnet18, resnet34, resnet8,
    small_mobilenet, small_vgg, Architecture, BatchNormInit, ModelConfig, ARCHITECTURES,
};

const SMALL: [&str; 4] = ["lenet5", "resnet8", "small_vgg", "small_mobilenet"];

fn batch(graph: &Graph, n: usize, seed: u64) -> Array4<f32> {
    let shape = graph.inputs()[0].shape().batched(n);
    SeededRng::new(seed).normal_array(shape, 1.0)
}

fn forward(graph: &Graph, x: &Array4<f32>) -> Array4<f32> {
    let mut out = graph.reference_forward(&[x]).unwrap();
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

fn batch_norm_count(graph: &Graph) -> usize {
    graph
        .nodes()
        .iter()
        .filter(|n| n.kind() == "batch_norm")
        .count()
}

fn first_conv_weights(graph: &Graph) -> Array4<f32> {
    graph
        .nodes()
        .iter()
        .find_map(|n| match n.op() {
            NodeOp::Op(Op::Conv(c)) => Some(c.weight().array().clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn small_models_run_on_a_random_batch() {
    for name in SMALL {
        let config = ModelConfig::mnist().with_seed(11);
        let g = by_name(name, &config).unwrap();
        assert_eq!(g.inputs()[0].name(), "input", "{name}");
        assert_eq!(g.inputs()[0].shape(), ActShape::new(1, 28, 28), "{name}");
        assert_eq!(g.output_shapes(), vec![ActShape::flat(10)], "{name}");
        let y = forward(&g, &batch(&g, 2, 1));
        assert_eq!(y.shape(), &[2, 10, 1, 1], "{name}");
        assert!(y.iter().all(|v| v.is_finite()), "{name}");
        // He initialisation keeps the logits of unit-variance inputs well
        // scaled: neither vanishing nor exploding.
        let rms = (y.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
        assert!((0.05..50.0).contains(&rms), "{name}: logits rms {rms}");
        // The samples of a batch get different logits.
        assert_ne!(
            y.slice(hasten_core::ndarray::s![0, .., .., ..]),
            y.slice(hasten_core::ndarray::s![1, .., .., ..])
        );
    }
}

#[test]
fn small_models_take_other_class_counts_and_channels() {
    let config = ModelConfig::mnist()
        .with_num_classes(3)
        .with_input(ActShape::new(3, 32, 32));
    for name in SMALL {
        let g = by_name(name, &config).unwrap();
        assert_eq!(g.output_shapes(), vec![ActShape::flat(3)], "{name}");
        let y = forward(&g, &batch(&g, 1, 2));
        assert!(y.iter().all(|v| v.is_finite()), "{name}");
    }
}

#[test]
fn lenet5_is_the_classic_layout() {
    let g = lenet5(&ModelConfig::mnist()).unwrap();
    // conv1 6·25 + 6 = 156; conv2 16·6·25 + 16 = 2,416; fc1 400·120 + 120 =
    // 48,120; fc2 120·84 + 84 = 10,164; fc3 84·10 + 10 = 850.
    assert_eq!(g.cost().unwrap().params, 61_706);
    let names: Vec<&str> = g.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(
        names,
        [
            "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2",
            "relu4", "fc3"
        ]
    );
    assert_eq!(
        g.node("pool2").unwrap().output_shape(),
        ActShape::new(16, 5, 5)
    );
    assert_eq!(
        g.node("fc1").unwrap().input_shapes()[0],
        ActShape::flat(400)
    );
}

#[test]
fn small_model_parameter_counts() {
    let config = ModelConfig::mnist();
    // resnet8: conv1 144 + bn1 32; layer1 2·2,304 + 2·32; layer2 4,608 +
    // 9,216 + 512 (downsample) + 3·64; layer3 18,432 + 36,864 + 2,048 + 3·128;
    // fc 650.
    assert_eq!(resnet8(&config).unwrap().cost().unwrap().params, 77_754);
    // small_vgg: convs 320 + 9,248 + 18,496 + 36,928, batch norms 64 + 64 +
    // 128 + 128, classifier 3,136·256 + 256 = 803,072 and 2,570.
    assert_eq!(small_vgg(&config).unwrap().cost().unwrap().params, 871_018);
    // small_mobilenet: stem 144 + 32; depthwise 9·(16+32+64+64+128) = 2,736;
    // pointwise 512 + 2,048 + 4,096 + 8,192 + 16,384 = 31,232; block batch
    // norms 2·(304 + 416) = 1,440; fc 1,290.
    assert_eq!(
        small_mobilenet(&config).unwrap().cost().unwrap().params,
        36_874
    );
}

#[test]
fn resnet8_names_follow_the_resnet_scheme() {
    let g = resnet8(&ModelConfig::mnist()).unwrap();
    let with_params: BTreeSet<&str> = g
        .nodes()
        .iter()
        .filter(|n| n.cost().unwrap().params > 0)
        .map(|n| n.name())
        .collect();
    let mut expected = BTreeSet::from(["conv1", "bn1", "fc"]);
    let blocks = [
        "layer1.0.conv1",
        "layer1.0.bn1",
        "layer1.0.conv2",
        "layer1.0.bn2",
        "layer2.0.conv1",
        "layer2.0.bn1",
        "layer2.0.conv2",
        "layer2.0.bn2",
        "layer2.0.downsample.0",
        "layer2.0.downsample.1",
        "layer3.0.conv1",
        "layer3.0.bn1",
        "layer3.0.conv2",
        "layer3.0.bn2",
        "layer3.0.downsample.0",
        "layer3.0.downsample.1",
    ];
    expected.extend(blocks);
    assert_eq!(with_params, expected);
    assert_eq!(
        g.node("layer3.0.relu2").unwrap().output_shape(),
        ActShape::new(64, 7, 7)
    );
}

#[test]
fn same_seed_same_model_other_seed_other_weights() {
    for arch in ARCHITECTURES.iter().filter(|a| SMALL.contains(&a.name)) {
        let build = |seed| (arch.build)(&(arch.default_config)().with_seed(seed)).unwrap();
        let (a, b, c) = (build(5), build(5), build(6));
        assert_eq!(a, b, "{}", arch.name);
        assert_ne!(a, c, "{}", arch.name);
        assert_ne!(
            first_conv_weights(&a),
            first_conv_weights(&c),
            "{}",
            arch.name
        );
        // Equal graphs compute the same; another seed computes otherwise.
        let x = batch(&a, 1, 9);
        assert_ne!(forward(&a, &x), forward(&c, &x), "{}", arch.name);
    }
    // Also across builders at full size (no forward): ResNet-18 weights per seed.
    let r = |seed| resnet18(&ModelConfig::imagenet().with_seed(seed).with_input_size(32)).unwrap();
    assert_eq!(r(1), r(1));
    assert_ne!(first_conv_weights(&r(1)), first_conv_weights(&r(2)));
}

#[test]
fn batch_norm_init_defaults_to_pytorch_and_random_leaves_convolutions_alone() {
    let config = ModelConfig::mnist().with_seed(4);
    let plain = resnet8(&config).unwrap();
    let random = resnet8(&config.with_random_batch_norm()).unwrap();
    assert_eq!(config.batch_norm, BatchNormInit::Identity);
    let mut differing = 0;
    for (p, r) in plain.nodes().iter().zip(random.nodes()) {
        assert_eq!(p.name(), r.name());
        match (p.op(), r.op()) {
            (NodeOp::Op(Op::BatchNorm(pb)), NodeOp::Op(Op::BatchNorm(rb))) => {
                assert!(pb.gamma().iter().all(|&g| g == 1.0));
                assert!(pb.beta().iter().all(|&b| b == 0.0));
                assert!(pb.mean().iter().all(|&m| m == 0.0));
                assert!(pb.var().iter().all(|&v| v == 1.0));
                assert_eq!(pb.eps(), 1e-5);
                assert_ne!(pb, rb);
                differing += 1;
            }
            (po, ro) => assert_eq!(po, ro, "{}", p.name()),
        }
    }
    assert_eq!(differing, batch_norm_count(&plain));
    let mut randomized = plain.clone();
    assert_eq!(
        randomize_batch_norms(&mut randomized, 4).unwrap(),
        differing
    );
    assert_eq!(randomized, random);
}

/// `fold_batch_norms` folds every batch norm of the builders (each follows a
/// convolution it alone reads) and leaves the reference forward unchanged.
fn check_fold(name: &str, graph: &Graph, batch_size: usize) {
    let mut folded = graph.clone();
    let count = folded.fold_batch_norms().unwrap();
    assert_eq!(count, batch_norm_count(graph), "{name}");
    assert_eq!(batch_norm_count(&folded), 0, "{name}");
    assert_eq!(folded.nodes().len(), graph.nodes().len() - count, "{name}");
    let x = batch(graph, batch_size, 3);
    let (before, after) = (forward(graph, &x), forward(&folded, &x));
    assert!(before.iter().all(|v| v.is_finite()), "{name}");
    let err = relative_error(&before, &after);
    assert!(err < 1e-5, "{name}: relative error {err}");
}

#[test]
fn folding_batch_norms_keeps_the_small_models_forward() {
    for name in SMALL {
        let config = ModelConfig::mnist().with_seed(21).with_random_batch_norm();
        check_fold(name, &by_name(name, &config).unwrap(), 1);
    }
}

#[test]
fn folding_batch_norms_keeps_the_imagenet_models_forward_at_32x32() {
    let config = ModelConfig::imagenet()
        .with_seed(22)
        .with_num_classes(10)
        .with_input_size(32)
        .with_random_batch_norm();
    check_fold("resnet18", &resnet18(&config).unwrap(), 1);
    check_fold("resnet34", &resnet34(&config).unwrap(), 1);
    check_fold(
        "mobilenet_v1",
        &mobilenet_v1(&config.with_width_multiplier(0.25)).unwrap(),
        1,
    );
}

#[test]
fn reduced_imagenet_models_have_the_expected_pyramid() {
    let config = ModelConfig::imagenet().with_input_size(32);
    let g = resnet18(&config).unwrap();
    assert_eq!(
        g.node("maxpool").unwrap().output_shape(),
        ActShape::new(64, 8, 8)
    );
    assert_eq!(
        g.node("layer4.1.relu2").unwrap().output_shape(),
        ActShape::new(512, 1, 1)
    );
    let g = mobilenet_v1(&config.with_width_multiplier(0.25)).unwrap();
    assert_eq!(
        g.node("model.13.5").unwrap().output_shape(),
        ActShape::new(256, 1, 1)
    );
}

#[test]
fn lookup_by_name() {
    let names: Vec<&str> = ARCHITECTURES.iter().map(|a| a.name).collect();
    assert_eq!(
        names,
        [
            "resnet18",
            "resnet34",
            "vgg16",
            "mobilenet_v1",
            "lenet5",
            "resnet8",
            "small_vgg",
            "small_mobilenet"
        ]
    );
    for arch in ARCHITECTURES {
        assert!(!arch.description.is_empty());
        assert_eq!(
            hasten_models::architecture(arch.name).map(|a: &Architecture| a.name),
            Some(arch.name)
        );
    }
    let err = by_name("alexnet", &ModelConfig::imagenet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("resnet18") && err.contains("alexnet"), "{err}");
    assert_eq!(
        by_name("lenet5", &ModelConfig::mnist()).unwrap(),
        lenet5(&ModelConfig::mnist()).unwrap()
    );
}

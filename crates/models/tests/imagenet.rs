//! The full-size ImageNet builders against published figures: parameter
//! counts, multiply–adds, torchvision's `state_dict` module names, output
//! shapes, and MobileNet's α and ρ. Only shapes and costs here — no forward
//! passes at 224².

use std::collections::BTreeSet;

use hasten_core::{ActShape, Graph, NodeOp, Op};
use hasten_models::{by_name, mobilenet_v1, resnet18, resnet34, vgg16, ModelConfig};

/// Multiply–adds of the convolutions and linear layers, as the papers count
/// them (batch norms, ReLUs, pools and additions excluded).
fn layer_macs(graph: &Graph) -> u64 {
    graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op(), NodeOp::Op(Op::Conv(_) | Op::Linear(_))))
        .map(|n| n.cost().unwrap().macs)
        .sum()
}

/// Names of the nodes holding parameters (the `state_dict` module names).
fn parameterised(graph: &Graph) -> BTreeSet<String> {
    graph
        .nodes()
        .iter()
        .filter(|n| n.cost().unwrap().params > 0)
        .map(|n| n.name().to_string())
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn resnet18_matches_torchvision() {
    let g = resnet18(&ModelConfig::imagenet()).unwrap();
    // torchvision: sum(p.numel() for p in resnet18().parameters()).
    assert_eq!(g.cost().unwrap().params, 11_689_512);
    // By hand: conv1 112²·64·147 = 118,013,952; layer1 4 × 56²·64·64·9 =
    // 462,422,016; layers 2–4 each 57,802,752 (first conv) + 3 × 115,605,504
    // + 6,422,528 (downsample) = 411,041,792; fc 512,000. Published 1.8 G
    // (He et al., Table 1), torchvision 1.81 GFLOPS.
    let macs = layer_macs(&g);
    assert_eq!(macs, 1_814_073_344);
    assert!(rel(macs as f64, 1.82e9) < 0.01);
    assert_eq!(g.output_shapes(), vec![ActShape::flat(1000)]);
    assert_eq!(g.inputs().len(), 1);
    assert_eq!(g.inputs()[0].name(), "input");
    assert_eq!(g.inputs()[0].shape(), ActShape::new(3, 224, 224));
    assert_eq!(
        g.node("layer4.1.relu2").unwrap().output_shape(),
        ActShape::new(512, 7, 7)
    );
    assert_eq!(
        g.node("maxpool").unwrap().output_shape(),
        ActShape::new(64, 56, 56)
    );
}

/// The module prefixes of torchvision's `resnet18().state_dict()` keys
/// (`k.rsplit('.', 1)[0]`), written out as the independent truth.
const TORCHVISION_RESNET18_MODULES: [&str; 41] = [
    "conv1",
    "bn1",
    "layer1.0.conv1",
    "layer1.0.bn1",
    "layer1.0.conv2",
    "layer1.0.bn2",
    "layer1.1.conv1",
    "layer1.1.bn1",
    "layer1.1.conv2",
    "layer1.1.bn2",
    "layer2.0.conv1",
    "layer2.0.bn1",
    "layer2.0.conv2",
    "layer2.0.bn2",
    "layer2.0.downsample.0",
    "layer2.0.downsample.1",
    "layer2.1.conv1",
    "layer2.1.bn1",
    "layer2.1.conv2",
    "layer2.1.bn2",
    "layer3.0.conv1",
    "layer3.0.bn1",
    "layer3.0.conv2",
    "layer3.0.bn2",
    "layer3.0.downsample.0",
    "layer3.0.downsample.1",
    "layer3.1.conv1",
    "layer3.1.bn1",
    "layer3.1.conv2",
    "layer3.1.bn2",
    "layer4.0.conv1",
    "layer4.0.bn1",
    "layer4.0.conv2",
    "layer4.0.bn2",
    "layer4.0.downsample.0",
    "layer4.0.downsample.1",
    "layer4.1.conv1",
    "layer4.1.bn1",
    "layer4.1.conv2",
    "layer4.1.bn2",
    "fc",
];

#[test]
fn resnet18_parameter_names_are_torchvision_state_dict_modules() {
    let g = resnet18(&ModelConfig::imagenet()).unwrap();
    let expected: BTreeSet<String> = TORCHVISION_RESNET18_MODULES
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(parameterised(&g), expected);
    // Kinds line up with the names: convolutions, batch norms, one linear.
    for name in TORCHVISION_RESNET18_MODULES {
        let kind = g.node(name).unwrap().kind();
        let want = if name == "fc" {
            "linear"
        } else if name.contains("bn") || name.ends_with("downsample.1") {
            "batch_norm"
        } else {
            "conv"
        };
        assert_eq!(kind, want, "{name}");
    }
    // torchvision's convolutions carry no bias; fc does.
    let NodeOp::Op(Op::Conv(c)) = g.node("layer2.0.downsample.0").unwrap().op() else {
        panic!("downsample.0 is a convolution")
    };
    assert!(c.bias().is_none());
    assert_eq!(c.spec().stride, (2, 2));
    assert_eq!(c.weight().array().shape(), &[128, 64, 1, 1]);
}

#[test]
fn resnet18_state_dict_keys_and_shapes_are_torchvision_s() {
    let g = resnet18(&ModelConfig::imagenet()).unwrap();
    // torchvision's keys (less the `num_batches_tracked` counters): a
    // convolution holds `weight` only, a batch norm `weight`, `bias`,
    // `running_mean`, `running_var`, the classifier `weight` and `bias`.
    let mut expected = Vec::new();
    for module in TORCHVISION_RESNET18_MODULES {
        let suffixes: &[&str] = if module == "fc" {
            &["weight", "bias"]
        } else if module.contains("bn") || module.ends_with("downsample.1") {
            &["weight", "bias", "running_mean", "running_var"]
        } else {
            &["weight"]
        };
        expected.extend(suffixes.iter().map(|s| format!("{module}.{s}")));
    }
    let params = g.parameters();
    let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, expected);
    // torchvision lists 122 keys, 20 of them `num_batches_tracked`.
    assert_eq!(keys.len(), 102);
    let shape = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| a.shape().to_vec())
            .unwrap()
    };
    assert_eq!(shape("conv1.weight"), [64, 3, 7, 7]);
    assert_eq!(shape("bn1.running_var"), [64]);
    assert_eq!(shape("layer1.0.conv2.weight"), [64, 64, 3, 3]);
    assert_eq!(shape("layer2.0.conv1.weight"), [128, 64, 3, 3]);
    assert_eq!(shape("layer2.0.downsample.0.weight"), [128, 64, 1, 1]);
    assert_eq!(shape("layer4.1.bn2.bias"), [512]);
    assert_eq!(shape("fc.weight"), [1000, 512]);
    assert_eq!(shape("fc.bias"), [1000]);
}

#[test]
fn resnet_parameter_free_nodes_have_descriptive_names() {
    let g = resnet18(&ModelConfig::imagenet()).unwrap();
    for name in [
        "relu",
        "maxpool",
        "layer1.0.relu1",
        "layer1.0.add",
        "layer1.0.relu2",
        "avgpool",
        "flatten",
    ] {
        let node = g.node(name).unwrap_or_else(|| panic!("no node {name}"));
        assert_eq!(node.cost().unwrap().params, 0, "{name}");
    }
    assert_eq!(g.node("layer3.1.add").unwrap().kind(), "add");
    assert_eq!(g.node("maxpool").unwrap().kind(), "max_pool");
}

#[test]
fn resnet34_matches_torchvision() {
    let g = resnet34(&ModelConfig::imagenet()).unwrap();
    assert_eq!(g.cost().unwrap().params, 21_797_672);
    // By hand: 118,013,952 (conv1) + 693,633,024 (layer1, 6 convs) +
    // 873,463,808 (layer2) + 1,335,885,824 (layer3) + 642,252,800 (layer4)
    // + 512,000 (fc). Published 3.6 G (He et al.), torchvision 3.66 GFLOPS.
    let macs = layer_macs(&g);
    assert_eq!(macs, 3_663_761_408);
    assert!(rel(macs as f64, 3.66e9) < 0.01);
    let blocks: BTreeSet<&str> = g
        .nodes()
        .iter()
        .filter_map(|n| n.name().strip_suffix(".conv1"))
        .collect();
    assert_eq!(blocks.len(), 3 + 4 + 6 + 3);
    assert!(g.node("layer3.5.bn2").is_some());
    assert!(g.node("layer3.6.bn2").is_none());
    assert_eq!(g.output_shapes(), vec![ActShape::flat(1000)]);
}

#[test]
fn vgg16_matches_torchvision() {
    let g = vgg16(&ModelConfig::imagenet()).unwrap();
    assert_eq!(g.cost().unwrap().params, 138_357_544);
    // 15.47 G multiply–adds (convolutions 15.35 G, classifier 123.6 M).
    let macs = layer_macs(&g);
    assert!(rel(macs as f64, 15.47e9) < 0.002, "{macs}");
    // torchvision's `vgg16().state_dict()` module names.
    let expected: BTreeSet<String> = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
        .iter()
        .map(|i| format!("features.{i}"))
        .chain([0, 3, 6].iter().map(|i| format!("classifier.{i}")))
        .collect();
    assert_eq!(parameterised(&g), expected);
    for (name, kind) in [
        ("features.1", "relu"),
        ("features.4", "max_pool"),
        ("features.30", "max_pool"),
        ("classifier.1", "relu"),
        ("classifier.2", "dropout"),
        ("classifier.5", "dropout"),
    ] {
        assert_eq!(g.node(name).unwrap().kind(), kind, "{name}");
    }
    assert_eq!(
        g.node("features.30").unwrap().output_shape(),
        ActShape::new(512, 7, 7)
    );
    assert_eq!(g.output_shapes(), vec![ActShape::flat(1000)]);
    // Nothing to fold: VGG-16 has no batch norm.
    let mut folded = g.clone();
    assert_eq!(folded.fold_batch_norms().unwrap(), 0);
    assert_eq!(folded, g);
}

#[test]
fn vgg16_rejects_inputs_that_miss_7x7() {
    // 224 to 255 reach 7×7 (the 224 case is built above); these do not, and
    // are refused before the classifier is drawn.
    assert!(vgg16(&ModelConfig::imagenet().with_input_size(256)).is_err());
    assert!(vgg16(&ModelConfig::imagenet().with_input_size(64)).is_err());
}

#[test]
fn mobilenet_v1_matches_howard_et_al() {
    let g = mobilenet_v1(&ModelConfig::imagenet()).unwrap();
    // By hand: stem 864; depthwise 9·Σ c_in = 44,640; pointwise
    // Σ c_in·c_out = 3,139,584; batch-norm γ, β over 10,944 channels =
    // 21,888; fc 1024·1000 + 1000 = 1,025,000. Total 4,231,976 (Keras's
    // trainable count; Howard et al.'s 4.2 M).
    assert_eq!(g.cost().unwrap().params, 4_231_976);
    // By hand: stem 112²·32·27 = 10,838,016; the 13 blocks 556,878,336; fc
    // 1,024,000. Howard et al., Table 1: 569 M.
    let macs = layer_macs(&g);
    assert_eq!(macs, 568_740_352);
    assert!(rel(macs as f64, 569e6) < 0.001);
    assert_eq!(g.output_shapes(), vec![ActShape::flat(1000)]);
    assert_eq!(
        g.node("model.13.5").unwrap().output_shape(),
        ActShape::new(1024, 7, 7)
    );
    for (name, kind) in [
        ("model.0.0", "conv"),
        ("model.0.1", "batch_norm"),
        ("model.0.2", "relu"),
        ("model.1.0", "conv"),
        ("model.1.3", "conv"),
        ("model.1.5", "relu"),
        ("avgpool", "global_avg_pool"),
        ("fc", "linear"),
    ] {
        assert_eq!(g.node(name).unwrap().kind(), kind, "{name}");
    }
    let NodeOp::Op(Op::Conv(dw)) = g.node("model.2.0").unwrap().op() else {
        panic!("model.2.0 is a convolution")
    };
    assert_eq!(dw.spec().groups, 64);
    assert_eq!(dw.spec().stride, (2, 2));
    assert_eq!(dw.weight().array().shape(), &[64, 1, 3, 3]);
    // Strides 2 at blocks 2, 4, 6 and 12 only.
    let strided: Vec<usize> = (1..=13)
        .filter(|i| {
            let NodeOp::Op(Op::Conv(c)) = g.node(&format!("model.{i}.0")).unwrap().op() else {
                unreachable!()
            };
            c.spec().stride == (2, 2)
        })
        .collect();
    assert_eq!(strided, vec![2, 4, 6, 12]);
}

/// Howard et al., Tables 6 and 7: multiply–adds (millions) and parameters
/// (millions) of MobileNet-v1 for width multipliers α at 224 and input
/// resolutions at α = 1.
#[test]
fn mobilenet_v1_alpha_and_rho_match_the_paper_tables() {
    let base = ModelConfig::imagenet();
    for (alpha, mmacs, mparams) in [
        (1.0, 569.0, 4.2),
        (0.75, 325.0, 2.6),
        (0.5, 149.0, 1.3),
        (0.25, 41.0, 0.5),
    ] {
        let g = mobilenet_v1(&base.with_width_multiplier(alpha)).unwrap();
        let macs = layer_macs(&g) as f64 / 1e6;
        let params = g.cost().unwrap().params as f64 / 1e6;
        assert!(rel(macs, mmacs) < 0.01, "α = {alpha}: {macs} M MACs");
        assert!(
            (params - mparams).abs() < 0.06,
            "α = {alpha}: {params} M params"
        );
    }
    for (size, mmacs) in [(224, 569.0), (192, 418.0), (160, 290.0), (128, 186.0)] {
        let rho = size as f64 / 224.0;
        let g = mobilenet_v1(&base.with_resolution_multiplier(rho)).unwrap();
        assert_eq!(g.inputs()[0].shape(), ActShape::new(3, size, size));
        let macs = layer_macs(&g) as f64 / 1e6;
        assert!(rel(macs, mmacs) < 0.01, "{size}: {macs} M MACs");
        // ρ leaves the parameters alone.
        assert_eq!(g.cost().unwrap().params, 4_231_976);
        // The same graph as asking for the size directly.
        assert_eq!(g, mobilenet_v1(&base.with_input_size(size)).unwrap());
    }
}

/// Howard et al., eq. (5) with α and ρ: the separable layers cost
/// `ρ²·(α·D_K²·M·D_F² + α²·M·N·D_F²)`, dominated by the α² pointwise term,
/// so the whole network's multiply–adds scale by about α²ρ².
#[test]
fn mobilenet_v1_macs_scale_as_alpha_squared_rho_squared() {
    let base = ModelConfig::imagenet();
    let full = layer_macs(&mobilenet_v1(&base).unwrap()) as f64;
    for (alpha, size) in [(0.5, 224), (1.0, 128), (0.5, 128), (0.75, 160)] {
        let rho = size as f64 / 224.0;
        let g = mobilenet_v1(
            &base
                .with_width_multiplier(alpha)
                .with_resolution_multiplier(rho),
        )
        .unwrap();
        let conv_macs = layer_macs(&g) as f64 - g.node("fc").unwrap().cost().unwrap().macs as f64;
        let full_conv = full - 1_024_000.0;
        let ratio = conv_macs / full_conv;
        let predicted = alpha * alpha * rho * rho;
        // Depthwise and stem terms scale by α only, so the ratio lies a few
        // per cent above α²ρ² (and exactly ρ² at α = 1).
        assert!(ratio >= predicted * 0.999, "α {alpha}, ρ {rho}: {ratio}");
        assert!(ratio < predicted * 1.06, "α {alpha}, ρ {rho}: {ratio}");
        if alpha == 1.0 {
            assert!(rel(ratio, rho * rho) < 1e-9);
        }
    }
}

#[test]
fn by_name_builds_every_imagenet_model_with_its_class_count() {
    let config = ModelConfig::imagenet().with_num_classes(17);
    for name in ["resnet18", "resnet34", "mobilenet_v1"] {
        let g = by_name(name, &config).unwrap();
        assert_eq!(g.output_shapes(), vec![ActShape::flat(17)], "{name}");
    }
}

#[test]
fn non_mobilenet_builders_reject_a_width_multiplier() {
    let config = ModelConfig::imagenet().with_width_multiplier(0.5);
    assert!(resnet18(&config).is_err());
    assert!(vgg16(&config).is_err());
    assert!(mobilenet_v1(&config).is_ok());
}

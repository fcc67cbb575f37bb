//! Mean compensation on an inverted-residual block (pointwise → depthwise →
//! pointwise with ReLU6 and a residual `Add`, as in MobileNet-v2 and
//! EfficientNet-Lite) whose removed channels are planted constants: dead
//! filters with a bias, as batch-norm folding leaves them. Removing them
//! with their means put back must reproduce the unpruned graph exactly;
//! removing them alone must not.

use std::collections::BTreeMap;

use hasten_core::graph::GraphBuilder;
use hasten_core::{
    ActShape, Clip, Conv4d, ConvLayer, ConvSpec, Flatten, GlobalAvgPool, Graph, LinearLayer,
    SeededRng,
};
use ndarray::{Array4, Axis};

use super::support::{batch, forward_error};
use crate::graph::{
    consumer_input_means, remove_channels, remove_channels_compensated, ChannelGroups,
};

/// A convolution whose filters `dead` have zero weights and bias `value`.
fn conv(
    rng: &mut SeededRng,
    shape: (usize, usize, usize, usize),
    spec: ConvSpec,
    dead: &[(usize, f32)],
) -> ConvLayer {
    let mut w: Array4<f32> = rng.normal_array(shape, 0.4);
    let mut b = rng.normal_array(shape.0, 0.3);
    for &(t, value) in dead {
        w.index_axis_mut(Axis(0), t).fill(0.0);
        b[t] = value;
    }
    ConvLayer::new(Conv4d::new(w).unwrap(), Some(b), spec).unwrap()
}

/// `stem (1×1) → relu6 → expand (1×1) → relu6 → depthwise 3×3 → relu6 →
/// project (1×1) → add(stem branch) → global pool → flatten → fc`, with stem
/// and project channel 2 and expand and depthwise channels 3 and 7 dead.
fn inverted_residual() -> Graph {
    let mut rng = SeededRng::new(21);
    let one = ConvSpec::new();
    let relu6 = || Clip::new(0.0, 6.0).unwrap();
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(4, 6, 6));
    let s = b.op("stem", conv(&mut rng, (8, 4, 1, 1), one, &[(2, 1.5)]), x);
    let s = b.op("stem_relu6", relu6(), s);
    let e = conv(&mut rng, (16, 8, 1, 1), one, &[(3, 1.0), (7, 2.5)]);
    let y = b.op("expand", e, s);
    let y = b.op("expand_relu6", relu6(), y);
    let dw = ConvSpec::new().with_padding(1).with_groups(16);
    let y = b.op(
        "dw",
        conv(&mut rng, (16, 1, 3, 3), dw, &[(3, 0.7), (7, 4.0)]),
        y,
    );
    let y = b.op("dw_relu6", relu6(), y);
    let p = conv(&mut rng, (8, 16, 1, 1), one, &[(2, 0.5)]);
    let y = b.op("project", p, y);
    let y = b.add("add", &[s, y]);
    let y = b.op("pool", GlobalAvgPool, y);
    let y = b.op("flatten", Flatten, y);
    let fc = LinearLayer::new(
        rng.normal_array((5, 8), 0.4),
        Some(rng.normal_array(5, 0.3)),
    );
    let y = b.op("fc", fc.unwrap(), y);
    b.output(y);
    b.build().unwrap()
}

#[test]
fn removed_constant_channels_are_replaced_by_their_means_exactly() {
    let g = inverted_residual();
    let groups = ChannelGroups::analyze(&g).unwrap();
    let stem = groups.group_of("stem").unwrap();
    let expand = groups.group_of("expand").unwrap();
    assert_eq!(groups.groups()[stem].producers, ["stem", "project"]);
    assert_eq!(groups.groups()[expand].channel_wise, ["dw"]);
    let keep = BTreeMap::from([
        (stem, (0..8).filter(|&c| c != 2).collect::<Vec<_>>()),
        (
            expand,
            (0..16).filter(|&c| c != 3 && c != 7).collect::<Vec<_>>(),
        ),
    ]);
    let mut rng = SeededRng::new(5);
    let calibration = batch(&mut rng, ActShape::new(4, 6, 6), 3);
    let means = consumer_input_means(&g, &groups, &[&calibration]).unwrap();
    // The constants the dead channels carry, seen by each consumer (as f32:
    // 0.7 is 0.699999988).
    assert_eq!(means["expand"][2], 1.5);
    assert_eq!(means["project"][3], f64::from(0.7f32));
    assert_eq!(means["project"][7], 4.0);
    assert_eq!(means["fc"][2], 2.0);

    let compensated = remove_channels_compensated(&g, &groups, &keep, &means).unwrap();
    let plain = remove_channels(&g, &groups, &keep).unwrap();
    assert_eq!(compensated.cost().unwrap(), plain.cost().unwrap());
    // On other inputs than the calibration batch: the same function.
    let x = batch(&mut rng, ActShape::new(4, 6, 6), 2);
    let e = forward_error(&g, &compensated, &x);
    assert!(e < 1e-6, "compensated {e:.2e}");
    let e = forward_error(&g, &plain, &x);
    assert!(e > 0.05, "without compensation {e:.2e}");
}

#[test]
fn mean_of_the_wrong_length_is_a_typed_error() {
    let g = inverted_residual();
    let groups = ChannelGroups::analyze(&g).unwrap();
    let expand = groups.group_of("expand").unwrap();
    let keep = BTreeMap::from([(expand, vec![0, 1, 2])]);
    let means = std::collections::HashMap::from([(
        "project".to_string(),
        ndarray::Array1::<f64>::zeros(5),
    )]);
    assert!(remove_channels_compensated(&g, &groups, &keep, &means).is_err());
}

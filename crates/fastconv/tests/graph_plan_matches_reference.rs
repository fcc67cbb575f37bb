//! A plan compiled from a whole graph equals the graph's reference forward
//! (relative error < 1e-4) on random DAGs — residual adds of two and three
//! operands, concatenations, broadcast products, convolutions of random
//! kernel, stride, padding, groups and dilation, batch norms, ReLUs and
//! clips, shuffles and shifts, pooling, padding, element-wise activations,
//! identity / dropout / flatten and a pooled linear head — on batch 1 and 3, every
//! instruction-set path, with and without fusion; and the fusions, aliases
//! and arena reuse it promises actually happen.

mod common;

use common::{random_batch_norm as bn, relative_error};
use hasten_core::graph::{Graph, GraphBuilder, Value};
use hasten_core::ndarray::Array4;
use hasten_core::{
    ActShape, AvgPool, Block, ChannelShuffle, Clip, ConvLayer, ConvSpec, Dropout, Flatten,
    GlobalAvgPool, HardSwish, Identity, LinearLayer, MaxPool, Op, Pad, Padding, PoolSpec, Relu,
    SeededRng, Shift, Sigmoid, Silu, Softmax,
};
use hasten_fastconv::{Isa, Plan, PlanOptions, Winograd};
use proptest::prelude::*;

/// As the block tests: f32 against the f64-accumulating reference.
const TOL: f64 = 1e-4;

/// A convolution with weights scaled to keep activations near unit size.
fn conv(rng: &mut SeededRng, t: usize, c_g: usize, k: (usize, usize), spec: ConvSpec) -> ConvLayer {
    let scale = 1.0 / ((c_g * k.0 * k.1) as f64).sqrt();
    ConvLayer::new(
        hasten_core::Conv4d::new(rng.normal_array((t, c_g, k.0, k.1), scale)).unwrap(),
        Some(rng.normal_array(t, 0.5)),
        spec,
    )
    .unwrap()
}

/// A random activation: ReLU or a Clip (both fused into producers), or one
/// that runs as its own map.
fn activation(rng: &mut SeededRng) -> Op {
    match rng.below(6) {
        0..=2 => Relu.into(),
        3 => Clip::new(-0.5, 1.0).unwrap().into(),
        4 => HardSwish.into(),
        _ => Silu.into(),
    }
}

/// Builds a random DAG from `seed`: `steps` random constructions over the
/// values made so far; returns the graph and its input batches.
fn random_graph(seed: u64, steps: usize, batch: usize) -> (Graph, Vec<Array4<f32>>) {
    let mut rng = SeededRng::new(seed);
    let mut b = GraphBuilder::new();
    let c0 = 2 + rng.below(5);
    let hw = 4 + rng.below(5);
    let x = b.input("x", ActShape::new(c0, hw, hw));
    let mut values: Vec<(Value, ActShape)> = vec![(x, ActShape::new(c0, hw, hw))];
    let mut n = 0;
    let mut name = |what: &str| {
        n += 1;
        format!("{what}{n}")
    };
    for _ in 0..steps {
        let (v, s) = values[rng.below(values.len())];
        match rng.below(11) {
            // A convolution of random geometry, maybe followed by BN / ReLU.
            0 | 1 => {
                let divisors: Vec<usize> =
                    (1..=s.channels).filter(|g| s.channels % g == 0).collect();
                let groups = divisors[rng.below(divisors.len())];
                let t = groups * (1 + rng.below(3));
                let k = (1 + rng.below(3), 1 + rng.below(3));
                let spec = ConvSpec::new()
                    .with_stride(1 + rng.below(2))
                    .with_padding(rng.below(2))
                    .with_dilation(1 + rng.below(2))
                    .with_groups(groups);
                let layer = conv(&mut rng, t, s.channels / groups, k, spec);
                let Ok(out) = hasten_core::Operator::output_shape(&layer, s) else {
                    continue;
                };
                let mut y = b.op(name("conv"), layer, v);
                if rng.below(2) == 0 {
                    y = b.op(name("bn"), bn(&mut rng, t), y);
                }
                if rng.below(2) == 0 {
                    y = b.op(name("act"), activation(&mut rng), y);
                }
                values.push((y, out));
            }
            // A residual block: conv (+BN) + shortcut (+ a third operand) (+ReLU).
            2 | 3 => {
                let k = if rng.below(2) == 0 { 1 } else { 3 };
                let spec = ConvSpec::new().with_padding(k / 2);
                let layer = conv(&mut rng, s.channels, s.channels, (k, k), spec);
                let mut y = b.op(name("conv"), layer, v);
                if rng.below(2) == 0 {
                    y = b.op(name("bn"), bn(&mut rng, s.channels), y);
                }
                let mut operands = vec![y, v];
                if let Some(&(w, _)) = values.iter().find(|&&(w, ws)| ws == s && w != v) {
                    if rng.below(2) == 0 {
                        operands.push(w);
                    }
                }
                if rng.below(2) == 0 {
                    operands.reverse();
                }
                let mut y = b.add(name("add"), &operands);
                if rng.below(2) == 0 {
                    y = b.op(name("act"), activation(&mut rng), y);
                }
                values.push((y, s));
            }
            // A concatenation of two or three same-size branches.
            4 | 5 => {
                let mut parts = Vec::new();
                let mut channels = 0;
                for _ in 0..2 + rng.below(2) {
                    let t = 1 + rng.below(4);
                    let layer = conv(
                        &mut rng,
                        t,
                        s.channels,
                        (3, 3),
                        ConvSpec::new().with_padding(1),
                    );
                    let mut y = b.op(name("branch"), layer, v);
                    if rng.below(2) == 0 {
                        y = b.op(name("relu"), Relu, y);
                    }
                    parts.push(y);
                    channels += t;
                }
                if rng.below(3) == 0 {
                    parts.push(v);
                    channels += s.channels;
                }
                let y = b.concat(name("concat"), &parts);
                values.push((y, ActShape::new(channels, s.height, s.width)));
            }
            // A squeeze–excitation-like gate: a C×1×1 value (a full-plane
            // convolution) broadcast over x, or a full-shape product.
            6 => {
                let gate_layer = conv(
                    &mut rng,
                    s.channels,
                    s.channels,
                    (s.height, s.width),
                    ConvSpec::new(),
                );
                let g = if rng.below(3) == 0 {
                    let layer = conv(&mut rng, s.channels, s.channels, (1, 1), ConvSpec::new());
                    b.op(name("gate"), layer, v)
                } else {
                    b.op(name("gate"), gate_layer, v)
                };
                let y = b.mul(name("mul"), v, g);
                values.push((y, s));
            }
            // Pooling, or a zero pad (folded into a following convolution
            // or run on its own), or a free op.
            8 => match rng.below(6) {
                0 | 1 => {
                    let op: Op = if rng.below(2) == 0 {
                        MaxPool::new(PoolSpec::square(2).with_stride(2))
                            .unwrap()
                            .into()
                    } else {
                        let spec = PoolSpec::square(3)
                            .with_stride(1 + rng.below(2))
                            .with_padding(1);
                        AvgPool::new(spec, rng.below(2) == 0).unwrap().into()
                    };
                    let Ok(out) = hasten_core::Operator::output_shape(&op, s) else {
                        continue;
                    };
                    values.push((b.op(name("pool"), op, v), out));
                }
                2 | 3 => {
                    let value = if rng.below(3) == 0 { 0.5 } else { 0.0 };
                    let sides = Padding {
                        top: 1,
                        bottom: rng.below(2),
                        left: rng.below(3),
                        right: 1,
                    };
                    let pad = Pad::new(sides, value).unwrap();
                    let ps = hasten_core::Operator::output_shape(&pad, s).unwrap();
                    let y = b.op(name("pad"), pad, v);
                    let layer = conv(&mut rng, 3, s.channels, (3, 3), ConvSpec::new());
                    // A padded plane smaller than 3×3 takes no unpadded 3×3
                    // convolution; the pad alone stays in the graph then.
                    match hasten_core::Operator::output_shape(&layer, ps) {
                        Ok(out) if rng.below(3) > 0 => {
                            values.push((b.op(name("padconv"), layer, y), out))
                        }
                        _ => values.push((y, ps)),
                    }
                }
                4 => {
                    let y = b.op(name("identity"), Identity, v);
                    values.push((b.op(name("dropout"), Dropout::new(0.3).unwrap(), y), s));
                }
                _ => values.push((b.op(name("sigmoid"), Sigmoid, v), s)),
            },
            // Softmax over channels.
            9 => values.push((b.op(name("softmax"), Softmax, v), s)),
            // A shuffle and a shift read through by the next convolution
            // (or written out), as a block node.
            _ => {
                let c = s.channels;
                let groups = if c % 2 == 0 { 2 } else { 1 };
                let shift = Shift::new(
                    (0..c)
                        .map(|_| (rng.below(3) as isize - 1, rng.below(3) as isize - 1))
                        .collect(),
                )
                .unwrap();
                let mut ops = vec![ChannelShuffle::new(groups).unwrap().into(), shift.into()];
                if rng.below(2) == 0 {
                    ops.push(conv(&mut rng, c, c, (3, 3), ConvSpec::new().with_padding(1)).into());
                    ops.push(bn(&mut rng, c).into());
                    ops.push(Relu.into());
                }
                let y = b.node(name("block"), Block::new(ops).unwrap(), &[v]);
                values.push((y, s));
            }
        }
    }
    let (mut last, mut s) = *values.last().unwrap();
    if rng.below(2) == 0 {
        // A pooled head: global average pool, flatten.
        last = b.op(name("gap"), GlobalAvgPool, last);
        last = b.op(name("flatten"), Flatten, last);
        s = ActShape::new(s.channels, 1, 1);
    }
    if rng.below(2) == 0 {
        let linear = LinearLayer::new(
            rng.normal_array((5, s.len()), 1.0 / (s.len() as f64).sqrt()),
            Some(rng.normal_array(5, 1.0)),
        )
        .unwrap();
        let y = b.op(name("linear"), linear, last);
        b.output(y);
    } else {
        b.output(last);
    }
    if rng.below(2) == 0 && values.len() > 2 {
        // A second output, possibly read by later nodes too.
        b.output(values[1 + rng.below(values.len() - 2)].0);
    }
    let graph = b.build().unwrap();
    let x = rng.normal_array((batch, c0, hw, hw), 1.0);
    (graph, vec![x])
}

/// Every supported ISA, fused and unfused, Winograd (either tile) and never: the
/// plan's outputs (on two runs) equal the reference's.
fn check_graph(graph: &Graph, inputs: &[Array4<f32>]) -> Result<(), TestCaseError> {
    let refs: Vec<&Array4<f32>> = inputs.iter().collect();
    let slow = graph.reference_forward(&refs).unwrap();
    let batch = inputs[0].shape()[0];
    for isa in Isa::supported() {
        for (fuse, winograd) in [
            (true, Winograd::Off),
            (true, Winograd::F4),
            (true, Winograd::F2),
            (false, Winograd::Off),
        ] {
            let options = PlanOptions {
                isa,
                winograd,
                fuse,
                ..PlanOptions::default()
            };
            let mut plan = Plan::for_graph(graph, batch, options).unwrap();
            for run in 0..2 {
                let fast = plan.run_all(&refs).unwrap().to_vec();
                prop_assert_eq!(fast.len(), slow.len());
                for (k, (f, s)) in fast.iter().zip(&slow).enumerate() {
                    let err = relative_error(f, s);
                    prop_assert!(
                        err < TOL,
                        "{options:?}, run {run}, output {k}: relative error {err}\n{plan}"
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn random_graphs_match_reference(seed in any::<u64>(), steps in 1..=8usize, batch in prop_oneof![Just(1usize), Just(3)]) {
        let (graph, inputs) = random_graph(seed, steps, batch);
        check_graph(&graph, &inputs)?;
    }
}

/// `relu(bn(conv(x)) + r)` for a convolution of kernel `k`, stride `st`,
/// dilation `d`, padding `pad` (top, bottom, left, right) and `groups`
/// groups on `hw` inputs: the layers that run on padded rows, the residual
/// `r` a second graph input.
fn padded_rows_graph(
    seed: u64,
    (c_g, t_g, groups): (usize, usize, usize),
    (k, st, d): ((usize, usize), (usize, usize), (usize, usize)),
    pad: [usize; 4],
    hw: (usize, usize),
    batch: usize,
) -> (Graph, Vec<Array4<f32>>) {
    let mut rng = SeededRng::new(seed);
    let spec = ConvSpec {
        stride: st,
        padding: Padding {
            top: pad[0],
            bottom: pad[1],
            left: pad[2],
            right: pad[3],
        },
        dilation: d,
        groups,
    };
    let layer = conv(&mut rng, t_g * groups, c_g, k, spec);
    let shape = ActShape::new(c_g * groups, hw.0, hw.1);
    let out = layer.output_shape(shape).unwrap();
    let mut b = GraphBuilder::new();
    let x = b.input("x", shape);
    let r = b.input("r", out);
    let y = b.op("conv", layer, x);
    let y = b.op("bn", bn(&mut rng, out.channels), y);
    let y = b.add("add", &[y, r]);
    let y = b.op("relu", Relu, y);
    b.output(y);
    let inputs = vec![
        rng.normal_array(shape.batched(batch), 1.0),
        rng.normal_array(out.batched(batch), 1.0),
    ];
    (b.build().unwrap(), inputs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Convolutions with short rows, and strided ones with long rows or
    /// many filters, run as a GEMM over a padded copy split into stride
    /// phases (no im2col), batch norm, residual add and ReLU fused, and
    /// equal the reference on every ISA, with and without fusion.
    #[test]
    fn padded_rows_convolutions_match_reference(
        seed in any::<u64>(),
        (c_g, t_g, groups) in (1..=9usize, prop_oneof![1..=20usize, 60..=70usize], 1..=2usize),
        (kh, kw, dh, dw) in (1..=5usize, 2..=7usize, 1..=2usize, 1..=2usize),
        (sh, sw) in (1..=3usize, 1..=3usize),
        pad in proptest::array::uniform4(0..=3usize),
        (eh, ew) in (0..=6usize, prop_oneof![0..=6usize, 60..=80usize]),
        batch in 1..=3usize,
    ) {
        // One input channel per group would be a depthwise layer.
        let c_g = if groups > 1 { c_g.max(2) } else { c_g };
        let (h, w) = (dh * (kh - 1) + 1 + eh, dw * (kw - 1) + 1 + ew);
        let (graph, inputs) =
            padded_rows_graph(seed, (c_g, t_g, groups), ((kh, kw), (sh, sw), (dh, dw)), pad, (h, w), batch);
        let options = PlanOptions { winograd: Winograd::Off, ..PlanOptions::default() };
        let plan = Plan::for_graph(&graph, batch, options).unwrap();
        let step = &plan.steps()[0];
        // Padded rows where the wide rows (the padded width over the
        // stride) are at most twice the output rows, and either at most 64
        // filters per group and output rows of at most 32, or a stride
        // other than 1 and at most one extra wide column per 12 output
        // columns.
        let (ow, wq) = (step.output.width, (w + pad[2] + pad[3]).div_ceil(sw));
        let short = t_g <= 64 && ow <= 32;
        let strided = (sh, sw) != (1, 1) && 12 * (wq - ow) <= ow;
        let expected = if wq <= 2 * ow && (short || strided) {
            "conv gemm (padded rows)"
        } else {
            "conv gemm"
        };
        prop_assert_eq!(&step.kernel, expected, "{}", plan);
        prop_assert_eq!(&step.fused, &["batch_norm", "residual add", "relu"], "{}", plan);
        check_graph(&graph, &inputs)?;
    }
}

/// The strided layers of ResNet-18 at reduced sizes run on padded rows
/// however many filters and however long their rows — the 7×7/2 stem, a
/// 3×3/2 layer with more than 64 filters, and a 2×2/2 layer whose wide rows
/// are its output rows (the GEMM writes the output directly, the residual
/// and ReLU in its epilogue) — and equal the reference on every ISA.
#[test]
fn strided_layers_run_on_padded_rows() {
    for (seed, (c_g, t_g), k, pad, hw) in [
        (1, (3, 66), (7, 7), [3, 3, 3, 3], (38, 110)),
        (2, (16, 80), (3, 3), [1, 1, 1, 1], (34, 66)),
        (3, (5, 70), (2, 2), [0, 0, 0, 0], (10, 80)),
        (4, (4, 72), (3, 3), [0, 2, 1, 0], (35, 67)),
        (5, (8, 70), (3, 3), [1, 1, 1, 1], (28, 28)),
    ] {
        let (graph, inputs) =
            padded_rows_graph(seed, (c_g, t_g, 1), (k, (2, 2), (1, 1)), pad, hw, 2);
        let options = PlanOptions {
            winograd: Winograd::Off,
            ..PlanOptions::default()
        };
        let plan = Plan::for_graph(&graph, 2, options).unwrap();
        assert_eq!(plan.steps()[0].kernel, "conv gemm (padded rows)", "{plan}");
        check_graph(&graph, &inputs).unwrap();
    }
}

/// A ResNet-like graph: a stem, `blocks` basic blocks (two 3×3 conv + BN,
/// identity or 1×1-projection shortcut, ReLU after the add), a final linear.
fn resnet_like(rng: &mut SeededRng, c: usize, hw: usize, blocks: usize) -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, hw, hw));
    let stem = conv(rng, c, 3, (3, 3), ConvSpec::new().with_padding(1));
    let mut y = b.op("stem", stem, x);
    y = b.op("stem.bn", bn(rng, c), y);
    y = b.op("stem.relu", Relu, y);
    let (mut ch, mut size) = (c, hw);
    for i in 0..blocks {
        let down = i % 2 == 1;
        let (out, stride) = if down { (ch * 2, 2) } else { (ch, 1) };
        let p = format!("layer{i}");
        let c1 = conv(
            rng,
            out,
            ch,
            (3, 3),
            ConvSpec::new().with_padding(1).with_stride(stride),
        );
        let mut z = b.op(format!("{p}.conv1"), c1, y);
        z = b.op(format!("{p}.bn1"), bn(rng, out), z);
        z = b.op(format!("{p}.relu1"), Relu, z);
        let c2 = conv(rng, out, out, (3, 3), ConvSpec::new().with_padding(1));
        z = b.op(format!("{p}.conv2"), c2, z);
        z = b.op(format!("{p}.bn2"), bn(rng, out), z);
        let shortcut = if down {
            let d = conv(rng, out, ch, (1, 1), ConvSpec::new().with_stride(2));
            let s = b.op(format!("{p}.downsample"), d, y);
            b.op(format!("{p}.downsample.bn"), bn(rng, out), s)
        } else {
            y
        };
        z = b.add(format!("{p}.add"), &[z, shortcut]);
        y = b.op(format!("{p}.relu2"), Relu, z);
        ch = out;
        size = size.div_ceil(stride);
    }
    let fc = LinearLayer::new(
        rng.normal_array((10, ch * size * size), 0.05),
        Some(rng.normal_array(10, 0.1)),
    )
    .unwrap();
    let y = b.op("fc", fc, y);
    b.output(y);
    b.build().unwrap()
}

#[test]
fn residual_adds_fuse_into_the_gemm_epilogue_and_memory_is_reused() {
    let mut rng = SeededRng::new(1);
    let graph = resnet_like(&mut rng, 16, 16, 4);
    let x = rng.normal_array((2, 3, 16, 16), 1.0);
    let mut plan = Plan::for_graph(&graph, 2, PlanOptions::default()).unwrap();
    let steps = plan.steps();
    // Every block's add (and the ReLU after it) is in its conv2's epilogue.
    for i in 0..4 {
        let conv2 = steps
            .iter()
            .find(|s| s.nodes[0] == format!("layer{i}.conv2"))
            .unwrap();
        assert!(conv2.kernel.starts_with("conv gemm"), "{plan}");
        assert_eq!(
            conv2.fused,
            ["batch_norm", "residual add", "relu"],
            "{plan}"
        );
    }
    assert!(steps.iter().all(|s| !s.kernel.starts_with("add")), "{plan}");
    // Stem, 4 × (conv1, conv2), 2 downsamples, fc.
    assert_eq!(steps.len(), 1 + 8 + 2 + 1, "{plan}");
    assert!(
        plan.peak_activation_bytes() < plan.naive_activation_bytes() / 3,
        "{plan}"
    );
    let fast = plan.run_all(&[&x]).unwrap().to_vec();
    let slow = graph.reference_forward(&[&x]).unwrap();
    assert!(relative_error(&fast[0], &slow[0]) < TOL);
}

#[test]
fn concat_operands_write_their_channel_slices() {
    let mut rng = SeededRng::new(2);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(4, 6, 6));
    let a = b.op(
        "a",
        conv(&mut rng, 3, 4, (3, 3), ConvSpec::new().with_padding(1)),
        x,
    );
    let a = b.op("a.relu", Relu, a);
    let c = b.op("c", conv(&mut rng, 5, 4, (1, 1), ConvSpec::new()), x);
    let inner = b.concat("inner", &[a, c]);
    let d = b.op(
        "d",
        conv(&mut rng, 2, 4, (3, 3), ConvSpec::new().with_padding(1)),
        x,
    );
    // The input itself is copied; the inner concat is a slice of the outer.
    let outer = b.concat("outer", &[inner, d, x]);
    let single = b.concat("single", &[outer]);
    let y = b.op(
        "head",
        conv(&mut rng, 3, 14, (1, 1), ConvSpec::new()),
        single,
    );
    b.output(y);
    let graph = b.build().unwrap();
    let input = rng.normal_array((3, 4, 6, 6), 1.0);
    for isa in Isa::supported() {
        let options = PlanOptions {
            isa,
            ..PlanOptions::default()
        };
        let mut plan = Plan::for_graph(&graph, 3, options).unwrap();
        let steps = plan.steps();
        for node in ["a", "c", "d"] {
            let s = steps.iter().find(|s| s.nodes[0] == node).unwrap();
            assert!(s.in_place_concat, "{node} not written in place:\n{plan}");
        }
        assert_eq!(
            steps.iter().filter(|s| s.kernel == "concat copy").count(),
            1,
            "{plan}"
        );
        let free: Vec<&str> = plan.free_nodes().iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            free.contains(&"inner") && free.contains(&"single"),
            "{plan}"
        );
        let fast = plan.run_all(&[&input]).unwrap().to_vec();
        let slow = graph.reference_forward(&[&input]).unwrap();
        assert!(relative_error(&fast[0], &slow[0]) < TOL, "{isa}");
    }
}

#[test]
fn outputs_read_later_shared_inputs_and_two_outputs() {
    let mut rng = SeededRng::new(3);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(3, 8, 8));
    // x is read by three nodes; `early` is an output and read later, by
    // nodes whose buffers would otherwise reuse its memory.
    let early = b.op(
        "early",
        conv(&mut rng, 6, 3, (3, 3), ConvSpec::new().with_padding(1)),
        x,
    );
    let p = b.op("p", conv(&mut rng, 6, 3, (1, 1), ConvSpec::new()), x);
    let q = b.op("q", Relu, p);
    let r = b.op(
        "r",
        conv(&mut rng, 6, 6, (3, 3), ConvSpec::new().with_padding(1)),
        q,
    );
    let s = b.add("s", &[r, early]);
    let t = b.op(
        "t",
        conv(&mut rng, 6, 6, (3, 3), ConvSpec::new().with_padding(1)),
        s,
    );
    let u = b.op("u", conv(&mut rng, 3, 6, (1, 1), ConvSpec::new()), t);
    let v = b.add("v", &[u, x]);
    b.output(early);
    b.output(v);
    b.output(x);
    let graph = b.build().unwrap();
    let input = rng.normal_array((2, 3, 8, 8), 1.0);
    check_graph(&graph, &[input]).unwrap();
}

#[test]
fn bad_inputs_are_errors() {
    let mut rng = SeededRng::new(4);
    let graph = resnet_like(&mut rng, 4, 8, 2);
    assert!(Plan::for_graph(&graph, 0, PlanOptions::default()).is_err());
    assert!(Plan::for_graph(&graph, usize::MAX / 2, PlanOptions::default()).is_err());
    let mut plan = Plan::for_graph(&graph, 2, PlanOptions::default()).unwrap();
    let good = rng.normal_array((2, 3, 8, 8), 1.0);
    let bad = rng.normal_array((1, 3, 8, 8), 1.0);
    assert!(plan.run_all(&[]).is_err());
    assert!(plan.run_all(&[&good, &good]).is_err());
    assert!(plan.run_all(&[&bad]).is_err());
    assert!(plan.run(&bad).is_err());
    assert!(plan.run_all(&[&good]).is_ok());
    // A non-standard-layout input is accepted (and copied).
    let transposed = good.clone().reversed_axes();
    let back = transposed.view().reversed_axes().to_owned();
    assert!(plan.run(&back).is_ok());
}

#[test]
fn nan_in_a_fused_residual_reaches_the_output() {
    // conv → add(NaN-carrying shortcut) → ReLU: the fused epilogue keeps NaN
    // exactly where the reference does, on every path (edge tiles included).
    let mut rng = SeededRng::new(5);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(5, 7, 9));
    let y = b.op(
        "conv",
        conv(&mut rng, 5, 5, (3, 3), ConvSpec::new().with_padding(1)),
        x,
    );
    let y = b.add("add", &[y, x]);
    let y = b.op("relu", Relu, y);
    let z = b.op("conv2", conv(&mut rng, 5, 5, (1, 1), ConvSpec::new()), x);
    let z = b.add("add2", &[x, z]);
    b.output(y);
    b.output(z);
    let graph = b.build().unwrap();
    let mut input = rng.normal_array((2, 5, 7, 9), 1.0);
    input[[1, 2, 3, 4]] = f32::NAN;
    let slow = graph.reference_forward(&[&input]).unwrap();
    for isa in Isa::supported() {
        let options = PlanOptions {
            isa,
            ..PlanOptions::default()
        };
        let mut plan = Plan::for_graph(&graph, 2, options).unwrap();
        assert!(
            plan.steps()
                .iter()
                .all(|s| s.kernel.starts_with("conv gemm")),
            "{plan}"
        );
        let fast = plan.run_all(&[&input]).unwrap().to_vec();
        for (f, s) in fast.iter().zip(&slow) {
            for (a, b) in f.iter().zip(s) {
                assert_eq!(a.is_nan(), b.is_nan(), "{isa}");
                if !b.is_nan() {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{isa}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn pads_fold_and_free_ops_alias() {
    let mut rng = SeededRng::new(6);
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(4, 8, 8));
    let p = b.op("pad", Pad::new(Padding::same(1), 0.0).unwrap(), x);
    let y = b.op("conv", conv(&mut rng, 6, 4, (3, 3), ConvSpec::new()), p);
    let y = b.op("relu6", Clip::relu6(), y);
    let y = b.op("dropout", Dropout::new(0.5).unwrap(), y);
    let y = b.op("gap", GlobalAvgPool, y);
    let y = b.op("flatten", Flatten, y);
    let y = b.op(
        "fc",
        LinearLayer::new(rng.normal_array((3, 6), 0.5), None).unwrap(),
        y,
    );
    b.output(y);
    let graph = b.build().unwrap();
    let plan = Plan::for_graph(&graph, 1, PlanOptions::default()).unwrap();
    let steps = plan.steps();
    assert_eq!(steps.len(), 3, "{plan}");
    assert_eq!(steps[0].fused, ["pad", "clip"], "{plan}");
    let free: Vec<&str> = plan.free_nodes().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(free, ["dropout", "flatten"], "{plan}");
    let input = rng.normal_array((1, 4, 8, 8), 1.0);
    check_graph(&graph, &[input]).unwrap();
}

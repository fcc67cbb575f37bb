//! Gradient tests: every backward against central finite differences of the
//! f64 forward, every f64 forward against the op's f32 reference forward,
//! and hand-computed values where a closed form is short.

use ndarray::{Array1, Array4, ArrayD};

use super::check::{gradient_error, TOLERANCE};
use super::loss::{mse, softmax_cross_entropy};
use super::*;
use crate::graph::{GraphBuilder, NodeOp};
use crate::layer::{ConvLayer, LinearLayer};
use crate::op::*;
use crate::rng::SeededRng;
use crate::shape::ActShape;
use crate::spec::{ConvSpec, Padding};
use crate::Block;

pub(super) fn assert_close(what: &str, err: f64, peak: f64) {
    assert!(err < TOLERANCE, "{what}: relative gradient error {err:e}");
    assert!(
        peak > 1e-6,
        "{what}: gradient vanishes, the check would be vacuous"
    );
}

/// Checks the input gradient and every trainable parameter gradient of `op`
/// at `x` against central differences of `L = Σ r ⊙ forward(x)`.
pub(super) fn check_op(what: &str, op: &Op, x: &Array4<f64>, mode: Mode, rng: &mut SeededRng) {
    let p = op_params(op);
    let y = forward(op, x, &p, mode).unwrap().output;
    let r: Array4<f64> = rng.normal_array_f64(y.raw_dim(), 1.0);
    let g = backward(op, x, &r, &p, mode).unwrap();
    let loss = |x: &Array4<f64>, p: &OpParams| (forward(op, x, p, mode).unwrap().output * &r).sum();
    let (err, peak) = gradient_error(x, &g.input, |x| loss(x, &p));
    assert_close(&format!("{what} input"), err, peak);
    let trainable: Vec<&String> = p.keys().filter(|s| is_trainable(s)).collect();
    assert_eq!(
        g.params.len(),
        trainable.len(),
        "{what}: one gradient per parameter"
    );
    for s in trainable {
        let (err, peak) = gradient_error(&p[s], &g.params[s], |v: &ArrayD<f64>| {
            let mut q = p.clone();
            q.insert(s.clone(), v.clone());
            loss(x, &q)
        });
        assert_close(&format!("{what} {s}"), err, peak);
    }
}

/// The f64 forward in inference mode agrees with the f32 reference forward.
pub(super) fn check_matches_reference(what: &str, op: &Op, x: &Array4<f64>) {
    let y64 = forward(op, x, &op_params(op), Mode::Eval).unwrap().output;
    let y32 = op.reference_forward(&x.mapv(|v| v as f32)).unwrap();
    let err = crate::relative_error(&y32, &y64.mapv(|v| v as f32));
    assert!(
        err < 1e-6,
        "{what}: f64 forward differs from the reference by {err:e}"
    );
}

pub(super) fn conv(
    rng: &mut SeededRng,
    o: usize,
    i: usize,
    k: (usize, usize),
    spec: ConvSpec,
    bias: bool,
) -> Op {
    let w = rng.normal_array((o, i / spec.groups, k.0, k.1), 0.5);
    let b = bias.then(|| rng.normal_array(o, 0.5));
    Op::Conv(ConvLayer::new(crate::Conv4d::new(w).unwrap(), b, spec).unwrap())
}

fn batch_norm(rng: &mut SeededRng, c: usize) -> BatchNorm {
    BatchNorm::new(
        rng.normal_array(c, 0.5) + 1.0,
        rng.normal_array(c, 0.5),
        rng.normal_array(c, 0.5),
        rng.uniform_array(c, 0.5, 2.0),
        1e-5,
    )
    .unwrap()
}

#[test]
fn convolutions_match_finite_differences() {
    let mut rng = SeededRng::new(1);
    let cases: Vec<(&str, Op, [usize; 4])> = vec![
        (
            "dense 3x3 pad 1",
            conv(
                &mut rng,
                3,
                2,
                (3, 3),
                ConvSpec::new().with_padding(1),
                true,
            ),
            [2, 2, 5, 5],
        ),
        (
            "stride 2 dilation 2",
            conv(
                &mut rng,
                2,
                2,
                (3, 2),
                ConvSpec::new().with_stride(2).with_dilation(2),
                false,
            ),
            [1, 2, 7, 6],
        ),
        (
            "asymmetric padding, stride (2, 1)",
            conv(
                &mut rng,
                2,
                3,
                (2, 3),
                ConvSpec::new()
                    .with_stride_hw(2, 1)
                    .with_padding_sides(Padding {
                        top: 1,
                        bottom: 0,
                        left: 2,
                        right: 1,
                    }),
                true,
            ),
            [2, 3, 4, 3],
        ),
        (
            "groups 2",
            conv(
                &mut rng,
                4,
                4,
                (3, 3),
                ConvSpec::new().with_groups(2).with_padding(1),
                true,
            ),
            [1, 4, 4, 4],
        ),
        (
            "depthwise",
            conv(
                &mut rng,
                3,
                3,
                (3, 3),
                ConvSpec::new()
                    .with_groups(3)
                    .with_padding(1)
                    .with_stride(2),
                false,
            ),
            [2, 3, 5, 5],
        ),
    ];
    for (what, op, dims) in cases {
        let x = rng.normal_array_f64(dims, 1.0);
        check_matches_reference(what, &op, &x);
        check_op(what, &op, &x, Mode::Eval, &mut rng);
    }
}

#[test]
fn linear_matches_finite_differences() {
    let mut rng = SeededRng::new(2);
    for bias in [true, false] {
        let w = rng.normal_array((3, 12), 0.5);
        let b = bias.then(|| rng.normal_array(3, 0.5));
        let op = Op::Linear(LinearLayer::new(w, b).unwrap());
        let x = rng.normal_array_f64([2, 3, 2, 2], 1.0);
        check_matches_reference("linear", &op, &x);
        check_op("linear", &op, &x, Mode::Eval, &mut rng);
    }
}

#[test]
fn batch_norm_both_modes_match_finite_differences() {
    let mut rng = SeededRng::new(3);
    let op = Op::BatchNorm(batch_norm(&mut rng, 3));
    let x = rng.normal_array_f64([3, 3, 2, 2], 2.0) + 0.5;
    check_matches_reference("batch norm", &op, &x);
    check_op("batch norm (inference)", &op, &x, Mode::Eval, &mut rng);
    check_op("batch norm (training)", &op, &x, Mode::train(0), &mut rng);
    // 1×1 planes: the statistics run over the batch only.
    let x = rng.normal_array_f64([4, 3, 1, 1], 1.0);
    check_op(
        "batch norm (training, 1x1)",
        &op,
        &x,
        Mode::train(0),
        &mut rng,
    );
}

#[test]
fn batch_norm_training_statistics_by_hand() {
    // One channel, values 1, 2, 3, 6: mean 3, biased variance 3.5, unbiased 14/3.
    let bn = BatchNorm::new(
        Array1::from(vec![2.0]),
        Array1::from(vec![1.0]),
        Array1::from(vec![10.0]),
        Array1::from(vec![4.0]),
        0.5,
    )
    .unwrap();
    let op = Op::BatchNorm(bn);
    let x = Array4::from_shape_vec((2, 1, 1, 2), vec![1.0, 2.0, 3.0, 6.0]).unwrap();
    let mode = Mode::Train {
        seed: 0,
        momentum: 0.25,
    };
    let out = forward(&op, &x, &op_params(&op), mode).unwrap();
    let denom = (3.5f64 + 0.5).sqrt(); // = 2
    let want: Vec<f64> = [1.0, 2.0, 3.0, 6.0]
        .iter()
        .map(|v| 2.0 * (v - 3.0) / denom + 1.0)
        .collect();
    assert_eq!(out.output.iter().copied().collect::<Vec<_>>(), want);
    let rm = out.buffers["running_mean"][[0]];
    let rv = out.buffers["running_var"][[0]];
    assert!((rm - (0.75 * 10.0 + 0.25 * 3.0)).abs() < 1e-12);
    assert!((rv - (0.75 * 4.0 + 0.25 * 14.0 / 3.0)).abs() < 1e-12);
    // Inference mode leaves the buffers alone and uses them.
    let eval = forward(&op, &x, &op_params(&op), Mode::Eval).unwrap();
    assert!(eval.buffers.is_empty());
    assert!((eval.output[[0, 0, 0, 0]] - (2.0 * (1.0 - 10.0) / 4.5f64.sqrt() + 1.0)).abs() < 1e-12);
    // A single value per channel has no batch variance.
    assert!(forward(&op, &Array4::zeros((1, 1, 1, 1)), &op_params(&op), mode).is_err());
    let bad = Mode::Train {
        seed: 0,
        momentum: 1.5,
    };
    assert!(forward(&op, &x, &op_params(&op), bad).is_err());
}

#[test]
fn activations_match_finite_differences_away_from_kinks() {
    let mut rng = SeededRng::new(4);
    let ops: Vec<(&str, Op, Vec<f64>)> = vec![
        ("relu", Op::Relu(Relu), vec![0.0]),
        (
            "clip",
            Op::Clip(Clip::new(-0.5, 1.0).unwrap()),
            vec![-0.5, 1.0],
        ),
        ("sigmoid", Op::Sigmoid(Sigmoid), vec![]),
        (
            "hard sigmoid",
            Op::HardSigmoid(HardSigmoid::default()),
            vec![-2.5, 2.5],
        ),
        ("hard swish", Op::HardSwish(HardSwish), vec![-3.0, 3.0]),
        ("silu", Op::Silu(Silu), vec![]),
    ];
    for (what, op, kinks) in ops {
        let x = rng.normal_array_f64([2, 3, 2, 3], 2.5).mapv(|v: f64| {
            match kinks.iter().find(|&&k| (v - k).abs() < 1e-2) {
                Some(&k) => k + 0.05,
                None => v,
            }
        });
        check_matches_reference(what, &op, &x);
        check_op(what, &op, &x, Mode::Eval, &mut rng);
    }
    // PyTorch's conventions at the kinks.
    assert_eq!(activation_derivative(&Op::Relu(Relu), 0.0), Some(0.0));
    assert_eq!(
        activation_derivative(&Op::Clip(Clip::relu6()), 6.0),
        Some(0.0)
    );
    assert_eq!(
        activation_derivative(&Op::Clip(Clip::relu6()), 5.0),
        Some(1.0)
    );
    assert_eq!(
        activation_derivative(&Op::HardSwish(HardSwish), 3.0),
        Some(1.0)
    );
    assert_eq!(
        activation_derivative(&Op::HardSwish(HardSwish), -3.0),
        Some(0.0)
    );
    assert_eq!(activation_value(&Op::Softmax(Softmax), 1.0), None);
}

#[test]
fn softmax_and_layout_ops_match_finite_differences() {
    let mut rng = SeededRng::new(5);
    let ops: Vec<(&str, Op)> = vec![
        ("softmax", Op::Softmax(Softmax)),
        ("flatten", Op::Flatten(Flatten)),
        ("identity", Op::Identity(Identity)),
        (
            "dropout (inference)",
            Op::Dropout(Dropout::new(0.5).unwrap()),
        ),
        (
            "pad",
            Op::Pad(
                Pad::new(
                    Padding {
                        top: 1,
                        bottom: 0,
                        left: 2,
                        right: 1,
                    },
                    -0.5,
                )
                .unwrap(),
            ),
        ),
        (
            "channel shuffle",
            Op::ChannelShuffle(ChannelShuffle::new(2).unwrap()),
        ),
        (
            "channel gather (repeats)",
            Op::ChannelGather(ChannelGather::new(vec![3, 0, 0, 2, 3], 4).unwrap()),
        ),
    ];
    for (what, op) in ops {
        let x = rng.normal_array_f64([2, 4, 2, 3], 1.5);
        check_matches_reference(what, &op, &x);
        check_op(what, &op, &x, Mode::Eval, &mut rng);
    }
}

#[test]
fn dropout_in_training_is_a_seeded_scaled_mask() {
    let mut rng = SeededRng::new(6);
    let op = Op::Dropout(Dropout::new(0.25).unwrap());
    let x = rng.normal_array_f64([4, 8, 8, 8], 1.0);
    let mode = Mode::train(42);
    let y = forward(&op, &x, &OpParams::new(), mode).unwrap().output;
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - 0.75).abs() < 0.03, "keep fraction {kept}");
    for (a, b) in x.iter().zip(y.iter()) {
        assert!(*b == 0.0 || (b - a / 0.75).abs() < 1e-12);
    }
    let again = forward(&op, &x, &OpParams::new(), mode).unwrap().output;
    assert_eq!(y, again, "same seed, same mask");
    let other = forward(&op, &x, &OpParams::new(), Mode::train(43))
        .unwrap()
        .output;
    assert_ne!(y, other);
    let x = rng.normal_array_f64([2, 3, 2, 2], 1.0);
    check_op("dropout (training)", &op, &x, mode, &mut rng);
}

#[test]
fn pooling_matches_finite_differences() {
    let mut rng = SeededRng::new(7);
    let specs = [
        PoolSpec::square(2).with_stride(2),
        PoolSpec::square(3).with_stride(2).with_padding(1),
        PoolSpec::new(3, 2)
            .with_stride_hw(2, 1)
            .with_ceil_mode(true),
        PoolSpec::square(3)
            .with_stride(2)
            .with_padding(1)
            .with_ceil_mode(true),
    ];
    for spec in specs {
        // Distinct values (a shuffled grid) keep every window's maximum unique.
        let mut vals: Vec<f64> = (0..2 * 2 * 5 * 6).map(|i| i as f64 * 0.1 - 5.0).collect();
        rng.shuffle(&mut vals);
        let x = Array4::from_shape_vec((2, 2, 5, 6), vals).unwrap();
        let ops = [
            ("max pool", Op::MaxPool(MaxPool::new(spec).unwrap())),
            (
                "avg pool (pad counted)",
                Op::AvgPool(AvgPool::new(spec, true).unwrap()),
            ),
            (
                "avg pool (pad excluded)",
                Op::AvgPool(AvgPool::new(spec, false).unwrap()),
            ),
        ];
        for (what, op) in ops {
            check_matches_reference(what, &op, &x);
            check_op(&format!("{what} {spec:?}"), &op, &x, Mode::Eval, &mut rng);
        }
    }
    let x = rng.normal_array_f64([2, 3, 3, 4], 1.0);
    check_matches_reference("global avg pool", &Op::GlobalAvgPool(GlobalAvgPool), &x);
    check_op(
        "global avg pool",
        &Op::GlobalAvgPool(GlobalAvgPool),
        &x,
        Mode::Eval,
        &mut rng,
    );
}

#[test]
fn max_pool_ties_go_to_the_first_in_row_major_order() {
    // 2×2 window of equal values: the whole gradient goes to the top-left.
    let op = Op::MaxPool(MaxPool::new(PoolSpec::square(2)).unwrap());
    let x = Array4::from_shape_vec((1, 1, 2, 3), vec![1.0, 5.0, 5.0, 5.0, 5.0, 0.0]).unwrap();
    let dy = Array4::from_shape_vec((1, 1, 1, 2), vec![1.0, 10.0]).unwrap();
    let dx = backward(&op, &x, &dy, &OpParams::new(), Mode::Eval)
        .unwrap()
        .input;
    assert_eq!(
        dx.iter().copied().collect::<Vec<_>>(),
        vec![0.0, 11.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn merges_match_finite_differences() {
    let mut rng = SeededRng::new(8);
    let a = rng.normal_array_f64([2, 3, 2, 2], 1.0);
    let b = rng.normal_array_f64([2, 3, 2, 2], 1.0);
    let c = rng.normal_array_f64([2, 1, 2, 2], 1.0);
    let gate = rng.normal_array_f64([2, 3, 1, 1], 1.0);
    let cases: Vec<(&str, NodeOp, Vec<&Array4<f64>>)> = vec![
        ("add", NodeOp::Add, vec![&a, &b, &a]),
        ("concat", NodeOp::Concat, vec![&a, &c, &b]),
        ("mul (full)", NodeOp::Mul, vec![&a, &b]),
        ("mul (broadcast gate)", NodeOp::Mul, vec![&a, &gate]),
    ];
    for (what, op, inputs) in cases {
        let y = merge::forward(&op, &inputs).unwrap();
        let y32 = op
            .reference_forward(
                &inputs
                    .iter()
                    .map(|x| x.mapv(|v| v as f32))
                    .collect::<Vec<_>>()
                    .iter()
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert!(
            crate::relative_error(&y32, &y.mapv(|v| v as f32)) < 1e-6,
            "{what}"
        );
        let r = rng.normal_array_f64(y.raw_dim(), 1.0);
        let grads = merge::backward(&op, &inputs, &r).unwrap();
        for k in 0..inputs.len() {
            let (err, peak) = gradient_error(inputs[k], &grads[k], |v| {
                let mut args = inputs.clone();
                args[k] = v;
                (merge::forward(&op, &args).unwrap() * &r).sum()
            });
            assert_close(&format!("{what} input {k}"), err, peak);
        }
    }
    assert!(merge::forward(&NodeOp::Mul, &[&a, &c]).is_err());
    assert!(merge::backward(&NodeOp::Add, &[&a, &b], &c).is_err());
}

#[test]
fn losses_match_finite_differences_and_closed_forms() {
    let mut rng = SeededRng::new(9);
    let z = rng.normal_array_f64([3, 5, 1, 1], 2.0);
    let labels = [4, 0, 2];
    for eps in [0.0, 0.1] {
        let out = softmax_cross_entropy(z.view(), &labels, eps).unwrap();
        let (err, peak) = gradient_error(&z, &out.grad, |v| {
            softmax_cross_entropy(v.view(), &labels, eps).unwrap().value
        });
        assert_close("cross-entropy", err, peak);
    }
    // Equal logits: the loss is ln K whatever the smoothing.
    let flat = Array4::<f64>::zeros((2, 4, 1, 1));
    let out = softmax_cross_entropy(flat.view(), &[1, 3], 0.3).unwrap();
    assert!((out.value - 4f64.ln()).abs() < 1e-12);
    // Two classes, logits (0, ln 3): p = (1/4, 3/4); ε = 0.2 → q = (0.1, 0.9) for label 1.
    let two = Array4::from_shape_vec((1, 2, 1, 1), vec![0.0, 3f64.ln()]).unwrap();
    let out = softmax_cross_entropy(two.view(), &[1], 0.2).unwrap();
    let want = -(0.1 * 0.25f64.ln() + 0.9 * 0.75f64.ln());
    assert!((out.value - want).abs() < 1e-12);
    assert!(
        (out.grad[[0, 0, 0, 0]] - 0.15).abs() < 1e-12
            && (out.grad[[0, 1, 0, 0]] + 0.15).abs() < 1e-12
    );
    // f32 instance agrees.
    let out32 = softmax_cross_entropy(two.mapv(|v| v as f32).view(), &[1], 0.2f32).unwrap();
    assert!((f64::from(out32.value) - want).abs() < 1e-6);
    for (labels, eps) in [
        (&[][..], 0.0),
        (&[0usize, 0][..], 0.0),
        (&[2][..], 0.0),
        (&[0][..], 1.0),
        (&[0][..], -0.1),
    ] {
        assert!(
            softmax_cross_entropy(two.view(), labels, eps).is_err(),
            "{labels:?} {eps}"
        );
    }
    let mut inf = two.clone();
    inf[[0, 0, 0, 0]] = f64::INFINITY;
    assert!(softmax_cross_entropy(inf.view(), &[0], 0.0).is_err());
    // MSE: ((1−0)² + (2−4)²)/2 = 2.5, gradient (1, −2).
    let y = Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, 2.0]).unwrap();
    let t = Array4::from_shape_vec((1, 2, 1, 1), vec![0.0, 4.0]).unwrap();
    let out = mse(y.view(), t.view()).unwrap();
    assert_eq!(out.value, 2.5);
    assert_eq!(
        out.grad.iter().copied().collect::<Vec<_>>(),
        vec![1.0, -2.0]
    );
    let t = rng.normal_array_f64([2, 3, 2, 2], 1.0);
    let y = rng.normal_array_f64([2, 3, 2, 2], 1.0);
    let out = mse(y.view(), t.view()).unwrap();
    let (err, peak) = gradient_error(&y, &out.grad, |v| mse(v.view(), t.view()).unwrap().value);
    assert_close("mse", err, peak);
    assert!(mse(y.view(), z.view()).is_err());
}

/// An XNOR-Net binary convolution (binarized inputs) over `channels` input
/// channels.
fn xnor_conv_for(channels: usize) -> Op {
    let layout = WeightLayout::conv([2, channels, 1, 1], ConvSpec::new()).unwrap();
    let signs = crate::PackedCodes::pack(&vec![1; 2 * channels], 2, channels, 1).unwrap();
    Op::BinaryConv(BinaryConv::new(layout, signs, Array1::ones(2), None, true).unwrap())
}

#[test]
fn unsupported_ops_and_bad_gradients_are_typed_errors() {
    let mut rng = SeededRng::new(10);
    let x = rng.normal_array_f64([1, 1, 3, 3], 1.0);
    let op = Op::Relu(Relu);
    assert!(backward(
        &op,
        &x,
        &Array4::zeros((1, 1, 3, 2)),
        &OpParams::new(),
        Mode::Eval
    )
    .is_err());
    assert!(forward(
        &op,
        &Array4::zeros((0, 1, 3, 3)),
        &OpParams::new(),
        Mode::Eval
    )
    .is_err());
    let lin = Op::Linear(LinearLayer::new(rng.normal_array((2, 9), 1.0), None).unwrap());
    let mut p = op_params(&lin);
    p.insert("weight".into(), ArrayD::zeros(vec![2, 8]));
    assert!(forward(&lin, &x, &p, Mode::Eval).is_err());
    assert!(forward(&lin, &x, &OpParams::new(), Mode::Eval).is_err());
}

#[test]
fn has_backward_agrees_with_the_forward() {
    let mut rng = SeededRng::new(11);
    let x = rng.normal_array_f64([1, 2, 4, 4], 1.0);
    let ops = [
        conv(
            &mut rng,
            2,
            2,
            (3, 3),
            ConvSpec::new().with_padding(1),
            true,
        ),
        Op::Relu(Relu),
        Op::BatchNorm(batch_norm(&mut rng, 2)),
        Op::Shift(Shift::new(vec![(0, 1), (1, 0)]).unwrap()),
        xnor_conv_for(2),
    ];
    for op in &ops {
        let p = op_params(op);
        let unsupported = matches!(
            forward(op, &x, &p, Mode::Eval),
            Err(crate::Error::Unsupported { .. })
        );
        assert_eq!(has_backward(op), !unsupported, "{}", op.kind());
    }
    assert!(
        ops.iter().all(has_backward),
        "XNOR included: every op trains"
    );
}

/// A small DAG: conv → BN → ReLU, a residual add reading the stem twice
/// over, a concat of two branches, a squeeze–excitation gate, pooling, a
/// dropout, a flatten and a linear head.
fn small_dag(rng: &mut SeededRng) -> crate::Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(2, 6, 6));
    let stem = b.op(
        "conv1",
        match conv(rng, 4, 2, (3, 3), ConvSpec::new().with_padding(1), true) {
            Op::Conv(c) => c,
            _ => unreachable!(),
        },
        x,
    );
    let stem = b.op("bn1", batch_norm(rng, 4), stem);
    let stem = b.op("relu1", Silu, stem);
    let branch = b.op(
        "layer1.conv",
        match conv(rng, 4, 4, (3, 3), ConvSpec::new().with_padding(1), false) {
            Op::Conv(c) => c,
            _ => unreachable!(),
        },
        stem,
    );
    let branch = b.op("layer1.bn", batch_norm(rng, 4), branch);
    let res = b.add("layer1.add", &[branch, stem]);
    let squeeze = b.op("se.pool", GlobalAvgPool, res);
    let gate = b.op(
        "se.fc",
        match conv(rng, 4, 4, (1, 1), ConvSpec::new(), true) {
            Op::Conv(c) => c,
            _ => unreachable!(),
        },
        squeeze,
    );
    let gate = b.op("se.gate", Sigmoid, gate);
    let gated = b.mul("se.mul", res, gate);
    let side = b.op(
        "side",
        match conv(rng, 2, 4, (1, 1), ConvSpec::new().with_groups(2), true) {
            Op::Conv(c) => c,
            _ => unreachable!(),
        },
        stem,
    );
    let cat = b.concat("cat", &[gated, side, stem]);
    let pooled = b.op(
        "pool",
        AvgPool::new(PoolSpec::square(2).with_stride(2), true).unwrap(),
        cat,
    );
    let pooled = b.op("drop", Dropout::new(0.3).unwrap(), pooled);
    let flat = b.op("flatten", Flatten, pooled);
    let head = b.op(
        "fc",
        LinearLayer::new(
            rng.normal_array((3, 90), 0.3),
            Some(rng.normal_array(3, 0.1)),
        )
        .unwrap(),
        flat,
    );
    b.output(head);
    b.output(res);
    b.build().unwrap()
}

pub(super) fn f64_params(g: &crate::Graph) -> Params {
    g.parameters()
        .into_iter()
        .map(|(k, v)| (k, v.mapv(f64::from)))
        .collect()
}

#[test]
fn graph_reverse_mode_matches_finite_differences() {
    let mut rng = SeededRng::new(11);
    let graph = small_dag(&mut rng);
    let x = rng.normal_array_f64([3, 2, 6, 6], 1.0);
    let params = f64_params(&graph);
    // The f64 forward agrees with the graph's f32 reference forward.
    let tape = Tape::forward(&graph, &params, std::slice::from_ref(&x), Mode::Eval).unwrap();
    let want = graph.reference_forward(&[&x.mapv(|v| v as f32)]).unwrap();
    for (a, b) in want.iter().zip(tape.outputs()) {
        assert!(crate::relative_error(a, &b.mapv(|v| v as f32)) < 1e-5);
    }
    for mode in [Mode::Eval, Mode::train(5)] {
        let tape = Tape::forward(&graph, &params, std::slice::from_ref(&x), mode).unwrap();
        let rs: Vec<Array4<f64>> = tape
            .outputs()
            .iter()
            .map(|y| rng.normal_array_f64(y.raw_dim(), 1.0))
            .collect();
        let grads = tape.backward(&rs).unwrap();
        let loss = |x: &Array4<f64>, p: &Params| -> f64 {
            let t = Tape::forward(&graph, p, std::slice::from_ref(x), mode).unwrap();
            t.outputs()
                .iter()
                .zip(&rs)
                .map(|(y, r)| (*y * r).sum())
                .sum()
        };
        let (err, peak) = gradient_error(&x, &grads.inputs[0], |v| loss(v, &params));
        assert_close(&format!("graph input ({mode:?})"), err, peak);
        let trainable: Vec<&String> = params
            .keys()
            .filter(|k| is_trainable(k.rsplit('.').next().unwrap()))
            .collect();
        assert_eq!(grads.params.len(), trainable.len());
        for name in trainable {
            if mode.is_train() && name == "conv1.bias" {
                // A bias before a batch norm normalising with batch
                // statistics is removed with the mean: its gradient is zero.
                let g = &grads.params[name];
                assert!(g.iter().all(|v| v.abs() < 1e-12), "{name}: {g:?}");
                continue;
            }
            let (err, peak) = gradient_error(&params[name], &grads.params[name], |v| {
                let mut q = params.clone();
                q.insert(name.clone(), v.clone());
                loss(&x, &q)
            });
            assert_close(&format!("graph {name} ({mode:?})"), err, peak);
        }
        assert_eq!(tape.buffers().len(), if mode.is_train() { 4 } else { 0 });
    }
}

#[test]
fn graph_blocks_values_read_twice_and_unreached_parameters() {
    let mut rng = SeededRng::new(12);
    let c1 = match conv(
        &mut rng,
        2,
        2,
        (1, 3),
        ConvSpec::new().with_padding_sides(Padding {
            top: 0,
            bottom: 0,
            left: 1,
            right: 1,
        }),
        false,
    ) {
        Op::Conv(c) => c,
        _ => unreachable!(),
    };
    let c2 = match conv(
        &mut rng,
        2,
        2,
        (3, 1),
        ConvSpec::new().with_padding_sides(Padding {
            top: 1,
            bottom: 1,
            left: 0,
            right: 0,
        }),
        true,
    ) {
        Op::Conv(c) => c,
        _ => unreachable!(),
    };
    let block = Block::new(vec![Op::Conv(c1), Op::Relu(Relu), Op::Conv(c2)]).unwrap();
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 3, 3));
    let y = b.node("sep", block, &[x]);
    let sq = b.mul("square", y, y);
    let dead = b.op(
        "unused",
        match conv(&mut rng, 2, 2, (1, 1), ConvSpec::new(), true) {
            Op::Conv(c) => c,
            _ => unreachable!(),
        },
        x,
    );
    b.output(sq);
    b.output(x);
    let _ = dead;
    let graph = b.build().unwrap();
    let x = rng.normal_array_f64([2, 2, 3, 3], 1.0);
    let tape = Tape::forward(&graph, &Params::new(), std::slice::from_ref(&x), Mode::Eval).unwrap();
    let rs: Vec<Array4<f64>> = tape
        .outputs()
        .iter()
        .map(|y| rng.normal_array_f64(y.raw_dim(), 1.0))
        .collect();
    let grads = tape.backward(&rs).unwrap();
    let params = tape.params();
    assert!(params.contains_key("sep.0.weight") && params.contains_key("sep.2.bias"));
    assert!(grads.params["unused.weight"].iter().all(|&v| v == 0.0));
    let loss = |x: &Array4<f64>, p: &Params| -> f64 {
        let t = Tape::forward(&graph, p, std::slice::from_ref(x), Mode::Eval).unwrap();
        t.outputs()
            .iter()
            .zip(&rs)
            .map(|(y, r)| (*y * r).sum())
            .sum()
    };
    let (err, peak) = gradient_error(&x, &grads.inputs[0], |v| loss(v, &params));
    assert_close("block graph input", err, peak);
    for name in ["sep.0.weight", "sep.2.weight", "sep.2.bias"] {
        let (err, peak) = gradient_error(&params[name], &grads.params[name], |v| {
            let mut q = params.clone();
            q.insert(name.to_string(), v.clone());
            loss(&x, &q)
        });
        assert_close(name, err, peak);
    }
}

#[test]
fn parameters_write_back_and_bad_names_are_errors() {
    let mut rng = SeededRng::new(13);
    let graph = small_dag(&mut rng);
    let x = rng.normal_array_f64([2, 2, 6, 6], 1.0);
    let tape = Tape::forward(
        &graph,
        &f64_params(&graph),
        std::slice::from_ref(&x),
        Mode::train(1),
    )
    .unwrap();
    let mut new = f64_params(&graph);
    new.insert("fc.bias".into(), ArrayD::from_elem(vec![3], 0.25));
    new.extend(tape.buffers().clone());
    let updated = graph_with_params(&graph, &new).unwrap();
    let read: Params = f64_params(&updated);
    assert_eq!(read["fc.bias"], ArrayD::from_elem(vec![3], 0.25));
    for (k, v) in tape.buffers() {
        let diff = (&read[k] - &v.mapv(|a| f64::from(a as f32)))
            .iter()
            .fold(0.0f64, |m, d| m.max(d.abs()));
        assert_eq!(diff, 0.0, "{k}");
    }
    let mut bad = Params::new();
    bad.insert("nope.weight".into(), ArrayD::zeros(vec![1]));
    assert!(graph_with_params(&graph, &bad).is_err());
    assert!(Tape::forward(&graph, &bad, std::slice::from_ref(&x), Mode::Eval).is_err());
    let mut wrong = Params::new();
    wrong.insert("fc.bias".into(), ArrayD::zeros(vec![4]));
    assert!(graph_with_params(&graph, &wrong).is_err());
    assert!(Tape::forward(&graph, &wrong, std::slice::from_ref(&x), Mode::Eval).is_err());
    assert!(Tape::forward(
        &graph,
        &Params::new(),
        &[Array4::zeros((2, 3, 6, 6))],
        Mode::Eval
    )
    .is_err());
    assert!(tape.backward(&[]).is_err());
}

//! Every quantizer of `hasten-quant`, run through `hasten::fastconv`, agrees
//! with its reference forward (conv layers at stride 1 and 2 with symmetric
//! and asymmetric padding, and linear layers; batch 1 and 3). For the
//! weight-only quantizers the block is read back by probing: it is the dense
//! layer with the dequantized kernel, that kernel's distance to the original
//! is the report's weight error, and the output error stays within the bound
//! it implies. XNOR-Net (binary inputs, eq. (9)) is checked against an
//! independent evaluation of eq. (9); int8 against exact integer
//! accumulators, bit for bit.

mod common;

use common::{
    assert_fast_matches_reference, check_conv_transform, check_linear_transform, conv_error_bound,
    conv_layer, diff_norm, linear_layer, norm, specs, weight_error, BiasRule, FAST_TOL,
};
use hasten::core::ndarray::{Array1, Array2, Array4, Axis};
use hasten::core::{
    relative_error, ActShape, Block, Conv4d, ConvLayer, Int8Conv, IntType, Layer, LinearLayer, Op,
    SeededRng, Transform,
};
use hasten::quant::{
    activation_params, calibrate, xnor_alpha, Binarize, Calibration, DoReFa, FixedPoint,
    Granularity, Int8Quantize, Lcnn, Mode, ProductQuantize, ScalarKMeans, Solver,
    StochasticBinarize, Ternarize,
};

/// Output channels, input channels and spatial size of the test conv layers.
const T: usize = 6;
const C: usize = 4;
const HW: usize = 7;
/// Shape of the test linear layers.
const OUT: usize = 8;
const IN: usize = 12;

/// Runs the probe checks of a weight-only quantizer on one seeded conv layer
/// per spec and on a linear layer.
fn check_weight_only(t: &dyn Transform) {
    for (i, spec) in specs().into_iter().enumerate() {
        let layer = conv_layer(T, C, spec, 20 + i as u64);
        check_conv_transform(t, &layer, HW, BiasRule::Kept, 200 + i as u64);
    }
    check_linear_transform(t, &linear_layer(OUT, IN, 30), 31);
}

#[test]
fn binary_sign() {
    check_weight_only(&Binarize::sign());
}

#[test]
fn binary_weights() {
    check_weight_only(&Binarize::binary_weights());
}

#[test]
fn stochastic_binary() {
    check_weight_only(&StochasticBinarize::new(5));
}

#[test]
fn ternary_twn() {
    check_weight_only(&Ternarize::twn(Granularity::PerChannel));
    check_weight_only(&Ternarize::twn(Granularity::PerTensor));
}

#[test]
fn ternary_stochastic() {
    check_weight_only(&Ternarize::stochastic(6, Granularity::PerChannel));
}

#[test]
fn scalar_kmeans_per_layer() {
    check_weight_only(&ScalarKMeans::new(4, Granularity::PerTensor, Solver::Optimal).unwrap());
    let lloyd = Solver::Lloyd {
        max_iter: 20,
        seed: 7,
    };
    check_weight_only(&ScalarKMeans::new(4, Granularity::PerTensor, lloyd).unwrap());
}

#[test]
fn scalar_kmeans_per_channel() {
    check_weight_only(&ScalarKMeans::new(3, Granularity::PerChannel, Solver::Optimal).unwrap());
}

#[test]
fn product_quantization() {
    // Conv rows have 4·3·3 = 36 weights (4 sub-blocks of 9); linear rows 12
    // (4 sub-blocks of 3).
    check_weight_only(&ProductQuantize::new(4, 4, 20, 8).unwrap());
}

#[test]
fn fixed_point() {
    check_weight_only(&FixedPoint::new(4, Mode::Symmetric, Granularity::PerChannel).unwrap());
    check_weight_only(&FixedPoint::new(3, Mode::Affine, Granularity::PerTensor).unwrap());
}

#[test]
fn dorefa() {
    check_weight_only(&DoReFa::new(3).unwrap());
    check_weight_only(&DoReFa::paper(2).unwrap());
}

#[test]
fn lcnn() {
    check_weight_only(&Lcnn::new(6, 2, 3, 9).unwrap());
}

/// `sign` of eq. (3)/(9): `+1` for `x ≥ 0`, `−1` otherwise.
fn sign(v: f32) -> f32 {
    if v >= 0.0 {
        1.0
    } else {
        -1.0
    }
}

/// XNOR-Net, eq. (9): `(sign(I) ∗ sign(W)) ⊙ K · α_t + b_t` with
/// `K = A ∗ k` (`A` the channel mean of `|I|`, `k` a `kh×kw` box of weight
/// `1/(kh·kw)`), evaluated here with core's dense convolution: `K` is the
/// convolution of `|I|` with a constant kernel `1/(C·kh·kw)`, and the sign
/// kernel and `α_t = mean |W_t|` come from the original weights. Tolerance
/// [`FAST_TOL`]: two f32 evaluations of the same formula.
#[test]
fn xnor_net_matches_eq_9() {
    let t = Binarize::xnor_net();
    for (i, spec) in specs().into_iter().enumerate() {
        let layer = conv_layer(T, C, spec, 40 + i as u64);
        let out = t
            .apply(&Layer::Conv(layer.clone()), ActShape::new(C, HW, HW))
            .unwrap();
        let w = layer.weight().array();
        let mut rng = SeededRng::new(41 + i as u64);
        for batch in [1, 3] {
            let x = rng.normal_array((batch, C, HW, HW), 1.0);
            let y = assert_fast_matches_reference(&out.block, &x, &format!("xnor {spec:?}"));
            let signs = ConvLayer::new(Conv4d::new(w.mapv(sign)).unwrap(), None, spec).unwrap();
            let s = Block::single(signs)
                .reference_forward(&x.mapv(sign))
                .unwrap();
            let box_filter = Array4::from_elem((1, C, 3, 3), 1.0 / (C * 9) as f32);
            let k_layer = ConvLayer::new(Conv4d::new(box_filter).unwrap(), None, spec).unwrap();
            let k = Block::single(k_layer)
                .reference_forward(&x.mapv(f32::abs))
                .unwrap();
            let b = layer.bias().unwrap();
            let alpha: Vec<f32> = w
                .outer_iter()
                .map(|f| xnor_alpha(f.as_standard_layout().as_slice().unwrap()))
                .collect();
            let expected = Array4::from_shape_fn(s.raw_dim(), |(n, o, a, c)| {
                s[[n, o, a, c]] * k[[n, 0, a, c]] * alpha[o] + b[o]
            });
            let err = relative_error(&expected, &y);
            assert!(err < FAST_TOL, "xnor {spec:?} batch {batch}: {err:e}");
        }
    }
    // Linear layout: K is the mean of |x| over the flattened sample.
    let layer = linear_layer(OUT, IN, 42);
    let out = t
        .apply(&Layer::Linear(layer.clone()), ActShape::new(IN, 1, 1))
        .unwrap();
    let x = SeededRng::new(43).normal_array((3, IN, 1, 1), 1.0);
    let y = assert_fast_matches_reference(&out.block, &x, "xnor linear");
    let w = layer.weight();
    let b = layer.bias().unwrap();
    let expected = Array4::from_shape_fn((3, OUT, 1, 1), |(n, o, _, _)| {
        let k = (0..IN).map(|j| x[[n, j, 0, 0]].abs()).sum::<f32>() / IN as f32;
        let s: f32 = (0..IN)
            .map(|j| sign(w[[o, j]]) * sign(x[[n, j, 0, 0]]))
            .sum();
        let alpha = xnor_alpha(w.row(o).as_standard_layout().as_slice().unwrap());
        s * k * alpha + b[o]
    });
    assert!(relative_error(&expected, &y) < FAST_TOL);
}

/// The block's single `Int8Conv`.
fn int8_op(block: &Block) -> &Int8Conv {
    match &block.ops()[0] {
        Op::Int8Conv(op) => op,
        other => panic!("expected an Int8Conv, got {}", other.kind()),
    }
}

/// The layer's weights as a `[rows, row_len]` matrix and its bias.
fn matrix_of(layer: &Layer) -> (Array2<f32>, Array1<f32>) {
    match layer {
        Layer::Conv(c) => (
            c.weight().filter_matrix().to_owned(),
            c.bias()
                .cloned()
                .unwrap_or_else(|| Array1::zeros(c.weight().dims()[0])),
        ),
        Layer::Linear(l) => (
            l.weight().clone(),
            l.bias()
                .cloned()
                .unwrap_or_else(|| Array1::zeros(l.weight().nrows())),
        ),
    }
}

/// A layer of the same geometry with the given f32 matrix and bias.
fn dense_like(layer: &Layer, m: Array2<f32>, b: Array1<f32>) -> Block {
    match layer {
        Layer::Conv(c) => {
            let dims = c.weight().dims();
            let k = m.into_shape_with_order(dims).unwrap();
            Block::single(ConvLayer::new(Conv4d::new(k).unwrap(), Some(b), *c.spec()).unwrap())
        }
        Layer::Linear(_) => Block::single(LinearLayer::new(m, Some(b)).unwrap()),
    }
}

/// Int8 on one layer and input:
/// 1. the i32 accumulators equal an independent evaluation: core's f32 dense
///    layer on the integer-valued weights, centred input codes and bias,
///    exact because every partial sum is an integer below 2^24;
/// 2. without output requantization the reference output is
///    `f32(f64(acc) · s_in · s_w[t])` of those accumulators, and fastconv
///    (`forward` and `Plan`) returns the same f32 values bit for bit: the op
///    defines its output as that function of exact integer accumulators;
/// 3. with requantization the output codes are within one code of
///    `round(acc · s_in · s_w[t] / s_out) + z_out` (the multiplier `m / 2^n`
///    approximates the real ratio), the reference output is their
///    dequantization, and fastconv again matches bit for bit;
/// 4. the report's weight error is that of `s_w[t] · w_int`, and the output
///    error against the float layer is within
///    `‖Ŵ‖√o‖x̂ − x‖ + ε‖W‖√o‖x‖ + ‖b̂ − b‖√(N·H·W)` (input rounding, weight
///    rounding, bias rounding; `o` the patch overlap of [`conv_error_bound`]).
fn check_int8(layer: &Layer, x: &Array4<f32>, granularity: Granularity, what: &str) {
    let d = x.shape();
    let input = ActShape::new(d[1], d[2], d[3]);
    let (lo, hi) = calibrate(x.as_slice().unwrap(), Calibration::MinMax, 8).unwrap();
    let params = activation_params(lo, hi, IntType::U8).unwrap();
    let out = Int8Quantize::new(params, None, granularity)
        .apply(layer, input)
        .unwrap();
    let op = int8_op(&out.block);
    let codes = x.mapv(|v| params.quantize(v));
    let acc = op.accumulate(&codes).unwrap();

    // 1. Independent accumulators.
    let z = params.zero_point();
    let centred = codes.mapv(|q| (q - z) as f32);
    let wq = op.weights().mapv(f32::from);
    let bq = op
        .bias()
        .map_or_else(|| Array1::zeros(wq.nrows()), |b| b.mapv(|v| v as f32));
    let max_code = centred.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let max_acc = wq
        .rows()
        .into_iter()
        .zip(bq.iter())
        .map(|(r, &b)| r.iter().map(|v| v.abs()).sum::<f32>() * max_code + b.abs())
        .fold(0f32, f32::max);
    assert!(
        max_acc < (1 << 24) as f32,
        "{what}: test shape too large for exact f32 sums"
    );
    let acc_f32 = dense_like(layer, wq.clone(), bq.clone())
        .reference_forward(&centred)
        .unwrap();
    assert_eq!(acc, acc_f32.mapv(|v| v as i32), "{what}: accumulators");

    // 2. Exact dequantization and bit-exact fast paths.
    let s_in = f64::from(params.scale());
    let expected = Array4::from_shape_fn(acc.raw_dim(), |(n, t, a, b)| {
        (f64::from(acc[[n, t, a, b]]) * s_in * f64::from(op.weight_scale(t))) as f32
    });
    let y = out.block.reference_forward(x).unwrap();
    assert_eq!(y, expected, "{what}: reference dequantization");
    assert_eq!(
        hasten::fastconv::forward(&out.block, x).unwrap(),
        y,
        "{what}: fast"
    );
    let mut plan = hasten::fastconv::Plan::new(&out.block, input, d[0]).unwrap();
    assert_eq!(plan.run(x).unwrap().to_owned(), y, "{what}: plan");

    // 4. Report and output-error bound.
    let (w, b) = matrix_of(layer);
    let w_hat = Array2::from_shape_fn(wq.dim(), |(t, j)| wq[[t, j]] * op.weight_scale(t));
    let eps = weight_error(w.as_slice().unwrap(), w_hat.as_slice().unwrap());
    common::assert_report_error(out.report.weight_error, eps, what);
    let b_hat = Array1::from_shape_fn(bq.len(), |t| {
        (f64::from(bq[t]) * s_in * f64::from(op.weight_scale(t))) as f32
    });
    let x_hat = codes.mapv(|q| params.dequantize(q));
    let overlap = match layer {
        Layer::Conv(c) => conv_error_bound(1.0, 1.0, 3, 3, c.spec(), 1.0),
        _ => 1.0,
    };
    let y_layer = Block::single(layer.to_op()).reference_forward(x).unwrap();
    let pixels = (y.len() / y.shape()[1]) as f64;
    let bound = norm(&w_hat) * overlap * norm(&(&x_hat - x))
        + eps * norm(&w) * overlap * norm(x)
        + norm(&(&b_hat - &b)) * pixels.sqrt();
    let got = diff_norm(&y, &y_layer);
    assert!(
        got <= bound + 1e-5 * norm(&y_layer),
        "{what}: output error {got} > {bound}"
    );

    // 3. Requantized outputs.
    let (olo, ohi) = calibrate(y_layer.as_slice().unwrap(), Calibration::MinMax, 8).unwrap();
    let oparams = activation_params(olo, ohi, IntType::I8).unwrap();
    let out = Int8Quantize::new(params, Some(oparams), granularity)
        .apply(layer, input)
        .unwrap();
    let op = int8_op(&out.block);
    let acc = op.accumulate(&codes).unwrap();
    let q = op.requantize(&acc).unwrap();
    let (qlo, qhi) = IntType::I8.range();
    for ((n, t, a, bb), &v) in q.indexed_iter() {
        let real = f64::from(acc[[n, t, a, bb]]) * s_in * f64::from(op.weight_scale(t))
            / f64::from(oparams.scale());
        let ideal = (real.round() as i64 + i64::from(oparams.zero_point()))
            .clamp(i64::from(qlo), i64::from(qhi));
        assert!(
            (i64::from(v) - ideal).abs() <= 1,
            "{what}: requantized {v} vs {ideal}"
        );
    }
    let y = out.block.reference_forward(x).unwrap();
    assert_eq!(
        y,
        q.mapv(|v| oparams.dequantize(v)),
        "{what}: requant reference"
    );
    assert_eq!(
        hasten::fastconv::forward(&out.block, x).unwrap(),
        y,
        "{what}: requant fast"
    );
    let mut plan = hasten::fastconv::Plan::new(&out.block, input, d[0]).unwrap();
    assert_eq!(plan.run(x).unwrap().to_owned(), y, "{what}: requant plan");
}

#[test]
fn int8_conv_exact_integer_path() {
    for (i, spec) in specs().into_iter().enumerate() {
        let layer = Layer::Conv(conv_layer(T, C, spec, 50 + i as u64));
        let mut rng = SeededRng::new(60 + i as u64);
        for batch in [1, 3] {
            let x = rng.normal_array((batch, C, HW, HW), 1.0);
            for g in [Granularity::PerChannel, Granularity::PerTensor] {
                check_int8(&layer, &x, g, &format!("int8 {spec:?} batch {batch} {g:?}"));
            }
        }
    }
}

#[test]
fn int8_linear_exact_integer_path() {
    let layer = Layer::Linear(linear_layer(OUT, IN, 70));
    let mut rng = SeededRng::new(71);
    for batch in [1, 3] {
        // Post-ReLU inputs: the zero point sits at the bottom of the u8 range.
        let x = rng
            .normal_array((batch, IN, 1, 1), 1.0)
            .mapv(|v: f32| v.max(0.0));
        check_int8(
            &layer,
            &x,
            Granularity::PerChannel,
            &format!("int8 linear batch {batch}"),
        );
    }
}

/// XNOR blocks keep their input binarization through fastconv on a channel
/// axis of one (a degenerate but valid layer).
#[test]
fn single_channel_xnor_fast_matches_reference() {
    let mut rng = SeededRng::new(80);
    let layer = ConvLayer::new(
        Conv4d::new(rng.normal_array((3, 1, 3, 3), 0.3)).unwrap(),
        None,
        hasten::core::ConvSpec::new().with_padding(1),
    )
    .unwrap();
    let out = Binarize::xnor_net()
        .apply(&Layer::Conv(layer), ActShape::new(1, 5, 5))
        .unwrap();
    let x = rng.normal_array((2, 1, 5, 5), 1.0);
    let y = assert_fast_matches_reference(&out.block, &x, "xnor 1 channel");
    assert_eq!(y.len_of(Axis(1)), 3);
}

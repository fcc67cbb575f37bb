//! `Int8Conv`'s forward and straight-through backward: the forward against
//! the op's integer reference, the backward against the STE's definition
//! (the dense layer's adjoint with `Ŵ`, masked to the input range) and
//! against central differences of the surrogate `Ŵ ∗ clamp(x, lo, hi) + b̂`.

use ndarray::{Array1, Array2, Array4};

use super::check::gradient_error;
use super::tests::assert_close;
use super::*;
use crate::graph::NodeOp;
use crate::layer::{ConvLayer, LinearLayer};
use crate::op::{Int8Conv, IntType, Operator, QuantParams, WeightLayout};
use crate::rng::SeededRng;
use crate::spec::ConvSpec;

/// A strided, padded, grouped int8 convolution (4 → 6 channels, 2 groups)
/// with a bias, dyadic weight scales (so `Ŵ` is exact in f32 too) and an
/// affine u8 input; with `output`, requantized.
fn int8_conv(rng: &mut SeededRng, output: Option<QuantParams>) -> Int8Conv {
    let spec = ConvSpec::new()
        .with_stride(2)
        .with_padding(1)
        .with_groups(2);
    let layout = WeightLayout::conv([6, 2, 3, 3], spec).unwrap();
    let w = Array2::from_shape_fn((6, 18), |_| (rng.uniform() * 255.0 - 127.0).round() as i8);
    let scales = Array1::from_shape_fn(6, |t| 2f32.powi(-6 - (t % 3) as i32));
    let input = QuantParams::new(0.0625, 40, IntType::U8).unwrap();
    let bias = Array1::from_shape_fn(6, |t| 50 * t as i32 - 120);
    Int8Conv::new(layout, w, scales, input, Some(bias), output).unwrap()
}

fn int8_linear(rng: &mut SeededRng) -> Int8Conv {
    let layout = WeightLayout::linear(3, 8).unwrap();
    let w = Array2::from_shape_fn((3, 8), |_| (rng.uniform() * 255.0 - 127.0).round() as i8);
    let input = QuantParams::new(0.125, 0, IntType::I8).unwrap();
    Int8Conv::new(layout, w, Array1::from_elem(1, 0.015625), input, None, None).unwrap()
}

/// `Ŵ` as an f32 OIHW convolution or linear layer (exact: dyadic scales).
fn dense_op(op: &Int8Conv) -> Op {
    let w = op.weights();
    let wf = Array2::from_shape_fn(w.dim(), |(t, j)| f32::from(w[[t, j]]) * op.weight_scale(t));
    match *op.layout() {
        WeightLayout::Conv { dims, spec } => {
            Op::Conv(ConvLayer::from_array(wf.into_shape_with_order(dims).unwrap(), spec).unwrap())
        }
        WeightLayout::Linear { .. } => Op::Linear(LinearLayer::new(wf, None).unwrap()),
    }
}

/// Inputs spread over and beyond the quantizer's range `[lo, hi]`, none
/// within `1e-3` of its ends (where the surrogate has a kink).
fn spread_input(rng: &mut SeededRng, op: &Int8Conv, dims: [usize; 4]) -> Array4<f64> {
    let (lo, hi) = ste::activation_range(op.input_params());
    let mut x = Array4::from_shape_simple_fn(dims, || lo - 2.0 + rng.uniform() * (hi - lo + 4.0));
    x.mapv_inplace(|v| {
        if (v - lo).abs() < 1e-3 || (v - hi).abs() < 1e-3 {
            v + 0.01
        } else {
            v
        }
    });
    x
}

#[test]
fn int8_forward_is_the_integer_reference() {
    let mut rng = SeededRng::new(41);
    let out = QuantParams::new(0.5, 128, IntType::U8).unwrap();
    for op in [int8_conv(&mut rng, None), int8_conv(&mut rng, Some(out))] {
        let x = spread_input(&mut rng, &op, [2, 4, 5, 5]).mapv(|v| f64::from(v as f32));
        let op32 = op.reference_forward(&x.mapv(|v| v as f32)).unwrap();
        let y = forward(&Op::Int8Conv(op), &x, &OpParams::new(), Mode::Eval).unwrap();
        assert_eq!(y.output, op32.mapv(f64::from));
    }
}

#[test]
fn int8_surrogate_meets_the_forward_on_the_code_grid() {
    // Where x is a code's value, q(x) = x: the surrogate is the forward
    // (up to f64 rounding against the exact integer sum).
    let mut rng = SeededRng::new(42);
    let op = int8_conv(&mut rng, None);
    let p = *op.input_params();
    let x = Array4::from_shape_simple_fn([2, 4, 5, 5], || {
        f64::from(p.dequantize((rng.uniform() * 255.0) as i32))
    });
    let y = forward(&Op::Int8Conv(op.clone()), &x, &OpParams::new(), Mode::Eval)
        .unwrap()
        .output;
    let s = int8::surrogate(&op, &x, [2, 6, 3, 3]).unwrap();
    let err = y
        .iter()
        .zip(&s)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max);
    assert!(err < 1e-6, "{err}");
    assert!(y.iter().any(|v| v.abs() > 1.0), "a non-trivial output");
}

#[test]
fn int8_backward_is_the_straight_through_definition() {
    let mut rng = SeededRng::new(43);
    for (op, dims) in [
        (int8_conv(&mut rng, None), [2, 4, 5, 5]),
        (int8_linear(&mut rng), [3, 2, 2, 2]),
    ] {
        let x = spread_input(&mut rng, &op, dims);
        let out = out_dims(&Op::Int8Conv(op.clone()), &x).unwrap();
        let dy = rng.normal_array_f64(out, 1.0);
        let g = backward(
            &Op::Int8Conv(op.clone()),
            &x,
            &dy,
            &OpParams::new(),
            Mode::Eval,
        )
        .unwrap();
        assert!(g.params.is_empty());
        // Definition: the dense layer's input gradient with Ŵ, masked to
        // the quantizer's range.
        let dense = dense_op(&op);
        let d = backward(&dense, &x, &dy, &op_params(&dense), Mode::Eval).unwrap();
        let (lo, hi) = ste::activation_range(op.input_params());
        let mut masked = 0;
        for ((a, b), v) in g.input.iter().zip(&d.input).zip(&x) {
            if (lo..=hi).contains(v) {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
            } else {
                assert_eq!(*a, 0.0);
                masked += 1;
            }
        }
        assert!(masked > 0 && masked < x.len(), "both sides of the range");
        // Central differences of the surrogate ⟨dy, Ŵ ∗ clamp(x) + b̂⟩.
        let (err, peak) = gradient_error(&x, &g.input, |v| {
            (&int8::surrogate(&op, v, out).unwrap() * &dy).sum()
        });
        assert_close("int8 straight-through", err, peak);
    }
}

#[test]
fn quantize_dequantize_is_the_input_quantizer() {
    let p = QuantParams::new(0.05, 17, IntType::U8).unwrap();
    let op = Int8Conv::quantize_dequantize(3, p).unwrap();
    let mut rng = SeededRng::new(44);
    let mut x: Array4<f32> = rng.normal_array([2, 3, 4, 4], 4.0);
    x[[1, 2, 3, 3]] = f32::NAN;
    let y = op.reference_forward(&x).unwrap();
    for (a, b) in y.iter().zip(&x) {
        if b.is_nan() {
            assert!(a.is_nan());
        } else {
            assert_eq!(a.to_bits(), p.dequantize(p.quantize(*b)).to_bits());
        }
    }
    assert!(Int8Conv::quantize_dequantize(0, p).is_err());
    assert!(op.is_quantize_dequantize());
    let mut rng = SeededRng::new(45);
    assert!(!int8_conv(&mut rng, None).is_quantize_dequantize());
    assert!(!int8_linear(&mut rng).is_quantize_dequantize());
    assert!(has_backward(&Op::Int8Conv(op)));
}

/// The quantize–dequantize in f64 for a scale `s` (the op's formula, with
/// the scale itself not rounded to f32).
fn qdq64(p: &QuantParams, s: f64, x: f64) -> f64 {
    let (lo, hi) = p.dtype().range();
    let z = f64::from(p.zero_point());
    s * ((x / s).round() + z).clamp(f64::from(lo), f64::from(hi)) - s * z
}

/// Points of `x/s` spread over and beyond `[−Q_N, Q_P]`, none within 0.05
/// of a rounding tie (`k + ½`) or of the range's ends.
fn lsq_points(rng: &mut SeededRng, p: &QuantParams, n: usize) -> Vec<f64> {
    let (lo, hi) = p.dtype().range();
    let z = p.zero_point();
    let (qn, qp) = (f64::from(z - lo), f64::from(hi - z));
    let s = f64::from(p.scale());
    let mut out = Vec::new();
    while out.len() < n {
        let v = -qn - 40.0 + rng.uniform() * (qn + qp + 80.0);
        let tie = (v - v.floor() - 0.5).abs() < 0.05;
        let end = (v + qn).abs() < 0.6 || (v - qp).abs() < 0.6;
        if !tie && !end {
            out.push(v * s);
        }
    }
    out
}

#[test]
fn lsq_step_derivative_is_the_central_difference_less_the_rounding_input() {
    // Inside the range round(x/s) is locally constant, so the quantizer's
    // central difference in s is round(v); LSQ passes round as the
    // identity, which adds −v. Outside it is the clamp bound ±Q.
    let mut rng = SeededRng::new(46);
    for p in [
        QuantParams::new(0.05, 17, IntType::U8).unwrap(),
        QuantParams::new(0.2, 0, IntType::U8).unwrap(),
        QuantParams::new(0.01, -3, IntType::I8).unwrap(),
    ] {
        let s = f64::from(p.scale());
        let (lo, hi) = ste::activation_range(&p);
        let (mut inside, mut outside) = (0, 0);
        for x in lsq_points(&mut rng, &p, 400) {
            let h = 1e-7 * s;
            let fd = (qdq64(&p, s + h, x) - qdq64(&p, s - h, x)) / (2.0 * h);
            let want = if (lo..=hi).contains(&x) {
                inside += 1;
                fd - x / s
            } else {
                outside += 1;
                fd
            };
            let got = lsq::lsq_step_derivative(&p, x);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "x {x}: {got} vs {want}"
            );
        }
        assert!(
            inside > 100 && outside > 50,
            "{inside} inside, {outside} outside"
        );
    }
    let p = QuantParams::new(0.5, 0, IntType::U8).unwrap();
    assert_eq!(lsq::lsq_step_derivative(&p, f64::NAN), 0.0);
    // g = 1/√(N·Q_P).
    assert_eq!(
        lsq::lsq_gradient_scale(&p, 100),
        1.0 / (100.0f64 * 255.0).sqrt()
    );
}

#[test]
fn learned_scale_gradient_matches_central_differences_of_the_surrogate() {
    // ∂L/∂s of the learned quantizer in a batch, divided by g, against the
    // central differences of Σ dy · s·clamp(x/s + c, −Q_N, Q_P) with the
    // rounding offsets c = round(x/s₀) − x/s₀ held constant.
    let mut rng = SeededRng::new(47);
    let p = QuantParams::new(0.0625, 9, IntType::U8).unwrap();
    let op = Int8Conv::learned_quantize_dequantize(3, p).unwrap();
    let points = lsq_points(&mut rng, &p, 2 * 3 * 4 * 4);
    let x = Array4::from_shape_vec([2, 3, 4, 4], points).unwrap();
    let dy = rng.normal_array_f64([2, 3, 4, 4], 1.0);
    let mut values = op_params(&Op::Int8Conv(op.clone()));
    assert_eq!(values["scale"].as_slice().unwrap(), &[0.0625]);
    let g = backward(&Op::Int8Conv(op.clone()), &x, &dy, &values, Mode::Eval).unwrap();
    let s0 = f64::from(p.scale());
    let (qn, qp) = (9.0, 246.0);
    let c = x.mapv(|v| (v / s0).round() - v / s0);
    let surrogate = |s: f64| -> f64 {
        ndarray::Zip::from(&x)
            .and(&c)
            .and(&dy)
            .fold(0.0, |acc, &v, &c, &d| {
                acc + d * s * (v / s + c).clamp(-qn, qp)
            })
    };
    let h = 1e-6;
    let fd = (surrogate(s0 + h) - surrogate(s0 - h)) / (2.0 * h);
    let got = g.params["scale"][[0]] / lsq::lsq_gradient_scale(&p, 48);
    assert!((got - fd).abs() <= 1e-5 * fd.abs(), "{got} vs {fd}");
    // The input gradient is the straight-through one of the fixed quantizer.
    let fixed = Int8Conv::quantize_dequantize(3, p).unwrap();
    let d = backward(&Op::Int8Conv(fixed), &x, &dy, &OpParams::new(), Mode::Eval).unwrap();
    assert_eq!(g.input, d.input);
    // The forward runs with the given scale, rounded to f32.
    values.insert("scale".into(), ndarray::arr1(&[0.125]).into_dyn());
    let y = forward(&Op::Int8Conv(op.clone()), &x, &values, Mode::Eval).unwrap();
    let q = QuantParams::new(0.125, 9, IntType::U8).unwrap();
    for (a, b) in y.output.iter().zip(&x) {
        assert_eq!(*a, f64::from(q.dequantize(q.quantize(*b as f32))));
    }
    // A missing, misshapen or non-positive scale is a typed error.
    assert!(forward(&Op::Int8Conv(op.clone()), &x, &OpParams::new(), Mode::Eval).is_err());
    values.insert("scale".into(), ndarray::arr1(&[0.1, 0.2]).into_dyn());
    assert!(forward(&Op::Int8Conv(op.clone()), &x, &values, Mode::Eval).is_err());
    values.insert("scale".into(), ndarray::arr1(&[-0.1]).into_dyn());
    assert!(backward(&Op::Int8Conv(op), &x, &dy, &values, Mode::Eval).is_err());
}

#[test]
fn a_learned_scale_is_a_graph_parameter_written_back() {
    use crate::graph::GraphBuilder;
    use crate::ActShape;
    let p = QuantParams::new(0.05, 0, IntType::U8).unwrap();
    let learned = Int8Conv::learned_quantize_dequantize(2, p).unwrap();
    assert!(learned.learns_scale() && learned.is_quantize_dequantize());
    assert!(!Int8Conv::quantize_dequantize(2, p).unwrap().learns_scale());
    assert!(Int8Conv::quantize_dequantize(2, p)
        .unwrap()
        .with_learned_scale(0.1)
        .is_err());
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 3, 3));
    let y = b.op("q", Op::Int8Conv(learned), x);
    b.output(y);
    let g = b.build().unwrap();
    let params = g.parameters();
    assert_eq!(params.len(), 1);
    assert_eq!(params[0].0, "q.scale");
    let mut new = Params::new();
    new.insert("q.scale".into(), ndarray::arr1(&[0.25]).into_dyn());
    let g2 = graph_with_params(&g, &new).unwrap();
    let NodeOp::Op(Op::Int8Conv(q)) = g2.node("q").unwrap().op() else {
        panic!("not an Int8Conv")
    };
    assert!(q.learns_scale());
    assert_eq!(q.input_params().scale(), 0.25);
    assert_eq!(q.input_params().zero_point(), 0);
    new.insert("q.scale".into(), ndarray::arr1(&[0.0]).into_dyn());
    assert!(graph_with_params(&g, &new).is_err());
}

//! XNOR-Net convolutions' forward and straight-through backward: the forward
//! against the op's reference, the input gradient against the STE's
//! definition (the adjoint of the dense ±1 layer applied to `dy ⊙ K · α`,
//! masked to `|x| ≤ 1`) and against central differences of the surrogate
//! `(B ∗ htanh(x)) ⊙ K · α + b` with `K` held at its value, and the
//! `alpha` / `bias` gradients against central differences of the forward.

use ndarray::{Array1, Array4};

use super::check::gradient_error;
use super::tests::assert_close;
use super::*;
use crate::layer::{ConvLayer, LinearLayer};
use crate::op::{BinaryConv, BinaryInput, Operator, WeightLayout};
use crate::rng::SeededRng;
use crate::spec::ConvSpec;

/// A strided, padded, grouped XNOR convolution (4 → 6 channels, 2 groups)
/// with a bias, or a 8 → 3 XNOR linear layer without one.
fn xnor_op(rng: &mut SeededRng, linear: bool) -> BinaryConv {
    let (layout, bias) = if linear {
        (WeightLayout::linear(3, 8).unwrap(), None)
    } else {
        let spec = ConvSpec::new()
            .with_stride(2)
            .with_padding(1)
            .with_groups(2);
        let layout = WeightLayout::conv([6, 2, 3, 3], spec).unwrap();
        (
            layout,
            Some(Array1::from_shape_fn(6, |t| 0.1 * t as f32 - 0.2)),
        )
    };
    let (rows, len) = (layout.rows(), layout.row_len());
    let bits: Vec<u32> = (0..rows * len).map(|_| rng.below(2) as u32).collect();
    let signs = crate::PackedCodes::pack(&bits, rows, len, 1).unwrap();
    let alpha = Array1::from_shape_fn(rows, |_| 0.25 + rng.uniform() as f32);
    BinaryConv::new(layout, signs, alpha, bias, true).unwrap()
}

/// Inputs in `(−2, 2)`, none within `1e-3` of `±1` (the surrogate's kinks)
/// or of 0 (where `sign` and `|x|` switch), exact in f32.
fn spread_input(rng: &mut SeededRng, dims: [usize; 4]) -> Array4<f64> {
    Array4::from_shape_simple_fn(dims, || {
        let v = rng.uniform() * 4.0 - 2.0;
        let v = if (v.abs() - 1.0).abs() < 1e-3 || v.abs() < 1e-3 {
            v + 0.01
        } else {
            v
        };
        f64::from(v as f32)
    })
}

/// The ±1 sign matrix of `op` as a dense f64-parameter convolution or linear
/// layer (an independent route to `B ∗ x` and its adjoint).
fn sign_layer(op: &BinaryConv) -> Op {
    let b = op.sign_matrix();
    match *op.layout() {
        WeightLayout::Conv { dims, spec } => {
            Op::Conv(ConvLayer::from_array(b.into_shape_with_order(dims).unwrap(), spec).unwrap())
        }
        WeightLayout::Linear { .. } => Op::Linear(LinearLayer::new(b, None).unwrap()),
    }
}

/// `K` from the op's own f32 scaling map, per filter `[N, rows, oh, ow]`.
fn k_per_filter(op: &BinaryConv, x: &Array4<f64>, out: [usize; 4]) -> Array4<f64> {
    let k = op.scaling_map(&x.mapv(|v| v as f32)).unwrap();
    let per_group = out[1] / k.shape()[1];
    Array4::from_shape_fn(out, |(n, t, i, j)| f64::from(k[[n, t / per_group, i, j]]))
}

fn cases(rng: &mut SeededRng) -> Vec<(BinaryConv, [usize; 4])> {
    vec![
        (xnor_op(rng, false), [2, 4, 5, 5]),
        (xnor_op(rng, true), [3, 2, 2, 2]),
    ]
}

/// Also in sign mode (`K ≡ 1`).
#[test]
fn xnor_forward_is_the_op_reference() {
    let mut rng = SeededRng::new(51);
    let both = |(op, dims): (BinaryConv, [usize; 4])| {
        [BinaryInput::XnorK, BinaryInput::Sign].map(|m| (op.clone().with_input(m), dims))
    };
    for (op, dims) in cases(&mut rng).into_iter().flat_map(both) {
        let x = spread_input(&mut rng, dims);
        let want = op.reference_forward(&x.mapv(|v| v as f32)).unwrap();
        let p = op_params(&Op::BinaryConv(op.clone()));
        let y = forward(&Op::BinaryConv(op), &x, &p, Mode::Eval)
            .unwrap()
            .output;
        assert_eq!(y.shape(), want.shape());
        for (a, b) in y.iter().zip(&want) {
            assert!(
                (a - f64::from(*b)).abs() <= 1e-5 * a.abs().max(1.0),
                "{a} vs {b}"
            );
        }
        assert!(y.iter().any(|v| v.abs() > 0.5), "a non-trivial output");
    }
}

#[test]
fn xnor_backward_is_the_straight_through_definition() {
    let mut rng = SeededRng::new(52);
    for (op, dims) in cases(&mut rng) {
        let x = spread_input(&mut rng, dims);
        let xop = Op::BinaryConv(op.clone());
        let p = op_params(&xop);
        let out = out_dims(&xop, &x).unwrap();
        let dy = rng.normal_array_f64(out, 1.0);
        let g = backward(&xop, &x, &dy, &p, Mode::Eval).unwrap();
        let k = k_per_filter(&op, &x, out);
        let alpha = op.alpha().mapv(f64::from);
        // Definition: Bᵀ ∗ (dy ⊙ K · α), masked to |x| ≤ 1.
        let scaled = Array4::from_shape_fn(out, |(n, t, i, j)| {
            dy[[n, t, i, j]] * k[[n, t, i, j]] * alpha[t]
        });
        let dense = sign_layer(&op);
        let d = backward(&dense, &x, &scaled, &op_params(&dense), Mode::Eval).unwrap();
        let mut masked = 0;
        for ((a, b), v) in g.input.iter().zip(&d.input).zip(&x) {
            if v.abs() <= 1.0 {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
            } else {
                assert_eq!(*a, 0.0, "no gradient where |x| > 1 (K is constant)");
                masked += 1;
            }
        }
        assert!(masked > 0 && masked < x.len(), "both sides of the clip");
        // Central differences of ⟨dy, (B ∗ htanh(x')) ⊙ K · α + b⟩, K fixed
        // at x (the bias is constant and drops out).
        let (err, peak) = gradient_error(&x, &g.input, |v| {
            let h = v.mapv(|u| u.clamp(-1.0, 1.0));
            let sb = forward(&dense, &h, &op_params(&dense), Mode::Eval)
                .unwrap()
                .output;
            (&(&sb * &k) * &dy)
                .indexed_iter()
                .map(|((_, t, _, _), u)| u * alpha[t])
                .sum()
        });
        assert_close("xnor straight-through", err, peak);
        // alpha and bias: central differences of the forward itself.
        for name in ["alpha", "bias"] {
            let Some(theta) = p.get(name) else {
                assert!(!g.params.contains_key(name));
                continue;
            };
            let (err, peak) = gradient_error(theta, &g.params[name], |v| {
                let mut q = p.clone();
                q.insert(name.into(), v.clone());
                (&forward(&xop, &x, &q, Mode::Eval).unwrap().output * &dy).sum()
            });
            assert_close(name, err, peak);
        }
        assert!(g.params.contains_key("alpha"));
    }
}

#[test]
fn xnor_has_a_backward_and_checks_its_parameters() {
    let mut rng = SeededRng::new(53);
    let op = xnor_op(&mut rng, false);
    let xop = Op::BinaryConv(op);
    assert!(has_backward(&xop));
    let x = spread_input(&mut rng, [1, 4, 5, 5]);
    let mut p = op_params(&xop);
    p.insert("alpha".into(), ndarray::ArrayD::zeros(vec![5]));
    assert!(matches!(
        forward(&xop, &x, &p, Mode::Eval),
        Err(crate::Error::ShapeMismatch { .. })
    ));
    p.remove("alpha");
    assert!(forward(&xop, &x, &p, Mode::Eval).is_err());
    let p = op_params(&xop);
    assert!(backward(&xop, &x, &Array4::zeros((1, 6, 2, 2)), &p, Mode::Eval).is_err());
}

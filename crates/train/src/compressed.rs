//! The f32 training forward and backward of the compressed ops whose forward
//! is a dense layer with a weight built from their stored values (sparse,
//! codebook, product-quantized, binary, ternary, fixed-point, group-wise,
//! LCNN and TT-linear; see `hasten_core::grad::dense_equivalent`): the
//! weight matrix `W(θ)` is assembled once per batch, the layer runs through
//! the im2col + GEMM kernels of [`crate::kernels`], and the weight gradient
//! goes back to the stored values by `hasten_core::grad::dense_weight_grads`
//! (sums over a centroid's members, the CSR pattern's entries, the TT
//! chain rule) — so the sparsity pattern and the codes never change.
//!
//! Also here: a frozen int8 layer (`Int8Conv` with integer weights, survey
//! section 5), forward and straight-through backward on the same kernels
//! (`int8_forward`, `int8_backward`); and the activation fake quantizer of
//! quantization-aware training (`Int8Conv::quantize_dequantize`),
//! elementwise in f32: `s·(q(x) − z)`
//! forward (what the op's integer reference computes) and the
//! straight-through gradient masked to the quantizer's range backward
//! (`hasten_core::grad::ste::passes_activation`); with a learned step size
//! the scale is the store's `scale` and gets LSQ's gradient
//! (`hasten_core::grad::lsq`).

use hasten_core::grad::{
    dense_equivalent, dense_weight_grads, lsq, ste, DenseEquivalent, OpParams,
};
use hasten_core::op::{Int8Conv, Op, Operator, QuantParams, WeightLayout};
use hasten_core::ActShape;
use ndarray::{Array1, Array2, Array4};

use crate::error::Result;
use crate::kernels;
use crate::params::Grads;

/// The f64 values by suffix, as the core reference takes them.
fn to_f64(v: &Grads) -> OpParams {
    v.iter()
        .map(|(k, a)| (k.clone(), a.mapv(f64::from)))
        .collect()
}

/// The dense layer of `op` for the values `v`, if `op` has one.
fn dense(op: &Op, v: &Grads) -> Result<Option<(DenseEquivalent, OpParams)>> {
    let p = to_f64(v);
    Ok(dense_equivalent(op, &p)?.map(|d| (d, p)))
}

fn weight4(d: &DenseEquivalent, dims: [usize; 4]) -> Array4<f32> {
    d.weight
        .mapv(|u| u as f32)
        .into_shape_with_order(dims)
        .expect("rows × row_len is OIHW")
}

fn bias32(d: &DenseEquivalent) -> Option<Array1<f32>> {
    d.bias.as_ref().map(|b| b.mapv(|u| u as f32))
}

/// The quantization of the fake quantizer `q` with values `v` (a learned
/// `scale` from `v`).
fn quantizer(q: &Int8Conv, v: &Grads) -> Result<QuantParams> {
    let scale = v.get("scale").and_then(|a| a.iter().next()).copied();
    Ok(lsq::quantizer_params(q, scale.map(f64::from))?)
}

/// Rejects an input batch `q` cannot take, with the core's typed error.
fn check_input(q: &Int8Conv, x: &Array4<f32>) -> Result<()> {
    let s = x.shape();
    hasten_core::error::ensure_nonempty("input activation (NCHW)", s)?;
    Operator::output_shape(q, ActShape::new(s[1], s[2], s[3]))?;
    Ok(())
}

/// The straight-through mask of an int8 input quantizer `p`
/// (`ste::passes_activation`, as the core reference backward applies it):
/// `dx` zeroed where `x` lies outside the quantizer's range.
fn mask_to_range(dx: &mut Array4<f32>, x: &Array4<f32>, p: &QuantParams) {
    dx.zip_mut_with(x, |g, &u| {
        if !ste::passes_activation(p, f64::from(u)) {
            *g = 0.0;
        }
    });
}

/// The forward of a frozen int8 layer `q` on the f32 kernels: the input's
/// codes less the zero point, `q(x) − z` (step 1 of the op,
/// `Int8Conv::quantize_input`), through the im2col + GEMM kernels with the
/// integer weights and bias give the i32 accumulators — exact in f32 while
/// the partial sums stay below 2^24, a rounding of the last bit beyond —
/// and the op's own last steps (`Int8Conv::outputs_from_accumulators`:
/// `acc · s_in · s_w[t]`, or the fixed-point requantization) give its
/// output, `Ŵ ∗ x̂ + b̂`: the integer reference's, bit for bit where the
/// accumulators are exact.
fn int8_forward(q: &Int8Conv, x: &Array4<f32>) -> Result<Array4<f32>> {
    check_input(q, x)?;
    let z = q.input_params().zero_point();
    let codes = q.quantize_input(x).mapv(|c| (c - z) as f32);
    let w = q.weights().mapv(f32::from);
    let bias = q.bias().map(|b| b.mapv(|u| u as f32));
    let acc = match *q.layout() {
        WeightLayout::Conv { dims, spec } => {
            let w = w
                .into_shape_with_order(dims)
                .expect("rows × row_len is OIHW");
            kernels::conv2d_forward(&codes, &w, bias.as_ref(), &spec)?
        }
        WeightLayout::Linear { .. } => kernels::linear_forward(&codes, &w, bias.as_ref())?,
    };
    Ok(q.outputs_from_accumulators(x, &acc.mapv(|a| a.round() as i32))?)
}

/// The straight-through backward of a frozen int8 layer `q` (that of
/// `hasten_core::grad` for `Int8Conv`): `∂L/∂x = (Ŵᵀ ∗ ∂L/∂y)` with the
/// dequantized weights (`Int8Conv::dequantized`), masked to the input
/// quantizer's range; requantized outputs pass straight through, and the
/// op's codes and scales are frozen, so there are no parameter gradients.
fn int8_backward(q: &Int8Conv, x: &Array4<f32>, dy: &Array4<f32>) -> Result<Array4<f32>> {
    check_input(q, x)?;
    let w = q.dequantized();
    let mut dx = match *q.layout() {
        WeightLayout::Conv { dims, spec } => {
            let w = w
                .into_shape_with_order(dims)
                .expect("rows × row_len is OIHW");
            kernels::conv2d_backward_input(x, &w, dy, &spec)?
        }
        WeightLayout::Linear { .. } => kernels::linear_backward(x, &w, dy)?.0,
    };
    mask_to_range(&mut dx, x, q.input_params());
    Ok(dx)
}

/// The forward of a compressed `op` with values `v`; `None` when `op` has no
/// dense equivalent (the caller falls back to the f64 reference).
pub(crate) fn forward(op: &Op, x: &Array4<f32>, v: &Grads) -> Result<Option<Array4<f32>>> {
    if let Op::Int8Conv(q) = op {
        if !q.is_quantize_dequantize() {
            return Ok(Some(int8_forward(q, x)?));
        }
        check_input(q, x)?;
        let p = quantizer(q, v)?;
        return Ok(Some(x.mapv(|u| {
            if u.is_nan() {
                f32::NAN
            } else {
                p.dequantize(p.quantize(u))
            }
        })));
    }
    let Some((d, _)) = dense(op, v)? else {
        return Ok(None);
    };
    let bias = bias32(&d);
    Ok(Some(match d.layout {
        WeightLayout::Conv { dims, spec } => {
            kernels::conv2d_forward(x, &weight4(&d, dims), bias.as_ref(), &spec)?
        }
        WeightLayout::Linear { .. } => {
            kernels::linear_forward(x, &d.weight.mapv(|u| u as f32), bias.as_ref())?
        }
    }))
}

/// The backward of a compressed `op`: `∂L/∂x` and the gradients of its
/// stored values by suffix; `None` when `op` has no dense equivalent.
pub(crate) fn backward(
    op: &Op,
    x: &Array4<f32>,
    dy: &Array4<f32>,
    v: &Grads,
) -> Result<Option<(Array4<f32>, Grads)>> {
    if let Op::Int8Conv(q) = op {
        if !q.is_quantize_dequantize() {
            return Ok(Some((int8_backward(q, x, dy)?, Grads::new())));
        }
        let p = quantizer(q, v)?;
        let mut dx = dy.to_owned();
        mask_to_range(&mut dx, x, &p);
        let mut grads = Grads::new();
        if q.learns_scale() {
            let per_sample = x.len() / x.shape()[0].max(1);
            let pairs = x
                .iter()
                .zip(dy)
                .map(|(&u, &g)| (f64::from(u), f64::from(g)));
            let g = lsq::lsq_scale_gradient(&p, per_sample, pairs) as f32;
            grads.insert("scale".into(), ndarray::arr1(&[g]).into_dyn());
        }
        return Ok(Some((dx, grads)));
    }
    let Some((d, p)) = dense(op, v)? else {
        return Ok(None);
    };
    let (dx, dw, db): (Array4<f32>, Array2<f32>, Array1<f32>) = match d.layout {
        WeightLayout::Conv { dims, spec } => {
            let g = kernels::conv2d_backward(x, &weight4(&d, dims), dy, &spec)?;
            let rows = dims[0];
            let dw = g
                .weight
                .into_shape_with_order((rows, d.layout.row_len()))
                .expect("OIHW is rows × row_len");
            (g.input, dw, g.bias)
        }
        WeightLayout::Linear { .. } => {
            kernels::linear_backward(x, &d.weight.mapv(|u| u as f32), dy)?
        }
    };
    let mut grads: Grads = dense_weight_grads(op, &p, &dw.mapv(f64::from))?
        .into_iter()
        .map(|(k, a)| (k, a.mapv(|u| u as f32)))
        .collect();
    if d.bias.is_some() {
        grads.insert("bias".into(), db.into_dyn());
    }
    Ok(Some((dx, grads)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::grad::{self, Mode};
    use hasten_core::op::{Int8Conv, IntType, QuantParams};
    use hasten_core::SeededRng;

    /// The f32 activation fake quantizer against the core reference:
    /// forward bit-identical to the op's integer reference, backward equal
    /// to the reference straight-through gradient.
    #[test]
    fn quantize_dequantize_matches_the_reference() {
        let p = QuantParams::new(0.03, 100, IntType::U8).unwrap();
        let q = Int8Conv::quantize_dequantize(3, p).unwrap();
        let op = Op::Int8Conv(q.clone());
        let mut rng = SeededRng::new(3);
        let mut x: Array4<f32> = rng.normal_array([2, 3, 5, 5], 3.0);
        x[[0, 1, 2, 2]] = f32::NAN;
        let y = forward(&op, &x, &Grads::new()).unwrap().unwrap();
        let r = q.reference_forward(&x).unwrap();
        for (a, b) in y.iter().zip(&r) {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        }
        x[[0, 1, 2, 2]] = 0.0;
        let dy: Array4<f32> = rng.normal_array([2, 3, 5, 5], 1.0);
        let (dx, g) = backward(&op, &x, &dy, &Grads::new()).unwrap().unwrap();
        assert!(g.is_empty());
        let want = grad::backward(
            &op,
            &x.mapv(f64::from),
            &dy.mapv(f64::from),
            &OpParams::new(),
            Mode::Eval,
        )
        .unwrap()
        .input
        .mapv(|u| u as f32);
        assert_eq!(dx, want);
        assert!(dx.iter().any(|&u| u == 0.0) && dx.iter().any(|&u| u != 0.0));
        // A batch of the wrong channel count is a typed error.
        assert!(forward(&op, &Array4::zeros((1, 2, 2, 2)), &Grads::new()).is_err());
    }

    /// A random frozen int8 layer: a convolution (groups, strides,
    /// asymmetric padding, dilation) or a linear layer, per-tensor or
    /// per-channel weight scales, with or without a bias, u8 or i8 input,
    /// sometimes requantized; `c_g` input channels per group. Returns the
    /// op and an input shape it takes.
    fn random_int8(rng: &mut SeededRng, c_g: usize) -> (Int8Conv, [usize; 4]) {
        use hasten_core::{ConvSpec, Padding};
        let n = 1 + rng.below(3);
        let scales = |rng: &mut SeededRng, rows: usize| {
            let len = if rng.below(2) == 0 { 1 } else { rows };
            Array1::from_shape_fn(len, |_| rng.uniform_in(0.002, 0.05) as f32)
        };
        let input = if rng.below(2) == 0 {
            QuantParams::new(
                rng.uniform_in(0.01, 0.1) as f32,
                rng.below(200) as i32,
                IntType::U8,
            )
        } else {
            QuantParams::new(rng.uniform_in(0.01, 0.1) as f32, 0, IntType::I8)
        }
        .unwrap();
        let code = |rng: &mut SeededRng| (rng.uniform() * 255.0 - 127.0).round() as i8;
        let (layout, dims) = if rng.below(4) == 0 {
            let (f, o) = (c_g * (1 + rng.below(8)), 1 + rng.below(6));
            let layout = WeightLayout::linear(o, f).unwrap();
            (layout, [n, f, 1, 1])
        } else {
            let groups = 1 + rng.below(3);
            let t = groups * (1 + rng.below(3));
            let (kh, kw) = (1 + rng.below(3), 1 + rng.below(3));
            let mut side = || rng.below(3);
            let pad = Padding {
                top: side(),
                bottom: side(),
                left: side(),
                right: side(),
            };
            let mut spec = ConvSpec::new()
                .with_groups(groups)
                .with_stride_hw(1 + rng.below(2), 1 + rng.below(2))
                .with_padding_sides(pad);
            spec.dilation = (1 + rng.below(2), 1);
            let h = (kh - 1) * spec.dilation.0 + 1 + rng.below(5);
            let w = kw + rng.below(5);
            let layout = WeightLayout::conv([t, c_g, kh, kw], spec).unwrap();
            (layout, [n, groups * c_g, h, w])
        };
        let (rows, row_len) = (layout.rows(), layout.row_len());
        let w = Array2::from_shape_fn((rows, row_len), |_| code(rng));
        let bias = (rng.below(3) > 0)
            .then(|| Array1::from_shape_fn(rows, |_| rng.below(4001) as i32 - 2000));
        let output = (rng.below(3) == 0).then(|| {
            QuantParams::new(
                rng.uniform_in(0.05, 0.5) as f32,
                rng.below(256) as i32,
                IntType::U8,
            )
            .unwrap()
        });
        let ws = scales(rng, rows);
        (
            Int8Conv::new(layout, w, ws, input, bias, output).unwrap(),
            dims,
        )
    }

    /// Inputs spread over the quantizer's range and one unit beyond each
    /// end.
    fn spread(rng: &mut SeededRng, q: &Int8Conv, dims: [usize; 4]) -> Array4<f32> {
        let (lo, hi) = ste::activation_range(q.input_params());
        Array4::from_shape_simple_fn(dims, || (lo - 1.0 + rng.uniform() * (hi - lo + 2.0)) as f32)
    }

    /// A frozen int8 layer on the f32 path: the forward bit for bit the
    /// op's integer reference (every accumulator here is below 2^24, so
    /// exact in f32) — NaN inputs included — and the backward the core's
    /// f64 straight-through reference, with no parameter gradients.
    #[test]
    fn frozen_int8_matches_the_integer_reference_and_the_reference_backward() {
        let mut rng = SeededRng::new(71);
        let (mut requantized, mut linear, mut nan_cases) = (0, 0, 0);
        for case in 0..60 {
            let c_g = 1 + rng.below(3);
            let (q, dims) = random_int8(&mut rng, c_g);
            requantized += usize::from(q.output_params().is_some());
            linear += usize::from(matches!(q.layout(), WeightLayout::Linear { .. }));
            let op = Op::Int8Conv(q.clone());
            let mut x = spread(&mut rng, &q, dims);
            let y = forward(&op, &x, &Grads::new()).unwrap().unwrap();
            let want = q.reference_forward(&x).unwrap();
            assert_eq!(y, want, "case {case}: {:?}", q.layout());
            let dy: Array4<f32> = rng.normal_array(y.raw_dim(), 1.0);
            let (dx, g) = backward(&op, &x, &dy, &Grads::new()).unwrap().unwrap();
            assert!(g.is_empty());
            let r = grad::backward(
                &op,
                &x.mapv(f64::from),
                &dy.mapv(f64::from),
                &OpParams::new(),
                Mode::Eval,
            )
            .unwrap();
            assert!(r.params.is_empty());
            let e = hasten_core::relative_error(&r.input.mapv(|u| u as f32), &dx);
            assert!(e < 1e-5, "case {case}: input gradient relative error {e}");
            // NaN reads: the same outputs are NaN.
            x[[0, 0, 0, 0]] = f32::NAN;
            let y = forward(&op, &x, &Grads::new()).unwrap().unwrap();
            let want = q.reference_forward(&x).unwrap();
            nan_cases += usize::from(y.iter().any(|u| u.is_nan()));
            for (a, b) in y.iter().zip(&want) {
                assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
            }
        }
        assert!(
            requantized > 5 && linear > 5 && nan_cases > 30,
            "{requantized} / {linear} / {nan_cases}"
        );
        // Wide rows (576 taps) of extreme codes: accumulators beyond 2^24
        // may round in f32, the outputs stay within f32 rounding.
        let p = QuantParams::new(0.05, 0, IntType::U8).unwrap();
        let layout = WeightLayout::conv([4, 64, 3, 3], hasten_core::ConvSpec::new()).unwrap();
        let w = Array2::from_shape_fn(
            (4, 576),
            |(t, j)| if (t + j) % 50 == 0 { 127 } else { -128 },
        );
        let q = Int8Conv::new(layout, w, Array1::from_elem(4, 0.01), p, None, None).unwrap();
        let x: Array4<f32> = rng.uniform_array((2, 64, 4, 4), 12.0, 14.0);
        let op = Op::Int8Conv(q.clone());
        let y = forward(&op, &x, &Grads::new()).unwrap().unwrap();
        let want = q.reference_forward(&x).unwrap();
        assert!(want.iter().any(|u| u.abs() > 0.01 * 0.05 * 16_777_216.0));
        let e = hasten_core::relative_error(&want, &y);
        assert!(e < 1e-7, "relative error {e}");
        // Inputs the layer cannot take are typed errors.
        let bad = Array4::zeros((1, 3, 4, 4));
        assert!(forward(&op, &bad, &Grads::new()).is_err());
        assert!(backward(&op, &bad, &Array4::zeros((1, 4, 2, 2)), &Grads::new()).is_err());
    }

    /// The learned step size: the f32 forward runs with the store's
    /// `scale` bit for bit as the op rebuilt with it, and the input and
    /// scale gradients are the core reference's.
    #[test]
    fn learned_quantize_dequantize_matches_the_reference() {
        let p = QuantParams::new(0.03, 0, IntType::U8).unwrap();
        let q = Int8Conv::learned_quantize_dequantize(3, p).unwrap();
        let op = Op::Int8Conv(q.clone());
        let mut rng = SeededRng::new(4);
        let x: Array4<f32> = rng.normal_array([2, 3, 5, 5], 3.0);
        let mut v = Grads::new();
        v.insert("scale".into(), ndarray::arr1(&[0.02f32]).into_dyn());
        let y = forward(&op, &x, &v).unwrap().unwrap();
        let r = q
            .with_learned_scale(0.02)
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        assert_eq!(y, r);
        let dy: Array4<f32> = rng.normal_array([2, 3, 5, 5], 1.0);
        let (dx, g) = backward(&op, &x, &dy, &v).unwrap().unwrap();
        let want = grad::backward(
            &op,
            &x.mapv(f64::from),
            &dy.mapv(f64::from),
            &to_f64(&v),
            Mode::Eval,
        )
        .unwrap();
        assert_eq!(dx, want.input.mapv(|u| u as f32));
        let gs = g["scale"][[0]];
        assert_eq!(gs, want.params["scale"][[0]] as f32);
        assert!(gs != 0.0);
        // A scale the optimizer drove to zero is a typed error.
        v.insert("scale".into(), ndarray::arr1(&[0.0f32]).into_dyn());
        assert!(forward(&op, &x, &v).is_err());
    }
}

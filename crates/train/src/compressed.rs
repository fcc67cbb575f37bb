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
//! Also here: the activation fake quantizer of quantization-aware training
//! (`Int8Conv::quantize_dequantize`), elementwise in f32: `s·(q(x) − z)`
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

/// The forward of a compressed `op` with values `v`; `None` when `op` has no
/// dense equivalent (the caller falls back to the f64 reference).
pub(crate) fn forward(op: &Op, x: &Array4<f32>, v: &Grads) -> Result<Option<Array4<f32>>> {
    if let Op::Int8Conv(q) = op {
        if q.is_quantize_dequantize() {
            let s = x.shape();
            hasten_core::error::ensure_nonempty("input activation (NCHW)", s)?;
            Operator::output_shape(q, ActShape::new(s[1], s[2], s[3]))?;
            let p = quantizer(q, v)?;
            return Ok(Some(x.mapv(|u| {
                if u.is_nan() {
                    f32::NAN
                } else {
                    p.dequantize(p.quantize(u))
                }
            })));
        }
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
        if q.is_quantize_dequantize() {
            let p = quantizer(q, v)?;
            let mut dx = dy.to_owned();
            dx.zip_mut_with(x, |g, &u| {
                if !ste::passes_activation(&p, f64::from(u)) {
                    *g = 0.0;
                }
            });
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

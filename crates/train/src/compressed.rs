//! The f32 training forward and backward of the compressed ops whose forward
//! is a dense layer with a weight built from their stored values (sparse,
//! codebook, product-quantized, binary, ternary, fixed-point, group-wise,
//! LCNN and TT-linear; see `hasten_core::grad::dense_equivalent`): the
//! weight matrix `W(θ)` is assembled once per batch, the layer runs through
//! the im2col + GEMM kernels of [`crate::kernels`], and the weight gradient
//! goes back to the stored values by `hasten_core::grad::dense_weight_grads`
//! (sums over a centroid's members, the CSR pattern's entries, the TT
//! chain rule) — so the sparsity pattern and the codes never change.

use hasten_core::grad::{dense_equivalent, dense_weight_grads, DenseEquivalent, OpParams};
use hasten_core::op::{Op, WeightLayout};
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

/// The forward of a compressed `op` with values `v`; `None` when `op` has no
/// dense equivalent (the caller falls back to the f64 reference).
pub(crate) fn forward(op: &Op, x: &Array4<f32>, v: &Grads) -> Result<Option<Array4<f32>>> {
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

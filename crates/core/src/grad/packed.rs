//! Reverse mode of the compressed ops whose forward is a dense convolution or
//! linear layer with a weight matrix `W(θ) [rows, row_len]` built from the
//! op's own stored values `θ` (survey sections 2, 5 and 6): the forward is
//! equation (1) with `W(θ)`, the input gradient that of the dense layer, and
//! `∂L/∂θ` the chain rule through `W(θ)` — so the structure the op stores
//! (sparsity pattern, codes, signs, kept taps) never changes:
//!
//! - unstructured sparse (`SparseConv`, `SparseLinear`, §6): `θ` = the
//!   stored CSR `values`, `∂L/∂values[e] = ∂L/∂W[r, col[e]]`; removed
//!   weights are not parameters and stay exactly zero;
//! - codebooks (`CodebookConv`, eq. (4)) and product quantization
//!   (`ProductQuantizedConv`): codes fixed, the gradient of a centroid is
//!   the sum of the gradients of the weights that use it (the fine-tuning
//!   of Han et al.'s deep compression);
//! - binary, ternary and fixed-point codes (`BinaryConv` without XNOR
//!   inputs, `TernaryConv`, `FixedPointConv`, eq. (3), (6), (8)): the
//!   per-filter scales `alpha` / `scales` (and fixed-point `offsets`) with
//!   the codes fixed; their latent full-precision weights are trained by
//!   quantization-aware training instead;
//! - group-wise pruning (`GroupwiseConv`, §6.1): the kept-tap `weight`;
//! - LCNN (`LcnnConv`, eq. (10)): the `dictionary` and the tap `coeffs`,
//!   the dictionary indices fixed;
//! - Tensor-Train (`TtLinear`, §2): every core `core.k`,
//!   `∂L/∂G_k[r, a, b, s] = Σ ∂L/∂W[o, i] · L_k[r] · R_k[s]` with `L_k` and
//!   `R_k` the products of the cores left and right of `k` for the row and
//!   column indices `o`, `i` through `a`, `b`.
//!
//! Every op also trains its `bias` where it has one.

use ndarray::{Array1, Array2, Array4, ArrayD, ArrayView1, Ix1, Ix2};

use super::{conv, linear, param, OpGrad, OpParams};
use crate::error::{Error, Result};
use crate::graph::tt_core_name;
use crate::op::{ternary_value, tt_prefixes, Csr};
use crate::op::{
    BinaryConv, GroupwiseConv, LcnnConv, Op, SparseConv, TernaryConv, TtLinear, WeightLayout,
};

/// Whether [`forward`] and [`backward`] handle `op` (a binary convolution
/// only without XNOR input binarization, whose sign function has no useful
/// gradient).
pub(super) fn handles(op: &Op) -> bool {
    match op {
        Op::BinaryConv(b) => !b.binarize_input(),
        Op::SparseConv(_)
        | Op::SparseLinear(_)
        | Op::CodebookConv(_)
        | Op::ProductQuantizedConv(_)
        | Op::TernaryConv(_)
        | Op::FixedPointConv(_)
        | Op::GroupwiseConv(_)
        | Op::LcnnConv(_)
        | Op::TtLinear(_) => true,
        _ => false,
    }
}

/// A compressed op seen as its dense layer, for its parameter values: a
/// fast training kernel runs the dense convolution or linear layer and maps
/// the weight gradient back with [`dense_weight_grads`].
#[derive(Debug, Clone, PartialEq)]
pub struct DenseEquivalent {
    /// The geometry: a convolution (OIHW dims and spec) or a linear layer.
    pub layout: WeightLayout,
    /// The weight matrix `W(θ) [rows, row_len]` (the OIHW weight, row-major).
    pub weight: Array2<f64>,
    /// The bias, where the op has one.
    pub bias: Option<Array1<f64>>,
}

/// The dense layer of `op` with parameter values `p` (by `state_dict`
/// suffix, see [`super::op_params`]) when `op` is a compressed op whose
/// forward is a dense layer with a weight built from its stored values
/// (sparse, codebook, PQ, binary without XNOR inputs, ternary, fixed point,
/// group-wise, LCNN, TT-linear); `None` for every other op. Errors: a
/// missing parameter or one of the wrong shape.
pub fn dense_equivalent(op: &Op, p: &OpParams) -> Result<Option<DenseEquivalent>> {
    if !handles(op) {
        return Ok(None);
    }
    dense(op, p).map(|d| {
        Some(DenseEquivalent {
            layout: d.layout,
            weight: d.w,
            bias: d.bias,
        })
    })
}

/// The gradients of `op`'s stored values (all but the bias) given the
/// gradient `dw [rows, row_len]` of the weight matrix of its
/// [`dense_equivalent`]: the chain rule through `W(θ)` (see the module
/// docs). Errors: an op without a dense equivalent, a wrong `dw` shape.
pub fn dense_weight_grads(op: &Op, p: &OpParams, dw: &Array2<f64>) -> Result<OpParams> {
    let d = dense(op, p)?;
    if dw.dim() != d.w.dim() {
        return Err(Error::shape(
            format!("{} weight gradient", op.kind()),
            format!("{:?}", d.w.dim()),
            format!("{:?}", dw.dim()),
        ));
    }
    param_grads(op, p, dw)
}

/// An op seen as its dense layer (see [`DenseEquivalent`]).
struct Dense {
    layout: WeightLayout,
    w: Array2<f64>,
    bias: Option<Array1<f64>>,
}

fn vector<'a>(p: &'a OpParams, kind: &str, name: &str, len: usize) -> Result<ArrayView1<'a, f64>> {
    Ok(param(p, kind, name, &[len])?
        .view()
        .into_dimensionality::<Ix1>()
        .expect("shape checked"))
}

fn bias_of(p: &OpParams, kind: &str, has: bool, rows: usize) -> Result<Option<Array1<f64>>> {
    has.then(|| vector(p, kind, "bias", rows).map(|b| b.to_owned()))
        .transpose()
}

/// `W` of a CSR matrix with its pattern and the values `values`.
fn csr_dense(csr: &Csr, values: ArrayView1<f64>) -> Array2<f64> {
    let mut w = Array2::zeros((csr.rows(), csr.cols()));
    for_each_nonzero(csr, |r, c, e| w[[r, c]] = values[e]);
    w
}

/// Visits every stored entry `(row, column, index into values)` of `csr`.
fn for_each_nonzero(csr: &Csr, mut f: impl FnMut(usize, usize, usize)) {
    let ptr = csr.row_ptr();
    for r in 0..csr.rows() {
        for e in ptr[r] as usize..ptr[r + 1] as usize {
            f(r, csr.col_idx()[e] as usize, e);
        }
    }
}

fn csr_grad(csr: &Csr, dw: &Array2<f64>) -> ArrayD<f64> {
    let mut g = Array1::zeros(csr.nnz());
    for_each_nonzero(csr, |r, c, e| g[e] = dw[[r, c]]);
    g.into_dyn()
}

fn sparse_conv_layout(s: &SparseConv) -> Result<WeightLayout> {
    let (kh, kw) = s.kernel_hw();
    WeightLayout::conv([s.out_channels(), s.in_channels(), kh, kw], *s.spec())
}

fn groupwise_layout(g: &GroupwiseConv) -> Result<WeightLayout> {
    let (kh, kw) = g.kernel_hw();
    WeightLayout::conv([g.out_channels(), g.in_channels(), kh, kw], *g.spec())
}

fn sign(b: &BinaryConv, t: usize, j: usize) -> f64 {
    if b.signs().get(t, j) == Some(1) {
        1.0
    } else {
        -1.0
    }
}

fn ternary(t: &TernaryConv, r: usize, j: usize) -> f64 {
    f64::from(ternary_value(t.codes().get(r, j).unwrap_or(0)))
}

fn code(c: &crate::bits::PackedCodes, r: usize, j: usize) -> usize {
    c.get(r, j).unwrap_or(0) as usize
}

/// The dense view of `op` with parameter values `p`.
fn dense(op: &Op, p: &OpParams) -> Result<Dense> {
    let kind = op.kind();
    let per_filter = |layout: &WeightLayout, name: &str| -> Result<Array1<f64>> {
        vector(p, kind, name, layout.rows()).map(|v| v.to_owned())
    };
    Ok(match op {
        Op::SparseConv(s) => {
            let values = vector(p, kind, "values", s.filters().nnz())?;
            Dense {
                layout: sparse_conv_layout(s)?,
                w: csr_dense(s.filters(), values),
                bias: bias_of(p, kind, s.bias().is_some(), s.out_channels())?,
            }
        }
        Op::SparseLinear(s) => {
            let csr = s.weight();
            let values = vector(p, kind, "values", csr.nnz())?;
            Dense {
                layout: WeightLayout::linear(csr.rows(), csr.cols())?,
                w: csr_dense(csr, values),
                bias: bias_of(p, kind, s.bias().is_some(), csr.rows())?,
            }
        }
        Op::CodebookConv(c) => {
            let l = *c.layout();
            let books = param(p, kind, "centroids", c.codebooks().shape())?
                .view()
                .into_dimensionality::<Ix2>()
                .expect("shape checked");
            let g = books.nrows();
            let w = Array2::from_shape_fn((l.rows(), l.row_len()), |(t, j)| {
                books[[if g == 1 { 0 } else { t }, code(c.codes(), t, j)]]
            });
            Dense {
                layout: l,
                w,
                bias: bias_of(p, kind, c.bias().is_some(), l.rows())?,
            }
        }
        Op::ProductQuantizedConv(q) => {
            let l = *q.layout();
            let books = param(p, kind, "centroids", q.codebooks().shape())?;
            let d = q.subdim();
            let w = Array2::from_shape_fn((l.rows(), l.row_len()), |(t, j)| {
                let (i, e) = (j / d, j % d);
                books[[i, code(q.codes(), i, t), e]]
            });
            Dense {
                layout: l,
                w,
                bias: bias_of(p, kind, q.bias().is_some(), l.rows())?,
            }
        }
        Op::BinaryConv(b) if !b.binarize_input() => {
            let l = *b.layout();
            let alpha = per_filter(&l, "alpha")?;
            let w =
                Array2::from_shape_fn((l.rows(), l.row_len()), |(t, j)| alpha[t] * sign(b, t, j));
            Dense {
                layout: l,
                w,
                bias: bias_of(p, kind, b.bias().is_some(), l.rows())?,
            }
        }
        Op::TernaryConv(tc) => {
            let l = *tc.layout();
            let scales = per_filter(&l, "scales")?;
            let w = Array2::from_shape_fn((l.rows(), l.row_len()), |(t, j)| {
                scales[t] * ternary(tc, t, j)
            });
            Dense {
                layout: l,
                w,
                bias: bias_of(p, kind, tc.bias().is_some(), l.rows())?,
            }
        }
        Op::FixedPointConv(f) => {
            let l = *f.layout();
            let g = f.scales().len();
            let scales = vector(p, kind, "scales", g)?;
            let offsets = vector(p, kind, "offsets", g)?;
            let w = Array2::from_shape_fn((l.rows(), l.row_len()), |(t, j)| {
                let k = if g == 1 { 0 } else { t };
                scales[k] * code(f.codes(), t, j) as f64 + offsets[k]
            });
            Dense {
                layout: l,
                w,
                bias: bias_of(p, kind, f.bias().is_some(), l.rows())?,
            }
        }
        Op::GroupwiseConv(gw) => {
            let l = groupwise_layout(gw)?;
            let kept = param(p, kind, "weight", gw.weight().shape())?
                .view()
                .into_dimensionality::<Ix2>()
                .expect("shape checked");
            let mut w = Array2::zeros((l.rows(), l.row_len()));
            for k in 0..gw.taps().len() {
                w.column_mut(gw.column(k)).assign(&kept.column(k));
            }
            Dense {
                layout: l,
                w,
                bias: bias_of(p, kind, gw.bias().is_some(), l.rows())?,
            }
        }
        Op::LcnnConv(lc) => {
            let l = *lc.layout();
            let dict = param(p, kind, "dictionary", lc.dictionary().shape())?
                .view()
                .into_dimensionality::<Ix2>()
                .expect("shape checked");
            let coeffs = vector(p, kind, "coeffs", lc.coeffs().len())?;
            let mut w = Array2::zeros((l.rows(), l.row_len()));
            for_each_lcnn_tap(lc, |t, col, s, e| {
                w[[t, col]] += coeffs[e] * dict[[usize::from(lc.indices()[e]), s]];
            });
            Dense {
                layout: l,
                w,
                bias: bias_of(p, kind, lc.bias().is_some(), l.rows())?,
            }
        }
        Op::TtLinear(tt) => {
            let cores = tt_cores(tt, p)?;
            let w = tt_prefixes(&cores).pop().expect("at least one core");
            let (rows, cols) = (tt.out_features(), tt.in_features());
            Dense {
                layout: WeightLayout::linear(rows, cols)?,
                w: w.into_shape_with_order((rows, cols))
                    .map_err(|e| Error::shape("TT weight", format!("{rows} × {cols}"), e))?,
                bias: bias_of(p, kind, tt.bias().is_some(), rows)?,
            }
        }
        other => return Err(Error::unsupported("reference backward", other.kind())),
    })
}

/// Visits every term of eq. (10): `W[t, col] += coeffs[e] · D[indices[e], s]`
/// as `f(t, col, s, e)`, `col = (s·kh + i)·kw + j`.
fn for_each_lcnn_tap(lc: &LcnnConv, mut f: impl FnMut(usize, usize, usize, usize)) {
    let l = lc.layout();
    let (kh, kw) = match *l {
        WeightLayout::Conv { dims, .. } => (dims[2], dims[3]),
        WeightLayout::Linear { .. } => (1, 1),
    };
    let channels = lc.dictionary().ncols();
    for t in 0..l.rows() {
        for i in 0..kh {
            for j in 0..kw {
                let r = (t * kh + i) * kw + j;
                for e in lc.offsets()[r] as usize..lc.offsets()[r + 1] as usize {
                    for s in 0..channels {
                        f(t, (s * kh + i) * kw + j, s, e);
                    }
                }
            }
        }
    }
}

/// The TT cores `[r_{k−1}, m_k, n_k, r_k]` from `p`.
fn tt_cores(tt: &TtLinear, p: &OpParams) -> Result<Vec<Array4<f64>>> {
    tt.cores()
        .iter()
        .enumerate()
        .map(|(k, g)| {
            Ok(param(p, "tt_linear", &tt_core_name(k), g.shape())?
                .view()
                .into_dimensionality::<ndarray::Ix4>()
                .expect("shape checked")
                .to_owned())
        })
        .collect()
}

/// The suffix products of a TT chain: entry `k` is `[Π_{j≥k} m_j ·
/// Π_{j≥k} n_j, r_{k−1}]` (the products of cores `k..d`), entry `d` the
/// `[1, 1]` one.
fn tt_suffixes(cores: &[Array4<f64>]) -> Vec<Array2<f64>> {
    let mut out = vec![Array2::<f64>::ones((1, 1))];
    let (mut rows, mut cols) = (1usize, 1usize);
    for g in cores.iter().rev() {
        let acc = out.last().expect("seeded");
        let (r0, m, n, r1) = g.dim();
        let mut next = Array2::<f64>::zeros((m * rows * n * cols, r0));
        for a in 0..m {
            for b in 0..n {
                for o in 0..rows {
                    for i in 0..cols {
                        let after = acc.row(o * cols + i);
                        let row = (a * rows + o) * (n * cols) + (b * cols + i);
                        for r in 0..r0 {
                            next[[row, r]] = (0..r1).map(|s| g[[r, a, b, s]] * after[s]).sum();
                        }
                    }
                }
            }
        }
        out.push(next);
        rows *= m;
        cols *= n;
    }
    out.reverse();
    out
}

/// `∂L/∂G_k` for every core from `∂L/∂W [out, in]`.
fn tt_grads(cores: &[Array4<f64>], dw: &Array2<f64>) -> Vec<Array4<f64>> {
    let left = tt_prefixes(cores);
    let right = tt_suffixes(cores);
    let (out, inp) = dw.dim();
    let (mut rows_l, mut cols_l) = (1usize, 1usize);
    let mut grads = Vec::with_capacity(cores.len());
    for (k, g) in cores.iter().enumerate() {
        let (r0, m, n, r1) = g.dim();
        let (rows_r, cols_r) = (out / (rows_l * m), inp / (cols_l * n));
        let mut d = Array4::<f64>::zeros(g.raw_dim());
        for o in 0..rows_l {
            for i in 0..cols_l {
                let l = left[k].row(o * cols_l + i);
                for a in 0..m {
                    for b in 0..n {
                        for oo in 0..rows_r {
                            for ii in 0..cols_r {
                                let rr = right[k + 1].row(oo * cols_r + ii);
                                let g_w =
                                    dw[[(o * m + a) * rows_r + oo, (i * n + b) * cols_r + ii]];
                                if g_w == 0.0 {
                                    continue;
                                }
                                for r in 0..r0 {
                                    for s in 0..r1 {
                                        d[[r, a, b, s]] += g_w * l[r] * rr[s];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        grads.push(d);
        rows_l *= m;
        cols_l *= n;
    }
    grads
}

/// `∂L/∂θ` of `op` from the gradient `dw` of its dense weight matrix.
fn param_grads(op: &Op, p: &OpParams, dw: &Array2<f64>) -> Result<OpParams> {
    let mut g = OpParams::new();
    match op {
        Op::SparseConv(s) => {
            g.insert("values".into(), csr_grad(s.filters(), dw));
        }
        Op::SparseLinear(s) => {
            g.insert("values".into(), csr_grad(s.weight(), dw));
        }
        Op::CodebookConv(c) => {
            let mut d = ArrayD::<f64>::zeros(c.codebooks().shape());
            let groups = c.codebooks().nrows();
            for ((t, j), &v) in dw.indexed_iter() {
                d[[if groups == 1 { 0 } else { t }, code(c.codes(), t, j)]] += v;
            }
            g.insert("centroids".into(), d);
        }
        Op::ProductQuantizedConv(q) => {
            let mut d = ArrayD::<f64>::zeros(q.codebooks().shape());
            let sub = q.subdim();
            for ((t, j), &v) in dw.indexed_iter() {
                let (i, e) = (j / sub, j % sub);
                d[[i, code(q.codes(), i, t), e]] += v;
            }
            g.insert("centroids".into(), d);
        }
        Op::BinaryConv(b) => {
            let d = Array1::from_shape_fn(dw.nrows(), |t| {
                dw.row(t)
                    .iter()
                    .enumerate()
                    .map(|(j, &v)| v * sign(b, t, j))
                    .sum::<f64>()
            });
            g.insert("alpha".into(), d.into_dyn());
        }
        Op::TernaryConv(tc) => {
            let d = Array1::from_shape_fn(dw.nrows(), |t| {
                dw.row(t)
                    .iter()
                    .enumerate()
                    .map(|(j, &v)| v * ternary(tc, t, j))
                    .sum::<f64>()
            });
            g.insert("scales".into(), d.into_dyn());
        }
        Op::FixedPointConv(f) => {
            let groups = f.scales().len();
            let (mut ds, mut doff) = (Array1::zeros(groups), Array1::zeros(groups));
            for ((t, j), &v) in dw.indexed_iter() {
                let k = if groups == 1 { 0 } else { t };
                ds[k] += v * code(f.codes(), t, j) as f64;
                doff[k] += v;
            }
            g.insert("scales".into(), ds.into_dyn());
            g.insert("offsets".into(), doff.into_dyn());
        }
        Op::GroupwiseConv(gw) => {
            let d = Array2::from_shape_fn(gw.weight().dim(), |(t, k)| dw[[t, gw.column(k)]]);
            g.insert("weight".into(), d.into_dyn());
        }
        Op::LcnnConv(lc) => {
            let dict = &p["dictionary"];
            let coeffs = &p["coeffs"];
            let mut dd = ArrayD::<f64>::zeros(dict.raw_dim());
            let mut dc = ArrayD::<f64>::zeros(coeffs.raw_dim());
            for_each_lcnn_tap(lc, |t, col, s, e| {
                let row = usize::from(lc.indices()[e]);
                dc[[e]] += dw[[t, col]] * dict[[row, s]];
                dd[[row, s]] += dw[[t, col]] * coeffs[[e]];
            });
            g.insert("dictionary".into(), dd);
            g.insert("coeffs".into(), dc);
        }
        Op::TtLinear(tt) => {
            let cores = tt_cores(tt, p)?;
            for (k, d) in tt_grads(&cores, dw).into_iter().enumerate() {
                g.insert(tt_core_name(k), d.into_dyn());
            }
        }
        other => return Err(Error::unsupported("reference backward", other.kind())),
    }
    Ok(g)
}

/// The forward of `op` (one of [`handles`]) on `x`, `out` the output dims.
pub(super) fn forward(
    op: &Op,
    x: &Array4<f64>,
    p: &OpParams,
    out: [usize; 4],
) -> Result<Array4<f64>> {
    let d = dense(op, p)?;
    let b = d.bias.as_ref().map(|b| b.view());
    match d.layout {
        WeightLayout::Conv { dims, spec } => {
            let w =
                d.w.view()
                    .into_shape_with_order(dims)
                    .expect("rows × row_len");
            Ok(conv::forward_with(&spec, w, b, x, out))
        }
        WeightLayout::Linear { .. } => linear::forward_with(d.w.view(), b, x, out),
    }
}

/// The backward of `op` (one of [`handles`]): the input gradient of its
/// dense layer and the gradients of its stored values.
pub(super) fn backward(op: &Op, x: &Array4<f64>, dy: &Array4<f64>, p: &OpParams) -> Result<OpGrad> {
    let d = dense(op, p)?;
    let bias = d.bias.is_some();
    let (input, dw, db) = match d.layout {
        WeightLayout::Conv { dims, spec } => {
            let w =
                d.w.view()
                    .into_shape_with_order(dims)
                    .expect("rows × row_len");
            let (dx, dw, db) = conv::backward_with(&spec, w, bias, x, dy);
            let rows = dims[0];
            let dw = dw
                .into_shape_with_order((rows, d.layout.row_len()))
                .expect("OIHW is rows × row_len");
            (dx, dw, db)
        }
        WeightLayout::Linear { .. } => linear::backward_with(d.w.view(), bias, x, dy)?,
    };
    let mut params = param_grads(op, p, &dw)?;
    if let Some(db) = db {
        params.insert("bias".into(), db.into_dyn());
    }
    Ok(OpGrad { input, params })
}

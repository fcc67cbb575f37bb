//! [`TrainTape`]: the f32 training forward and backward of a whole
//! [`Graph`].
//!
//! The forward evaluates every node in topological order and keeps what the
//! backward needs: convolution and linear layers run through [`crate::kernels`]
//! (im2col + GEMM); ReLU, Clip, max / average / global average pooling,
//! flatten, identity, batch norm (training mode with batch statistics and
//! running-average update, or inference mode), dropout, `Add` and `Concat`
//! through direct f32 loops; the compressed ops with a dense equivalent,
//! frozen int8 layers and int8 fake quantizers through the same kernels;
//! every other op the f64 reference of
//! `hasten_core::grad` handles falls back to it (converting its input and
//! parameters to f64 and its results back to f32;
//! [`TrainTape::reference_nodes`] names them).
//!
//! The semantics are those of `hasten_core::grad::Tape` — same parameter
//! names, same batch-norm momentum convention, same dropout masks for a seed
//! — which the tests check against to a relative error below 1e-4. Work is
//! split over samples or planes only, never over a reduction, so results are
//! bit-identical for any thread count.

use hasten_core::grad::{self, inner_ops, op_mode, prefix, Mode, OpParams};
use hasten_core::graph::{Graph, GraphError, NodeOp, ValueId};
use hasten_core::op::Op;
use hasten_core::{Error as CoreError, SeededRng};
use ndarray::{Array1, Array2, Array4, ArrayD, Axis, Ix1, Ix2, Ix4};
use rayon::prelude::*;

use crate::compressed;
use crate::error::{Result, TrainError};
use crate::kernels;
use crate::params::{Grads, ParamStore};
use crate::split::leaf;

/// The parameter values of one op in f32, by `state_dict` suffix.
type OpValues = Grads;

/// What the backward of an op needs beyond its input.
#[derive(Debug, Clone)]
enum Saved {
    None,
    /// Max pooling: per output value, the flat in-plane index of its arg-max.
    ArgMax(Vec<u32>),
    /// Batch norm: per channel, the mean and `1/√(σ² + ε)` used.
    Norm(Vec<f32>, Vec<f32>),
    /// Dropout: the scaled keep-mask.
    Mask(Vec<f32>),
    /// An op without an f32 path: its forward ran on the f64 reference,
    /// and so does its backward.
    Reference,
}

/// The gradients [`TrainTape::backward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct TapeGrads {
    /// `∂L/∂input` for each graph input, in order.
    pub inputs: Vec<Array4<f32>>,
    /// `∂L/∂θ` for every trainable parameter of the graph (zeros where the
    /// loss does not reach), by `state_dict` name.
    pub params: Grads,
}

/// A recorded f32 forward of a graph; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TrainTape<'g> {
    graph: &'g Graph,
    mode: Mode,
    inputs: Vec<Array4<f32>>,
    /// Per node, the output of each inner op, the last being the node's
    /// output (merge nodes: the output only); an inner op's input is the
    /// previous stage or, for the first, the node's input, never copied.
    stages: Vec<Vec<Array4<f32>>>,
    /// Per node, per inner op, the parameter values used.
    values: Vec<Vec<OpValues>>,
    saved: Vec<Vec<Saved>>,
    buffers: Grads,
}

fn run_error(node: &hasten_core::graph::Node, cause: CoreError) -> TrainError {
    TrainError::Core(
        GraphError::Run {
            node: node.name().to_string(),
            kind: node.kind(),
            cause: Box::new(cause),
        }
        .into(),
    )
}

/// The f32 values of `op`'s parameters: from `store` where it holds the
/// name, from the op itself otherwise; a stored value of the wrong shape is
/// an error.
fn op_values(op: &Op, pre: &str, store: &ParamStore) -> Result<OpValues> {
    let mut own: OpValues = hasten_core::graph::op_parameters(op)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (suffix, v) in own.iter_mut() {
        let name = format!("{pre}.{suffix}");
        if let Some(given) = store.get(&name) {
            if given.shape() != v.shape() {
                return Err(TrainError::param(
                    &name,
                    format!("shape {:?}, the op has {:?}", given.shape(), v.shape()),
                ));
            }
            *v = given.clone();
        }
    }
    Ok(own)
}

fn get4(v: &OpValues, k: &str) -> Array4<f32> {
    v[k].view()
        .into_dimensionality::<Ix4>()
        .expect("shape checked against the op")
        .to_owned()
}

fn get2(v: &OpValues, k: &str) -> Array2<f32> {
    v[k].view()
        .into_dimensionality::<Ix2>()
        .expect("shape checked against the op")
        .to_owned()
}

fn get1(v: &OpValues, k: &str) -> Option<Array1<f32>> {
    v.get(k).map(|a| {
        a.view()
            .into_dimensionality::<Ix1>()
            .expect("shape checked against the op")
            .to_owned()
    })
}

fn to_f64_params(v: &OpValues) -> OpParams {
    v.iter()
        .map(|(k, a)| (k.clone(), a.mapv(f64::from)))
        .collect()
}

/// A contiguous copy (or the array itself when already standard).
fn standard(x: Array4<f32>) -> Array4<f32> {
    if x.is_standard_layout() {
        x
    } else {
        x.as_standard_layout().into_owned()
    }
}

/// Shape check for the fast paths (the fallback checks inside the reference).
fn output_dims(op: &Op, x: &Array4<f32>) -> Result<[usize; 4]> {
    use hasten_core::op::Operator;
    let s = x.shape();
    if s.contains(&0) {
        return Err(CoreError::EmptyDimension {
            what: "input activation (NCHW)".into(),
            shape: format!("{s:?}"),
        }
        .into());
    }
    let out = op.output_shape(hasten_core::ActShape::new(s[1], s[2], s[3]))?;
    Ok([s[0], out.channels, out.height, out.width])
}

/// The forward of one op: output, saved state and updated buffers.
fn op_forward(
    op: &Op,
    x: &Array4<f32>,
    v: &OpValues,
    mode: Mode,
) -> Result<(Array4<f32>, Saved, OpValues)> {
    let plain = |y| Ok((y, Saved::None, OpValues::new()));
    match op {
        Op::Conv(c) => plain(kernels::conv2d_forward(
            x,
            &get4(v, "weight"),
            get1(v, "bias").as_ref(),
            c.spec(),
        )?),
        Op::Linear(_) => plain(kernels::linear_forward(
            x,
            &get2(v, "weight"),
            get1(v, "bias").as_ref(),
        )?),
        Op::Relu(_) => plain(x.mapv(|u| if u > 0.0 { u } else { 0.0 })),
        Op::Clip(c) => {
            let (lo, hi) = (c.min(), c.max());
            plain(x.mapv(|u| u.clamp(lo, hi)))
        }
        Op::Identity(_) => plain(x.clone()),
        Op::Flatten(_) => {
            let dims = output_dims(op, x)?;
            plain(
                standard(x.clone())
                    .into_shape_with_order(dims)
                    .expect("same element count"),
            )
        }
        Op::MaxPool(m) => {
            let dims = output_dims(op, x)?;
            let (y, arg) = max_pool_forward(m.spec(), x, dims)?;
            Ok((y, Saved::ArgMax(arg), OpValues::new()))
        }
        Op::AvgPool(a) => {
            let dims = output_dims(op, x)?;
            plain(avg_pool_forward(a.spec(), a.count_include_pad(), x, dims)?)
        }
        Op::GlobalAvgPool(_) => {
            output_dims(op, x)?;
            let (n, c, h, w) = x.dim();
            let xs = x.as_standard_layout();
            let area = h * w;
            let y: Vec<f32> = xs
                .as_slice()
                .expect("standard")
                .chunks(area)
                .map(|plane| {
                    (plane.iter().map(|&u| f64::from(u)).sum::<f64>() / area as f64) as f32
                })
                .collect();
            plain(Array4::from_shape_vec((n, c, 1, 1), y).expect("N·C values"))
        }
        Op::BatchNorm(bn) => {
            output_dims(op, x)?;
            batch_norm_forward(bn.eps(), x, v, mode)
        }
        Op::Dropout(d) => match mode {
            Mode::Eval => plain(x.clone()),
            Mode::Train { seed, .. } => {
                let ratio = f64::from(d.ratio());
                let scale = (1.0 / (1.0 - ratio)) as f32;
                let mut rng = SeededRng::new(seed);
                let mask: Vec<f32> = (0..x.len())
                    .map(|_| if rng.uniform() >= ratio { scale } else { 0.0 })
                    .collect();
                let xs = x.as_standard_layout();
                let y: Vec<f32> = xs
                    .as_slice()
                    .expect("standard")
                    .iter()
                    .zip(&mask)
                    .map(|(a, b)| a * b)
                    .collect();
                Ok((
                    Array4::from_shape_vec(x.raw_dim(), y).expect("same shape"),
                    Saved::Mask(mask),
                    OpValues::new(),
                ))
            }
        },
        _ => {
            if let Some(y) = compressed::forward(op, x, v)? {
                return plain(y);
            }
            let out = grad::forward(op, &x.mapv(f64::from), &to_f64_params(v), mode)?;
            let buffers = out
                .buffers
                .iter()
                .map(|(k, a)| (k.clone(), a.mapv(|u| u as f32)))
                .collect();
            Ok((out.output.mapv(|u| u as f32), Saved::Reference, buffers))
        }
    }
}

/// The backward of one op: `∂L/∂x` and the parameter gradients by suffix.
fn op_backward(
    op: &Op,
    x: &Array4<f32>,
    dy: &Array4<f32>,
    v: &OpValues,
    saved: &Saved,
    mode: Mode,
) -> Result<(Array4<f32>, OpValues)> {
    let dims = output_dims(op, x)?;
    if dy.shape() != dims {
        return Err(CoreError::shape(
            "output gradient",
            format!("{dims:?}"),
            format!("{:?}", dy.shape()),
        )
        .into());
    }
    let plain = |d| Ok((d, OpValues::new()));
    match (op, saved) {
        (Op::Conv(c), _) => {
            let g = kernels::conv2d_backward(x, &get4(v, "weight"), dy, c.spec())?;
            let mut p = OpValues::new();
            p.insert("weight".into(), g.weight.into_dyn());
            if v.contains_key("bias") {
                p.insert("bias".into(), g.bias.into_dyn());
            }
            Ok((g.input, p))
        }
        (Op::Linear(_), _) => {
            let (dx, dw, db) = kernels::linear_backward(x, &get2(v, "weight"), dy)?;
            let mut p = OpValues::new();
            p.insert("weight".into(), dw.into_dyn());
            if v.contains_key("bias") {
                p.insert("bias".into(), db.into_dyn());
            }
            Ok((dx, p))
        }
        (Op::Relu(_), _) => {
            plain(
                ndarray::Zip::from(x)
                    .and(dy)
                    .map_collect(|&u, &g| if u > 0.0 { g } else { 0.0 }),
            )
        }
        (Op::Clip(c), _) => {
            let (lo, hi) = (c.min(), c.max());
            plain(ndarray::Zip::from(x).and(dy).map_collect(
                |&u, &g| {
                    if u > lo && u < hi {
                        g
                    } else {
                        0.0
                    }
                },
            ))
        }
        (Op::Identity(_), _) => plain(dy.clone()),
        (Op::Flatten(_), _) => plain(
            standard(dy.clone())
                .into_shape_with_order(x.raw_dim())
                .expect("same element count"),
        ),
        (Op::MaxPool(_), Saved::ArgMax(arg)) => plain(max_pool_backward(x, dy, arg)),
        (Op::AvgPool(a), _) => plain(avg_pool_backward(a.spec(), a.count_include_pad(), x, dy)?),
        (Op::GlobalAvgPool(_), _) => {
            let (_, _, h, w) = x.dim();
            let area = (h * w) as f32;
            plain(Array4::from_shape_fn(x.raw_dim(), |(n, c, _, _)| {
                dy[[n, c, 0, 0]] / area
            }))
        }
        (Op::BatchNorm(_), Saved::Norm(mean, inv)) => {
            Ok(batch_norm_backward(x, dy, v, mean, inv, mode.is_train()))
        }
        (Op::Dropout(_), Saved::Mask(mask)) => {
            let ds = dy.as_standard_layout();
            let d: Vec<f32> = ds
                .as_slice()
                .expect("standard")
                .iter()
                .zip(mask)
                .map(|(a, b)| a * b)
                .collect();
            plain(Array4::from_shape_vec(x.raw_dim(), d).expect("same shape"))
        }
        (Op::Dropout(_), _) => plain(dy.clone()),
        _ => {
            if let Some(g) = compressed::backward(op, x, dy, v)? {
                return Ok(g);
            }
            let g = grad::backward(
                op,
                &x.mapv(f64::from),
                &dy.mapv(f64::from),
                &to_f64_params(v),
                mode,
            )?;
            let p = g
                .params
                .iter()
                .map(|(k, a)| (k.clone(), a.mapv(|u| u as f32)))
                .collect();
            Ok((g.input.mapv(|u| u as f32), p))
        }
    }
}

fn max_pool_forward(
    spec: hasten_core::op::PoolSpec,
    x: &Array4<f32>,
    dims: [usize; 4],
) -> Result<(Array4<f32>, Vec<u32>)> {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    if h * w > u32::MAX as usize {
        return Err(TrainError::invalid(
            "max-pool plane size",
            h * w,
            "< 2^32 values",
        ));
    }
    let (rows, cols) = spec.windows(h, w)?;
    let xs = x.as_standard_layout();
    let out_area = dims[2] * dims[3];
    let mut y = vec![0.0f32; dims.iter().product()];
    let mut arg = vec![0u32; y.len()];
    y.par_chunks_mut(out_area)
        .zip(arg.par_chunks_mut(out_area))
        .zip(xs.as_slice().expect("standard").par_chunks(h * w))
        .with_max_len(leaf(x.shape()[0] * x.shape()[1]))
        .for_each(|((yp, ap), plane)| {
            for (oy, r) in rows.iter().enumerate() {
                for (ox, q) in cols.iter().enumerate() {
                    let mut best = (f32::NEG_INFINITY, r.start * w + q.start);
                    'window: for iy in r.start..r.end {
                        for ix in q.start..q.end {
                            let u = plane[iy * w + ix];
                            if u.is_nan() {
                                best = (u, iy * w + ix);
                                break 'window;
                            }
                            if u > best.0 {
                                best = (u, iy * w + ix);
                            }
                        }
                    }
                    yp[oy * dims[3] + ox] = best.0;
                    ap[oy * dims[3] + ox] = best.1 as u32;
                }
            }
        });
    Ok((Array4::from_shape_vec(dims, y).expect("output shape"), arg))
}

fn max_pool_backward(x: &Array4<f32>, dy: &Array4<f32>, arg: &[u32]) -> Array4<f32> {
    let area = x.shape()[2] * x.shape()[3];
    let out_area = dy.shape()[2] * dy.shape()[3];
    let ds = dy.as_standard_layout();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(area)
        .zip(ds.as_slice().expect("standard").par_chunks(out_area))
        .zip(arg.par_chunks(out_area))
        .with_max_len(leaf(x.shape()[0] * x.shape()[1]))
        .for_each(|((dp, gp), ap)| {
            for (&g, &i) in gp.iter().zip(ap) {
                dp[i as usize] += g;
            }
        });
    Array4::from_shape_vec(x.raw_dim(), dx).expect("input shape")
}

fn avg_pool_forward(
    spec: hasten_core::op::PoolSpec,
    include_pad: bool,
    x: &Array4<f32>,
    dims: [usize; 4],
) -> Result<Array4<f32>> {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let (rows, cols) = spec.windows(h, w)?;
    let xs = x.as_standard_layout();
    let out_area = dims[2] * dims[3];
    let mut y = vec![0.0f32; dims.iter().product()];
    y.par_chunks_mut(out_area)
        .zip(xs.as_slice().expect("standard").par_chunks(h * w))
        .with_max_len(leaf(x.shape()[0] * x.shape()[1]))
        .for_each(|(yp, plane)| {
            for (oy, r) in rows.iter().enumerate() {
                for (ox, q) in cols.iter().enumerate() {
                    let mut sum = 0.0f32;
                    for iy in r.start..r.end {
                        for ix in q.start..q.end {
                            sum += plane[iy * w + ix];
                        }
                    }
                    let divisor = if include_pad {
                        r.padded_len * q.padded_len
                    } else {
                        r.len() * q.len()
                    };
                    yp[oy * dims[3] + ox] = sum / divisor as f32;
                }
            }
        });
    Ok(Array4::from_shape_vec(dims, y).expect("output shape"))
}

fn avg_pool_backward(
    spec: hasten_core::op::PoolSpec,
    include_pad: bool,
    x: &Array4<f32>,
    dy: &Array4<f32>,
) -> Result<Array4<f32>> {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let (rows, cols) = spec.windows(h, w)?;
    let ow = dy.shape()[3];
    let ds = dy.as_standard_layout();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(h * w)
        .zip(
            ds.as_slice()
                .expect("standard")
                .par_chunks(dy.shape()[2] * ow),
        )
        .with_max_len(leaf(x.shape()[0] * x.shape()[1]))
        .for_each(|(dp, gp)| {
            for (oy, r) in rows.iter().enumerate() {
                for (ox, q) in cols.iter().enumerate() {
                    let divisor = if include_pad {
                        r.padded_len * q.padded_len
                    } else {
                        r.len() * q.len()
                    };
                    let g = gp[oy * ow + ox] / divisor as f32;
                    for iy in r.start..r.end {
                        for ix in q.start..q.end {
                            dp[iy * w + ix] += g;
                        }
                    }
                }
            }
        });
    Ok(Array4::from_shape_vec(x.raw_dim(), dx).expect("input shape"))
}

/// Per channel `(Σ u, Σ u²)` of the shifted values `u = x − x[0, c, 0, 0]`
/// over batch and plane, in f64: one pass over the contiguous planes,
/// parallel over samples and summed in sample order. The shift keeps
/// `Σ u² − (Σ u)²/m` free of cancellation for data far from zero.
fn channel_sums(xs: &[f32], c: usize, area: usize) -> (Vec<f32>, Vec<(f64, f64)>) {
    let shift: Vec<f32> = (0..c).map(|k| xs[k * area]).collect();
    let n = xs.len() / (c * area);
    let per_sample: Vec<Vec<(f64, f64)>> = xs
        .par_chunks(c * area)
        .with_max_len(leaf(n))
        .map(|sample| {
            sample
                .chunks(area)
                .zip(&shift)
                .map(|(plane, &k0)| {
                    plane.iter().fold((0.0, 0.0), |(s1, s2), &u| {
                        let d = f64::from(u - k0);
                        (s1 + d, s2 + d * d)
                    })
                })
                .collect()
        })
        .collect();
    let mut sums = vec![(0.0, 0.0); c];
    for sample in &per_sample {
        for (acc, s) in sums.iter_mut().zip(sample) {
            acc.0 += s.0;
            acc.1 += s.1;
        }
    }
    (shift, sums)
}

/// Per channel, the batch mean and biased variance in f64 over batch and
/// plane, in one pass (see [`channel_sums`]).
fn channel_stats(xs: &[f32], c: usize, area: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (xs.len() / c) as f64;
    let (shift, sums) = channel_sums(xs, c, area);
    shift
        .iter()
        .zip(&sums)
        .map(|(&k0, &(s1, s2))| {
            let d = s1 / m;
            (f64::from(k0) + d, (s2 / m - d * d).max(0.0))
        })
        .unzip()
}

/// A new array of `dim` whose every sample `s` (a `[C, H, W]` block) is
/// filled by `f(s, block)`, in parallel over samples; `f` must write every
/// value of its block.
fn per_sample(dim: ndarray::Ix4, f: impl Fn(usize, &mut [f32]) + Sync) -> Array4<f32> {
    let n = dim[0];
    let len = ndarray::Dimension::size(&dim);
    let mut out = vec![0.0f32; len];
    if len > 0 {
        out.par_chunks_mut(len / n)
            .with_max_len(leaf(n))
            .enumerate()
            .for_each(|(s, block)| f(s, block));
    }
    Array4::from_shape_vec(dim, out).expect("N blocks of C·H·W values")
}

fn batch_norm_forward(
    eps: f32,
    x: &Array4<f32>,
    v: &OpValues,
    mode: Mode,
) -> Result<(Array4<f32>, Saved, OpValues)> {
    let gamma = get1(v, "weight").expect("batch norm has γ");
    let beta = get1(v, "bias").expect("batch norm has β");
    let run_mean = get1(v, "running_mean").expect("batch norm has μ");
    let run_var = get1(v, "running_var").expect("batch norm has σ²");
    let c = x.shape()[1];
    let area = x.shape()[2] * x.shape()[3];
    let per_channel = x.len() / c;
    let xs = x.as_standard_layout();
    let xs = xs.as_slice().expect("standard");
    let mut buffers = OpValues::new();
    let (mean, var): (Vec<f64>, Vec<f64>) = match mode {
        Mode::Train { momentum, .. } => {
            if per_channel < 2 {
                return Err(TrainError::invalid(
                    "batch-norm values per channel in training",
                    per_channel,
                    ">= 2 (a batch variance needs two values)",
                ));
            }
            if !(0.0..=1.0).contains(&momentum) {
                return Err(TrainError::invalid(
                    "batch-norm momentum",
                    momentum,
                    "in [0, 1]",
                ));
            }
            let (mean, var) = channel_stats(xs, c, area);
            let m = per_channel as f64;
            let new_mean: Array1<f32> = (0..c)
                .map(|k| (f64::from(run_mean[k]) * (1.0 - momentum) + mean[k] * momentum) as f32)
                .collect();
            let new_var: Array1<f32> = (0..c)
                .map(|k| {
                    (f64::from(run_var[k]) * (1.0 - momentum) + var[k] * (momentum * m / (m - 1.0)))
                        as f32
                })
                .collect();
            buffers.insert("running_mean".into(), new_mean.into_dyn());
            buffers.insert("running_var".into(), new_var.into_dyn());
            (mean, var)
        }
        Mode::Eval => (
            run_mean.iter().map(|&u| f64::from(u)).collect(),
            run_var.iter().map(|&u| f64::from(u)).collect(),
        ),
    };
    let eps = f64::from(eps);
    let inv: Vec<f32> = var
        .iter()
        .map(|&s| (1.0 / (s + eps).sqrt()) as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&u| u as f32).collect();
    let y = per_sample(x.raw_dim(), |s, block| {
        let src = xs[s * c * area..(s + 1) * c * area].chunks(area);
        for (k, (out, plane)) in block.chunks_mut(area).zip(src).enumerate() {
            let (mu, sc, g, b) = (mean[k], inv[k], gamma[k], beta[k]);
            for (o, &u) in out.iter_mut().zip(plane) {
                *o = g * ((u - mu) * sc) + b;
            }
        }
    });
    Ok((y, Saved::Norm(mean, inv), buffers))
}

/// The batch-norm backward: in training mode, per channel `Σ g` and
/// `Σ g·x̂` in one pass over the contiguous planes (parallel over samples,
/// summed in sample order), then `∂x = γσ⁻¹/m · (m·g − Σ g − x̂ Σ g·x̂)`;
/// at inference `∂x = γσ⁻¹ g`.
fn batch_norm_backward(
    x: &Array4<f32>,
    dy: &Array4<f32>,
    v: &OpValues,
    mean: &[f32],
    inv: &[f32],
    train: bool,
) -> (Array4<f32>, OpValues) {
    let gamma = get1(v, "weight").expect("batch norm has γ");
    let c = x.shape()[1];
    let area = x.shape()[2] * x.shape()[3];
    let n = x.shape()[0];
    let m = (x.len() / c) as f64;
    let (xs, ds) = (x.as_standard_layout(), dy.as_standard_layout());
    let (xs, ds) = (
        xs.as_slice().expect("standard"),
        ds.as_slice().expect("standard"),
    );
    // Per channel Σ g and Σ g·x̂, accumulated in f64.
    let per: Vec<Vec<(f64, f64)>> = xs
        .par_chunks(c * area)
        .zip(ds.par_chunks(c * area))
        .with_max_len(leaf(n))
        .map(|(xb, db)| {
            xb.chunks(area)
                .zip(db.chunks(area))
                .enumerate()
                .map(|(k, (xp, gp))| {
                    let (mu, s) = (mean[k], inv[k]);
                    xp.iter().zip(gp).fold((0.0, 0.0), |(sg, sgx), (&u, &g)| {
                        let xhat = f64::from((u - mu) * s);
                        (sg + f64::from(g), sgx + f64::from(g) * xhat)
                    })
                })
                .collect()
        })
        .collect();
    let mut sums = vec![(0.0f64, 0.0f64); c];
    for sample in &per {
        for (acc, s) in sums.iter_mut().zip(sample) {
            acc.0 += s.0;
            acc.1 += s.1;
        }
    }
    let dx = per_sample(x.raw_dim(), |s, block| {
        let range = s * c * area..(s + 1) * c * area;
        let planes = xs[range.clone()].chunks(area).zip(ds[range].chunks(area));
        for (k, (out, (xp, gp))) in block.chunks_mut(area).zip(planes).enumerate() {
            let (mu, sc, gm) = (mean[k], inv[k], gamma[k]);
            if train {
                let a = gm * sc / m as f32;
                let (sg, sgx) = (sums[k].0 as f32, sums[k].1 as f32);
                for ((o, &u), &g) in out.iter_mut().zip(xp).zip(gp) {
                    let xhat = (u - mu) * sc;
                    *o = a * (m as f32 * g - sg - xhat * sgx);
                }
            } else {
                for (o, &g) in out.iter_mut().zip(gp) {
                    *o = g * (gm * sc);
                }
            }
        }
    });
    let mut p = OpValues::new();
    p.insert(
        "weight".into(),
        Array1::from_iter(sums.iter().map(|s| s.1 as f32)).into_dyn(),
    );
    p.insert(
        "bias".into(),
        Array1::from_iter(sums.iter().map(|s| s.0 as f32)).into_dyn(),
    );
    (dx, p)
}

fn merge_forward(op: &NodeOp, args: &[&Array4<f32>]) -> Result<Array4<f32>> {
    let first = args
        .first()
        .ok_or_else(|| TrainError::invalid("merge input count", 0, ">= 1"))?;
    match op {
        NodeOp::Add => {
            let mut y = (*first).clone();
            for x in &args[1..] {
                if x.shape() != first.shape() {
                    return Err(CoreError::shape(
                        "add input",
                        format!("{:?}", first.shape()),
                        format!("{:?}", x.shape()),
                    )
                    .into());
                }
                y += *x;
            }
            Ok(y)
        }
        NodeOp::Concat => {
            let views: Vec<_> = args.iter().map(|x| x.view()).collect();
            ndarray::concatenate(Axis(1), &views)
                .map_err(|e| CoreError::shape("concat inputs", "equal N, H, W", e).into())
        }
        _ => {
            let a64: Vec<Array4<f64>> = args.iter().map(|x| x.mapv(f64::from)).collect();
            let refs: Vec<&Array4<f64>> = a64.iter().collect();
            Ok(grad::merge::forward(op, &refs)?.mapv(|u| u as f32))
        }
    }
}

fn merge_backward(
    op: &NodeOp,
    args: &[&Array4<f32>],
    dy: &Array4<f32>,
) -> Result<Vec<Array4<f32>>> {
    match op {
        NodeOp::Add => Ok(args.iter().map(|_| dy.clone()).collect()),
        NodeOp::Concat => {
            let mut start = 0;
            Ok(args
                .iter()
                .map(|x| {
                    let c = x.shape()[1];
                    let d = dy
                        .slice(ndarray::s![.., start..start + c, .., ..])
                        .to_owned();
                    start += c;
                    d
                })
                .collect())
        }
        _ => {
            let a64: Vec<Array4<f64>> = args.iter().map(|x| x.mapv(f64::from)).collect();
            let refs: Vec<&Array4<f64>> = a64.iter().collect();
            Ok(grad::merge::backward(op, &refs, &dy.mapv(f64::from))?
                .into_iter()
                .map(|d| d.mapv(|u| u as f32))
                .collect())
        }
    }
}

impl<'g> TrainTape<'g> {
    /// Runs `graph` in f32 on `inputs` (one NCHW batch per graph input) in
    /// `mode`, recording what the backward needs. Parameter values come
    /// from `params` by `state_dict` name where present and from the ops
    /// themselves otherwise; a stored value of the wrong shape is an error.
    pub fn forward(
        graph: &'g Graph,
        params: &ParamStore,
        inputs: &[Array4<f32>],
        mode: Mode,
    ) -> Result<Self> {
        if inputs.len() != graph.inputs().len() {
            return Err(CoreError::from(GraphError::InputCount {
                expected: graph.inputs().len(),
                got: inputs.len(),
            })
            .into());
        }
        let batch = inputs.first().map_or(0, |x| x.shape()[0]);
        for (declared, x) in graph.inputs().iter().zip(inputs) {
            if batch == 0 || x.shape() != declared.shape().batched(batch) {
                return Err(CoreError::from(GraphError::InputShape {
                    input: declared.name().to_string(),
                    expected: declared.shape(),
                    got: x.shape().to_vec(),
                })
                .into());
            }
        }
        let mut tape = TrainTape {
            graph,
            mode,
            inputs: inputs.iter().map(|x| standard(x.clone())).collect(),
            stages: Vec::with_capacity(graph.nodes().len()),
            values: Vec::with_capacity(graph.nodes().len()),
            saved: Vec::with_capacity(graph.nodes().len()),
            buffers: Grads::new(),
        };
        for (k, node) in graph.nodes().iter().enumerate() {
            let wrap = |e: TrainError| match e {
                TrainError::Core(c) => run_error(node, c),
                other => other,
            };
            let ops = inner_ops(node.op());
            let mut stages = Vec::with_capacity(ops.len() + 1);
            let mut values = Vec::with_capacity(ops.len());
            let mut saved = Vec::with_capacity(ops.len());
            if ops.is_empty() {
                let args: Vec<&Array4<f32>> =
                    node.inputs().iter().map(|&id| tape.value(id)).collect();
                stages.push(merge_forward(node.op(), &args).map_err(wrap)?);
            } else {
                for (i, op) in ops.iter().enumerate() {
                    let pre = prefix(node.name(), node.op(), i);
                    let v = op_values(op, &pre, params)?;
                    let x = match stages.last() {
                        Some(previous) => previous,
                        None => tape.value(node.inputs()[0]),
                    };
                    let (y, s, buffers) =
                        op_forward(op, x, &v, op_mode(mode, k, i)).map_err(wrap)?;
                    for (suffix, b) in buffers {
                        tape.buffers.insert(format!("{pre}.{suffix}"), b);
                    }
                    stages.push(y);
                    values.push(v);
                    saved.push(s);
                }
            }
            tape.stages.push(stages);
            tape.values.push(values);
            tape.saved.push(saved);
        }
        Ok(tape)
    }

    /// The value of a graph input or node.
    pub fn value(&self, id: ValueId) -> &Array4<f32> {
        match id {
            ValueId::Input(i) => &self.inputs[i],
            ValueId::Node(i) => self.stages[i].last().expect("every node has an output"),
        }
    }

    /// The graph outputs, in order.
    pub fn outputs(&self) -> Vec<&Array4<f32>> {
        self.graph
            .outputs()
            .iter()
            .map(|&id| self.value(id))
            .collect()
    }

    /// The nodes holding an op that ran on the f64 reference of
    /// `hasten_core::grad` (one thread, converted to and from f64) instead
    /// of the f32 paths, in topological order; empty when every op ran in
    /// f32 (see the [module docs](self) for which ops do).
    pub fn reference_nodes(&self) -> Vec<&str> {
        self.graph
            .nodes()
            .iter()
            .zip(&self.saved)
            .filter(|(_, saved)| saved.iter().any(|s| matches!(s, Saved::Reference)))
            .map(|(node, _)| node.name())
            .collect()
    }

    /// In training mode, the updated batch-norm running statistics by
    /// `state_dict` name; empty at inference.
    pub fn buffers(&self) -> &Grads {
        &self.buffers
    }

    /// Back-propagates `output_grads` (one `∂L/∂output` per graph output,
    /// each of its output's shape) through the recorded forward.
    pub fn backward(&self, output_grads: &[Array4<f32>]) -> Result<TapeGrads> {
        let g = self.graph;
        if output_grads.len() != g.outputs().len() {
            return Err(CoreError::shape(
                "output gradients",
                g.outputs().len(),
                output_grads.len(),
            )
            .into());
        }
        let mut input_grads: Vec<Option<Array4<f32>>> = vec![None; self.inputs.len()];
        let mut node_grads: Vec<Option<Array4<f32>>> = vec![None; g.nodes().len()];
        fn accumulate(
            id: ValueId,
            d: Array4<f32>,
            inputs: &mut [Option<Array4<f32>>],
            nodes: &mut [Option<Array4<f32>>],
        ) {
            let slot = match id {
                ValueId::Input(i) => &mut inputs[i],
                ValueId::Node(i) => &mut nodes[i],
            };
            match slot {
                Some(acc) => *acc += &d,
                None => *slot = Some(standard(d)),
            }
        }
        for (&id, d) in g.outputs().iter().zip(output_grads) {
            let v = self.value(id);
            if v.shape() != d.shape() {
                return Err(CoreError::shape(
                    format!("gradient of output `{}`", g.value_name(id)),
                    format!("{:?}", v.shape()),
                    format!("{:?}", d.shape()),
                )
                .into());
            }
            accumulate(id, d.clone(), &mut input_grads, &mut node_grads);
        }
        let mut params = Grads::new();
        for (node, vs) in g.nodes().iter().zip(&self.values) {
            for (i, v) in vs.iter().enumerate() {
                let pre = prefix(node.name(), node.op(), i);
                for (s, a) in v.iter().filter(|(s, _)| grad::is_trainable(s)) {
                    params.insert(format!("{pre}.{s}"), ArrayD::zeros(a.raw_dim()));
                }
            }
        }
        for k in (0..g.nodes().len()).rev() {
            let Some(dy) = node_grads[k].take() else {
                continue;
            };
            let node = &g.nodes()[k];
            let wrap = |e: TrainError| match e {
                TrainError::Core(c) => run_error(node, c),
                other => other,
            };
            let ops = inner_ops(node.op());
            let grads = if ops.is_empty() {
                let args: Vec<&Array4<f32>> =
                    node.inputs().iter().map(|&id| self.value(id)).collect();
                merge_backward(node.op(), &args, &dy).map_err(wrap)?
            } else {
                let mut d = dy;
                for (i, op) in ops.iter().enumerate().rev() {
                    let x = match i {
                        0 => self.value(node.inputs()[0]),
                        _ => &self.stages[k][i - 1],
                    };
                    let (dx, gp) = op_backward(
                        op,
                        x,
                        &d,
                        &self.values[k][i],
                        &self.saved[k][i],
                        op_mode(self.mode, k, i),
                    )
                    .map_err(wrap)?;
                    let pre = prefix(node.name(), node.op(), i);
                    for (s, gv) in gp {
                        if let Some(acc) = params.get_mut(&format!("{pre}.{s}")) {
                            *acc += &gv;
                        }
                    }
                    d = dx;
                }
                vec![d]
            };
            for (&id, d) in node.inputs().iter().zip(grads) {
                accumulate(id, d, &mut input_grads, &mut node_grads);
            }
        }
        let inputs = input_grads
            .into_iter()
            .zip(&self.inputs)
            .map(|(d, x)| d.unwrap_or_else(|| Array4::zeros(x.raw_dim())))
            .collect();
        Ok(TapeGrads { inputs, params })
    }
}

#[cfg(test)]
mod tests;

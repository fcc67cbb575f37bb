//! The constant evaluator: ONNX ops on constant tensors, so that the
//! shape-computing subgraphs of exported models (`Shape` → `Gather` →
//! arithmetic → `Concat` → `Pad`, …) fold to constants once the input shape
//! is known. Every result is size-checked against a limit before it is
//! allocated.

use ndarray::{ArrayD, Axis, IxDyn, Zip};

use crate::error::Result;
use crate::node::NodeView;
use crate::tensor::{ArrayFn, Tensor};

/// The op types [`fold`] evaluates.
pub const FOLDABLE: &[&str] = &[
    "Identity",
    "Shape",
    "Size",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Abs",
    "Floor",
    "Ceil",
    "Sqrt",
    "Reciprocal",
    "Relu",
    "Min",
    "Max",
    "Equal",
    "Less",
    "Greater",
    "Not",
    "Where",
    "Slice",
    "Reshape",
    "Transpose",
    "ConstantOfShape",
    "Range",
    "Expand",
    "Flatten",
    "DequantizeLinear",
    "Dropout",
    "Clip",
    "Sigmoid",
];

fn normalize_axis(node: &NodeView, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&a) {
        return Err(node.invalid(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

fn check_size(node: &NodeView, shape: &[usize], limit: usize) -> Result<()> {
    let mut n: usize = 1;
    for &d in shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= limit)
            .ok_or_else(|| {
                node.unsupported(format!(
                    "folding would create a tensor of shape {shape:?}, over the limit of {limit} elements"
                ))
            })?;
    }
    Ok(())
}

fn ints_of(node: &NodeView, t: &Tensor, what: &str) -> Result<Vec<i64>> {
    if t.is_float() {
        return Err(node.invalid(format!("{what} must be an integer tensor")));
    }
    Ok(t.to_i64().iter().copied().collect())
}

/// Numpy-style broadcast of two shapes.
fn broadcast_shape(node: &NodeView, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(node.invalid(format!("shapes {a:?} and {b:?} do not broadcast"))),
            }
        })
        .collect()
}

fn zip_with<A: Clone, B: Clone, C>(
    node: &NodeView,
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    limit: usize,
    f: impl Fn(A, B) -> Result<C>,
) -> Result<ArrayD<C>> {
    let shape = broadcast_shape(node, a.shape(), b.shape())?;
    check_size(node, &shape, limit)?;
    let av = a
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| node.invalid("broadcast failed"))?;
    let bv = b
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| node.invalid("broadcast failed"))?;
    let mut out = Vec::with_capacity(shape.iter().product());
    for (x, y) in av.iter().zip(bv.iter()) {
        out.push(f(x.clone(), y.clone())?);
    }
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| node.invalid(e.to_string()))
}

fn arith(node: &NodeView, a: &Tensor, b: &Tensor, limit: usize) -> Result<Tensor> {
    let op = node.op_type();
    if a.is_float() || b.is_float() {
        let f = match op {
            "Add" => |x: f64, y: f64| x + y,
            "Sub" => |x: f64, y: f64| x - y,
            "Mul" => |x: f64, y: f64| x * y,
            "Div" => |x: f64, y: f64| x / y,
            "Min" => f64::min,
            _ => f64::max,
        };
        // f32 inputs compute in f32, as a runtime would.
        if let (Tensor::F32(x), Tensor::F32(y)) = (a, b) {
            let out = zip_with(node, x, y, limit, |p, q| {
                Ok(match op {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    "Div" => p / q,
                    "Min" => p.min(q),
                    _ => p.max(q),
                })
            })?;
            return Ok(Tensor::F32(out));
        }
        let out = zip_with(node, &a.to_f64(), &b.to_f64(), limit, |x, y| Ok(f(x, y)))?;
        return Tensor::from_f64(a.data_type(), out)
            .ok_or_else(|| node.unsupported("element type"));
    }
    let out = zip_with(node, &a.to_i64(), &b.to_i64(), limit, |x, y| {
        Ok(match op {
            "Add" => x.wrapping_add(y),
            "Sub" => x.wrapping_sub(y),
            "Mul" => x.wrapping_mul(y),
            "Div" => {
                if y == 0 {
                    return Err(node.invalid("integer division by zero"));
                }
                x.wrapping_div(y)
            }
            "Min" => x.min(y),
            _ => x.max(y),
        })
    })?;
    Tensor::from_i64(a.data_type(), out).ok_or_else(|| node.unsupported("element type"))
}

fn compare(node: &NodeView, a: &Tensor, b: &Tensor, limit: usize) -> Result<Tensor> {
    let op = node.op_type();
    let out = zip_with(node, &a.to_f64(), &b.to_f64(), limit, |x, y| {
        Ok(match op {
            "Equal" => x == y,
            "Less" => x < y,
            _ => x > y,
        })
    })?;
    Ok(Tensor::Bool(out))
}

fn unary(node: &NodeView, a: &Tensor) -> Result<Tensor> {
    let op = node.op_type();
    if let Tensor::Bool(b) = a {
        if op == "Not" {
            return Ok(Tensor::Bool(b.mapv(|v| !v)));
        }
    }
    if a.is_float() {
        let f = |x: f64| match op {
            "Neg" => -x,
            "Abs" => x.abs(),
            "Floor" => x.floor(),
            "Ceil" => x.ceil(),
            "Sqrt" => x.sqrt(),
            "Reciprocal" => 1.0 / x,
            "Sigmoid" => 1.0 / (1.0 + (-x).exp()),
            _ => x.max(0.0),
        };
        if let Tensor::F32(x) = a {
            return Ok(Tensor::F32(x.mapv(|v| f(f64::from(v)) as f32)));
        }
        return Tensor::from_f64(a.data_type(), a.to_f64().mapv(f))
            .ok_or_else(|| node.unsupported("element type"));
    }
    let out = match op {
        "Neg" => a.to_i64().mapv(i64::wrapping_neg),
        "Abs" => a.to_i64().mapv(i64::wrapping_abs),
        "Floor" | "Ceil" => a.to_i64(),
        "Relu" => a.to_i64().mapv(|v| v.max(0)),
        _ => return Err(node.unsupported("this op on integer tensors")),
    };
    Tensor::from_i64(a.data_type(), out).ok_or_else(|| node.unsupported("element type"))
}

struct Reshape<'a>(&'a [usize]);
impl ArrayFn for Reshape<'_> {
    fn apply<T: Clone + Default>(&self, a: &ArrayD<T>) -> Result<ArrayD<T>> {
        let v: Vec<T> = a.iter().cloned().collect();
        ArrayD::from_shape_vec(IxDyn(self.0), v).map_err(|e| {
            crate::error::OnnxError::InvalidModel(format!("reshape to {:?}: {e}", self.0))
        })
    }
}

struct Permute<'a>(&'a [usize]);
impl ArrayFn for Permute<'_> {
    fn apply<T: Clone + Default>(&self, a: &ArrayD<T>) -> Result<ArrayD<T>> {
        Ok(a.view()
            .permuted_axes(IxDyn(self.0))
            .as_standard_layout()
            .into_owned())
    }
}

struct Select<'a>(usize, &'a [usize]);
impl ArrayFn for Select<'_> {
    fn apply<T: Clone + Default>(&self, a: &ArrayD<T>) -> Result<ArrayD<T>> {
        Ok(a.select(Axis(self.0), self.1))
    }
}

struct Broadcast<'a>(&'a [usize]);
impl ArrayFn for Broadcast<'_> {
    fn apply<T: Clone + Default>(&self, a: &ArrayD<T>) -> Result<ArrayD<T>> {
        a.broadcast(IxDyn(self.0))
            .map(|v| v.to_owned())
            .ok_or_else(|| crate::error::OnnxError::InvalidModel("expand".into()))
    }
}

fn reshape(node: &NodeView, t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if shape.iter().product::<usize>() != t.len() {
        return Err(node.invalid(format!("cannot reshape {:?} to {shape:?}", t.shape())));
    }
    t.map_array(Reshape(shape))
}

/// ONNX `Reshape` target resolution: `0` copies the input dim (unless
/// `allowzero`), one `-1` is inferred.
pub(crate) fn resolve_reshape(
    node: &NodeView,
    input: &[usize],
    target: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or_else(|| node.invalid(format!("reshape 0 at {i} beyond input rank")))?,
            ),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(node.invalid(format!("bad reshape target {target:?}"))),
        }
    }
    let known = out
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| node.invalid("reshape target overflows"))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(node.invalid(format!("cannot reshape {input:?} to {target:?}")));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(node.invalid(format!("cannot reshape {input:?} to {target:?}")));
    }
    Ok(out)
}

/// The `axes` of Unsqueeze / Squeeze / Slice / ReduceX: an attribute before
/// `input_from` opset, an input after.
fn axes_arg(node: &NodeView, inputs: &[Option<&Tensor>], at: usize) -> Result<Option<Vec<i64>>> {
    if let Some(t) = inputs.get(at).copied().flatten() {
        return Ok(Some(ints_of(node, t, "axes")?));
    }
    Ok(node.ints("axes").map(<[i64]>::to_vec))
}

fn slice_axis(start: i64, end: i64, step: i64, dim: usize) -> Vec<usize> {
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (mut s, mut e) = (norm(start), norm(end));
    let mut idx = Vec::new();
    if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        let mut i = s;
        while i < e {
            idx.push(i as usize);
            i = i.saturating_add(step);
        }
    } else {
        s = s.clamp(-1, d - 1);
        e = e.clamp(-1, d - 1);
        let mut i = s;
        while i > e {
            idx.push(i as usize);
            i = i.saturating_add(step);
        }
    }
    idx
}

fn need<'t>(node: &NodeView, inputs: &[Option<&'t Tensor>], i: usize) -> Result<&'t Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| node.invalid(format!("missing input {i}")))
}

fn to_usize_dims(node: &NodeView, v: &[i64]) -> Result<Vec<usize>> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| node.invalid(format!("negative dim {d}"))))
        .collect()
}

/// Evaluates `node` on constant `inputs` (`None` for an absent optional
/// input); `Ok(None)` when the op is not one the evaluator knows. Results
/// larger than `limit` elements are refused.
pub(crate) fn fold(
    node: &NodeView,
    inputs: &[Option<&Tensor>],
    limit: usize,
) -> Result<Option<Vec<Tensor>>> {
    let op = node.op_type();
    let x = || need(node, inputs, 0);
    let out = match op {
        "Identity" | "Dropout" => x()?.clone(),
        "Shape" => {
            let s: Vec<i64> = x()?.shape().iter().map(|&d| d as i64).collect();
            Tensor::I64(shape_slice(node, &s)?)
        }
        "Size" => Tensor::I64(ndarray::arr0(x()?.len() as i64).into_dyn()),
        "Cast" => {
            let to = node
                .int("to")
                .ok_or_else(|| node.invalid("missing attribute to"))?;
            x()?.cast(to as i32)
                .ok_or_else(|| node.unsupported(format!("cast to element type {to}")))?
        }
        "Add" | "Sub" | "Mul" | "Div" => arith(node, x()?, need(node, inputs, 1)?, limit)?,
        "Min" | "Max" => {
            let mut acc = x()?.clone();
            for t in inputs.iter().skip(1).flatten() {
                acc = arith(node, &acc, t, limit)?;
            }
            acc
        }
        "Equal" | "Less" | "Greater" => compare(node, x()?, need(node, inputs, 1)?, limit)?,
        "Neg" | "Abs" | "Floor" | "Ceil" | "Sqrt" | "Reciprocal" | "Relu" | "Not" | "Sigmoid" => {
            unary(node, x()?)?
        }
        "Clip" => {
            let t = x()?;
            let lo = inputs.get(1).copied().flatten().map(Tensor::to_f64);
            let hi = inputs.get(2).copied().flatten().map(Tensor::to_f64);
            let lo = lo
                .and_then(|a| a.iter().next().copied())
                .or(node.float("min").map(f64::from))
                .unwrap_or(f64::NEG_INFINITY);
            let hi = hi
                .and_then(|a| a.iter().next().copied())
                .or(node.float("max").map(f64::from))
                .unwrap_or(f64::INFINITY);
            Tensor::from_f64(t.data_type(), t.to_f64().mapv(|v| v.max(lo).min(hi)))
                .ok_or_else(|| node.unsupported("element type"))?
        }
        "Where" => {
            let c = x()?.to_i64();
            let a = need(node, inputs, 1)?;
            let b = need(node, inputs, 2)?;
            let ab = zip_with(node, &a.to_f64(), &b.to_f64(), limit, |p, q| Ok((p, q)))?;
            let out = zip_with(node, &c, &ab, limit, |c, (p, q)| {
                Ok(if c != 0 { p } else { q })
            })?;
            if a.is_float() {
                Tensor::from_f64(a.data_type(), out)
            } else {
                Tensor::from_i64(a.data_type(), out.mapv(|v| v as i64))
            }
            .ok_or_else(|| node.unsupported("element type"))?
        }
        "Gather" => {
            let data = x()?;
            let ind = need(node, inputs, 1)?;
            let rank = data.shape().len();
            if rank == 0 {
                return Err(node.invalid("gather from a scalar"));
            }
            let axis = normalize_axis(node, node.int_or("axis", 0), rank)?;
            let dim = data.shape()[axis] as i64;
            let idx = ints_of(node, ind, "indices")?
                .into_iter()
                .map(|i| {
                    let j = if i < 0 { i + dim } else { i };
                    if (0..dim).contains(&j) {
                        Ok(j as usize)
                    } else {
                        Err(node.invalid(format!("index {i} out of range for dim {dim}")))
                    }
                })
                .collect::<Result<Vec<usize>>>()?;
            let mut shape = data.shape()[..axis].to_vec();
            shape.extend_from_slice(ind.shape());
            shape.extend_from_slice(&data.shape()[axis + 1..]);
            check_size(node, &shape, limit)?;
            let picked = data.map_array(Select(axis, &idx))?;
            reshape(node, &picked, &shape)?
        }
        "Unsqueeze" => {
            let t = x()?;
            let axes = axes_arg(node, inputs, 1)?.ok_or_else(|| node.invalid("missing axes"))?;
            let rank = t.shape().len() + axes.len();
            let mut axes = axes
                .iter()
                .map(|&a| normalize_axis(node, a, rank))
                .collect::<Result<Vec<_>>>()?;
            axes.sort_unstable();
            axes.dedup();
            if axes.len() + t.shape().len() != rank {
                return Err(node.invalid("repeated axes"));
            }
            let mut shape = Vec::with_capacity(rank);
            let mut it = t.shape().iter();
            for i in 0..rank {
                if axes.contains(&i) {
                    shape.push(1);
                } else {
                    shape.push(*it.next().ok_or_else(|| node.invalid("axes"))?);
                }
            }
            reshape(node, t, &shape)?
        }
        "Squeeze" => {
            let t = x()?;
            let rank = t.shape().len();
            let shape: Vec<usize> = match axes_arg(node, inputs, 1)? {
                None => t.shape().iter().copied().filter(|&d| d != 1).collect(),
                Some(axes) => {
                    let axes = axes
                        .iter()
                        .map(|&a| normalize_axis(node, a, rank))
                        .collect::<Result<Vec<_>>>()?;
                    if axes.iter().any(|&a| t.shape()[a] != 1) {
                        return Err(node.invalid("squeezing a dim that is not 1"));
                    }
                    (0..rank)
                        .filter(|i| !axes.contains(i))
                        .map(|i| t.shape()[i])
                        .collect()
                }
            };
            reshape(node, t, &shape)?
        }
        "Flatten" => {
            let t = x()?;
            let rank = t.shape().len();
            let axis = node.int_or("axis", 1);
            let a = if axis < 0 { axis + rank as i64 } else { axis };
            if !(0..=rank as i64).contains(&a) {
                return Err(node.invalid(format!("axis {axis} out of range")));
            }
            let outer: usize = t.shape()[..a as usize].iter().product();
            reshape(node, t, &[outer, t.len() / outer.max(1)])?
        }
        "Concat" => {
            let ts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
            let first = ts.first().ok_or_else(|| node.invalid("no inputs"))?;
            let rank = first.shape().len();
            let axis = normalize_axis(
                node,
                node.int("axis")
                    .ok_or_else(|| node.invalid("missing axis"))?,
                rank,
            )?;
            let mut total = 0usize;
            for t in &ts {
                let s = t.shape();
                if s.len() != rank || (0..rank).any(|i| i != axis && s[i] != first.shape()[i]) {
                    return Err(node.invalid(format!(
                        "cannot concatenate {:?} and {:?} on axis {axis}",
                        first.shape(),
                        s
                    )));
                }
                total += s[axis];
            }
            let mut shape = first.shape().to_vec();
            shape[axis] = total;
            check_size(node, &shape, limit)?;
            if first.is_float() {
                let arrays: Vec<ArrayD<f64>> = ts.iter().map(|t| t.to_f64()).collect();
                let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
                let a = ndarray::concatenate(Axis(axis), &views)
                    .map_err(|e| node.invalid(e.to_string()))?;
                Tensor::from_f64(first.data_type(), a)
            } else {
                let arrays: Vec<ArrayD<i64>> = ts.iter().map(|t| t.to_i64()).collect();
                let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
                let a = ndarray::concatenate(Axis(axis), &views)
                    .map_err(|e| node.invalid(e.to_string()))?;
                Tensor::from_i64(first.data_type(), a)
            }
            .ok_or_else(|| node.unsupported("element type"))?
        }
        "Reshape" => {
            let t = x()?;
            let target = ints_of(node, need(node, inputs, 1)?, "shape")?;
            let shape =
                resolve_reshape(node, t.shape(), &target, node.int_or("allowzero", 0) != 0)?;
            reshape(node, t, &shape)?
        }
        "Transpose" => {
            let t = x()?;
            let rank = t.shape().len();
            let perm: Vec<usize> = match node.ints("perm") {
                None => (0..rank).rev().collect(),
                Some(p) => p
                    .iter()
                    .map(|&a| normalize_axis(node, a, rank))
                    .collect::<Result<_>>()?,
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..rank).collect::<Vec<_>>() {
                return Err(node.invalid(format!("perm {perm:?} is not a permutation")));
            }
            t.map_array(Permute(&perm))?
        }
        "Slice" => {
            let t = x()?;
            let rank = t.shape().len();
            let (starts, ends, axes, steps) = if node.opset >= 10 {
                let starts = ints_of(node, need(node, inputs, 1)?, "starts")?;
                let ends = ints_of(node, need(node, inputs, 2)?, "ends")?;
                let axes = inputs
                    .get(3)
                    .copied()
                    .flatten()
                    .map(|a| ints_of(node, a, "axes"))
                    .transpose()?;
                let steps = inputs
                    .get(4)
                    .copied()
                    .flatten()
                    .map(|a| ints_of(node, a, "steps"))
                    .transpose()?;
                (starts, ends, axes, steps)
            } else {
                (
                    node.ints("starts").unwrap_or_default().to_vec(),
                    node.ints("ends").unwrap_or_default().to_vec(),
                    node.ints("axes").map(<[i64]>::to_vec),
                    None,
                )
            };
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err(node.invalid("starts, ends, axes and steps differ in length"));
            }
            let mut cur = t.clone();
            for k in 0..starts.len() {
                let axis = normalize_axis(node, axes[k], rank)?;
                if steps[k] == 0 {
                    return Err(node.invalid("slice step 0"));
                }
                let idx = slice_axis(starts[k], ends[k], steps[k], cur.shape()[axis]);
                cur = cur.map_array(Select(axis, &idx))?;
            }
            cur
        }
        "ConstantOfShape" => {
            let shape = to_usize_dims(node, &ints_of(node, x()?, "shape")?)?;
            check_size(node, &shape, limit)?;
            let value = match node.tensor("value") {
                Some(v) => v?,
                None => Tensor::F32(ndarray::arr1(&[0.0f32]).into_dyn()),
            };
            if value.len() != 1 {
                return Err(node.invalid("value must hold one element"));
            }
            let one = value.map_array(Reshape(&[]))?;
            one.map_array(Broadcast(&shape))?
        }
        "Expand" => {
            let t = x()?;
            let target = to_usize_dims(node, &ints_of(node, need(node, inputs, 1)?, "shape")?)?;
            let shape = broadcast_shape(node, t.shape(), &target)?;
            check_size(node, &shape, limit)?;
            t.map_array(Broadcast(&shape))?
        }
        "Range" => {
            let start = x()?;
            let lim = need(node, inputs, 1)?;
            let delta = need(node, inputs, 2)?;
            let scalar = |t: &Tensor| t.to_f64().iter().next().copied();
            let (Some(s), Some(l), Some(d)) = (scalar(start), scalar(lim), scalar(delta)) else {
                return Err(node.invalid("start, limit and delta must be scalars"));
            };
            if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
                return Err(node.invalid("delta must be non-zero and all finite"));
            }
            let n = ((l - s) / d).ceil().max(0.0);
            if n > limit as f64 {
                return Err(node.unsupported(format!("range of {n} elements over the limit")));
            }
            let n = n as usize;
            if start.is_float() {
                let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
                Tensor::from_f64(
                    start.data_type(),
                    ArrayD::from_shape_vec(IxDyn(&[n]), v)
                        .map_err(|e| node.invalid(e.to_string()))?,
                )
            } else {
                let (s, d) = (start.to_i64()[IxDyn(&[])], delta.to_i64()[IxDyn(&[])]);
                let v: Vec<i64> = (0..n as i64)
                    .map(|i| s.wrapping_add(i.wrapping_mul(d)))
                    .collect();
                Tensor::from_i64(
                    start.data_type(),
                    ArrayD::from_shape_vec(IxDyn(&[n]), v)
                        .map_err(|e| node.invalid(e.to_string()))?,
                )
            }
            .ok_or_else(|| node.unsupported("element type"))?
        }
        "DequantizeLinear" => {
            let q = x()?;
            let scale = need(node, inputs, 1)?.to_f64();
            let zp = inputs.get(2).copied().flatten().map(Tensor::to_f64);
            let rank = q.shape().len();
            let values = q.to_f64();
            let out = if scale.len() == 1 {
                let s = scale.iter().next().copied().unwrap_or(1.0);
                let z = zp
                    .as_ref()
                    .and_then(|z| z.iter().next().copied())
                    .unwrap_or(0.0);
                values.mapv(|v| (v - z) * s)
            } else {
                let axis = normalize_axis(node, node.int_or("axis", 1), rank)?;
                let n = q.shape()[axis];
                if scale.len() != n || zp.as_ref().is_some_and(|z| z.len() != n) {
                    return Err(node.invalid("per-axis scale / zero point length"));
                }
                let mut out = values;
                for (c, mut lane) in out.axis_iter_mut(Axis(axis)).enumerate() {
                    let s = scale.iter().nth(c).copied().unwrap_or(1.0);
                    let z = zp
                        .as_ref()
                        .and_then(|z| z.iter().nth(c).copied())
                        .unwrap_or(0.0);
                    Zip::from(&mut lane).for_each(|v| *v = (*v - z) * s);
                }
                out
            };
            Tensor::F32(out.mapv(|v| v as f32))
        }
        _ => return Ok(None),
    };
    Ok(Some(vec![out]))
}

/// `Shape`'s `start` / `end` attributes (opset 15) applied to a shape.
pub(crate) fn shape_slice_of(node: &NodeView, s: &[i64]) -> Result<Vec<i64>> {
    let r = s.len() as i64;
    let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) };
    let start = clamp(node.int_or("start", 0));
    let end = clamp(node.int_or("end", r));
    Ok(if start < end {
        s[start as usize..end as usize].to_vec()
    } else {
        Vec::new()
    })
}

fn shape_slice(node: &NodeView, s: &[i64]) -> Result<ArrayD<i64>> {
    let v = shape_slice_of(node, s)?;
    let n = v.len();
    ArrayD::from_shape_vec(IxDyn(&[n]), v).map_err(|e| node.invalid(e.to_string()))
}

/// Whether [`fold`] knows `op_type`.
pub(crate) fn is_foldable(op_type: &str) -> bool {
    FOLDABLE.contains(&op_type)
}

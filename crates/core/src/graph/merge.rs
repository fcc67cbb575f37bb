//! Reference semantics of the multi-input ops: residual [`NodeOp::Add`],
//! channel [`NodeOp::Concat`] and broadcast [`NodeOp::Mul`]. Sums are
//! accumulated in f64 and every op follows IEEE arithmetic, so NaN and ±∞
//! propagate as they would in the network's own arithmetic.

use ndarray::{s, Array4, Axis, Zip};

use super::NodeOp;
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::shape::ActShape;

/// All inputs must share one shape, which is the output's.
pub(super) fn add_shape(inputs: &[ActShape]) -> Result<ActShape> {
    let first = inputs[0];
    match inputs.iter().find(|&&s| s != first) {
        Some(&other) => Err(Error::shape("add operand", first, other)),
        None => Ok(first),
    }
}

/// Equal spatial sizes; the channels add up (checked for overflow).
pub(super) fn concat_shape(inputs: &[ActShape]) -> Result<ActShape> {
    let first = inputs[0];
    let mut channels = 0usize;
    for &s in inputs {
        if (s.height, s.width) != (first.height, first.width) {
            return Err(Error::shape(
                "concat operand height × width",
                format!("{}×{}", first.height, first.width),
                format!("{}×{}", s.height, s.width),
            ));
        }
        channels = channels
            .checked_add(s.channels)
            .ok_or_else(|| Error::param("concat channel count", "overflow", "< usize::MAX"))?;
    }
    Ok(ActShape::new(channels, first.height, first.width))
}

/// `x` and a gate `s` of `x`'s shape or of shape `C×1×1`.
pub(super) fn mul_shape(inputs: &[ActShape]) -> Result<ActShape> {
    let (x, gate) = (inputs[0], inputs[1]);
    if gate == x || gate == ActShape::new(x.channels, 1, 1) {
        Ok(x)
    } else {
        Err(Error::shape(
            "mul gate",
            format!("{x} or {}×1×1", x.channels),
            gate,
        ))
    }
}

/// No weights; one multiply per output element for `Mul`, none for the others.
pub(super) fn cost(op: &NodeOp, inputs: &[ActShape], out: ActShape) -> Result<Cost> {
    let lens = inputs
        .iter()
        .map(|s| s.checked_len().map(|n| n as u64))
        .collect::<Result<Vec<u64>>>()?;
    let read = crate::cost::sum("activation", &lens)?;
    let out_len = out.checked_len()? as u64;
    let macs = if matches!(op, NodeOp::Mul) {
        out_len
    } else {
        0
    };
    let activation_bytes = crate::cost::product(
        "activation byte",
        &[crate::cost::sum("activation", &[read, out_len])?, 4],
    )?;
    Ok(Cost {
        macs,
        activation_bytes,
        ..Cost::default()
    })
}

/// `y = Σ xᵢ`, summed in f64 in input order.
pub(super) fn add_forward(inputs: &[&Array4<f32>]) -> Result<Array4<f32>> {
    let mut acc = inputs[0].mapv(f64::from);
    for x in &inputs[1..] {
        Zip::from(&mut acc)
            .and(*x)
            .for_each(|a, &v| *a += f64::from(v));
    }
    Ok(acc.mapv(|v| v as f32))
}

/// The inputs stacked along the channel axis, in input order.
pub(super) fn concat_forward(inputs: &[&Array4<f32>]) -> Result<Array4<f32>> {
    let (batch, _, h, w) = inputs[0].dim();
    let channels = inputs.iter().map(|x| x.dim().1).sum();
    let mut y = Array4::zeros((batch, channels, h, w));
    let mut at = 0;
    for x in inputs {
        let c = x.dim().1;
        y.slice_mut(s![.., at..at + c, .., ..]).assign(*x);
        at += c;
    }
    Ok(y)
}

/// `y[n, c, i, j] = x[n, c, i, j] · s[n, c, i, j]`, `s` broadcast over the
/// plane when it is `C×1×1`.
pub(super) fn mul_forward(inputs: &[&Array4<f32>]) -> Result<Array4<f32>> {
    let (x, gate) = (inputs[0], inputs[1]);
    let mut y = x.to_owned();
    if gate.dim() == x.dim() {
        Zip::from(&mut y).and(gate).for_each(|v, &g| *v *= g);
    } else {
        for (mut sample, g) in y.outer_iter_mut().zip(gate.outer_iter()) {
            for (mut plane, g) in sample.axis_iter_mut(Axis(0)).zip(g.outer_iter()) {
                let g = g[[0, 0]];
                plane.mapv_inplace(|v| v * g);
            }
        }
    }
    Ok(y)
}

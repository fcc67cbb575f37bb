//! The multi-input graph ops in f64: `Add` (each input gets the output
//! gradient), `Concat` (each input gets its channel slice), `Mul`
//! (`∂L/∂x = ∂L/∂y · s`, `∂L/∂s = ∂L/∂y · x`, summed over the plane when the
//! gate `s` is `C×1×1` and broadcast).

use ndarray::{s, Array4, Axis};

use crate::error::{Error, Result};
use crate::graph::NodeOp;

fn same_shape(what: &str, a: &Array4<f64>, b: &Array4<f64>) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            what.to_string(),
            format!("{:?}", a.shape()),
            format!("{:?}", b.shape()),
        ));
    }
    Ok(())
}

fn broadcast_gate(x: &Array4<f64>, s: &Array4<f64>) -> Result<bool> {
    let (n, c, _, _) = x.dim();
    if s.shape() == x.shape() {
        Ok(false)
    } else if s.shape() == [n, c, 1, 1] {
        Ok(true)
    } else {
        Err(Error::shape(
            "mul gate",
            format!("{:?} or [{n}, {c}, 1, 1]", x.shape()),
            format!("{:?}", s.shape()),
        ))
    }
}

/// The f64 forward of a multi-input node op.
pub fn forward(op: &NodeOp, inputs: &[&Array4<f64>]) -> Result<Array4<f64>> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::param("merge input count", 0, ">= 1"))?;
    match op {
        NodeOp::Add => {
            let mut y = (*first).clone();
            for x in &inputs[1..] {
                same_shape("add input", first, x)?;
                y += *x;
            }
            Ok(y)
        }
        NodeOp::Concat => {
            let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
            ndarray::concatenate(Axis(1), &views)
                .map_err(|e| Error::shape("concat inputs", "equal N, H, W", e))
        }
        NodeOp::Mul => {
            let [x, g] = inputs else {
                return Err(Error::param("mul input count", inputs.len(), "2"));
            };
            broadcast_gate(x, g)?;
            let gb = g
                .broadcast(x.raw_dim())
                .ok_or_else(|| Error::shape("mul gate", "broadcastable", "not"))?;
            Ok(*x * &gb)
        }
        _ => Err(Error::unsupported("merge forward", op.kind())),
    }
}

/// The gradients of a multi-input node op's inputs, given its output
/// gradient `dy`.
pub fn backward(
    op: &NodeOp,
    inputs: &[&Array4<f64>],
    dy: &Array4<f64>,
) -> Result<Vec<Array4<f64>>> {
    match op {
        NodeOp::Add => {
            for x in inputs {
                same_shape("add output gradient", x, dy)?;
            }
            Ok(inputs.iter().map(|_| dy.clone()).collect())
        }
        NodeOp::Concat => {
            let total: usize = inputs.iter().map(|x| x.shape()[1]).sum();
            if dy.shape()[1] != total {
                return Err(Error::shape(
                    "concat output gradient channels",
                    total,
                    dy.shape()[1],
                ));
            }
            let mut start = 0;
            Ok(inputs
                .iter()
                .map(|x| {
                    let c = x.shape()[1];
                    let part = dy.slice(s![.., start..start + c, .., ..]).to_owned();
                    start += c;
                    part
                })
                .collect())
        }
        NodeOp::Mul => {
            let [x, g] = inputs else {
                return Err(Error::param("mul input count", inputs.len(), "2"));
            };
            same_shape("mul output gradient", x, dy)?;
            let broadcast = broadcast_gate(x, g)?;
            let gb = g.broadcast(x.raw_dim()).expect("checked");
            let dx = dy * &gb;
            let full = dy * *x;
            let dg = if broadcast {
                let (n, c, _, _) = x.dim();
                Array4::from_shape_fn((n, c, 1, 1), |(i, ch, _, _)| {
                    full.slice(s![i, ch, .., ..]).sum()
                })
            } else {
                full
            };
            Ok(vec![dx, dg])
        }
        _ => Err(Error::unsupported("merge backward", op.kind())),
    }
}

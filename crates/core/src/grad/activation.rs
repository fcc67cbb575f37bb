//! Element-wise activations and softmax in f64.
//!
//! Derivatives at the kinks follow PyTorch: ReLU'(0) = 0; Clip (ReLU6,
//! `hardtanh`) passes the gradient only strictly inside `(min, max)`; hard
//! sigmoid only where `0 < αx + β < 1`; hard swish is `0` for `x ≤ −3`,
//! `(2x + 3)/6` for `−3 < x < 3` and `1` for `x ≥ 3`.

use ndarray::{Array4, Axis, Zip};

use crate::op::Op;

/// The element-wise activations, with their f64 value and derivative.
#[derive(Debug, Clone, Copy)]
pub(super) enum Activation {
    Relu,
    Clip(f64, f64),
    Sigmoid,
    HardSigmoid(f64, f64),
    HardSwish,
    Silu,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Activation {
    pub(super) fn of(op: &Op) -> Option<Self> {
        Some(match op {
            Op::Relu(_) => Activation::Relu,
            Op::Clip(c) => Activation::Clip(f64::from(c.min()), f64::from(c.max())),
            Op::Sigmoid(_) => Activation::Sigmoid,
            Op::HardSigmoid(h) => {
                Activation::HardSigmoid(f64::from(h.alpha()), f64::from(h.beta()))
            }
            Op::HardSwish(_) => Activation::HardSwish,
            Op::Silu(_) => Activation::Silu,
            _ => return None,
        })
    }

    pub(super) fn value(self, x: f64) -> f64 {
        let clamp = |v: f64, lo: f64, hi: f64| {
            if v < lo {
                lo
            } else if v > hi {
                hi
            } else {
                v
            }
        };
        match self {
            Activation::Relu => clamp(x, 0.0, f64::INFINITY),
            Activation::Clip(lo, hi) => clamp(x, lo, hi),
            Activation::Sigmoid => sigmoid(x),
            Activation::HardSigmoid(a, b) => clamp(a * x + b, 0.0, 1.0),
            Activation::HardSwish => x * clamp(x / 6.0 + 0.5, 0.0, 1.0),
            Activation::Silu => x * sigmoid(x),
        }
    }

    pub(super) fn derivative(self, x: f64) -> f64 {
        let inside = |v: f64, lo: f64, hi: f64| if v > lo && v < hi { 1.0 } else { 0.0 };
        match self {
            Activation::Relu => inside(x, 0.0, f64::INFINITY),
            Activation::Clip(lo, hi) => inside(x, lo, hi),
            Activation::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Activation::HardSigmoid(a, b) => a * inside(a * x + b, 0.0, 1.0),
            Activation::HardSwish => {
                if x <= -3.0 {
                    0.0
                } else if x >= 3.0 {
                    1.0
                } else {
                    (2.0 * x + 3.0) / 6.0
                }
            }
            Activation::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
        }
    }
}

/// The f64 value of the element-wise activation `op` at `x`; `None` when
/// `op` is not one (see [`Op::as_elementwise`]).
pub fn activation_value(op: &Op, x: f64) -> Option<f64> {
    Activation::of(op).map(|a| a.value(x))
}

/// The derivative of the element-wise activation `op` at `x` (kink
/// conventions in the module docs); `None` when `op` is not one.
pub fn activation_derivative(op: &Op, x: f64) -> Option<f64> {
    Activation::of(op).map(|a| a.derivative(x))
}

/// Softmax over channels at every `(n, h, w)`, max-subtracted.
pub(super) fn softmax_forward(x: &Array4<f64>) -> Array4<f64> {
    let mut y = x.clone();
    for mut sample in y.axis_iter_mut(Axis(0)) {
        for mut column in sample.lanes_mut(Axis(0)) {
            let m = column.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            column.mapv_inplace(|v| (v - m).exp());
            let sum: f64 = column.sum();
            column.mapv_inplace(|v| v / sum);
        }
    }
    y
}

/// `∂L/∂x_c = y_c (∂L/∂y_c − Σ_k y_k ∂L/∂y_k)` per column.
pub(super) fn softmax_backward(x: &Array4<f64>, dy: &Array4<f64>) -> Array4<f64> {
    let y = softmax_forward(x);
    let mut dx = Array4::zeros(x.raw_dim());
    Zip::from(dx.lanes_mut(Axis(1)))
        .and(y.lanes(Axis(1)))
        .and(dy.lanes(Axis(1)))
        .for_each(|mut d, y, g| {
            let dot: f64 = y.iter().zip(g.iter()).map(|(a, b)| a * b).sum();
            for ((d, &y), &g) in d.iter_mut().zip(y.iter()).zip(g.iter()) {
                *d = y * (g - dot);
            }
        });
    dx
}

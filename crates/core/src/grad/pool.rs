//! Max, average and global average pooling in f64.
//!
//! Max pooling sends each output's gradient to the arg-max of its window;
//! among equal maxima the first in row-major order (top row first, then left
//! to right) wins, and a NaN wins over any number (PyTorch's CPU rule).
//! Average pooling spreads each output's gradient evenly over the input
//! positions its window reads, divided by the same divisor as the forward
//! (the padded window length with `count_include_pad`, the real one
//! without); padding positions take no gradient.

use ndarray::{Array4, Axis};

use crate::error::Result;
use crate::op::{AvgPool, MaxPool};

/// For every output of a max pooling, the input `(row, col)` of its arg-max.
type ArgMax = Array4<(usize, usize)>;

/// The forward and, for every output, the input `(row, col)` of its arg-max.
pub(super) fn max_forward(
    pool: &MaxPool,
    x: &Array4<f64>,
    out: [usize; 4],
) -> Result<(Array4<f64>, ArgMax)> {
    let (rows, cols) = pool.spec().windows(x.shape()[2], x.shape()[3])?;
    let mut y = Array4::<f64>::zeros(out);
    let mut arg = Array4::<(usize, usize)>::from_elem(out, (0, 0));
    for ((n, c, oy, ox), v) in y.indexed_iter_mut() {
        let (r, q) = (rows[oy], cols[ox]);
        let mut best = (f64::NEG_INFINITY, (r.start, q.start));
        'window: for iy in r.start..r.end {
            for ix in q.start..q.end {
                let u = x[[n, c, iy, ix]];
                if u.is_nan() {
                    best = (u, (iy, ix));
                    break 'window;
                }
                if u > best.0 {
                    best = (u, (iy, ix));
                }
            }
        }
        *v = best.0;
        arg[[n, c, oy, ox]] = best.1;
    }
    Ok((y, arg))
}

pub(super) fn max_backward(
    pool: &MaxPool,
    x: &Array4<f64>,
    dy: &Array4<f64>,
    out: [usize; 4],
) -> Result<Array4<f64>> {
    let (_, arg) = max_forward(pool, x, out)?;
    let mut dx = Array4::<f64>::zeros(x.raw_dim());
    for ((n, c, oy, ox), &(iy, ix)) in arg.indexed_iter() {
        dx[[n, c, iy, ix]] += dy[[n, c, oy, ox]];
    }
    Ok(dx)
}

pub(super) fn avg_forward(pool: &AvgPool, x: &Array4<f64>, out: [usize; 4]) -> Result<Array4<f64>> {
    let (rows, cols) = pool.spec().windows(x.shape()[2], x.shape()[3])?;
    let include = pool.count_include_pad();
    let mut y = Array4::<f64>::zeros(out);
    for ((n, c, oy, ox), v) in y.indexed_iter_mut() {
        let (r, q) = (rows[oy], cols[ox]);
        let mut sum = 0.0;
        for iy in r.start..r.end {
            for ix in q.start..q.end {
                sum += x[[n, c, iy, ix]];
            }
        }
        let divisor = if include {
            r.padded_len * q.padded_len
        } else {
            r.len() * q.len()
        };
        *v = sum / divisor as f64;
    }
    Ok(y)
}

pub(super) fn avg_backward(
    pool: &AvgPool,
    x: &Array4<f64>,
    dy: &Array4<f64>,
) -> Result<Array4<f64>> {
    let (rows, cols) = pool.spec().windows(x.shape()[2], x.shape()[3])?;
    let include = pool.count_include_pad();
    let mut dx = Array4::<f64>::zeros(x.raw_dim());
    for ((n, c, oy, ox), &g) in dy.indexed_iter() {
        let (r, q) = (rows[oy], cols[ox]);
        let divisor = if include {
            r.padded_len * q.padded_len
        } else {
            r.len() * q.len()
        };
        for iy in r.start..r.end {
            for ix in q.start..q.end {
                dx[[n, c, iy, ix]] += g / divisor as f64;
            }
        }
    }
    Ok(dx)
}

pub(super) fn global_forward(x: &Array4<f64>) -> Array4<f64> {
    let (n, c, h, w) = x.dim();
    let mut y = Array4::<f64>::zeros((n, c, 1, 1));
    for ((i, ch, _, _), v) in y.indexed_iter_mut() {
        *v = x.index_axis(Axis(0), i).index_axis(Axis(0), ch).sum() / (h * w) as f64;
    }
    y
}

pub(super) fn global_backward(x: &Array4<f64>, dy: &Array4<f64>) -> Array4<f64> {
    let (_, _, h, w) = x.dim();
    Array4::from_shape_fn(x.raw_dim(), |(n, c, _, _)| {
        dy[[n, c, 0, 0]] / (h * w) as f64
    })
}

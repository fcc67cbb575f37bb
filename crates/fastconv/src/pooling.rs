//! Max, average and global average pooling.
//!
//! Window pooling is separable: each plane is first reduced along its rows
//! (every input row to one value per output column, over the column windows
//! of [`PoolSpec::windows`], the geometry the reference uses), then down the
//! columns (each output row from its row window of reduced rows), which
//! reads and writes contiguous runs of output columns the compiler
//! vectorises. Full interior windows of the common 2×2/s2 and 3×3/s2 shapes
//! run a loop specialised to their constant size and stride. Max pooling
//! keeps NaN ([`max_nan`]); averages divide by PyTorch's divisor.

use hasten_core::op::{max_nan, PoolWindow};
use hasten_core::{ActShape, AvgPool, MaxPool, PoolSpec, Result};
use rayon::prelude::*;

use crate::plan::OpKernel;
use crate::pool::ScratchPool;
use crate::Isa;

/// A max or average pooling prepared for one input shape.
#[derive(Debug)]
pub(crate) struct PoolKernel {
    isa: Isa,
    input: ActShape,
    output: ActShape,
    kernel_w: usize,
    stride_w: usize,
    rows: Vec<PoolWindow>,
    cols: Vec<PoolWindow>,
    /// Output columns whose window is full and unclipped: `interior.0..interior.1`.
    interior: (usize, usize),
    /// `None` for max pooling; for averages, `1 / divisor` per output.
    inverse_divisor: Option<Vec<f32>>,
}

impl PoolKernel {
    /// A max pooling on `input`.
    pub fn max(isa: Isa, op: &MaxPool, input: ActShape) -> Result<Self> {
        Self::new(isa, op.spec(), input, None)
    }

    /// An average pooling on `input`.
    pub fn avg(isa: Isa, op: &AvgPool, input: ActShape) -> Result<Self> {
        Self::new(isa, op.spec(), input, Some(op.count_include_pad()))
    }

    fn new(isa: Isa, spec: PoolSpec, input: ActShape, avg: Option<bool>) -> Result<Self> {
        let (rows, cols) = spec.windows(input.height, input.width)?;
        let output = ActShape::new(input.channels, rows.len(), cols.len());
        let kw = spec.kernel.1;
        let lo = cols.iter().position(|c| c.len() == kw).unwrap_or(0);
        let hi = lo + cols[lo..].iter().take_while(|c| c.len() == kw).count();
        let inverse_divisor = avg.map(|include| {
            let len = |w: &PoolWindow| if include { w.padded_len } else { w.len() };
            rows.iter()
                .flat_map(|r| cols.iter().map(move |c| 1.0 / (len(r) * len(c)) as f32))
                .collect()
        });
        Ok(PoolKernel {
            isa,
            input,
            output,
            kernel_w: kw,
            stride_w: spec.stride.1,
            rows,
            cols,
            interior: (lo, hi),
            inverse_divisor,
        })
    }

    /// Pools one plane with the reduction `R` (max or sum), `buf` holding
    /// the row-reduced plane (`H × OW`).
    #[inline(always)]
    fn plane<R: Reduce>(&self, src: &[f32], dst: &mut [f32], buf: &mut [f32]) {
        let (w, ow) = (self.input.width, self.output.width);
        let (lo, hi) = self.interior;
        for (row, out) in src.chunks_exact(w).zip(buf.chunks_exact_mut(ow)) {
            for (o, c) in out[..lo].iter_mut().zip(&self.cols) {
                *o = R::fold(&row[c.start..c.end]);
            }
            if hi > lo {
                let base = self.cols[lo].start;
                let run = &mut out[lo..hi];
                match (self.kernel_w, self.stride_w) {
                    (2, 2) => fixed::<R, 2, 2>(&row[base..], run),
                    (3, 2) => fixed::<R, 3, 2>(&row[base..], run),
                    (k, s) => {
                        for (i, o) in run.iter_mut().enumerate() {
                            *o = R::fold(&row[base + i * s..][..k]);
                        }
                    }
                }
            }
            for (o, c) in out[hi..].iter_mut().zip(&self.cols[hi..]) {
                *o = R::fold(&row[c.start..c.end]);
            }
        }
        for (oy, (out, r)) in dst.chunks_exact_mut(ow).zip(&self.rows).enumerate() {
            out.copy_from_slice(&buf[r.start * ow..][..ow]);
            for y in r.start + 1..r.end {
                let next = &buf[y * ow..][..ow];
                out.iter_mut()
                    .zip(next)
                    .for_each(|(o, &v)| *o = R::pair(*o, v));
            }
            if let Some(inv) = &self.inverse_divisor {
                out.iter_mut()
                    .zip(&inv[oy * ow..][..ow])
                    .for_each(|(o, &d)| *o *= d);
            }
        }
    }
}

/// A window reduction: max (NaN kept) or sum.
trait Reduce {
    fn pair(a: f32, b: f32) -> f32;
    #[inline(always)]
    fn fold(v: &[f32]) -> f32 {
        v[1..].iter().fold(v[0], |a, &b| Self::pair(a, b))
    }
}

struct Max;
impl Reduce for Max {
    #[inline(always)]
    fn pair(a: f32, b: f32) -> f32 {
        max_nan(a, b)
    }
}

struct Sum;
impl Reduce for Sum {
    #[inline(always)]
    fn pair(a: f32, b: f32) -> f32 {
        a + b
    }
}

/// Full windows of constant width `K` and stride `S`: `out[i]` reduces
/// `row[i·S .. i·S + K]`.
#[inline(always)]
fn fixed<R: Reduce, const K: usize, const S: usize>(row: &[f32], out: &mut [f32]) {
    let n = out.len();
    let row = &row[..(n - 1) * S + K];
    for (i, o) in out.iter_mut().enumerate() {
        let w: &[f32; K] = row[i * S..i * S + K].try_into().expect("K values");
        let mut acc = w[0];
        for &v in &w[1..] {
            acc = R::pair(acc, v);
        }
        *o = acc;
    }
}

impl OpKernel for PoolKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], _batch: usize, pool: &ScratchPool) {
        let (in_area, out_area) = (self.input.area(), self.output.area());
        let buf_len = self.input.height * self.output.width;
        dst.par_chunks_mut(out_area)
            .zip(src.par_chunks(in_area))
            .with_min_len(crate::shares::min_items(in_area))
            .for_each(|(d, s)| {
                crate::profile::task(|| {
                    pool.with(|scratch| {
                        scratch.floats.resize(buf_len, 0.0);
                        let buf = &mut scratch.floats[..buf_len];
                        self.isa.run(|| match self.inverse_divisor {
                            None => self.plane::<Max>(s, d, buf),
                            Some(_) => self.plane::<Sum>(s, d, buf),
                        })
                    })
                })
            });
    }
}

/// Global average pooling: the mean of each plane, summed in f64.
#[derive(Debug)]
pub(crate) struct GlobalAvgKernel {
    isa: Isa,
    area: usize,
}

impl GlobalAvgKernel {
    /// The kernel for planes of `input`.
    pub fn new(isa: Isa, input: ActShape) -> Self {
        GlobalAvgKernel {
            isa,
            area: input.area(),
        }
    }
}

/// The sum of `v` in f64, over eight independent partial sums.
#[inline(always)]
fn sum_f64(v: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f64::from(x);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    acc.iter().sum::<f64>() + tail
}

impl OpKernel for GlobalAvgKernel {
    fn run(&self, src: &[f32], dst: &mut [f32], _batch: usize, _pool: &ScratchPool) {
        let area = self.area;
        dst.par_iter_mut()
            .zip(src.par_chunks(area))
            .with_min_len(crate::shares::min_items(area))
            .for_each(|(d, s)| {
                crate::profile::task(|| *d = (self.isa.run(|| sum_f64(s)) / area as f64) as f32)
            });
    }
}

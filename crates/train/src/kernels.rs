//! Fast f32 training kernels: convolution (survey eq. (1)) forward, data
//! gradient and weight gradient through im2col / col2im and GEMM
//! ([`hasten_fastconv::matmul`], single-threaded per call), and the fully
//! connected layer.
//!
//! For sample `n` and group `g`, `cols[(s, i, j), (y, x)]` holds the input
//! tap `U[n, g·C_g + s, y·σ_h + i·δ_h − p_t, x·σ_w + j·δ_w − p_l]` (zero in
//! the padding); then `V_g = W_g · cols`, `∂cols = W_gᵀ · ∂V_g` scattered
//! back by col2im, and `∂W_g = Σ_n ∂V_g · colsᵀ`.
//!
//! Each kernel is one parallel loop over samples (rayon, small leaves — see
//! `split.rs`), with per-thread im2col buffers; per-sample weight and bias
//! gradients are summed in sample order, so results are bit-identical for
//! any thread count.

use std::cell::RefCell;

use hasten_core::ConvSpec;
use hasten_fastconv::{matmul, Isa, Operand};
use ndarray::{Array1, Array2, Array4, Axis};
use rayon::prelude::*;

use crate::error::{Result, TrainError};
use crate::split::leaf;

/// `c[m×n] = a[m×k]·b[k×n]`, row-major slices with the given transposition
/// of `a` (stored `k×m` when `ta`) and `b` (stored `n×k` when `tb`), on the
/// calling thread.
#[allow(clippy::many_single_char_names)]
fn gemm<'a>(
    m: usize,
    k: usize,
    n: usize,
    a: (&'a [f32], bool),
    b: (&'a [f32], bool),
    c: &mut [f32],
) {
    let op = |(d, t): (&'a [f32], bool)| {
        if t {
            Operand::transposed(d)
        } else {
            Operand::new(d)
        }
    };
    matmul(Isa::detect(), m, k, n, op(a), op(b), c)
        .expect("the callers pass slices of exactly m×k, k×n and m×n values");
}

thread_local! {
    /// Per-thread im2col and col2im buffers, reused across samples and calls.
    static COLS: RefCell<(Vec<f32>, Vec<f32>)> = RefCell::new(Default::default());
}

/// Runs `f` with this thread's two scratch buffers sized to `len` values
/// (contents unspecified: every user overwrites them).
fn with_cols<R>(len: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    COLS.with(|cell| {
        let (a, b) = &mut *cell.borrow_mut();
        a.resize(len, 0.0);
        b.resize(len, 0.0);
        f(&mut a[..len], &mut b[..len])
    })
}

/// The geometry of a convolution on a given input.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c_in: usize,
    h: usize,
    w: usize,
    t: usize,
    c_g: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    groups: usize,
    spec: ConvSpec,
}

impl Geometry {
    fn new(x: &[usize], w: &[usize], spec: &ConvSpec) -> Result<Self> {
        let (c_in, h, wd) = (x[1], x[2], x[3]);
        let (t, c_g, kh, kw) = (w[0], w[1], w[2], w[3]);
        if x.contains(&0) || w.contains(&0) {
            return Err(TrainError::invalid(
                "convolution shape",
                format!("{x:?} / {w:?}"),
                "no zero dimension",
            ));
        }
        if c_g * spec.groups != c_in || t % spec.groups != 0 {
            return Err(hasten_core::Error::InvalidGroups {
                groups: spec.groups,
                in_channels: c_in,
                out_channels: t,
            }
            .into());
        }
        let (oh, ow) = spec.output_hw(h, wd, kh, kw)?;
        Ok(Geometry {
            c_in,
            h,
            w: wd,
            t,
            c_g,
            kh,
            kw,
            oh,
            ow,
            groups: spec.groups,
            spec: *spec,
        })
    }

    fn k(&self) -> usize {
        self.c_g * self.kh * self.kw
    }

    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Calls `f(start in cols, start in the group's input, count)` for every
    /// run of taps of one cols row and one output row that lie inside the
    /// input: `count` consecutive cols entries read input values `stride`
    /// apart (the column stride).
    #[inline]
    fn tap_runs(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (sh, sw) = self.spec.stride;
        let (dh, dw) = self.spec.dilation;
        let (pt, pl) = (self.spec.padding.top, self.spec.padding.left);
        let p = self.p();
        for s in 0..self.c_g {
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = (s * self.kh + i) * self.kw + j;
                    // Output columns x with 0 <= x·sw + j·dw − pl < w.
                    let off = j * dw;
                    let x0 = pl.saturating_sub(off).div_ceil(sw);
                    let x1 = if self.w + pl > off {
                        (self.w + pl - off).div_ceil(sw).min(self.ow)
                    } else {
                        0
                    };
                    if x0 >= x1 {
                        continue;
                    }
                    for y in 0..self.oh {
                        let iy = y * sh + i * dh;
                        if iy < pt || iy - pt >= self.h {
                            continue;
                        }
                        let ix0 = x0 * sw + off - pl;
                        f(
                            row * p + y * self.ow + x0,
                            (s * self.h + iy - pt) * self.w + ix0,
                            x1 - x0,
                        );
                    }
                }
            }
        }
    }

    /// Whether every tap of every output lies inside the input (no
    /// padding: the output size leaves no tap outside).
    fn covers(&self) -> bool {
        let p = self.spec.padding;
        p.top == 0 && p.left == 0 && p.bottom == 0 && p.right == 0
    }

    /// im2col of one group's channels (`c_g·h·w` values) into `cols` (`K×P`).
    fn im2col(&self, group_input: &[f32], cols: &mut [f32]) {
        if !self.covers() {
            cols.fill(0.0);
        }
        let sw = self.spec.stride.1;
        self.tap_runs(|c, i, n| {
            if sw == 1 {
                cols[c..c + n].copy_from_slice(&group_input[i..i + n]);
            } else {
                for (k, v) in cols[c..c + n].iter_mut().enumerate() {
                    *v = group_input[i + k * sw];
                }
            }
        });
    }

    /// col2im: scatter-adds `cols` (`K×P`) into one group's channels.
    fn col2im(&self, cols: &[f32], group_input: &mut [f32]) {
        let sw = self.spec.stride.1;
        self.tap_runs(|c, i, n| {
            if sw == 1 {
                group_input[i..i + n]
                    .iter_mut()
                    .zip(&cols[c..c + n])
                    .for_each(|(g, v)| *g += v);
            } else {
                for (k, v) in cols[c..c + n].iter().enumerate() {
                    group_input[i + k * sw] += v;
                }
            }
        });
    }
}

fn standard(a: &Array4<f32>) -> std::borrow::Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// The convolution's output `[N, T, OH, OW]` for input `x` `[N, C, H, W]`,
/// OIHW weights `w` and an optional bias.
pub fn conv2d_forward(
    x: &Array4<f32>,
    w: &Array4<f32>,
    bias: Option<&Array1<f32>>,
    spec: &ConvSpec,
) -> Result<Array4<f32>> {
    let g = Geometry::new(x.shape(), w.shape(), spec)?;
    if let Some(b) = bias {
        if b.len() != g.t {
            return Err(TrainError::invalid(
                "convolution bias length",
                b.len(),
                "the output channel count",
            ));
        }
    }
    let n = x.shape()[0];
    let (xs, ws) = (standard(x), standard(w));
    let (k, p, t_g) = (g.k(), g.p(), g.t / g.groups);
    let in_group = g.c_g * g.h * g.w;
    let mut y = Array4::<f32>::zeros((n, g.t, g.oh, g.ow));
    let out_len = g.t * p;
    let ybuf = y.as_slice_mut().expect("fresh array");
    ybuf.par_chunks_mut(out_len)
        .with_max_len(leaf(n))
        .enumerate()
        .for_each(|(s, yslice)| {
            with_cols(k * p, |cols, _| {
                for gi in 0..g.groups {
                    let start = s * g.c_in * g.h * g.w + gi * in_group;
                    g.im2col(&xs[start..start + in_group], cols);
                    let wg = &ws[gi * t_g * k..(gi + 1) * t_g * k];
                    let yg = &mut yslice[gi * t_g * p..(gi + 1) * t_g * p];
                    gemm(t_g, k, p, (wg, false), (cols, false), yg);
                }
            });
            if let Some(b) = bias {
                for (t, plane) in yslice.chunks_mut(p).enumerate() {
                    plane.iter_mut().for_each(|v| *v += b[t]);
                }
            }
        });
    Ok(y)
}

/// Gradients of a convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvGrads {
    /// `∂L/∂x`, the input's shape.
    pub input: Array4<f32>,
    /// `∂L/∂W`, OIHW.
    pub weight: Array4<f32>,
    /// `∂L/∂b`, one entry per output channel.
    pub bias: Array1<f32>,
}

/// The data, weight and bias gradients of [`conv2d_forward`] given the
/// output gradient `dy`.
pub fn conv2d_backward(
    x: &Array4<f32>,
    w: &Array4<f32>,
    dy: &Array4<f32>,
    spec: &ConvSpec,
) -> Result<ConvGrads> {
    let (input, wb) = conv2d_backward_with(x, w, dy, spec, true)?;
    let (weight, bias) = wb.expect("weight gradients asked for");
    Ok(ConvGrads {
        input,
        weight,
        bias,
    })
}

/// The data gradient `∂L/∂x` of [`conv2d_forward`] alone (what
/// [`conv2d_backward`] returns as `input`, bit for bit), for a layer whose
/// weights are not trained; `x` gives the input's shape and geometry.
pub fn conv2d_backward_input(
    x: &Array4<f32>,
    w: &Array4<f32>,
    dy: &Array4<f32>,
    spec: &ConvSpec,
) -> Result<Array4<f32>> {
    Ok(conv2d_backward_with(x, w, dy, spec, false)?.0)
}

/// `∂L/∂x`, and `(∂L/∂W, ∂L/∂b)` when `weights`.
#[allow(clippy::type_complexity)]
fn conv2d_backward_with(
    x: &Array4<f32>,
    w: &Array4<f32>,
    dy: &Array4<f32>,
    spec: &ConvSpec,
    weights: bool,
) -> Result<(Array4<f32>, Option<(Array4<f32>, Array1<f32>)>)> {
    let g = Geometry::new(x.shape(), w.shape(), spec)?;
    let n = x.shape()[0];
    if dy.shape() != [n, g.t, g.oh, g.ow] {
        return Err(TrainError::invalid(
            "convolution output gradient shape",
            format!("{:?}", dy.shape()),
            "the output's shape",
        ));
    }
    let (xs, ws, dys) = (standard(x), standard(w), standard(dy));
    let (k, p, t_g) = (g.k(), g.p(), g.t / g.groups);
    let in_group = g.c_g * g.h * g.w;
    // W_gᵀ (`K × T_g`) per group, transposed once for all samples.
    let wt: Vec<f32> = (0..g.groups)
        .flat_map(|gi| {
            let wg = &ws[gi * t_g * k..(gi + 1) * t_g * k];
            (0..k).flat_map(move |r| (0..t_g).map(move |t| wg[t * k + r]))
        })
        .collect();
    let mut dx = Array4::<f32>::zeros(x.raw_dim());
    // Per sample: the weight gradient, then the bias gradient (when asked).
    let per_sample: Vec<Vec<f32>> = dx
        .as_slice_mut()
        .expect("fresh array")
        .par_chunks_mut(g.c_in * g.h * g.w)
        .with_max_len(leaf(n))
        .enumerate()
        .map(|(s, dxslice)| {
            let mut dw = if weights {
                vec![0.0f32; g.t * k + g.t]
            } else {
                Vec::new()
            };
            let dys_s = &dys[s * g.t * p..(s + 1) * g.t * p];
            with_cols(k * p, |cols, dcols| {
                for gi in 0..g.groups {
                    let start = s * g.c_in * g.h * g.w + gi * in_group;
                    let dyg = &dys_s[gi * t_g * p..(gi + 1) * t_g * p];
                    let wtg = &wt[gi * t_g * k..(gi + 1) * t_g * k];
                    // ∂cols = W_gᵀ ∂V_g, then col2im.
                    gemm(k, t_g, p, (wtg, false), (dyg, false), dcols);
                    g.col2im(dcols, &mut dxslice[gi * in_group..(gi + 1) * in_group]);
                    if weights {
                        // ∂W_g = ∂V_g colsᵀ.
                        g.im2col(&xs[start..start + in_group], cols);
                        let dwg = &mut dw[gi * t_g * k..(gi + 1) * t_g * k];
                        gemm(t_g, p, k, (dyg, false), (cols, true), dwg);
                    }
                }
            });
            if weights {
                for (db, plane) in dw[g.t * k..].iter_mut().zip(dys_s.chunks(p)) {
                    *db = plane.iter().sum::<f32>();
                }
            }
            dw
        })
        .collect();
    if !weights {
        return Ok((dx, None));
    }
    let mut dw = vec![0.0f32; g.t * k];
    let mut db = Array1::<f32>::zeros(g.t);
    for sample in &per_sample {
        dw.iter_mut().zip(sample).for_each(|(a, b)| *a += b);
        db.iter_mut()
            .zip(&sample[g.t * k..])
            .for_each(|(a, b)| *a += b);
    }
    let dw = Array4::from_shape_vec(w.raw_dim(), dw).expect("O·I·H·W values");
    Ok((dx, Some((dw, db))))
}

fn flat(x: &Array4<f32>) -> Array2<f32> {
    let n = x.shape()[0];
    Array2::from_shape_vec((n, x.len() / n), standard(x).into_owned()).expect("N × F")
}

/// `y[n, o] = b[o] + Σ_i W[o, i] x[n, i]` over each flattened sample;
/// output `[N, O, 1, 1]`.
pub fn linear_forward(
    x: &Array4<f32>,
    w: &Array2<f32>,
    bias: Option<&Array1<f32>>,
) -> Result<Array4<f32>> {
    let xf = flat(x);
    let (n, f) = xf.dim();
    if w.ncols() != f || bias.is_some_and(|b| b.len() != w.nrows()) {
        return Err(TrainError::invalid(
            "linear shapes",
            format!("{:?} / {:?}", x.shape(), w.shape()),
            "matching features",
        ));
    }
    let mut y = xf.dot(&w.t());
    if let Some(b) = bias {
        y += b;
    }
    // `dot` returns a column-major product when both operands are also
    // column-major (one input feature): reshape a row-major copy then.
    Ok(y.as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, w.nrows(), 1, 1))
        .expect("N × O"))
}

/// Gradients of a linear layer: `∂x = ∂y W` (input shape), `∂W = ∂yᵀ x`,
/// `∂b = Σ_n ∂y`; returned as `(∂x, ∂W, ∂b)`.
pub fn linear_backward(
    x: &Array4<f32>,
    w: &Array2<f32>,
    dy: &Array4<f32>,
) -> Result<(Array4<f32>, Array2<f32>, Array1<f32>)> {
    let xf = flat(x);
    let n = xf.nrows();
    if dy.shape() != [n, w.nrows(), 1, 1] || w.ncols() != xf.ncols() {
        return Err(TrainError::invalid(
            "linear gradient shapes",
            format!("{:?}", dy.shape()),
            "[N, O, 1, 1]",
        ));
    }
    let dyf = flat(dy);
    let dx = dyf
        .dot(w)
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(x.raw_dim())
        .expect("input shape");
    Ok((dx, dyf.t().dot(&xf), dyf.sum_axis(Axis(0))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::grad::{backward, forward, op_params, Mode};
    use hasten_core::{Conv4d, ConvLayer, LinearLayer, Op, Padding, SeededRng};
    use ndarray::ArrayD;

    fn rel(a: &ArrayD<f64>, b: &ArrayD<f32>) -> f64 {
        let b = b.mapv(f64::from);
        let diff: f64 = a.iter().zip(b.iter()).map(|(x, y)| (x - y).powi(2)).sum();
        let norm: f64 = a.iter().map(|x| x * x).sum();
        // Absolute where the reference vanishes (an output that sees only
        // padding has a zero input gradient).
        if norm == 0.0 {
            diff.sqrt()
        } else {
            (diff / norm).sqrt()
        }
    }

    #[test]
    fn conv_kernels_match_the_reference_backward() {
        let mut rng = SeededRng::new(21);
        let specs = [
            ([2, 3, 7, 6], [4, 3, 3, 3], ConvSpec::new().with_padding(1)),
            (
                [3, 4, 9, 8],
                [6, 2, 3, 2],
                ConvSpec::new()
                    .with_groups(2)
                    .with_stride_hw(2, 1)
                    .with_dilation(2),
            ),
            (
                [2, 5, 6, 6],
                [5, 1, 3, 3],
                ConvSpec::new()
                    .with_groups(5)
                    .with_stride(2)
                    .with_padding(1),
            ),
            (
                [1, 2, 5, 4],
                [3, 2, 2, 3],
                ConvSpec::new().with_padding_sides(Padding {
                    top: 0,
                    bottom: 2,
                    left: 1,
                    right: 0,
                }),
            ),
            ([4, 1, 12, 12], [6, 1, 5, 5], ConvSpec::new()),
        ];
        for (xd, wd, spec) in specs {
            let x: Array4<f32> = rng.normal_array(xd, 1.0);
            let w: Array4<f32> = rng.normal_array(wd, 0.5);
            let b: Array1<f32> = rng.normal_array(wd[0], 0.5);
            let op = Op::Conv(
                ConvLayer::new(Conv4d::new(w.clone()).unwrap(), Some(b.clone()), spec).unwrap(),
            );
            let p = op_params(&op);
            let x64 = x.mapv(f64::from);
            let want = forward(&op, &x64, &p, Mode::Eval).unwrap().output;
            let y = conv2d_forward(&x, &w, Some(&b), &spec).unwrap();
            assert!(
                rel(&want.into_dyn(), &y.clone().into_dyn()) < 1e-5,
                "{spec:?} forward"
            );
            let dy: Array4<f32> = rng.normal_array(y.raw_dim(), 1.0);
            let g = backward(&op, &x64, &dy.mapv(f64::from), &p, Mode::Eval).unwrap();
            let fast = conv2d_backward(&x, &w, &dy, &spec).unwrap();
            assert!(
                rel(&g.input.into_dyn(), &fast.input.into_dyn()) < 1e-4,
                "{spec:?} dx"
            );
            assert!(
                rel(&g.params["weight"], &fast.weight.into_dyn()) < 1e-4,
                "{spec:?} dw"
            );
            assert!(
                rel(&g.params["bias"], &fast.bias.into_dyn()) < 1e-4,
                "{spec:?} db"
            );
        }
    }

    /// Random groups, channels, kernel sizes, strides, dilations and
    /// (asymmetric, sometimes zero) paddings, one after another on the same
    /// threads, so that reused im2col buffers holding another geometry's
    /// values would show.
    #[test]
    fn conv_kernels_match_the_reference_on_random_geometries() {
        let mut rng = SeededRng::new(24);
        for case in 0..40u64 {
            let groups = 1 + rng.below(3);
            let (c_g, t_g) = (1 + rng.below(3), 1 + rng.below(3));
            let (kh, kw) = (1 + rng.below(3), 1 + rng.below(3));
            let (sh, sw) = (1 + rng.below(3), 1 + rng.below(3));
            let (dh, dw) = (1 + rng.below(2), 1 + rng.below(2));
            let mut side = || if rng.below(2) == 0 { 0 } else { rng.below(3) };
            let pad = Padding {
                top: side(),
                bottom: side(),
                left: side(),
                right: side(),
            };
            let h = (kh - 1) * dh + 1 + rng.below(6);
            let w = (kw - 1) * dw + 1 + rng.below(6);
            let n = 1 + rng.below(4);
            let mut spec = ConvSpec::new()
                .with_groups(groups)
                .with_stride_hw(sh, sw)
                .with_padding_sides(pad);
            spec.dilation = (dh, dw);
            let x: Array4<f32> = rng.normal_array([n, groups * c_g, h, w], 1.0);
            let wt: Array4<f32> = rng.normal_array([groups * t_g, c_g, kh, kw], 0.5);
            let b: Array1<f32> = rng.normal_array(groups * t_g, 0.5);
            let op = Op::Conv(
                ConvLayer::new(Conv4d::new(wt.clone()).unwrap(), Some(b.clone()), spec).unwrap(),
            );
            let p = op_params(&op);
            let x64 = x.mapv(f64::from);
            let what = format!("case {case}: {:?} {:?} {spec:?}", x.shape(), wt.shape());
            let want = forward(&op, &x64, &p, Mode::Eval).unwrap().output;
            let y = conv2d_forward(&x, &wt, Some(&b), &spec).unwrap();
            assert!(
                rel(&want.into_dyn(), &y.clone().into_dyn()) < 1e-5,
                "{what} forward"
            );
            let dy: Array4<f32> = rng.normal_array(y.raw_dim(), 1.0);
            let g = backward(&op, &x64, &dy.mapv(f64::from), &p, Mode::Eval).unwrap();
            let fast = conv2d_backward(&x, &wt, &dy, &spec).unwrap();
            let dx_alone = conv2d_backward_input(&x, &wt, &dy, &spec).unwrap();
            assert_eq!(dx_alone, fast.input, "{what} dx alone");
            assert!(
                rel(&g.input.into_dyn(), &fast.input.into_dyn()) < 1e-4,
                "{what} dx"
            );
            assert!(
                rel(&g.params["weight"], &fast.weight.into_dyn()) < 1e-4,
                "{what} dw"
            );
            assert!(
                rel(&g.params["bias"], &fast.bias.into_dyn()) < 1e-4,
                "{what} db"
            );
        }
    }

    #[test]
    fn conv_kernels_are_bit_identical_across_thread_counts() {
        let mut rng = SeededRng::new(22);
        let x: Array4<f32> = rng.normal_array([8, 3, 10, 10], 1.0);
        let w: Array4<f32> = rng.normal_array([4, 3, 3, 3], 0.5);
        let dy: Array4<f32> = rng.normal_array([8, 4, 10, 10], 1.0);
        let spec = ConvSpec::new().with_padding(1);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                (
                    conv2d_forward(&x, &w, None, &spec).unwrap(),
                    conv2d_backward(&x, &w, &dy, &spec).unwrap(),
                )
            })
        };
        let (y1, g1) = run(1);
        let (y3, g3) = run(3);
        let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y1), bits(&y3));
        assert_eq!(bits(&g1.input), bits(&g3.input));
        assert_eq!(bits(&g1.weight), bits(&g3.weight));
    }

    #[test]
    fn linear_kernels_match_the_reference_backward_and_errors() {
        let mut rng = SeededRng::new(23);
        let x: Array4<f32> = rng.normal_array([5, 2, 3, 2], 1.0);
        let w: Array2<f32> = rng.normal_array([4, 12], 0.5);
        let b: Array1<f32> = rng.normal_array(4, 0.5);
        let op = Op::Linear(LinearLayer::new(w.clone(), Some(b.clone())).unwrap());
        let p = op_params(&op);
        let x64 = x.mapv(f64::from);
        let y = linear_forward(&x, &w, Some(&b)).unwrap();
        let want = forward(&op, &x64, &p, Mode::Eval).unwrap().output;
        assert!(rel(&want.into_dyn(), &y.clone().into_dyn()) < 1e-5);
        let dy: Array4<f32> = rng.normal_array(y.raw_dim(), 1.0);
        let g = backward(&op, &x64, &dy.mapv(f64::from), &p, Mode::Eval).unwrap();
        let (dx, dw, db) = linear_backward(&x, &w, &dy).unwrap();
        assert!(rel(&g.input.into_dyn(), &dx.into_dyn()) < 1e-4);
        assert!(rel(&g.params["weight"], &dw.into_dyn()) < 1e-4);
        assert!(rel(&g.params["bias"], &db.into_dyn()) < 1e-4);
        // One input feature, one sample, one output: `dot`'s operands are
        // then column-major too, and so may be its product.
        for (xs, ws) in [
            ([3, 1, 1, 1], [4, 1]),
            ([1, 12, 1, 1], [4, 12]),
            ([3, 12, 1, 1], [1, 12]),
        ] {
            let x1: Array4<f32> = rng.normal_array(xs, 1.0);
            let w1: Array2<f32> = rng.normal_array(ws, 0.5);
            let op1 = Op::Linear(LinearLayer::new(w1.clone(), None).unwrap());
            let want = forward(&op1, &x1.mapv(f64::from), &op_params(&op1), Mode::Eval);
            let y1 = linear_forward(&x1, &w1, None).unwrap();
            assert!(rel(&want.unwrap().output.into_dyn(), &y1.clone().into_dyn()) < 1e-5);
            let dy1: Array4<f32> = rng.normal_array(y1.raw_dim(), 1.0);
            let g1 = backward(
                &op1,
                &x1.mapv(f64::from),
                &dy1.mapv(f64::from),
                &op_params(&op1),
                Mode::Eval,
            );
            let (dx1, _, _) = linear_backward(&x1, &w1, &dy1).unwrap();
            assert!(rel(&g1.unwrap().input.into_dyn(), &dx1.into_dyn()) < 1e-5);
        }
        assert!(linear_forward(&x, &w.t().to_owned(), None).is_err());
        assert!(linear_backward(&x, &w, &x).is_err());
        let spec = ConvSpec::new();
        assert!(conv2d_forward(&x, &rng.normal_array([2, 3, 1, 1], 1.0), None, &spec).is_err());
        assert!(conv2d_forward(&x, &rng.normal_array([2, 2, 5, 1], 1.0), None, &spec).is_err());
        let w4: Array4<f32> = rng.normal_array([2, 2, 1, 1], 1.0);
        assert!(conv2d_backward(&x, &w4, &x, &spec).is_ok());
        let wrong: Array4<f32> = rng.normal_array([5, 3, 3, 2], 1.0);
        assert!(conv2d_backward(&x, &w4, &wrong, &spec).is_err());
    }
}

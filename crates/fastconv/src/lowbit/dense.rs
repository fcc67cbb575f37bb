//! The f32 dense baselines the low-bit and sparse kernels are measured
//! against, and the im2col they share: convolution as `W [T, C·kh·kw] ×
//! im2col(x) [C·kh·kw, P]` (survey Section 6.1, equation (13) `V̂ = Ŵ Û`: the GEMM form of
//! equation (1)) with the
//! `matrixmultiply` sgemm, and a SIMD f32 matrix–vector product.

use hasten_core::{ConvSpec, Error, Result};
use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::{check_isa, Isa, Needs};
use crate::conv::ConvGeometry;
use crate::elementwise::Clamp;

/// Runs the slice form `run(x, dims, y)` of a convolution kernel with
/// `out_channels` filters on the NCHW array `x` (the geometry checked by
/// `geometry` first) and returns the output array.
pub(crate) fn conv_on_array(
    x: &Array4<f32>,
    out_channels: usize,
    geometry: impl FnOnce([usize; 4]) -> Result<ConvGeometry>,
    run: impl FnOnce(&[f32], [usize; 4], &mut [f32]) -> Result<()>,
) -> Result<Array4<f32>> {
    let xs = x.shape();
    let dims = [xs[0], xs[1], xs[2], xs[3]];
    let g = geometry(dims)?;
    let x = x.as_standard_layout();
    let mut y = Array4::<f32>::zeros((g.batch, out_channels, g.out_hw.0, g.out_hw.1));
    run(
        x.as_slice().expect("standard layout"),
        dims,
        y.as_slice_mut().expect("fresh array"),
    )?;
    Ok(y)
}

/// The per-sample input and output lengths of a convolution kernel of
/// geometry `g` with `out_channels` filters, after checking that `x_len` and
/// `y_len` hold exactly `g.batch` of each (typed errors naming `kernel`,
/// also when a length overflows).
pub(crate) fn checked_io_lens(
    kernel: &str,
    g: &ConvGeometry,
    out_channels: usize,
    x_len: usize,
    y_len: usize,
) -> Result<(usize, usize)> {
    let overflow = || Error::shape(kernel, "a length that fits in usize", "an overflow");
    let sample = (g.in_channels().checked_mul(g.in_hw.0))
        .and_then(|v| v.checked_mul(g.in_hw.1))
        .ok_or_else(overflow)?;
    let out_sample = out_channels
        .checked_mul(g.out_area())
        .ok_or_else(overflow)?;
    for (what, per, len) in [("input", sample, x_len), ("output", out_sample, y_len)] {
        let want = g.batch.checked_mul(per).ok_or_else(overflow)?;
        if len != want {
            return Err(Error::shape(format!("{kernel} {what}"), want, len));
        }
    }
    Ok((sample, out_sample))
}

/// Writes the im2col rows `rows` (row id `(c·kh + i)·kw + j`) of one CHW
/// sample into `cols` (`[rows.len()][out_h·out_w]`), zero for padding.
pub(crate) fn im2col_rows(sample: &[f32], g: &ConvGeometry, rows: &[u32], cols: &mut [f32]) {
    let (kh, kw) = g.kernel;
    let (h, w) = g.in_hw;
    let (oh, ow) = g.out_hw;
    let (pt, pl) = g.pad_top_left;
    cols.par_chunks_mut(oh * ow)
        .zip(rows)
        .for_each(|(dst, &r)| {
            let r = r as usize;
            let (c, i, j) = (r / (kh * kw), (r / kw) % kh, r % kw);
            let plane = &sample[c * h * w..(c + 1) * h * w];
            for y in 0..oh {
                let iy = (y * g.stride.0 + i * g.dilation.0) as isize - pt as isize;
                let out = &mut dst[y * ow..(y + 1) * ow];
                if iy < 0 || iy >= h as isize {
                    out.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                // Columns x with 0 ≤ x·σ + j·δ − p_l < w read the input; the rest is padding.
                let (sw, off) = (
                    g.stride.1 as isize,
                    (j * g.dilation.1) as isize - pl as isize,
                );
                let x_lo = if off < 0 {
                    ((-off + sw - 1) / sw) as usize
                } else {
                    0
                }
                .min(ow);
                let x_hi = if (w as isize) > off {
                    ((w as isize - off + sw - 1) / sw) as usize
                } else {
                    0
                }
                .clamp(x_lo, ow);
                out[..x_lo].fill(0.0);
                out[x_hi..].fill(0.0);
                if x_hi > x_lo {
                    let start = (x_lo as isize * sw + off) as usize;
                    if sw == 1 {
                        out[x_lo..x_hi].copy_from_slice(&src[start..start + (x_hi - x_lo)]);
                    } else {
                        for (k, o) in out[x_lo..x_hi].iter_mut().enumerate() {
                            *o = src[start + k * sw as usize];
                        }
                    }
                }
            }
        });
}

/// `c[m×n] = a[m×k] · b[k×n]` (row-major, overwriting `c`) with the
/// `matrixmultiply` sgemm.
pub(crate) fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the slices hold m·k, k·n and m·n row-major elements (asserted);
    // strides describe exactly those layouts.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// The dense f32 baseline: im2col + sgemm, `groups = 1`, no bias.
pub fn dense_conv(
    weights: ArrayView4<'_, f32>,
    x: &Array4<f32>,
    spec: &ConvSpec,
) -> Result<Array4<f32>> {
    let ws = weights.shape();
    let [t_n, c_n, kh, kw] = [ws[0], ws[1], ws[2], ws[3]];
    let xs = x.shape();
    if xs[1] != c_n {
        return Err(Error::shape("dense_conv input channels", c_n, xs[1]));
    }
    let g = ConvGeometry::batched([xs[0], xs[1], xs[2], xs[3]], t_n, (kh, kw), spec)?;
    let k = c_n * kh * kw;
    let p = g.out_area();
    let w = weights.as_standard_layout();
    let w = w.as_slice().expect("standard layout");
    let x = x.as_standard_layout();
    let xs_all = x.as_slice().expect("standard layout");
    let rows: Vec<u32> = (0..k as u32).collect();
    let mut cols = vec![0f32; k * p];
    let mut y = Array4::<f32>::zeros((g.batch, t_n, g.out_hw.0, g.out_hw.1));
    let sample = c_n * g.in_hw.0 * g.in_hw.1;
    for (n, mut yn) in y.outer_iter_mut().enumerate() {
        im2col_rows(&xs_all[n * sample..(n + 1) * sample], &g, &rows, &mut cols);
        sgemm(t_n, k, p, w, &cols, yn.as_slice_mut().expect("fresh array"));
    }
    Ok(y)
}

/// Dense f32 `y = W x` for a row-major `[out][in]` matrix at batch 1: the
/// plan's skinny fully connected kernel (`crate::linear::gemv`), rows split
/// across threads.
pub fn dense_gemv(w: &[f32], out: usize, x: &[f32], isa: Option<Isa>) -> Result<Vec<f32>> {
    let isa = check_isa(isa, Needs::Float, "dense_gemv")?;
    if out == 0 || x.is_empty() || w.len() != out * x.len() {
        return Err(Error::shape(
            "dense_gemv matrix",
            format!("[{out}, {}]", x.len()),
            w.len(),
        ));
    }
    let i_n = x.len();
    let mut y = vec![0f32; out];
    let g = crate::linear::gemv::Gemv {
        w,
        ldw: i_n,
        x,
        ldx: i_n,
        k: i_n,
        rows: out,
        batch: 1,
        bias: None,
        clamp: Clamp::NONE,
    };
    crate::linear::gemv::gemv(isa, &g, &mut y, out);
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_core::{ConvLayer, Operator, Padding, SeededRng};

    /// Exact lengths pass with the per-sample sizes; a sample too few or
    /// too many on either side, or a length past `usize`, is a typed error.
    #[test]
    fn io_lengths_are_checked_exactly() {
        let g = ConvGeometry::batched([2, 3, 5, 4], 7, (3, 3), &ConvSpec::new().with_padding(1))
            .unwrap();
        let (x, y) = (2 * 3 * 5 * 4, 2 * 7 * 5 * 4);
        assert_eq!(checked_io_lens("k", &g, 7, x, y).unwrap(), (60, 140));
        for (xl, yl) in [(x - 1, y), (x + 60, y), (x, y - 1), (x, y + 140), (0, y)] {
            assert!(matches!(
                checked_io_lens("k", &g, 7, xl, yl),
                Err(Error::ShapeMismatch { .. })
            ));
        }
        assert!(checked_io_lens("k", &g, usize::MAX, x, y).is_err());
    }

    #[test]
    fn dense_conv_matches_the_reference() {
        let mut rng = SeededRng::new(1);
        for (s, p, d) in [
            (1, 1, 1),
            (2, 0, 1),
            (1, 2, 2),
            (2, 3, 2),
            (3, 4, 3),
            (1, 5, 1),
        ] {
            let spec = ConvSpec::new()
                .with_stride(s)
                .with_dilation(d)
                .with_padding_sides(Padding {
                    top: p,
                    bottom: 0,
                    left: p,
                    right: 1,
                });
            let w = rng.normal_array((5, 3, 3, 3), 1.0);
            let x = rng.normal_array((2, 3, 7, 6), 1.0);
            let truth = ConvLayer::from_array(w.clone(), spec)
                .unwrap()
                .reference_forward(&x)
                .unwrap();
            let y = dense_conv(w.view(), &x, &spec).unwrap();
            for (a, b) in y.iter().zip(truth.iter()) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        assert!(dense_conv(
            Array4::zeros((1, 2, 1, 1)).view(),
            &Array4::zeros((1, 3, 2, 2)),
            &ConvSpec::new()
        )
        .is_err());
    }

    #[test]
    fn gemv_matches_naive() {
        let mut rng = SeededRng::new(2);
        let w: Vec<f32> = (0..37 * 101).map(|_| rng.normal() as f32).collect();
        let x: Vec<f32> = (0..101).map(|_| rng.normal() as f32).collect();
        for isa in Isa::supported_for(Needs::Float) {
            let y = dense_gemv(&w, 37, &x, Some(isa)).unwrap();
            for o in 0..37 {
                let want: f64 = (0..101)
                    .map(|c| f64::from(w[o * 101 + c]) * f64::from(x[c]))
                    .sum();
                assert!((f64::from(y[o]) - want).abs() < 1e-4);
            }
        }
        assert!(dense_gemv(&w, 36, &x, None).is_err());
    }
}

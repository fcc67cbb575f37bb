//! Sparse (pruned) layers in compressed sparse row form — survey Section 6.1:
//! pruning individual weights (Han et al. \[72\]), where `Ŵ` of equation (13)
//! `V̂ = Ŵ Û` is stored sparse.
//!
//! - [`CsrLinear`]: `y = W x` with `W` in CSR; batch 1 gathers `x[col]` 16
//!   at a time (`vgatherdps`) and FMAs them with the stored values.
//! - [`CsrConv`]: *direct* sparse convolution (Park et al.'s "direct sparse
//!   convolution"), no im2col: each filter is a CSR row over `(c, i, j)`; for
//!   an output row, every non-zero `v` at `(c, i, j)` adds `v ·` a shifted row
//!   of the padded input to up to 64 outputs held in 4 AVX-512 registers. Work
//!   is proportional to the number of non-zeros, so the speed-up over the dense
//!   im2col + GEMM approaches `1 / density` once the density is low enough to
//!   pay for the lost GEMM efficiency — the crossover is measured in the
//!   `lowbit` bench and report.

use hasten_core::op::Csr;
use hasten_core::{ConvSpec, Error, Result};
use ndarray::{Array4, ArrayView2, ArrayView4};
use rayon::prelude::*;

use super::{check_isa, Isa, Needs};
use crate::conv::ConvGeometry;

/// The `(columns, values)` slices of row `r` of `m`.
fn row_slices(m: &Csr, r: usize) -> (&[u32], &[f32]) {
    let (a, b) = (m.row_ptr()[r] as usize, m.row_ptr()[r + 1] as usize);
    (&m.col_idx()[a..b], &m.values()[a..b])
}

/// A pruned fully connected layer.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrLinear {
    matrix: Csr,
    bias: Option<Vec<f32>>,
}

impl CsrLinear {
    /// `matrix` is `[out, in]`.
    pub fn new(matrix: Csr, bias: Option<Vec<f32>>) -> Result<Self> {
        if let Some(b) = &bias {
            if b.len() != matrix.rows() {
                return Err(Error::shape("CsrLinear bias", matrix.rows(), b.len()));
            }
            hasten_core::error::ensure_finite("CsrLinear bias", b.iter())?;
        }
        Ok(CsrLinear { matrix, bias })
    }

    /// The weights.
    pub fn matrix(&self) -> &Csr {
        &self.matrix
    }

    /// `[batch, in]` → `[batch, out]`. Every ISA runs the same 4-way unrolled
    /// scalar row kernel: `vgatherdps` of `x[col]` measured 4× slower than
    /// indexed scalar loads at density 0.25 on a 4096 × 4096 layer (the
    /// indices and values stream from memory either way); `isa` is validated
    /// for API symmetry.
    pub fn forward(&self, x: &[f32], batch: usize, isa: Option<Isa>) -> Result<Vec<f32>> {
        check_isa(isa, Needs::Float, "CsrLinear")?;
        let mut y = vec![0f32; batch * self.matrix.rows()];
        self.forward_into(x, batch, &mut y)?;
        Ok(y)
    }

    /// As [`CsrLinear::forward`], into `y` (`[batch, out]`), allocating nothing.
    pub(crate) fn forward_into(&self, x: &[f32], batch: usize, y: &mut [f32]) -> Result<()> {
        let (o_n, i_n) = (self.matrix.rows(), self.matrix.cols());
        if batch == 0 || x.len() != batch * i_n {
            return Err(Error::shape(
                "CsrLinear input [batch, in]",
                format!("[{batch} >= 1, {i_n}]"),
                x.len(),
            ));
        }
        if y.len() != batch * o_n {
            return Err(Error::shape(
                "CsrLinear output [batch, out]",
                batch * o_n,
                y.len(),
            ));
        }
        for (b, yb) in y.chunks_mut(o_n).enumerate() {
            let xb = &x[b * i_n..(b + 1) * i_n];
            yb.par_iter_mut().enumerate().for_each(|(o, v)| {
                let (cols, vals) = row_slices(&self.matrix, o);
                let s = sparse_dot(cols, vals, xb);
                *v = s + self.bias.as_ref().map_or(0.0, |bias| bias[o]);
            });
        }
        Ok(())
    }
}

/// `Σ_e vals[e] · x[cols[e]]` with four independent accumulators.
fn sparse_dot(cols: &[u32], vals: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    let (c4, v4) = (cols.chunks_exact(4), vals.chunks_exact(4));
    let (cr, vr) = (c4.remainder(), v4.remainder());
    for (c, v) in c4.zip(v4) {
        for l in 0..4 {
            acc[l] += v[l] * x[c[l] as usize];
        }
    }
    let tail: f32 = cr.iter().zip(vr).map(|(&c, &v)| v * x[c as usize]).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// A pruned convolution executed directly from CSR filters.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrConv {
    /// `[T, C·kh·kw]`, column `(c·kh + i)·kw + j`.
    matrix: Csr,
    in_channels: usize,
    kernel: (usize, usize),
    spec: ConvSpec,
    bias: Option<Vec<f32>>,
}

impl CsrConv {
    /// Keeps the non-zeros of OIHW `weights` (`groups = 1`).
    pub fn from_dense(
        weights: ArrayView4<'_, f32>,
        bias: Option<Vec<f32>>,
        spec: ConvSpec,
    ) -> Result<Self> {
        let s = weights.shape();
        hasten_core::error::ensure_nonempty("CsrConv weights (OIHW)", s)?;
        let w = weights.as_standard_layout();
        let rows = ArrayView2::from_shape(
            (s[0], s[1] * s[2] * s[3]),
            w.as_slice().expect("standard layout"),
        )
        .expect("an OIHW array's filter matrix has its element count");
        let matrix = Csr::from_dense(rows)?;
        Self::from_csr(matrix, s[1], (s[2], s[3]), spec, bias)
    }

    /// Filters already in CSR form: `[T, C·kh·kw]`, column `(c·kh + i)·kw + j`.
    pub fn from_csr(
        matrix: Csr,
        in_channels: usize,
        kernel: (usize, usize),
        spec: ConvSpec,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        spec.validate()?;
        if spec.groups != 1 {
            return Err(Error::unsupported(
                "CsrConv",
                format!("groups = {}", spec.groups),
            ));
        }
        if matrix.cols() != in_channels * kernel.0 * kernel.1 {
            return Err(Error::shape(
                "CsrConv filter matrix columns",
                in_channels * kernel.0 * kernel.1,
                matrix.cols(),
            ));
        }
        if let Some(b) = &bias {
            if b.len() != matrix.rows() {
                return Err(Error::shape("CsrConv bias", matrix.rows(), b.len()));
            }
            hasten_core::error::ensure_finite("CsrConv bias", b.iter())?;
        }
        Ok(CsrConv {
            matrix,
            in_channels,
            kernel,
            spec,
            bias,
        })
    }

    /// The filters as a `[T, C·kh·kw]` CSR matrix.
    pub fn matrix(&self) -> &Csr {
        &self.matrix
    }

    /// Direct sparse convolution of an NCHW batch.
    pub fn forward(&self, x: &Array4<f32>, isa: Option<Isa>) -> Result<Array4<f32>> {
        let isa = check_isa(isa, Needs::Float, "CsrConv")?;
        let xs = x.shape();
        if xs[1] != self.in_channels {
            return Err(Error::shape(
                "CsrConv input channels",
                self.in_channels,
                xs[1],
            ));
        }
        let g = ConvGeometry::batched(
            [xs[0], xs[1], xs[2], xs[3]],
            self.matrix.rows(),
            self.kernel,
            &self.spec,
        )?;
        let sample_len = g.in_channels() * g.padded_hw.0 * g.padded_hw.1;
        if sample_len > u32::MAX as usize {
            return Err(Error::param(
                "CsrConv padded sample size",
                sample_len,
                "< 2^32 values",
            ));
        }
        let padded = pad_input(x, &g);
        let (hp, wp) = g.padded_hw;
        let (kh, kw) = g.kernel;
        // Offset of each non-zero's tap inside one padded sample.
        let offsets: Vec<u32> = self
            .matrix
            .col_idx()
            .iter()
            .map(|&col| {
                let col = col as usize;
                let (c, i, j) = (col / (kh * kw), (col / kw) % kh, col % kw);
                (c * hp * wp + i * g.dilation.0 * wp + j * g.dilation.1) as u32
            })
            .collect();
        let t_n = self.matrix.rows();
        let (oh, ow) = g.out_hw;
        let sample = g.in_channels() * hp * wp;
        let mut y = Array4::<f32>::zeros((g.batch, t_n, oh, ow));
        y.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(nt, plane)| {
                let (n, t) = (nt / t_n, nt % t_n);
                let (a, b) = (
                    self.matrix.row_ptr()[t] as usize,
                    self.matrix.row_ptr()[t + 1] as usize,
                );
                let (offs, vals) = (&offsets[a..b], &self.matrix.values()[a..b]);
                let img = &padded[n * sample..(n + 1) * sample];
                let bias = self.bias.as_ref().map_or(0.0, |bv| bv[t]);
                for yy in 0..oh {
                    let row = &mut plane[yy * ow..(yy + 1) * ow];
                    let base = yy * g.stride.0 * wp;
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: isa checked (avx512f); for every non-zero,
                        // base + off + (ow − 1)·1 < img.len() (window inside the padded plane).
                        Isa::Avx512 if g.stride.1 == 1 => unsafe {
                            x86::sparse_row_avx512(img, base, offs, vals, bias, row)
                        },
                        _ => {
                            row.fill(bias);
                            for (&off, &v) in offs.iter().zip(vals) {
                                let src = &img[base + off as usize..];
                                for (xx, o) in row.iter_mut().enumerate() {
                                    *o += v * src[xx * g.stride.1];
                                }
                            }
                        }
                    }
                }
            });
        Ok(y)
    }
}

/// NCHW → zero-padded NCHW (`[n][c][hp][wp]`).
fn pad_input(x: &Array4<f32>, g: &ConvGeometry) -> Vec<f32> {
    let (hp, wp) = g.padded_hw;
    let (h, w) = g.in_hw;
    let (pt, pl) = g.pad_top_left;
    let mut out = vec![0f32; g.batch * g.in_channels() * hp * wp];
    out.par_chunks_mut(hp * wp)
        .enumerate()
        .for_each(|(nc, dst)| {
            let (n, c) = (nc / g.in_channels(), nc % g.in_channels());
            for y in 0..h {
                for xx in 0..w {
                    dst[(y + pt) * wp + xx + pl] = x[[n, c, y, xx]];
                }
            }
        });
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One output row (stride 1) of one filter: up to 64 outputs per register
    /// block, one broadcast FMA per non-zero and register.
    ///
    /// # Safety
    /// AVX-512F; `base + offs[e] + row.len() ≤ img.len()` for every `e`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sparse_row_avx512(
        img: &[f32],
        base: usize,
        offs: &[u32],
        vals: &[f32],
        bias: f32,
        row: &mut [f32],
    ) {
        let ow = row.len();
        let mut x0 = 0;
        while x0 < ow {
            // Only the registers that hold outputs do work (1..=4 of them).
            // SAFETY: forwarded contract.
            unsafe {
                match (ow - x0).div_ceil(16).min(4) {
                    1 => block::<1>(img, base, offs, vals, bias, row, x0),
                    2 => block::<2>(img, base, offs, vals, bias, row, x0),
                    3 => block::<3>(img, base, offs, vals, bias, row, x0),
                    _ => block::<4>(img, base, offs, vals, bias, row, x0),
                }
            }
            x0 += 64;
        }
    }

    /// Outputs `x0 .. x0 + 16·R` (masked at the row end) of one row.
    ///
    /// # Safety
    /// As [`sparse_row_avx512`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const R: usize>(
        img: &[f32],
        base: usize,
        offs: &[u32],
        vals: &[f32],
        bias: f32,
        row: &mut [f32],
        x0: usize,
    ) {
        let ow = row.len();
        let ip = img.as_ptr();
        let masks: [__mmask16; R] = std::array::from_fn(|r| {
            let start = x0 + 16 * r;
            if ow - start >= 16 {
                0xffff
            } else {
                (1u16 << (ow - start)) - 1
            }
        });
        let mut acc = [_mm512_set1_ps(bias); R];
        for (&off, &v) in offs.iter().zip(vals) {
            let vv = _mm512_set1_ps(v);
            let src = base + off as usize + x0;
            for r in 0..R {
                // SAFETY: active lanes are < ow − x0 − 16r, inside the padded row.
                let xv = unsafe { _mm512_maskz_loadu_ps(masks[r], ip.add(src + 16 * r)) };
                acc[r] = _mm512_fmadd_ps(vv, xv, acc[r]);
            }
        }
        for r in 0..R {
            // SAFETY: masked store inside `row`.
            unsafe { _mm512_mask_storeu_ps(row.as_mut_ptr().add(x0 + 16 * r), masks[r], acc[r]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowbit::available_isas;
    use crate::lowbit::binary_gemm::tests::conv_case;
    use hasten_core::{ConvLayer, Operator, SeededRng};
    use proptest::prelude::*;

    fn sparsify(rng: &mut SeededRng, a: Array4<f32>, density: f64) -> Array4<f32> {
        a.mapv(|v| if rng.uniform() < density { v } else { 0.0 })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn conv_matches_reference((n, c, t, k, h, w, spec, seed) in conv_case(), density in 0.0f64..1.0) {
            prop_assume!(spec.output_hw(h, w, k, k).is_ok());
            let mut rng = SeededRng::new(seed);
            let x = rng.normal_array((n, c, h, w), 1.0);
            let wt = rng.normal_array((t, c, k, k), 1.0);
            let wt = sparsify(&mut rng, wt, density);
            let bias: Vec<f32> = (0..t).map(|v| v as f32 * 0.1).collect();
            let conv = CsrConv::from_dense(wt.view(), Some(bias.clone()), spec).unwrap();
            let layer = ConvLayer::new(hasten_core::Conv4d::new(wt).unwrap(), Some(ndarray::Array1::from(bias.clone())), spec).unwrap();
            let truth = layer.reference_forward(&x).unwrap();
            // Higham's bound for a sum of n = C·k·k products and the bias in
            // f32, any order: |error| ≤ γ_{n+1}·Σ|x·w| + |bias|·u, u = 2⁻²⁴,
            // plus one rounding of the reference to f32. Σ|x·w| per output is
            // the reference forward of |w| on |x| (one more u for its own
            // rounding: n + 2 terms).
            let abs_layer = ConvLayer::new(hasten_core::Conv4d::new(layer.weight().array().mapv(f32::abs)).unwrap(), None, spec).unwrap();
            let abs_sum = abs_layer.reference_forward(&x.mapv(f32::abs)).unwrap();
            let u = f64::from(f32::EPSILON) / 2.0;
            let terms = (c * k * k + 2) as f64;
            let gamma = terms * u / (1.0 - terms * u);
            for isa in available_isas(Needs::Float) {
                let y = conv.forward(&x, Some(isa)).unwrap();
                for (((a, b), s), (o, _)) in y.iter().zip(truth.iter()).zip(abs_sum.iter()).zip(truth.indexed_iter()) {
                    let bias = f64::from(bias[o.1]).abs();
                    let bound = gamma * (f64::from(*s) + bias) + u * f64::from(b.abs()) + f64::from(f32::MIN_POSITIVE);
                    prop_assert!(f64::from((a - b).abs()) <= bound, "{:?} {} vs {} (bound {})", isa, a, b, bound);
                }
            }
        }

        #[test]
        fn linear_matches_dense(o in 1usize..60, i in 1usize..120, batch in 1usize..3, density in 0.0f64..1.0, seed in any::<u64>()) {
            let mut rng = SeededRng::new(seed);
            let w: Vec<f32> = (0..o * i).map(|_| if rng.uniform() < density { rng.normal() as f32 } else { 0.0 }).collect();
            let x: Vec<f32> = (0..batch * i).map(|_| rng.normal() as f32).collect();
            let m = Csr::from_dense(ArrayView2::from_shape((o, i), &w).unwrap()).unwrap();
            prop_assert_eq!(m.nnz(), w.iter().filter(|v| **v != 0.0).count());
            let layer = CsrLinear::new(m, None).unwrap();
            for isa in available_isas(Needs::Float) {
                let y = layer.forward(&x, batch, Some(isa)).unwrap();
                for b in 0..batch { for r in 0..o {
                    let want: f64 = (0..i).map(|c| f64::from(w[r * i + c]) * f64::from(x[b * i + c])).sum();
                    prop_assert!((f64::from(y[b * o + r]) - want).abs() < 1e-4 * (1.0 + i as f64));
                }}
            }
        }
    }
}

#[cfg(test)]
mod wide_tests {
    use super::*;
    use hasten_core::{ConvLayer, Operator, Padding, SeededRng};

    #[test]
    fn rows_wider_than_one_register_block() {
        // 20, 40, 70 and 130 output columns: 2, 3 and 4 registers per block, masked tails.
        let mut rng = SeededRng::new(5);
        for w in [20, 40, 70, 130] {
            let spec = ConvSpec::new().with_padding_sides(Padding::symmetric(1, 1));
            let x = rng.normal_array((1, 3, 3, w), 1.0);
            let wt = rng
                .normal_array((4, 3, 3, 3), 1.0)
                .mapv(|v: f32| if v > 0.3 { v } else { 0.0 });
            let truth = ConvLayer::from_array(wt.clone(), spec)
                .unwrap()
                .reference_forward(&x)
                .unwrap();
            let conv = CsrConv::from_dense(wt.view(), None, spec).unwrap();
            for isa in crate::lowbit::available_isas(Needs::Float) {
                let y = conv.forward(&x, Some(isa)).unwrap();
                for (a, b) in y.iter().zip(truth.iter()) {
                    assert!((a - b).abs() < 1e-4, "{isa:?} {a} vs {b}");
                }
            }
        }
    }
}

//! Sparse (pruned) layers in compressed sparse row form — survey Section 6.1:
//! pruning individual weights (Han et al. \[72\]), where `Ŵ` of equation (13)
//! `V̂ = Ŵ Û` is stored sparse.
//!
//! - [`CsrLinear`]: `y = W x` with `W` in CSR; batch 1 gathers `x[col]` 16
//!   at a time (`vgatherdps`) and FMAs them with the stored values.
//! - [`CsrConv`]: sparse × dense GEMM over im2col (equation (13) with `Ŵ`
//!   sparse and `Û` dense): only the im2col rows some filter uses are built,
//!   then for every non-zero `w(t, k)` the kernel adds `w · col[k, p..p+64]`
//!   to a tile of 64 output pixels held in registers (4 AVX-512 / 8 AVX2
//!   vectors), parallel over (pixel tile × filter chunk). Work is
//!   proportional to the number of non-zeros; the crossover with the dense
//!   GEMM is measured in the `lowbit_report` example.

use hasten_core::op::Csr;
use hasten_core::{ConvSpec, Error, Result};
use ndarray::{Array4, ArrayView2, ArrayView4};
use rayon::prelude::*;

use super::dense::{checked_io_lens, conv_on_array, im2col_rows};
use super::layout::DisjointWriter;
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

/// A pruned convolution run as a sparse × dense product over im2col tiles.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrConv {
    /// `[T, C·kh·kw]`, column `(c·kh + i)·kw + j`.
    matrix: Csr,
    in_channels: usize,
    kernel: (usize, usize),
    spec: ConvSpec,
    bias: Option<Vec<f32>>,
    /// The im2col rows some filter uses (columns of `matrix` with a non-zero).
    used_rows: Vec<u32>,
    /// Per non-zero, the index of its column in `used_rows`.
    compact_col: Vec<u32>,
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
        // All-zero columns of the filter matrix need no im2col row.
        let mut slot = vec![u32::MAX; matrix.cols()];
        for &c in matrix.col_idx() {
            slot[c as usize] = 0;
        }
        let mut used_rows = Vec::new();
        for (c, s) in slot.iter_mut().enumerate() {
            if *s == 0 {
                *s = used_rows.len() as u32;
                used_rows.push(c as u32);
            }
        }
        let compact_col = matrix.col_idx().iter().map(|&c| slot[c as usize]).collect();
        Ok(CsrConv {
            matrix,
            in_channels,
            kernel,
            spec,
            bias,
            used_rows,
            compact_col,
        })
    }

    /// The filters as a `[T, C·kh·kw]` CSR matrix.
    pub fn matrix(&self) -> &Csr {
        &self.matrix
    }

    /// Sparse convolution of an NCHW batch: per sample, the im2col rows that
    /// some filter uses, then `y[t, p] = b[t] + Σ_{(k, w) ∈ row t} w ·
    /// col[k, p]`, vectorised over output pixels and parallel over tiles of
    /// (pixels × filters).
    pub fn forward(&self, x: &Array4<f32>, isa: Option<Isa>) -> Result<Array4<f32>> {
        conv_on_array(
            x,
            self.matrix.rows(),
            |d| self.geometry(d),
            |x, dims, y| self.forward_into(x, dims, isa, y, &mut Vec::new()),
        )
    }

    /// The geometry of an NCHW input of `dims`.
    fn geometry(&self, dims: [usize; 4]) -> Result<ConvGeometry> {
        if dims[1] != self.in_channels {
            return Err(Error::shape(
                "CsrConv input channels",
                self.in_channels,
                dims[1],
            ));
        }
        ConvGeometry::batched(dims, self.matrix.rows(), self.kernel, &self.spec)
    }

    /// As [`CsrConv::forward`], from the row-major NCHW batch `x` of `dims`
    /// into the row-major output `y`, with `cols` as the im2col scratch:
    /// allocates nothing once `cols` has grown to this layer's size.
    pub(crate) fn forward_into(
        &self,
        x: &[f32],
        dims: [usize; 4],
        isa: Option<Isa>,
        y: &mut [f32],
        cols: &mut Vec<f32>,
    ) -> Result<()> {
        let isa = check_isa(isa, Needs::Float, "CsrConv")?;
        let g = self.geometry(dims)?;
        let p = g.out_area();
        let (sample, out_sample) =
            checked_io_lens("CsrConv", &g, self.matrix.rows(), x.len(), y.len())?;
        let used = self.used_rows.len();
        if cols.len() < used * p {
            cols.resize(used * p, 0.0);
        }
        let cols = &mut cols[..used * p];
        for (xn, yn) in x.chunks_exact(sample).zip(y.chunks_exact_mut(out_sample)) {
            im2col_rows(xn, &g, &self.used_rows, cols);
            self.sparse_times_cols(isa, cols, p, yn);
        }
        Ok(())
    }

    /// `y[t][p] = b[t] + Σ w · cols[k][p]` over tiles of [`TILE`] pixels ×
    /// [`FILTER_CHUNK`] filters.
    fn sparse_times_cols(&self, isa: Isa, cols: &[f32], p: usize, y: &mut [f32]) {
        let t_n = self.matrix.rows();
        // Narrower tiles when the tile's im2col rows would overflow L2.
        let tile = if self.used_rows.len() * TILE * 4 <= 640 * 1024 {
            TILE
        } else {
            TILE / 2
        };
        let p_tiles = p.div_ceil(tile);
        let t_chunks = t_n.div_ceil(FILTER_CHUNK);
        let writer = DisjointWriter::new(y);
        (0..p_tiles * t_chunks).into_par_iter().for_each(|task| {
            let (pt, tc) = (task % p_tiles, task / p_tiles);
            let p0 = pt * tile;
            let w = tile.min(p - p0);
            let mut buf = [0f32; TILE];
            for t in tc * FILTER_CHUNK..((tc + 1) * FILTER_CHUNK).min(t_n) {
                let (a, b) = (
                    self.matrix.row_ptr()[t] as usize,
                    self.matrix.row_ptr()[t + 1] as usize,
                );
                let (ks, vals) = (&self.compact_col[a..b], &self.matrix.values()[a..b]);
                let bias = self.bias.as_ref().map_or(0.0, |bv| bv[t]);
                spmm_tile(isa, cols, p, p0, ks, vals, bias, &mut buf[..w]);
                // SAFETY: (t, p0..p0 + w) belongs to this task alone.
                unsafe { writer.write_slice(t * p + p0, &buf[..w]) };
            }
        });
    }
}

/// Output pixels per tile (4 AVX-512 / 8 AVX2 registers).
const TILE: usize = 64;
/// Filters per parallel task.
const FILTER_CHUNK: usize = 16;

/// One tile of one filter: `out[q] = bias + Σ_e vals[e] · cols[ks[e]·p + p0 + q]`.
#[allow(clippy::too_many_arguments)]
fn spmm_tile(
    isa: Isa,
    cols: &[f32],
    p: usize,
    p0: usize,
    ks: &[u32],
    vals: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    let w = out.len();
    // Every row read lies inside `cols`.
    debug_assert!(ks.iter().all(|&k| (k as usize) * p + p0 + w <= cols.len()));
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx512f); every k < used rows, so
        // k·p + p0 + w ≤ cols.len(); w ≤ TILE.
        Isa::Avx512 => unsafe { x86::tile_avx512(cols, p, p0, ks, vals, bias, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa checked (avx2 + fma); same bounds.
        Isa::Avx2 => unsafe { x86::tile_avx2(cols, p, p0, ks, vals, bias, out) },
        _ => {
            out.fill(bias);
            for (&k, &v) in ks.iter().zip(vals) {
                let src = &cols[k as usize * p + p0..][..w];
                for (o, s) in out.iter_mut().zip(src) {
                    *o += v * s;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// AVX-512 tile: `⌈w/16⌉ ≤ 4` registers, two independent accumulator sets
    /// (even / odd non-zeros) to hide the FMA latency, masked tail.
    ///
    /// # Safety
    /// AVX-512F; `ks[e]·p + p0 + out.len() ≤ cols.len()`, `out.len() ≤ 64`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(
        cols: &[f32],
        p: usize,
        p0: usize,
        ks: &[u32],
        vals: &[f32],
        bias: f32,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match out.len().div_ceil(16) {
                0 => {}
                1 => tile512::<1>(cols, p, p0, ks, vals, bias, out),
                2 => tile512::<2>(cols, p, p0, ks, vals, bias, out),
                3 => tile512::<3>(cols, p, p0, ks, vals, bias, out),
                _ => tile512::<4>(cols, p, p0, ks, vals, bias, out),
            }
        }
    }

    /// # Safety
    /// As [`tile_avx512`], with `16·(R − 1) < out.len() ≤ 16·R`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile512<const R: usize>(
        cols: &[f32],
        p: usize,
        p0: usize,
        ks: &[u32],
        vals: &[f32],
        bias: f32,
        out: &mut [f32],
    ) {
        let w = out.len();
        let masks: [__mmask16; R] = std::array::from_fn(|r| {
            let rest = w - 16 * r;
            if rest >= 16 {
                0xffff
            } else {
                (1u16 << rest) - 1
            }
        });
        let cp = cols.as_ptr();
        let mut a0 = [_mm512_set1_ps(bias); R];
        let mut a1 = [_mm512_setzero_ps(); R];
        let pairs = ks.len() / 2;
        for e in 0..pairs {
            let (k0, k1) = (ks[2 * e] as usize, ks[2 * e + 1] as usize);
            let (v0, v1) = (_mm512_set1_ps(vals[2 * e]), _mm512_set1_ps(vals[2 * e + 1]));
            for r in 0..R {
                // SAFETY: active lanes lie inside rows k0 and k1 of the tile.
                unsafe {
                    let x0 = _mm512_maskz_loadu_ps(masks[r], cp.add(k0 * p + p0 + 16 * r));
                    let x1 = _mm512_maskz_loadu_ps(masks[r], cp.add(k1 * p + p0 + 16 * r));
                    a0[r] = _mm512_fmadd_ps(v0, x0, a0[r]);
                    a1[r] = _mm512_fmadd_ps(v1, x1, a1[r]);
                }
            }
        }
        if ks.len() % 2 == 1 {
            let k = ks[ks.len() - 1] as usize;
            let v = _mm512_set1_ps(vals[ks.len() - 1]);
            for r in 0..R {
                // SAFETY: as above.
                unsafe {
                    let x = _mm512_maskz_loadu_ps(masks[r], cp.add(k * p + p0 + 16 * r));
                    a0[r] = _mm512_fmadd_ps(v, x, a0[r]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: masked store inside `out`.
            unsafe {
                _mm512_mask_storeu_ps(
                    out.as_mut_ptr().add(16 * r),
                    masks[r],
                    _mm512_add_ps(a0[r], a1[r]),
                )
            };
        }
    }

    /// AVX2 tile: `⌈w/8⌉ ≤ 8` registers, masked loads at the tail.
    ///
    /// # Safety
    /// AVX2 + FMA; `ks[e]·p + p0 + out.len() ≤ cols.len()`, `out.len() ≤ 64`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(
        cols: &[f32],
        p: usize,
        p0: usize,
        ks: &[u32],
        vals: &[f32],
        bias: f32,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match out.len().div_ceil(8) {
                0 => {}
                1 => tile256::<1>(cols, p, p0, ks, vals, bias, out),
                2 => tile256::<2>(cols, p, p0, ks, vals, bias, out),
                3 => tile256::<3>(cols, p, p0, ks, vals, bias, out),
                4 => tile256::<4>(cols, p, p0, ks, vals, bias, out),
                5 => tile256::<5>(cols, p, p0, ks, vals, bias, out),
                6 => tile256::<6>(cols, p, p0, ks, vals, bias, out),
                7 => tile256::<7>(cols, p, p0, ks, vals, bias, out),
                _ => tile256::<8>(cols, p, p0, ks, vals, bias, out),
            }
        }
    }

    /// # Safety
    /// As [`tile_avx2`], with `8·(R − 1) < out.len() ≤ 8·R`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile256<const R: usize>(
        cols: &[f32],
        p: usize,
        p0: usize,
        ks: &[u32],
        vals: &[f32],
        bias: f32,
        out: &mut [f32],
    ) {
        let w = out.len();
        let tail = w - 8 * (R - 1);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), lane);
        let cp = cols.as_ptr();
        let mut acc = [_mm256_set1_ps(bias); R];
        for (&k, &v) in ks.iter().zip(vals) {
            let src = k as usize * p + p0;
            let vv = _mm256_set1_ps(v);
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: full registers lie inside the row; the last one is
                // masked to the `tail` lanes inside it.
                let x = unsafe {
                    if r + 1 < R {
                        _mm256_loadu_ps(cp.add(src + 8 * r))
                    } else {
                        _mm256_maskload_ps(cp.add(src + 8 * r), mask)
                    }
                };
                *a = _mm256_fmadd_ps(vv, x, *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            // SAFETY: full stores inside `out`, the last one masked.
            unsafe {
                if r + 1 < R {
                    _mm256_storeu_ps(out.as_mut_ptr().add(8 * r), *a);
                } else {
                    _mm256_maskstore_ps(out.as_mut_ptr().add(8 * r), mask, *a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            for isa in Isa::supported_for(Needs::Float) {
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
            for isa in Isa::supported_for(Needs::Float) {
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
    fn empty_rows_and_all_zero_columns() {
        // Filters 1 and 3 are all zero (empty CSR rows: output = bias);
        // input channel 2 and tap (0, 2) of every channel are unused (no
        // im2col row is built for them). 9×9 outputs = 81 pixels: one full
        // 64-pixel tile and a 17-pixel tail (not a multiple of 8 or 16).
        let mut rng = SeededRng::new(11);
        let spec = ConvSpec::new().with_padding_sides(Padding::symmetric(1, 1));
        let x = rng.normal_array((2, 4, 9, 9), 1.0);
        let mut wt = rng.normal_array((5, 4, 3, 3), 1.0);
        for t in 0..5 {
            for c in 0..4 {
                for i in 0..3 {
                    for j in 0..3 {
                        if t == 1 || t == 3 || c == 2 || (i == 0 && j == 2) {
                            wt[[t, c, i, j]] = 0.0;
                        }
                    }
                }
            }
        }
        let bias: Vec<f32> = (0..5).map(|t| t as f32 - 2.0).collect();
        let conv = CsrConv::from_dense(wt.view(), Some(bias.clone()), spec).unwrap();
        assert_eq!(conv.used_rows.len(), 3 * 8);
        let layer = ConvLayer::new(
            hasten_core::Conv4d::new(wt).unwrap(),
            Some(ndarray::Array1::from(bias)),
            spec,
        )
        .unwrap();
        let truth = layer.reference_forward(&x).unwrap();
        for isa in Isa::supported_for(Needs::Float) {
            let y = conv.forward(&x, Some(isa)).unwrap();
            for (a, b) in y.iter().zip(truth.iter()) {
                assert!((a - b).abs() < 1e-4, "{isa:?} {a} vs {b}");
            }
        }
        // All filters zero: no im2col row at all, every output is its bias.
        let zero = CsrConv::from_dense(Array4::zeros((3, 4, 3, 3)).view(), None, spec).unwrap();
        let y = zero.forward(&x, None).unwrap();
        assert!(y.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn deep_filters_use_half_tiles() {
        // C·kh·kw = 2700 im2col rows: the tile narrows to 32 pixels; 10×10 =
        // 100 outputs = three full tiles and a 4-pixel tail.
        let mut rng = SeededRng::new(12);
        let spec = ConvSpec::new().with_padding_sides(Padding::symmetric(1, 1));
        let x = rng.normal_array((1, 300, 10, 10), 1.0);
        let wt = rng
            .normal_array((16, 300, 3, 3), 1.0)
            .mapv(|v: f32| if v.abs() > 1.0 { v } else { 0.0 });
        let truth = ConvLayer::from_array(wt.clone(), spec)
            .unwrap()
            .reference_forward(&x)
            .unwrap();
        let conv = CsrConv::from_dense(wt.view(), None, spec).unwrap();
        assert!(conv.used_rows.len() * TILE * 4 > 640 * 1024);
        for isa in Isa::supported_for(Needs::Float) {
            let y = conv.forward(&x, Some(isa)).unwrap();
            for (a, b) in y.iter().zip(truth.iter()) {
                assert!((a - b).abs() < 1e-3, "{isa:?} {a} vs {b}");
            }
        }
    }

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
            for isa in Isa::supported_for(Needs::Float) {
                let y = conv.forward(&x, Some(isa)).unwrap();
                for (a, b) in y.iter().zip(truth.iter()) {
                    assert!((a - b).abs() < 1e-4, "{isa:?} {a} vs {b}");
                }
            }
        }
    }
}

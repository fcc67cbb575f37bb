//! Group-wise pruned convolution ("group-wise brain damage", Lebedev &
//! Lempitsky \[66\] — survey Section 6.1, equation (13)): the weights are
//! pruned in groups that are whole
//! rows of the im2col matrix — position `(i, j)` of input channel `c`, for all
//! filters of a filter group. The convolution stays a *dense* GEMM, only
//! thinner: im2col builds just the retained rows and the sgemm multiplies the
//! `[filters, retained]` weight block by them, so both the im2col and the GEMM
//! shrink with the density, and the speed-up stays close to `1 / density`.

use hasten_core::{ConvSpec, Error, Result};
use ndarray::{Array4, ArrayView4};

use super::dense::{checked_io_lens, conv_on_array, im2col_rows};
use super::{check_isa, Isa, Needs};
use crate::conv::ConvGeometry;
use crate::matmul::{matmul, Operand};

/// A contiguous range of filters sharing one set of retained im2col rows.
#[derive(Debug, Clone, PartialEq)]
struct FilterGroup {
    first: usize,
    count: usize,
    /// Retained rows `(c·kh + i)·kw + j`, increasing.
    rows: Vec<u32>,
    /// `[count][rows.len()]`.
    weights: Vec<f32>,
}

/// A convolution whose filters keep only some im2col rows per filter group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupwiseGemm {
    out_channels: usize,
    in_channels: usize,
    kernel: (usize, usize),
    spec: ConvSpec,
    groups: Vec<FilterGroup>,
    bias: Option<Vec<f32>>,
}

impl GroupwiseGemm {
    /// Splits OIHW `weights` into groups of `filters_per_group` consecutive
    /// filters (the last may be smaller) and keeps, per group, the im2col rows
    /// with any non-zero weight. `filters_per_group ≥ T` is the paper's
    /// layer-wide pattern.
    pub fn from_dense(
        weights: ArrayView4<'_, f32>,
        bias: Option<Vec<f32>>,
        spec: ConvSpec,
        filters_per_group: usize,
    ) -> Result<Self> {
        spec.validate()?;
        if spec.groups != 1 {
            return Err(Error::unsupported(
                "GroupwiseGemm",
                format!("groups = {}", spec.groups),
            ));
        }
        if filters_per_group == 0 {
            return Err(Error::param("filters_per_group", 0, ">= 1"));
        }
        let s = weights.shape();
        hasten_core::error::ensure_nonempty("GroupwiseGemm weights (OIHW)", s)?;
        hasten_core::error::ensure_finite("GroupwiseGemm weights", weights.iter())?;
        let [t_n, c_n, kh, kw] = [s[0], s[1], s[2], s[3]];
        if let Some(b) = &bias {
            if b.len() != t_n {
                return Err(Error::shape("GroupwiseGemm bias", t_n, b.len()));
            }
            hasten_core::error::ensure_finite("GroupwiseGemm bias", b.iter())?;
        }
        let w = weights.as_standard_layout();
        let w = w.as_slice().expect("standard layout");
        let k = c_n * kh * kw;
        let groups = (0..t_n)
            .step_by(filters_per_group)
            .map(|first| {
                let count = filters_per_group.min(t_n - first);
                let rows: Vec<u32> = (0..k)
                    .filter(|&r| (first..first + count).any(|t| w[t * k + r] != 0.0))
                    .map(|r| r as u32)
                    .collect();
                let weights = (first..first + count)
                    .flat_map(|t| rows.iter().map(move |&r| w[t * k + r as usize]))
                    .collect();
                FilterGroup {
                    first,
                    count,
                    rows,
                    weights,
                }
            })
            .collect();
        Ok(GroupwiseGemm {
            out_channels: t_n,
            in_channels: c_n,
            kernel: (kh, kw),
            spec,
            groups,
            bias,
        })
    }

    /// One layer-wide group (the paper's pattern): `rows` are the kept im2col
    /// rows `(c·kh + i)·kw + j`, strictly increasing, and `weights` the dense
    /// `[out_channels, rows.len()]` block multiplying them.
    pub fn from_rows(
        out_channels: usize,
        in_channels: usize,
        kernel: (usize, usize),
        spec: ConvSpec,
        rows: Vec<u32>,
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        let k = in_channels * kernel.0 * kernel.1;
        hasten_core::error::ensure_nonempty(
            "GroupwiseGemm [T, C, kh, kw]",
            &[out_channels, in_channels, kernel.0, kernel.1],
        )?;
        if rows.windows(2).any(|w| w[0] >= w[1]) || rows.last().is_some_and(|&r| r as usize >= k) {
            return Err(Error::param(
                "group-wise kept rows",
                format!("{rows:?}"),
                format!("strictly increasing, < {k}"),
            ));
        }
        if weights.len() != out_channels * rows.len() {
            return Err(Error::shape(
                "group-wise weights",
                out_channels * rows.len(),
                weights.len(),
            ));
        }
        let mut dense = Array4::<f32>::zeros((out_channels, in_channels, kernel.0, kernel.1));
        let d = dense.as_slice_mut().expect("fresh array");
        for t in 0..out_channels {
            for (e, &r) in rows.iter().enumerate() {
                d[t * k + r as usize] = weights[t * rows.len() + e];
            }
        }
        let mut layer = Self::from_dense(dense.view(), bias, spec, out_channels)?;
        // Keep the given rows even where a whole row happens to be zero.
        layer.groups[0].rows = rows;
        layer.groups[0].weights = weights;
        Ok(layer)
    }

    /// Fraction of the dense weight matrix that is multiplied.
    pub fn density(&self) -> f64 {
        let kept: usize = self.groups.iter().map(|g| g.count * g.rows.len()).sum();
        kept as f64 / (self.out_channels * self.in_channels * self.kernel.0 * self.kernel.1) as f64
    }

    /// Forward of an NCHW batch: per group, im2col of the retained rows and
    /// one thinner GEMM on the crate's kernels of `isa` (`None`: the widest
    /// this CPU has).
    pub fn forward(&self, x: &Array4<f32>, isa: Option<Isa>) -> Result<Array4<f32>> {
        conv_on_array(
            x,
            self.out_channels,
            |d| self.geometry(d),
            |x, dims, y| self.forward_into(x, dims, isa, y, &mut Vec::new()),
        )
    }

    /// The geometry of an NCHW input of `dims`.
    fn geometry(&self, dims: [usize; 4]) -> Result<ConvGeometry> {
        if dims[1] != self.in_channels {
            return Err(Error::shape(
                "GroupwiseGemm input channels",
                self.in_channels,
                dims[1],
            ));
        }
        ConvGeometry::batched(dims, self.out_channels, self.kernel, &self.spec)
    }

    /// As [`GroupwiseGemm::forward`], from the row-major NCHW batch `x` of
    /// `dims` into the row-major output `y`, with `cols` as the im2col
    /// scratch: allocates nothing once `cols` (and the calling thread's GEMM
    /// buffers) have grown to this layer's size.
    pub(crate) fn forward_into(
        &self,
        x: &[f32],
        dims: [usize; 4],
        isa: Option<Isa>,
        y: &mut [f32],
        cols: &mut Vec<f32>,
    ) -> Result<()> {
        let isa = check_isa(isa, Needs::Float, "GroupwiseGemm")?;
        let g = self.geometry(dims)?;
        let p = g.out_area();
        let (sample, out_sample) =
            checked_io_lens("GroupwiseGemm", &g, self.out_channels, x.len(), y.len())?;
        let max_rows = self
            .groups
            .iter()
            .map(|gr| gr.rows.len())
            .max()
            .unwrap_or(0);
        if cols.len() < max_rows * p {
            cols.resize(max_rows * p, 0.0);
        }
        for (xn, out) in x.chunks_exact(sample).zip(y.chunks_exact_mut(out_sample)) {
            for gr in &self.groups {
                let r = gr.rows.len();
                let dst = &mut out[gr.first * p..(gr.first + gr.count) * p];
                if r == 0 {
                    dst.fill(0.0);
                    continue;
                }
                im2col_rows(xn, &g, &gr.rows, &mut cols[..r * p]);
                matmul(
                    isa,
                    gr.count,
                    r,
                    p,
                    Operand::new(&gr.weights),
                    Operand::new(&cols[..r * p]),
                    dst,
                )?;
            }
            if let Some(b) = &self.bias {
                for (t, plane) in out.chunks_mut(p).enumerate() {
                    plane.iter_mut().for_each(|v| *v += b[t]);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowbit::binary_gemm::tests::conv_case;
    use hasten_core::{Conv4d, ConvLayer, Operator, SeededRng};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn matches_reference((n, c, t, k, h, w, spec, seed) in conv_case(), density in 0.0f64..1.0, fpg in 1usize..50) {
            prop_assume!(spec.output_hw(h, w, k, k).is_ok());
            let mut rng = SeededRng::new(seed);
            let x = rng.normal_array((n, c, h, w), 1.0);
            let mut wt = rng.normal_array((t, c, k, k), 1.0);
            // Prune whole im2col rows per group of `fpg` filters.
            for first in (0..t).step_by(fpg) {
                for cc in 0..c { for i in 0..k { for j in 0..k {
                    if rng.uniform() >= density {
                        for tt in first..(first + fpg).min(t) { wt[[tt, cc, i, j]] = 0.0; }
                    }
                }}}
            }
            let bias: Vec<f32> = (0..t).map(|v| v as f32).collect();
            let conv = GroupwiseGemm::from_dense(wt.view(), Some(bias.clone()), spec, fpg).unwrap();
            let kept = wt.iter().filter(|v| **v != 0.0).count() as f64 / wt.len() as f64;
            prop_assert!((conv.density() - kept).abs() < 1e-12);
            let truth = ConvLayer::new(Conv4d::new(wt).unwrap(), Some(ndarray::Array1::from(bias)), spec).unwrap()
                .reference_forward(&x).unwrap();
            for isa in Isa::supported_for(Needs::Float) {
                let y = conv.forward(&x, Some(isa)).unwrap();
                for (a, b) in y.iter().zip(truth.iter()) {
                    prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()) + 1e-5 * (c * k * k) as f32, "{}: {} vs {}", isa, a, b);
                }
            }
        }

        #[test]
        fn bad_parameters_are_errors(fpg in 0usize..3, nb in 0usize..4, groups in 1usize..3) {
            let w = Array4::<f32>::ones((3, 2, 1, 1));
            let r = GroupwiseGemm::from_dense(w.view(), Some(vec![0.0; nb]), ConvSpec::new().with_groups(groups), fpg);
            prop_assert_eq!(r.is_ok(), fpg >= 1 && nb == 3 && groups == 1);
        }
    }
}

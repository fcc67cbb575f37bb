//! Lookup-based convolution (LCNN, Bagherinezhad et al. [63]; survey
//! section 5, eq. (10)–(12)).
//!
//! Every filter slice `W(i, j, :, t)` over the input channels is a sparse
//! combination of dictionary rows, eq. (10):
//! `W[t, :, i, j] = Σ_ξ C(ξ, i, j) · D[I(ξ, i, j), :]`. The convolution then
//! runs as eq. (12): a `1 × 1` convolution of the input with the dictionary,
//! `S = D ∗ U` (`m` channels), followed for every output channel and kernel
//! tap `(i, j)` by a shift of `S` and a sparse weighted sum of its channels.
//!
//! # Format
//! - `layout`: a convolution with `groups = 1`, or a linear layer (one tap,
//!   the dictionary spans the flattened input).
//! - `dictionary`: `[m, C]` f32 (`C` = input channels, or `in` for linear).
//! - sparse taps in CSR form over the `rows · kh · kw` slices, slice
//!   `r = (t·kh + i)·kw + j`: `offsets` (`u32`, length `rows·kh·kw + 1`),
//!   `indices` (`u16` dictionary rows) and `coeffs` (f32), the taps of slice
//!   `r` being `offsets[r] .. offsets[r+1]`.
//! - `bias`: optional f32 per output filter.

use ndarray::{Array1, Array2, Array4};

use super::common::check_bias;
use super::common::zeros_output;
use super::weight_layout::{bias_len, WeightLayout};
use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{ensure_finite, ensure_nonempty, Error, Result};
use crate::shape::ActShape;
use crate::spec::ConvSpec;

/// A dictionary `1 × 1` convolution, shifts and a sparse combination, eq. (12).
#[derive(Debug, Clone, PartialEq)]
pub struct LcnnConv {
    layout: Box<WeightLayout>,
    dictionary: Array2<f32>,
    offsets: Vec<u32>,
    indices: Vec<u16>,
    coeffs: Vec<f32>,
    bias: Option<Array1<f32>>,
}

impl LcnnConv {
    /// Validates the layout (conv with one group, or linear), a finite
    /// `[m ≤ 65536, C]` dictionary, a monotone CSR structure over
    /// `rows·kh·kw` slices with indices below `m`, finite coefficients, the bias.
    pub fn new(
        layout: WeightLayout,
        dictionary: Array2<f32>,
        offsets: Vec<u32>,
        indices: Vec<u16>,
        coeffs: Vec<f32>,
        bias: Option<Array1<f32>>,
    ) -> Result<Self> {
        let channels = match layout {
            WeightLayout::Conv { dims, spec } => {
                if spec.groups != 1 {
                    return Err(Error::unsupported(
                        "LCNN lookup convolution",
                        format!("a grouped convolution (groups = {})", spec.groups),
                    ));
                }
                dims[1]
            }
            WeightLayout::Linear { inp, .. } => inp,
        };
        ensure_nonempty("LCNN dictionary", dictionary.shape())?;
        ensure_finite("LCNN dictionary", dictionary.iter())?;
        if dictionary.ncols() != channels {
            return Err(Error::shape(
                "LCNN dictionary width",
                channels,
                dictionary.ncols(),
            ));
        }
        let m = dictionary.nrows();
        if m > 1 << 16 {
            return Err(Error::param("LCNN dictionary size", m, "<= 65536"));
        }
        let slices = Self::slice_count(&layout);
        if offsets.len() != slices + 1 || offsets[0] != 0 {
            return Err(Error::shape(
                "LCNN offsets",
                format!("{} entries starting at 0", slices + 1),
                format!("{} entries", offsets.len()),
            ));
        }
        if offsets.windows(2).any(|w| w[1] < w[0])
            || *offsets.last().unwrap_or(&0) as usize != indices.len()
        {
            return Err(Error::param(
                "LCNN offsets",
                "non-monotone or not ending at the tap count",
                format!("non-decreasing, last = {}", indices.len()),
            ));
        }
        if coeffs.len() != indices.len() {
            return Err(Error::shape(
                "LCNN coefficients",
                indices.len(),
                coeffs.len(),
            ));
        }
        if let Some(&bad) = indices.iter().find(|&&i| usize::from(i) >= m) {
            return Err(Error::param("LCNN dictionary index", bad, format!("< {m}")));
        }
        ensure_finite("LCNN coefficients", coeffs.iter())?;
        check_bias(bias.as_ref(), layout.rows())?;
        Ok(LcnnConv {
            layout: Box::new(layout),
            dictionary: dictionary.as_standard_layout().into_owned(),
            offsets,
            indices,
            coeffs,
            bias,
        })
    }

    fn slice_count(layout: &WeightLayout) -> usize {
        match *layout {
            WeightLayout::Conv { dims, .. } => dims[0] * dims[2] * dims[3],
            WeightLayout::Linear { out, .. } => out,
        }
    }

    fn geometry(&self) -> ([usize; 4], ConvSpec) {
        match *self.layout {
            WeightLayout::Conv { dims, spec } => (dims, spec),
            WeightLayout::Linear { out, inp } => ([out, inp, 1, 1], ConvSpec::new()),
        }
    }

    /// The geometry.
    pub fn layout(&self) -> &WeightLayout {
        &self.layout
    }

    /// Dictionary `D [m, C]`.
    pub fn dictionary(&self) -> &Array2<f32> {
        &self.dictionary
    }

    /// CSR offsets over slices `(t·kh + i)·kw + j`.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Dictionary index of each tap, `I(ξ, i, j)`.
    pub fn indices(&self) -> &[u16] {
        &self.indices
    }

    /// Coefficient of each tap, `C(ξ, i, j)`.
    pub fn coeffs(&self) -> &[f32] {
        &self.coeffs
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// The dense weight matrix `[rows, row_len]` of eq. (10).
    pub fn dequantized(&self) -> Array2<f32> {
        let ([t_all, c, kh, kw], _) = self.geometry();
        let mut w = Array2::<f32>::zeros((t_all, c * kh * kw));
        for t in 0..t_all {
            for i in 0..kh {
                for j in 0..kw {
                    let r = (t * kh + i) * kw + j;
                    for e in self.offsets[r] as usize..self.offsets[r + 1] as usize {
                        let d = self.dictionary.row(usize::from(self.indices[e]));
                        for s in 0..c {
                            w[[t, (s * kh + i) * kw + j]] += self.coeffs[e] * d[s];
                        }
                    }
                }
            }
        }
        w
    }

    /// The dictionary responses `S = D ∗ U`, `[N, m, H, W]` (`[N, m, 1, 1]` for linear).
    pub fn dictionary_responses(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let m = self.dictionary.nrows();
        let dict_layout = match *self.layout {
            WeightLayout::Conv { dims, .. } => {
                WeightLayout::conv([m, dims[1], 1, 1], ConvSpec::new())?
            }
            WeightLayout::Linear { inp, .. } => WeightLayout::linear(m, inp)?,
        };
        dict_layout.dense_forward(self.dictionary.clone(), None, input)
    }
}

impl Operator for LcnnConv {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        self.layout.output_shape(input)
    }

    /// MACs: the `1 × 1` dictionary convolution over the whole input
    /// (`m · C · H · W`) plus one multiply–add per tap per output pixel.
    /// Payload: f32 dictionary, f32 coefficients, u16 indices, u32 offsets, f32 bias.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.layout.output_shape(input)?;
        let dict = self.dictionary.len() as u64;
        let nnz = self.coeffs.len() as u64;
        let b = bias_len(self.bias.as_ref());
        let spatial = match *self.layout {
            WeightLayout::Conv { .. } => input.area() as u64,
            WeightLayout::Linear { .. } => 1,
        };
        let macs = crate::cost::sum(
            "MAC",
            &[
                crate::cost::product("MAC", &[dict, spatial])?,
                crate::cost::product("MAC", &[nnz, out.area() as u64])?,
            ],
        )?;
        Ok(Cost {
            macs,
            params: dict + nnz + b,
            weight_bytes: 4 * dict + 6 * nnz + 4 * self.offsets.len() as u64 + 4 * b,
            activation_bytes: crate::cost::activation_bytes(input.len(), out.len())?,
        })
    }

    /// Eq. (12): `V[n,t,y,x] = b_t + Σ_{i,j} Σ_ξ C · S[n, I, y·σ + i·δ − p, x·σ + j·δ − p]`.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let out = self.layout.output_shape(input_shape_of(input)?)?;
        let s = self.dictionary_responses(input)?;
        let ([t_all, _, kh, kw], spec) = self.geometry();
        let (h, w) = (s.shape()[2] as isize, s.shape()[3] as isize);
        let batch = input.shape()[0];
        let mut v = zeros_output::<f32>("LCNN", out, batch)?;
        for n in 0..batch {
            for t in 0..t_all {
                for y in 0..out.height {
                    for x in 0..out.width {
                        let mut acc = self.bias.as_ref().map_or(0.0, |b| f64::from(b[t]));
                        for i in 0..kh {
                            let sy = (y * spec.stride.0 + i * spec.dilation.0) as isize
                                - spec.padding.top as isize;
                            for j in 0..kw {
                                let sx = (x * spec.stride.1 + j * spec.dilation.1) as isize
                                    - spec.padding.left as isize;
                                if sy < 0 || sy >= h || sx < 0 || sx >= w {
                                    continue;
                                }
                                let r = (t * kh + i) * kw + j;
                                for e in self.offsets[r] as usize..self.offsets[r + 1] as usize {
                                    acc += f64::from(self.coeffs[e])
                                        * f64::from(
                                            s[[
                                                n,
                                                usize::from(self.indices[e]),
                                                sy as usize,
                                                sx as usize,
                                            ]],
                                        );
                                }
                            }
                        }
                        v[[n, t, y, x]] = acc as f32;
                    }
                }
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConvLayer, SeededRng};

    #[test]
    fn lookup_equals_dense_conv_of_eq10_kernel() {
        let mut rng = SeededRng::new(9);
        let spec = ConvSpec::new().with_padding(1).with_stride(2);
        let l = WeightLayout::conv([2, 3, 3, 3], spec).unwrap();
        let dict: Array2<f32> = rng.normal_array((4, 3), 1.0);
        // Two taps per slice.
        let slices = 2 * 9;
        let offsets: Vec<u32> = (0..=slices as u32).map(|r| 2 * r).collect();
        let indices: Vec<u16> = (0..2 * slices).map(|_| rng.below(4) as u16).collect();
        let coeffs: Vec<f32> = (0..2 * slices).map(|_| rng.normal() as f32).collect();
        let op = LcnnConv::new(
            l,
            dict.clone(),
            offsets,
            indices.clone(),
            coeffs.clone(),
            None,
        )
        .unwrap();
        let w = Array4::from_shape_fn((2, 3, 3, 3), |(t, s, i, j)| {
            let r = (t * 3 + i) * 3 + j;
            (0..2)
                .map(|e| coeffs[2 * r + e] * dict[[indices[2 * r + e] as usize, s]])
                .sum::<f32>()
        });
        let dense = ConvLayer::from_array(w, spec).unwrap();
        let x = rng.normal_array((2, 3, 6, 5), 1.0);
        let (a, b) = (
            op.reference_forward(&x).unwrap(),
            dense.reference_forward(&x).unwrap(),
        );
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
        let cost = op.cost(ActShape::new(3, 6, 5)).unwrap();
        assert_eq!(cost.macs, 4 * 3 * 30 + 36 * 9);
    }

    #[test]
    fn rejects_bad_parts() {
        let l = WeightLayout::linear(1, 2).unwrap();
        let d = Array2::<f32>::ones((2, 2));
        assert!(LcnnConv::new(l, d.clone(), vec![0, 1], vec![2], vec![1.0], None).is_err());
        assert!(LcnnConv::new(l, d.clone(), vec![0, 2], vec![1], vec![1.0], None).is_err());
        assert!(LcnnConv::new(l, d.clone(), vec![0], vec![], vec![], None).is_err());
        assert!(LcnnConv::new(l, Array2::ones((2, 3)), vec![0, 0], vec![], vec![], None).is_err());
        let g = WeightLayout::conv([2, 1, 1, 1], ConvSpec::new().with_groups(2)).unwrap();
        assert!(
            LcnnConv::new(g, Array2::ones((1, 1)), vec![0, 0, 0], vec![], vec![], None).is_err()
        );
        assert!(LcnnConv::new(l, d, vec![0, 1], vec![1], vec![1.0], None).is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn constructor_never_panics(
            out in 1usize..4, c in 1usize..4, m in 0usize..4, width in 0usize..5,
            taps in proptest::collection::vec((0u16..5, -2.0f32..2.0), 0..6),
        ) {
            let layout = WeightLayout::conv([out, c, 2, 2], ConvSpec::new()).unwrap();
            let slices = out * 4;
            // Spread the taps over the first slice; the rest are empty.
            let mut offsets = vec![0u32; slices + 1];
            for o in offsets.iter_mut().skip(1) { *o = taps.len() as u32; }
            let (idx, coef): (Vec<u16>, Vec<f32>) = taps.iter().copied().unzip();
            let valid = m >= 1 && width == c && idx.iter().all(|&i| (i as usize) < m);
            let r = LcnnConv::new(layout, Array2::ones((m, width)), offsets, idx, coef, None);
            proptest::prop_assert_eq!(r.is_ok(), valid);
        }
    }
}

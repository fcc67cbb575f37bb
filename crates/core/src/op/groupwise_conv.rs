//! Group-wise pruned convolution (survey section 6.1; Lebedev & Lempitsky \[66\]):
//! the survey's slice `W(i, j, s, :)` — `W[:, c, i, j]` here — is kept or
//! removed for all filters at once, so each input channel keeps its own subset
//! of kernel taps ("non-square filters"). The custom im2col builds only the
//! kept rows of the patch matrix `Û` of eq. (13), and the GEMM
//! `V̂ = Ŵ_kept · Û_kept` shrinks in proportion to the density.
//!
//! Layout: `taps[k] = (c, i, j)` is the `k`-th kept row of `Û` (strictly
//! increasing in `(c, i, j)` order, i.e. in filter-matrix column order
//! `(c·kh + i)·kw + j`), and `weight` is the dense `[T, taps.len()]` matrix
//! whose column `k` multiplies that row.

use ndarray::{Array1, Array2, Array4};

use super::common::{check_bias, zeros_output};
use super::patch::{ensure_single_group, single_group_output_shape, tap};
use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{ensure_finite, ensure_nonempty, Error, Result};
use crate::layer::ConvLayer;
use crate::shape::ActShape;
use crate::spec::ConvSpec;
use crate::weight::Conv4d;

/// A convolution over a subset of `(channel, row, column)` kernel taps, shared by all filters.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupwiseConv {
    in_channels: usize,
    kernel: (usize, usize),
    taps: Vec<(usize, usize, usize)>,
    weight: Array2<f32>,
    bias: Option<Array1<f32>>,
    spec: ConvSpec,
}

impl GroupwiseConv {
    /// Validates that the taps are in range and strictly increasing, that
    /// `weight` is `[T, taps.len()]` and finite, and that the spec has one group.
    pub fn new(
        in_channels: usize,
        kernel: (usize, usize),
        taps: Vec<(usize, usize, usize)>,
        weight: Array2<f32>,
        bias: Option<Array1<f32>>,
        spec: ConvSpec,
    ) -> Result<Self> {
        spec.validate()?;
        ensure_single_group("GroupwiseConv", &spec)?;
        ensure_nonempty("group-wise convolution", &[in_channels, kernel.0, kernel.1])?;
        ensure_nonempty("group-wise weight [T, kept taps]", weight.shape())?;
        if weight.ncols() != taps.len() {
            return Err(Error::shape(
                "group-wise weight columns (= kept taps)",
                taps.len(),
                weight.ncols(),
            ));
        }
        if let Some(&bad) = taps
            .iter()
            .find(|&&(c, i, j)| c >= in_channels || i >= kernel.0 || j >= kernel.1)
        {
            return Err(Error::param(
                "group-wise tap (c, i, j)",
                format!("{bad:?}"),
                format!("< ({in_channels}, {}, {})", kernel.0, kernel.1),
            ));
        }
        if taps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::param(
                "group-wise taps",
                "unsorted or repeated",
                "strictly increasing (c, i, j)",
            ));
        }
        ensure_finite("group-wise weight", weight.iter())?;
        check_bias(bias.as_ref(), weight.nrows())?;
        Ok(GroupwiseConv {
            in_channels,
            kernel,
            taps,
            weight: weight.as_standard_layout().into_owned(),
            bias,
            spec,
        })
    }

    /// Keeps the listed taps of a dense (groups = 1) layer; other taps are dropped.
    pub fn from_conv(layer: &ConvLayer, taps: Vec<(usize, usize, usize)>) -> Result<Self> {
        let [t, c, kh, kw] = layer.weight().dims();
        let w = layer.weight().array();
        let mut m = Array2::<f32>::zeros((t, taps.len()));
        for (k, &(cc, i, j)) in taps.iter().enumerate() {
            if cc >= c || i >= kh || j >= kw {
                return Err(Error::param(
                    "group-wise tap (c, i, j)",
                    format!("{:?}", (cc, i, j)),
                    format!("< ({c}, {kh}, {kw})"),
                ));
            }
            for o in 0..t {
                m[[o, k]] = w[[o, cc, i, j]];
            }
        }
        GroupwiseConv::new(c, (kh, kw), taps, m, layer.bias().cloned(), *layer.spec())
    }

    /// The equivalent dense layer (zeros at the removed taps).
    pub fn to_dense(&self) -> Result<ConvLayer> {
        let (kh, kw) = self.kernel;
        let mut w = Array4::<f32>::zeros((self.out_channels(), self.in_channels, kh, kw));
        for (k, &(c, i, j)) in self.taps.iter().enumerate() {
            for o in 0..self.out_channels() {
                w[[o, c, i, j]] = self.weight[[o, k]];
            }
        }
        ConvLayer::new(Conv4d::new(w)?, self.bias.clone(), self.spec)
    }

    /// Kept taps `(c, i, j)`, strictly increasing.
    pub fn taps(&self) -> &[(usize, usize, usize)] {
        &self.taps
    }

    /// Filter-matrix column `(c·kh + i)·kw + j` of kept tap `k`.
    pub fn column(&self, k: usize) -> usize {
        let (c, i, j) = self.taps[k];
        (c * self.kernel.0 + i) * self.kernel.1 + j
    }

    /// The dense `[T, kept]` weight matrix, row-major.
    pub fn weight(&self) -> &Array2<f32> {
        &self.weight
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// Stride, padding and dilation (groups = 1).
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// Output channels `T`.
    pub fn out_channels(&self) -> usize {
        self.weight.nrows()
    }

    /// Input channels `C`.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Kernel height and width of the original (unpruned) support.
    pub fn kernel_hw(&self) -> (usize, usize) {
        self.kernel
    }

    /// Kept taps over all `C·kh·kw` taps.
    pub fn density(&self) -> f64 {
        self.taps.len() as f64 / (self.in_channels * self.kernel.0 * self.kernel.1) as f64
    }
}

impl Operator for GroupwiseConv {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        single_group_output_shape(
            "group-wise convolution",
            self.in_channels,
            self.kernel,
            self.out_channels(),
            &self.spec,
            input,
        )
    }

    /// `T · kept` MACs per output pixel; the weights plus one packed `u32`
    /// column index per kept tap.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        let weights = self.weight.len() as u64;
        let bias = self.bias.as_ref().map_or(0, |b| b.len() as u64);
        let mut cost = Cost::f32_op(
            crate::cost::product("MAC", &[weights, out.area() as u64])?,
            weights + bias,
            input.len(),
            out.len(),
        )?;
        cost.weight_bytes += 4 * self.taps.len() as u64;
        Ok(cost)
    }

    /// `V[n,t,y,x] = b[t] + Σ_k W[t,k] · U[n, c_k, y·σ + i_k·δ − p, x·σ + j_k·δ − p]`, in f64.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let out = self.output_shape(input_shape_of(input)?)?;
        let batch = input.shape()[0];
        let mut y = zeros_output::<f32>("group-wise convolution", out, batch)?;
        for n in 0..batch {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    let patch: Vec<f64> = self
                        .taps
                        .iter()
                        .map(|&(c, i, j)| tap(input, &self.spec, n, c, (oy, ox), (i, j)))
                        .collect();
                    for t in 0..out.channels {
                        let mut acc = self.bias.as_ref().map_or(0.0, |b| f64::from(b[t]));
                        for (k, u) in patch.iter().enumerate() {
                            acc += f64::from(self.weight[[t, k]]) * u;
                        }
                        y[[n, t, oy, ox]] = acc as f32;
                    }
                }
            }
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;

    #[test]
    fn equals_dense_conv_with_same_zeros() {
        let mut rng = SeededRng::new(11);
        let (t, c, k) = (6, 4, 3);
        let taps: Vec<_> = (0..c)
            .flat_map(|cc| (0..k).flat_map(move |i| (0..k).map(move |j| (cc, i, j))))
            .filter(|&(cc, i, j)| (cc + 2 * i + j) % 3 != 0)
            .collect();
        let mut w = rng.normal_array((t, c, k, k), 1.0);
        for cc in 0..c {
            for i in 0..k {
                for j in 0..k {
                    if !taps.contains(&(cc, i, j)) {
                        w.slice_mut(ndarray::s![.., cc, i, j]).fill(0.0);
                    }
                }
            }
        }
        let spec = ConvSpec::new().with_padding(1).with_stride(2);
        let dense = ConvLayer::new(
            Conv4d::new(w).unwrap(),
            Some(rng.normal_array(t, 1.0)),
            spec,
        )
        .unwrap();
        let gw = GroupwiseConv::from_conv(&dense, taps.clone()).unwrap();
        let x = rng.normal_array((2, c, 7, 8), 1.0);
        let (a, b) = (
            dense.reference_forward(&x).unwrap(),
            gw.reference_forward(&x).unwrap(),
        );
        assert_eq!(a.shape(), b.shape());
        assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-5));
        assert_eq!(gw.to_dense().unwrap(), dense);
        let shape = ActShape::new(c, 7, 8);
        let out = gw.output_shape(shape).unwrap();
        assert_eq!(
            gw.cost(shape).unwrap().macs,
            (t * taps.len() * out.area()) as u64
        );
        assert_eq!(gw.column(0), 1);
    }

    #[test]
    fn bad_parts_are_rejected() {
        let w = Array2::<f32>::ones((2, 2));
        let s = ConvSpec::new();
        assert!(
            GroupwiseConv::new(1, (2, 2), vec![(0, 0, 1), (0, 1, 0)], w.clone(), None, s).is_ok()
        );
        assert!(
            GroupwiseConv::new(1, (2, 2), vec![(0, 1, 0), (0, 0, 1)], w.clone(), None, s).is_err()
        );
        assert!(
            GroupwiseConv::new(1, (2, 2), vec![(0, 0, 1), (1, 0, 0)], w.clone(), None, s).is_err()
        );
        assert!(GroupwiseConv::new(1, (2, 2), vec![(0, 0, 1)], w.clone(), None, s).is_err());
        assert!(GroupwiseConv::new(
            1,
            (2, 2),
            vec![(0, 0, 1), (0, 1, 0)],
            w,
            None,
            s.with_groups(2)
        )
        .is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn random_parts_and_inputs_never_panic(
            c in 0usize..3, k in 0usize..3, t in 0usize..3,
            taps in proptest::collection::vec((0usize..3, 0usize..3, 0usize..3), 0..5),
            h in 0usize..5, pad in 0usize..2, stride in 0usize..3,
        ) {
            let w = Array2::<f32>::ones((t, taps.len()));
            let spec = ConvSpec::new().with_padding(pad).with_stride(stride);
            if let Ok(op) = GroupwiseConv::new(c, (k, k), taps, w, None, spec) {
                let x = Array4::<f32>::ones((1, c, h, h));
                let _ = op.reference_forward(&x);
                let _ = op.cost(ActShape::new(c, h, h));
            }
        }
    }
}

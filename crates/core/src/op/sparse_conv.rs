//! Unstructured sparse convolution in CSR form (survey section 6.1, eq. (13)):
//! the filter matrix `Ŵ` (`[T, C·kh·kw]`, columns in (channel, row, column)
//! order, as [`crate::Conv4d::filter_matrix`]) stored as a [`Csr`]; only its
//! non-zeros are multiplied. The survey notes such sparse products beat dense
//! GEMM only below ≈ 10 % density.

use ndarray::{Array1, Array4};

use super::common::{check_bias, zeros_output};
use super::csr::Csr;
use super::patch::{ensure_single_group, single_group_output_shape, tap};
use super::{input_shape_of, Operator};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::layer::ConvLayer;
use crate::shape::ActShape;
use crate::spec::ConvSpec;
use crate::weight::Conv4d;

/// A convolution whose filter matrix is held in CSR form (groups = 1).
#[derive(Debug, Clone, PartialEq)]
pub struct SparseConv {
    filters: Csr,
    in_channels: usize,
    kernel: (usize, usize),
    bias: Option<Array1<f32>>,
    spec: ConvSpec,
}

impl SparseConv {
    /// `filters` is `[T, in_channels·kh·kw]`; the spec must have one group.
    pub fn new(
        filters: Csr,
        in_channels: usize,
        kernel: (usize, usize),
        bias: Option<Array1<f32>>,
        spec: ConvSpec,
    ) -> Result<Self> {
        spec.validate()?;
        ensure_single_group("SparseConv", &spec)?;
        if in_channels == 0 || kernel.0 == 0 || kernel.1 == 0 {
            return Err(Error::EmptyDimension {
                what: "sparse convolution".into(),
                shape: format!("C = {in_channels}, kernel {kernel:?}"),
            });
        }
        let cols = in_channels * kernel.0 * kernel.1;
        if filters.cols() != cols {
            return Err(Error::shape(
                "sparse filter-matrix columns (C·kh·kw)",
                cols,
                filters.cols(),
            ));
        }
        check_bias(bias.as_ref(), filters.rows())?;
        Ok(SparseConv {
            filters,
            in_channels,
            kernel,
            bias,
            spec,
        })
    }

    /// The non-zeros of a dense (groups = 1) convolution layer.
    pub fn from_conv(layer: &ConvLayer) -> Result<Self> {
        let [_, c, kh, kw] = layer.weight().dims();
        let csr = Csr::from_dense(layer.weight().filter_matrix())?;
        SparseConv::new(csr, c, (kh, kw), layer.bias().cloned(), *layer.spec())
    }

    /// The equivalent dense layer (zeros where no entry is stored).
    pub fn to_dense(&self) -> Result<ConvLayer> {
        let (kh, kw) = self.kernel;
        let w = self
            .filters
            .to_dense()
            .into_shape_with_order((self.out_channels(), self.in_channels, kh, kw))
            .map_err(|e| Error::shape("sparse filter matrix", "T × C·kh·kw", e))?;
        ConvLayer::new(Conv4d::new(w)?, self.bias.clone(), self.spec)
    }

    /// The filter matrix in CSR form, `[T, C·kh·kw]`.
    pub fn filters(&self) -> &Csr {
        &self.filters
    }

    /// Output channels `T`.
    pub fn out_channels(&self) -> usize {
        self.filters.rows()
    }

    /// Input channels `C`.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Kernel height and width.
    pub fn kernel_hw(&self) -> (usize, usize) {
        self.kernel
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// Stride, padding and dilation (groups = 1).
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }
}

impl Operator for SparseConv {
    fn output_shape(&self, input: ActShape) -> Result<ActShape> {
        single_group_output_shape(
            "sparse convolution",
            self.in_channels,
            self.kernel,
            self.out_channels(),
            &self.spec,
            input,
        )
    }

    /// `nnz` MACs per output pixel; values, column indices and row pointers
    /// are counted in the bytes.
    fn cost(&self, input: ActShape) -> Result<Cost> {
        let out = self.output_shape(input)?;
        let nnz = self.filters.nnz() as u64;
        let bias = self.bias.as_ref().map_or(0, |b| b.len() as u64);
        let macs = crate::cost::product("MAC", &[nnz, out.area() as u64])?;
        let mut cost = Cost::f32_op(macs, nnz + bias, input.len(), out.len())?;
        cost.weight_bytes = self.filters.bytes() + 4 * bias;
        Ok(cost)
    }

    /// `V[n,t,y,x] = b[t] + Σ_{(col, w) ∈ row t} w · U[n, c, y·σ + i·δ − p, x·σ + j·δ − p]`
    /// with `col = (c·kh + i)·kw + j`, accumulated in f64.
    fn reference_forward(&self, input: &Array4<f32>) -> Result<Array4<f32>> {
        let out = self.output_shape(input_shape_of(input)?)?;
        let (kh, kw) = self.kernel;
        let batch = input.shape()[0];
        let mut y = zeros_output::<f32>("sparse convolution", out, batch)?;
        for n in 0..batch {
            for t in 0..out.channels {
                let b = self.bias.as_ref().map_or(0.0, |b| f64::from(b[t]));
                for oy in 0..out.height {
                    for ox in 0..out.width {
                        let mut acc = b;
                        for (col, w) in self.filters.row(t) {
                            let (c, i, j) = (col / (kh * kw), (col / kw) % kh, col % kw);
                            acc += f64::from(w) * tap(input, &self.spec, n, c, (oy, ox), (i, j));
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
    use crate::spec::Padding;

    #[test]
    fn equals_dense_conv_with_same_zeros() {
        let mut rng = SeededRng::new(3);
        let mut w = rng.normal_array((5, 3, 3, 2), 1.0);
        w.mapv_inplace(|v| if v.abs() < 0.8 { 0.0 } else { v });
        let spec = ConvSpec::new()
            .with_stride_hw(2, 1)
            .with_padding_sides(Padding {
                top: 1,
                bottom: 0,
                left: 2,
                right: 1,
            })
            .with_dilation(2);
        let dense = ConvLayer::new(
            Conv4d::new(w).unwrap(),
            Some(rng.normal_array(5, 1.0)),
            spec,
        )
        .unwrap();
        let sparse = SparseConv::from_conv(&dense).unwrap();
        assert!(sparse.filters().density() < 0.6);
        let x = rng.normal_array((2, 3, 7, 6), 1.0);
        let (a, b) = (
            dense.reference_forward(&x).unwrap(),
            sparse.reference_forward(&x).unwrap(),
        );
        assert_eq!(a.shape(), b.shape());
        assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-5));
        assert_eq!(sparse.to_dense().unwrap(), dense);
        let shape = ActShape::new(3, 7, 6);
        let out = sparse.output_shape(shape).unwrap();
        assert_eq!(
            sparse.cost(shape).unwrap().macs,
            (sparse.filters().nnz() * out.area()) as u64
        );
    }

    #[test]
    fn bad_parts_are_rejected() {
        let csr = Csr::from_dense(ndarray::Array2::<f32>::ones((2, 8)).view()).unwrap();
        assert!(SparseConv::new(csr.clone(), 2, (2, 2), None, ConvSpec::new()).is_ok());
        assert!(SparseConv::new(csr.clone(), 3, (2, 2), None, ConvSpec::new()).is_err());
        assert!(
            SparseConv::new(csr.clone(), 2, (2, 2), None, ConvSpec::new().with_groups(2)).is_err()
        );
        assert!(SparseConv::new(csr, 2, (2, 2), Some(Array1::zeros(3)), ConvSpec::new()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn random_shapes_never_panic(t in 1usize..3, c in 0usize..3, k in 0usize..3, cin in 0usize..4, h in 0usize..5, groups in 0usize..3) {
            let csr = Csr::from_dense(ndarray::Array2::<f32>::ones((t, (c * k * k).max(1))).view()).unwrap();
            let spec = ConvSpec::new().with_padding(1).with_groups(groups);
            if let Ok(op) = SparseConv::new(csr, c, (k, k), None, spec) {
                let _ = op.reference_forward(&Array4::<f32>::ones((1, cin, h, h)));
                let _ = op.cost(ActShape::new(cin, h, h));
            }
        }
    }
}

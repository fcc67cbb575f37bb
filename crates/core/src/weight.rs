//! [`Conv4d`]: the four-way convolution kernel, OIHW.
//!
//! The survey writes the kernel of equation (1) as `W(i, j, s, t)` (spatial
//! `i, j`, input channel `s`, output channel `t`); Hasten stores it as
//! `W[t, s, i, j]`, the layout PyTorch exports.

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};

use crate::error::{ensure_finite, ensure_nonempty, Error, Result};

/// A convolution kernel `[out T, in C / groups, kh, kw]` of finite f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv4d {
    data: Array4<f32>,
}

impl Conv4d {
    /// Wraps an OIHW array; rejects empty dimensions and non-finite values.
    pub fn new(data: Array4<f32>) -> Result<Self> {
        ensure_nonempty("convolution kernel", data.shape())?;
        ensure_finite("convolution kernel", data.iter())?;
        Ok(Conv4d {
            data: data.as_standard_layout().into_owned(),
        })
    }

    /// Builds a kernel from a row-major OIHW slice of `out·inp·kh·kw` values.
    pub fn from_slice(shape: [usize; 4], values: &[f32]) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if values.len() != expected {
            return Err(Error::shape(
                "OIHW slice length",
                format!("{expected} values for shape {shape:?}"),
                values.len(),
            ));
        }
        let data = Array4::from_shape_vec(shape, values.to_vec())
            .map_err(|e| Error::shape("OIHW slice", format!("{shape:?}"), e))?;
        Conv4d::new(data)
    }

    /// Builds a kernel from an f64 array (decompositions compute in f64).
    pub fn from_f64(data: &Array4<f64>) -> Result<Self> {
        Conv4d::new(data.mapv(|v| v as f32))
    }

    /// The OIHW array.
    pub fn array(&self) -> &Array4<f32> {
        &self.data
    }

    /// A view of the OIHW array.
    pub fn view(&self) -> ArrayView4<'_, f32> {
        self.data.view()
    }

    /// Consumes the kernel, returning the OIHW array.
    pub fn into_array(self) -> Array4<f32> {
        self.data
    }

    /// The kernel as f64, for decompositions.
    pub fn to_f64(&self) -> Array4<f64> {
        self.data.mapv(f64::from)
    }

    /// `[out, in_per_group, kh, kw]`.
    pub fn dims(&self) -> [usize; 4] {
        let s = self.data.shape();
        [s[0], s[1], s[2], s[3]]
    }

    /// Output channels `T`.
    pub fn out_channels(&self) -> usize {
        self.data.shape()[0]
    }

    /// Input channels seen by one filter (`C / groups`).
    pub fn in_channels_per_group(&self) -> usize {
        self.data.shape()[1]
    }

    /// Kernel height and width.
    pub fn kernel_hw(&self) -> (usize, usize) {
        (self.data.shape()[2], self.data.shape()[3])
    }

    /// Number of weights.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Always false: a `Conv4d` has no empty dimension.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Frobenius norm, accumulated in f64.
    pub fn frobenius_norm(&self) -> f64 {
        self.data
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    /// `‖self − other‖_F / ‖self‖_F`; shapes must agree.
    pub fn relative_error(&self, other: &Conv4d) -> Result<f64> {
        if self.dims() != other.dims() {
            return Err(Error::shape(
                "kernel for relative error",
                format!("{:?}", self.dims()),
                format!("{:?}", other.dims()),
            ));
        }
        let diff: f64 = self
            .data
            .iter()
            .zip(other.data.iter())
            .map(|(&a, &b)| {
                let d = f64::from(a) - f64::from(b);
                d * d
            })
            .sum();
        let norm = self.frobenius_norm();
        Ok(if norm == 0.0 {
            diff.sqrt()
        } else {
            diff.sqrt() / norm
        })
    }

    /// The filter matrix `[T, C·kh·kw]`: row `t` is filter `t` flattened in
    /// (channel, row, column) order — the GEMM operand of im2col convolution.
    pub fn filter_matrix(&self) -> ArrayView2<'_, f32> {
        let [t, c, kh, kw] = self.dims();
        self.data
            .view()
            .into_shape_with_order((t, c * kh * kw))
            .expect("standard layout")
    }

    /// Mode-`n` unfolding in f64 (Kolda & Bader): rows indexed by axis `n`
    /// (0 = out, 1 = in, 2 = kh, 3 = kw), columns by the remaining axes in
    /// increasing order, the earliest varying slowest.
    pub fn mode_unfold(&self, n: usize) -> Result<Array2<f64>> {
        mode_unfold(&self.to_f64(), n)
    }
}

/// Mode-`n` unfolding of any 4-way f64 tensor; see [`Conv4d::mode_unfold`].
pub fn mode_unfold(tensor: &Array4<f64>, n: usize) -> Result<Array2<f64>> {
    if n > 3 {
        return Err(Error::param("mode", n, "0..=3"));
    }
    let rows = tensor.shape()[n];
    let cols = tensor.len() / rows;
    let moved = tensor.view().permuted_axes(mode_first_axes(n));
    let standard = moved.as_standard_layout();
    Ok(standard
        .into_owned()
        .into_shape_with_order((rows, cols))
        .expect("element count preserved"))
}

/// Inverse of [`mode_unfold`]: folds a mode-`n` unfolding back to `shape`.
pub fn mode_fold(matrix: &Array2<f64>, n: usize, shape: [usize; 4]) -> Result<Array4<f64>> {
    if n > 3 {
        return Err(Error::param("mode", n, "0..=3"));
    }
    let axes = mode_first_axes(n);
    let moved_shape = [
        shape[axes[0]],
        shape[axes[1]],
        shape[axes[2]],
        shape[axes[3]],
    ];
    if matrix.len() != shape.iter().product::<usize>() || matrix.nrows() != shape[n] {
        return Err(Error::shape(
            "mode unfolding to fold",
            format!(
                "{} × {}",
                shape[n],
                shape.iter().product::<usize>() / shape[n].max(1)
            ),
            format!("{} × {}", matrix.nrows(), matrix.ncols()),
        ));
    }
    let moved = matrix
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(moved_shape)
        .expect("element count checked");
    let mut inverse = [0usize; 4];
    for (pos, &ax) in axes.iter().enumerate() {
        inverse[ax] = pos;
    }
    Ok(moved
        .permuted_axes(inverse)
        .as_standard_layout()
        .into_owned())
}

fn mode_first_axes(n: usize) -> [usize; 4] {
    let mut axes = [n, 0, 0, 0];
    let mut k = 1;
    for a in 0..4 {
        if a != n {
            axes[k] = a;
            k += 1;
        }
    }
    axes
}

//! Helpers shared by every method: checking the layer a transform receives,
//! splitting a [`ConvSpec`] over the convolutions of a block, building conv ops
//! from f64 factors and measuring the weight error.

use hasten_core::error::{ensure_finite, Error, Result};
use hasten_core::ndarray::{Array1, Array2, Array4};
use hasten_core::{Conv4d, ConvLayer, ConvSpec, Layer, Op, Padding};

/// The convolution inside `layer`, provided it is a single-group convolution.
///
/// Decompositions of section 2 factor one dense kernel; a grouped layer is a
/// stack of independent kernels and is rejected with [`Error::Unsupported`].
pub fn dense_conv<'a>(method: &str, layer: &'a Layer) -> Result<&'a ConvLayer> {
    match layer {
        Layer::Conv(c) if c.spec().groups == 1 => Ok(c),
        Layer::Conv(c) => Err(Error::unsupported(
            method,
            format!(
                "a grouped convolution (groups = {}); decompose each group separately",
                c.spec().groups
            ),
        )),
        Layer::Linear(_) => Err(Error::unsupported(method, "a fully connected layer")),
    }
}

/// The spec of a `kh × 1` convolution carrying the vertical part of `spec`
/// (stride, top/bottom padding, dilation) with `groups` groups.
pub fn vertical_spec(spec: &ConvSpec, groups: usize) -> ConvSpec {
    ConvSpec {
        stride: (spec.stride.0, 1),
        padding: Padding {
            top: spec.padding.top,
            bottom: spec.padding.bottom,
            left: 0,
            right: 0,
        },
        dilation: (spec.dilation.0, 1),
        groups,
    }
}

/// The spec of a `1 × kw` convolution carrying the horizontal part of `spec`.
pub fn horizontal_spec(spec: &ConvSpec, groups: usize) -> ConvSpec {
    ConvSpec {
        stride: (1, spec.stride.1),
        padding: Padding {
            top: 0,
            bottom: 0,
            left: spec.padding.left,
            right: spec.padding.right,
        },
        dilation: (1, spec.dilation.1),
        groups,
    }
}

/// `spec` with another group count (the spatial convolution of a block).
pub fn with_groups(spec: &ConvSpec, groups: usize) -> ConvSpec {
    ConvSpec { groups, ..*spec }
}

/// A convolution op from an f64 OIHW kernel, optional bias and spec.
///
/// A finite factor beyond the f32 range is an internal overflow of the
/// decomposition (the layer's own weights are finite f32), reported as
/// [`Error::Numerical`] rather than as a non-finite input.
pub fn conv_op(kernel: &Array4<f64>, bias: Option<&Array1<f32>>, spec: ConvSpec) -> Result<Op> {
    ensure_finite("factor kernel", kernel.iter())?;
    if let Some(v) = kernel.iter().find(|v| v.abs() > f64::from(f32::MAX)) {
        return Err(Error::numerical(
            "factor kernel",
            format!("a factor entry ({v:e}) overflows f32 although the layer's weights are finite"),
        ));
    }
    Ok(ConvLayer::new(Conv4d::from_f64(kernel)?, bias.cloned(), spec)?.into())
}

/// A `1 × 1` convolution op from an `[out, in]` f64 matrix.
pub fn pointwise_op(matrix: &Array2<f64>, bias: Option<&Array1<f32>>) -> Result<Op> {
    let (o, i) = matrix.dim();
    let kernel = matrix
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((o, i, 1, 1))
        .map_err(|e| Error::shape("pointwise kernel", format!("{o} × {i}"), e))?;
    conv_op(&kernel, bias, ConvSpec::new())
}

/// `‖W − Ŵ‖_F / ‖W‖_F` between a kernel and an f64 reconstruction of it.
pub fn kernel_error(original: &Conv4d, approx: &Array4<f64>) -> Result<f64> {
    if original.dims()
        != [
            approx.shape()[0],
            approx.shape()[1],
            approx.shape()[2],
            approx.shape()[3],
        ]
    {
        return Err(Error::shape(
            "reconstructed kernel",
            format!("{:?}", original.dims()),
            format!("{:?}", approx.shape()),
        ));
    }
    let w = original.array();
    let mut diff = 0.0;
    let mut norm = 0.0;
    for (&a, &b) in w.iter().zip(approx.iter()) {
        let a = f64::from(a);
        diff += (a - b) * (a - b);
        norm += a * a;
    }
    Ok(if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    })
}

/// `‖A − B‖_F / ‖A‖_F` for two f64 matrices of the same shape.
pub fn matrix_error(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let diff: f64 = a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = a.iter().map(|x| x * x).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// Splits singular values evenly between two factors: returns
/// `(U·diag(√s), diag(√s)·Vᵀ)` truncated to `r`, which keeps both factors of
/// the same magnitude (better conditioned in f32 than putting `s` on one side).
pub fn balanced_factors(svd: &hasten_core::linalg::Svd, r: usize) -> (Array2<f64>, Array2<f64>) {
    use hasten_core::ndarray::{s, Axis};
    let root = svd.s.slice(s![..r]).mapv(f64::sqrt);
    let left = &svd.u.slice(s![.., ..r]) * &root.view().insert_axis(Axis(0));
    let right = &svd.vt.slice(s![..r, ..]) * &root.view().insert_axis(Axis(1));
    (
        left.as_standard_layout().into_owned(),
        right.as_standard_layout().into_owned(),
    )
}

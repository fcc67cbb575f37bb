//! The geometry of one convolution, equation (1) of the survey: groups,
//! channels per group, kernel, stride, zero padding, dilation, input and
//! output planes, validated once (core's output-size rule) and shared by the
//! float kernels and the low-bit kernels.

use hasten_core::{ActShape, ConvLayer, ConvSpec, Error, Result};

/// Every size a convolution kernel needs, derived once from a layer (or a
/// spec and a kernel size) and a validated input shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    /// Samples checked: the batch for the low-bit kernels, which check each
    /// call's input; 1 for the float kernels, which check one sample's shape
    /// and run any batch.
    pub batch: usize,
    /// Groups.
    pub groups: usize,
    /// Input channels per group.
    pub c_g: usize,
    /// Output channels per group.
    pub t_g: usize,
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Vertical and horizontal stride.
    pub stride: (usize, usize),
    /// Vertical and horizontal dilation.
    pub dilation: (usize, usize),
    /// Padding above and left of the input.
    pub pad_top_left: (usize, usize),
    /// Input height and width.
    pub in_hw: (usize, usize),
    /// Padded input height and width.
    pub padded_hw: (usize, usize),
    /// Output height and width.
    pub out_hw: (usize, usize),
}

impl ConvGeometry {
    /// Validates one sample's `input` against `layer` and records the sizes
    /// (`batch` is 1).
    pub fn new(layer: &ConvLayer, input: ActShape) -> Result<Self> {
        let out = layer.output_shape(input)?;
        Self::of_dims(layer.weight().dims(), layer.spec(), input, out)
    }

    /// The sizes of a convolution with OIHW weight `dims` (`I` per group)
    /// and `spec` on one sample of `input`, whose output shape `out` the
    /// caller validated (e.g. with the op's `output_shape`).
    pub fn of_dims(
        [t, c_g, kh, kw]: [usize; 4],
        spec: &ConvSpec,
        input: ActShape,
        out: ActShape,
    ) -> Result<Self> {
        let p = spec.padding;
        Ok(ConvGeometry {
            batch: 1,
            groups: spec.groups,
            c_g,
            t_g: t / spec.groups,
            kernel: (kh, kw),
            stride: spec.stride,
            dilation: spec.dilation,
            pad_top_left: (p.top, p.left),
            in_hw: (input.height, input.width),
            padded_hw: p.padded_hw(input.height, input.width)?,
            out_hw: (out.height, out.width),
        })
    }

    /// Checks `spec` (one group only) for `out_channels` filters of size
    /// `kernel` on an `[n, c, h, w]` input.
    pub fn batched(
        input: [usize; 4],
        out_channels: usize,
        kernel: (usize, usize),
        spec: &ConvSpec,
    ) -> Result<Self> {
        hasten_core::error::ensure_nonempty("input activation (NCHW)", &input)?;
        if spec.groups != 1 {
            return Err(Error::unsupported(
                "low-bit convolution kernel",
                format!("groups = {} (expected 1)", spec.groups),
            ));
        }
        let [batch, in_channels, h, w] = input;
        let out_hw = spec.output_hw(h, w, kernel.0, kernel.1)?;
        let p = spec.padding;
        Ok(ConvGeometry {
            batch,
            groups: 1,
            c_g: in_channels,
            t_g: out_channels,
            kernel,
            stride: spec.stride,
            dilation: spec.dilation,
            pad_top_left: (p.top, p.left),
            in_hw: (h, w),
            padded_hw: p.padded_hw(h, w)?,
            out_hw,
        })
    }

    /// Input channels (all groups).
    pub fn in_channels(&self) -> usize {
        self.c_g * self.groups
    }

    /// Output channels (all groups).
    pub fn out_channels(&self) -> usize {
        self.t_g * self.groups
    }

    /// Output pixels per channel.
    pub fn out_area(&self) -> usize {
        self.out_hw.0 * self.out_hw.1
    }

    /// Input pixels per channel.
    pub fn in_area(&self) -> usize {
        self.in_hw.0 * self.in_hw.1
    }

    /// GEMM depth of one group: `C_g · kh · kw`.
    pub fn depth(&self) -> usize {
        self.c_g * self.kernel.0 * self.kernel.1
    }

    /// The output columns `[x0, x1)` whose tap at kernel column `j` reads
    /// inside the image, for a channel viewed with horizontal offset `dx`
    /// (the conv reads logical column `x`, which holds image column `x − dx`;
    /// both must lie inside the image, else the value is zero).
    pub fn valid_x(&self, j: usize, dx: isize) -> (usize, usize) {
        let off = (j * self.dilation.1) as isize - self.pad_top_left.1 as isize;
        intersect(
            valid_range(self.out_hw.1, self.stride.1, off, self.in_hw.1),
            valid_range(self.out_hw.1, self.stride.1, off - dx, self.in_hw.1),
        )
    }

    /// The output rows `[y0, y1)` whose tap at kernel row `i` reads inside
    /// the image, for a channel viewed with vertical offset `dy`.
    pub fn valid_y(&self, i: usize, dy: isize) -> (usize, usize) {
        let off = (i * self.dilation.0) as isize - self.pad_top_left.0 as isize;
        intersect(
            valid_range(self.out_hw.0, self.stride.0, off, self.in_hw.0),
            valid_range(self.out_hw.0, self.stride.0, off - dy, self.in_hw.0),
        )
    }

    /// Whether tap `(i, j)` of output pixel `(y, x)` reads a padded zero.
    pub fn tap_is_padding(&self, y: usize, x: usize, i: usize, j: usize) -> bool {
        let iy = y * self.stride.0 + i * self.dilation.0;
        let ix = x * self.stride.1 + j * self.dilation.1;
        iy < self.pad_top_left.0
            || iy >= self.pad_top_left.0 + self.in_hw.0
            || ix < self.pad_top_left.1
            || ix >= self.pad_top_left.1 + self.in_hw.1
    }

    /// Whether any tap of output pixel `(y, x)` reads padding.
    pub fn touches_padding(&self, y: usize, x: usize) -> bool {
        let (kh, kw) = self.kernel;
        self.tap_is_padding(y, x, 0, 0) || self.tap_is_padding(y, x, kh - 1, kw - 1)
    }
}

/// Outputs `o ∈ [0, n_out)` with `0 ≤ o·stride + off < len`, as a range.
/// In `i128`: a stride or length above `isize::MAX` is valid (an output of
/// one column) and must not wrap negative.
fn valid_range(n_out: usize, stride: usize, off: isize, len: usize) -> (usize, usize) {
    let (n_out, s, off, len) = (n_out as i128, stride as i128, off as i128, len as i128);
    // o·s + off ≥ 0  ⇔  o ≥ ceil(−off / s)
    let lo = if off < 0 { (-off + s - 1) / s } else { 0 };
    // o·s + off ≤ len − 1  ⇔  o ≤ floor((len − 1 − off) / s)
    let top = len - 1 - off;
    let hi = if top < 0 { 0 } else { (top / s + 1).min(n_out) };
    let lo = lo.min(hi);
    // Both lie in [0, n_out], so they fit a usize.
    (lo as usize, hi as usize)
}

/// The intersection of two ranges (empty ranges collapse to `(lo, lo)`).
fn intersect(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    let lo = a.0.max(b.0);
    let hi = a.1.min(b.1).max(lo);
    (lo, hi)
}

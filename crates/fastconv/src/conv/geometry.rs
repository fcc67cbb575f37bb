//! The sizes of one convolution: channels per group, kernel, stride,
//! padding, dilation, input and output planes.

use hasten_core::{ActShape, ConvLayer, Result};

/// Every size a convolution kernel needs, derived once from a layer and its
/// validated input shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Groups.
    pub groups: usize,
    /// Input channels per group.
    pub c_g: usize,
    /// Output channels per group.
    pub t_g: usize,
    /// Kernel height and width.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Vertical dilation.
    pub dh: usize,
    /// Horizontal dilation.
    pub dw: usize,
    /// Top padding.
    pub pt: usize,
    /// Left padding.
    pub pl: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Geometry {
    /// Validates `input` against `layer` and records the sizes.
    pub fn new(layer: &ConvLayer, input: ActShape) -> Result<Self> {
        let out = layer.output_shape(input)?;
        let spec = layer.spec();
        let [t, c_g, kh, kw] = layer.weight().dims();
        Ok(Geometry {
            groups: spec.groups,
            c_g,
            t_g: t / spec.groups,
            kh,
            kw,
            sh: spec.stride.0,
            sw: spec.stride.1,
            dh: spec.dilation.0,
            dw: spec.dilation.1,
            pt: spec.padding.top,
            pl: spec.padding.left,
            h: input.height,
            w: input.width,
            oh: out.height,
            ow: out.width,
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
        self.oh * self.ow
    }

    /// Input pixels per channel.
    pub fn in_area(&self) -> usize {
        self.h * self.w
    }

    /// GEMM depth of one group: `C_g · kh · kw`.
    pub fn depth(&self) -> usize {
        self.c_g * self.kh * self.kw
    }

    /// The output columns `[x0, x1)` whose tap at kernel column `j` reads
    /// inside the image, for a channel viewed with horizontal offset `dx`
    /// (the conv reads logical column `x`, which holds image column `x − dx`;
    /// both must lie inside the image, else the value is zero).
    pub fn valid_x(&self, j: usize, dx: isize) -> (usize, usize) {
        let off = (j * self.dw) as isize - self.pl as isize;
        intersect(
            valid_range(self.ow, self.sw, off, self.w),
            valid_range(self.ow, self.sw, off - dx, self.w),
        )
    }

    /// The output rows `[y0, y1)` whose tap at kernel row `i` reads inside
    /// the image, for a channel viewed with vertical offset `dy`.
    pub fn valid_y(&self, i: usize, dy: isize) -> (usize, usize) {
        let off = (i * self.dh) as isize - self.pt as isize;
        intersect(
            valid_range(self.oh, self.sh, off, self.h),
            valid_range(self.oh, self.sh, off - dy, self.h),
        )
    }
}

/// Outputs `o ∈ [0, n_out)` with `0 ≤ o·stride + off < len`, as a range.
fn valid_range(n_out: usize, stride: usize, off: isize, len: usize) -> (usize, usize) {
    let s = stride as isize;
    // o·s + off ≥ 0  ⇔  o ≥ ceil(−off / s)
    let lo = if off < 0 { (-off + s - 1) / s } else { 0 };
    // o·s + off ≤ len − 1  ⇔  o ≤ floor((len − 1 − off) / s)
    let top = len as isize - 1 - off;
    let hi = if top < 0 {
        0
    } else {
        (top / s + 1).min(n_out as isize)
    };
    let lo = lo.min(hi);
    (lo as usize, hi as usize)
}

/// The intersection of two ranges (empty ranges collapse to `(lo, lo)`).
fn intersect(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    let lo = a.0.max(b.0);
    let hi = a.1.min(b.1).max(lo);
    (lo, hi)
}

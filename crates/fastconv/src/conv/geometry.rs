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
    /// inside the image (the rest read zero padding).
    pub fn valid_x(&self, j: usize) -> (usize, usize) {
        valid_range(self.ow, self.sw, j * self.dw, self.pl, self.w)
    }

    /// The output rows `[y0, y1)` whose tap at kernel row `i` reads inside the
    /// image.
    pub fn valid_y(&self, i: usize) -> (usize, usize) {
        valid_range(self.oh, self.sh, i * self.dh, self.pt, self.h)
    }
}

/// Outputs `o ∈ [0, n_out)` with `0 ≤ o·stride + offset − pad < len`, as a range.
fn valid_range(
    n_out: usize,
    stride: usize,
    offset: usize,
    pad: usize,
    len: usize,
) -> (usize, usize) {
    // o·stride ≥ pad − offset  ⇔  o ≥ ceil((pad − offset) / stride)
    let lo = if pad > offset {
        (pad - offset).div_ceil(stride)
    } else {
        0
    };
    // o·stride + offset − pad ≤ len − 1  ⇔  o ≤ (len − 1 + pad − offset) / stride
    let hi = if len + pad > offset {
        ((len - 1 + pad - offset) / stride + 1).min(n_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

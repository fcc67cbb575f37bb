//! The geometry of one dense convolution, equation (1) of the survey: input and
//! output extents, kernel, stride, zero padding and dilation, validated once and
//! shared by every low-bit kernel.

use hasten_core::{ConvSpec, Error, Result};

/// Validated sizes of a `groups = 1` convolution on an `[n, c, h, w]` batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub in_hw: (usize, usize),
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Vertical and horizontal stride.
    pub stride: (usize, usize),
    /// Vertical and horizontal dilation.
    pub dilation: (usize, usize),
    /// Padding above and left of the input.
    pub pad_top_left: (usize, usize),
    /// Padded input height and width.
    pub padded_hw: (usize, usize),
    /// Output height and width.
    pub out_hw: (usize, usize),
}

impl ConvGeometry {
    /// Checks `spec` (one group only) for a `kernel` on an `[n, c, h, w]` input.
    pub fn new(input: [usize; 4], kernel: (usize, usize), spec: &ConvSpec) -> Result<Self> {
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
            in_channels,
            in_hw: (h, w),
            kernel,
            stride: spec.stride,
            dilation: spec.dilation,
            pad_top_left: (p.top, p.left),
            padded_hw: p.padded_hw(h, w)?,
            out_hw,
        })
    }

    /// Output pixels per sample.
    pub fn out_area(&self) -> usize {
        self.out_hw.0 * self.out_hw.1
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

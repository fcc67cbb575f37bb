//! Convolution hyper-parameters: stride, zero padding, dilation and groups.

use crate::error::{Error, Result};

/// Zero padding on each side of the spatial plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Padding {
    /// Rows of zeros above the input.
    pub top: usize,
    /// Rows of zeros below the input.
    pub bottom: usize,
    /// Columns of zeros left of the input.
    pub left: usize,
    /// Columns of zeros right of the input.
    pub right: usize,
}

impl Padding {
    /// The same padding `p` on all four sides.
    pub const fn same(p: usize) -> Self {
        Padding::symmetric(p, p)
    }

    /// `ph` rows above and below, `pw` columns left and right.
    pub const fn symmetric(ph: usize, pw: usize) -> Self {
        Padding {
            top: ph,
            bottom: ph,
            left: pw,
            right: pw,
        }
    }

    /// The zero-padded extents `(h + top + bottom, w + left + right)` of an
    /// `h × w` plane.
    ///
    /// # Errors
    /// [`Error::Overflow`] when an extent does not fit in `isize` (kernels
    /// index the padded plane with `isize`).
    pub fn padded_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let padded = |len: usize, before: usize, after: usize, what: &str| {
            len.checked_add(before)
                .and_then(|v| v.checked_add(after))
                .filter(|&v| isize::try_from(v).is_ok())
                .ok_or_else(|| Error::overflow(format!("the padded input {what}")))
        };
        Ok((
            padded(h, self.top, self.bottom, "height")?,
            padded(w, self.left, self.right, "width")?,
        ))
    }
}

/// Stride, padding, dilation and groups of a convolution (PyTorch semantics).
///
/// Output size along one axis is
/// `(in + pad_before + pad_after − dilation·(k − 1) − 1) / stride + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    /// Vertical and horizontal stride, each ≥ 1.
    pub stride: (usize, usize),
    /// Zero padding.
    pub padding: Padding,
    /// Vertical and horizontal dilation, each ≥ 1.
    pub dilation: (usize, usize),
    /// Number of groups, ≥ 1; `groups == channels` is a depthwise convolution.
    pub groups: usize,
}

impl Default for ConvSpec {
    fn default() -> Self {
        ConvSpec {
            stride: (1, 1),
            padding: Padding::default(),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl ConvSpec {
    /// Stride 1, no padding, no dilation, one group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the same stride on both axes.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }

    /// Sets the stride per axis.
    pub fn with_stride_hw(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }

    /// Sets the same padding on all sides.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = Padding::same(p);
        self
    }

    /// Sets an arbitrary padding.
    pub fn with_padding_sides(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the same dilation on both axes.
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }

    /// Sets the group count.
    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// Checks that stride, dilation and groups are positive.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("stride (vertical)", self.stride.0),
            ("stride (horizontal)", self.stride.1),
            ("dilation (vertical)", self.dilation.0),
            ("dilation (horizontal)", self.dilation.1),
            ("groups", self.groups),
        ] {
            if v == 0 {
                return Err(Error::param(name, v, ">= 1"));
            }
        }
        Ok(())
    }

    /// Output height and width for a `kh × kw` kernel on an `h × w` input.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a zero stride, dilation or group
    /// count; [`Error::KernelLargerThanInput`] when the dilated kernel does
    /// not fit in the padded input (or is empty); [`Error::Overflow`] when
    /// the padded input or the dilated kernel does not fit in `usize` (and,
    /// since the kernels index the padded plane with `isize`, when the
    /// padded input exceeds `isize::MAX`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hasten_core::ConvSpec;
    ///
    /// // (32 + 2·1 − 3) / 2 + 1 = 16
    /// let spec = ConvSpec::new().with_stride(2).with_padding(1);
    /// assert_eq!(spec.output_hw(32, 32, 3, 3)?, (16, 16));
    /// assert!(spec.output_hw(1, 1, 5, 5).is_err());
    /// assert!(ConvSpec::new().with_padding(usize::MAX).output_hw(8, 8, 3, 3).is_err());
    /// # Ok::<(), hasten_core::Error>(())
    /// ```
    pub fn output_hw(&self, h: usize, w: usize, kh: usize, kw: usize) -> Result<(usize, usize)> {
        self.validate()?;
        let extent = |d: usize, k: usize, what: &str| {
            d.checked_mul(k.max(1) - 1)
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| Error::overflow(format!("the dilated kernel {what}")))
        };
        let (ph, pw) = self.padding.padded_hw(h, w)?;
        let eh = extent(self.dilation.0, kh, "height")?;
        let ew = extent(self.dilation.1, kw, "width")?;
        if kh == 0 || kw == 0 || eh > ph || ew > pw {
            return Err(Error::KernelLargerThanInput {
                kernel: (eh, ew),
                padded_input: (ph, pw),
            });
        }
        Ok(((ph - eh) / self.stride.0 + 1, (pw - ew) / self.stride.1 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_extents_by_hand_and_overflow() {
        let p = Padding {
            top: 1,
            bottom: 2,
            left: 3,
            right: 0,
        };
        assert_eq!(p.padded_hw(5, 7).unwrap(), (8, 10));
        assert!(matches!(
            Padding::same(usize::MAX).padded_hw(1, 1),
            Err(Error::Overflow { .. })
        ));
        // Fits in usize, not in isize.
        let half = isize::MAX as usize / 2 + 1;
        assert!(matches!(
            Padding::symmetric(0, half).padded_hw(1, 1),
            Err(Error::Overflow { .. })
        ));
        assert_eq!(
            Padding::symmetric(half - 1, 0).padded_hw(1, 1).unwrap().1,
            1
        );
    }
}

//! Activation shapes.
//!
//! Activations are NCHW `Array4<f32>`. A flat feature vector (the input or output
//! of a fully connected layer) is stored as `[N, F, 1, 1]`, so one tensor type
//! carries every activation of a network.

use std::fmt;

use crate::error::{Error, Result};

/// The shape of one sample's activation: channels × height × width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActShape {
    /// Channels (feature maps).
    pub channels: usize,
    /// Spatial height.
    pub height: usize,
    /// Spatial width.
    pub width: usize,
}

impl ActShape {
    /// A `channels × height × width` activation.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        ActShape {
            channels,
            height,
            width,
        }
    }

    /// A flat vector of `features` values, stored as `features × 1 × 1`.
    pub const fn flat(features: usize) -> Self {
        ActShape::new(features, 1, 1)
    }

    /// A `channels × height × width` activation whose size fits in memory
    /// indexing: [`Error::Overflow`] when `channels · height · width`
    /// exceeds `isize::MAX` (the most elements an array can hold).
    pub fn checked(channels: usize, height: usize, width: usize) -> Result<Self> {
        let shape = ActShape::new(channels, height, width);
        shape.checked_len()?;
        Ok(shape)
    }

    /// Number of values per sample.
    ///
    /// Overflows (a panic in debug builds) when the product exceeds `usize`;
    /// shapes from user input go through [`Self::checked_len`], and every
    /// shape returned by an op's shape inference passes it.
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Number of values per sample, or [`Error::Overflow`] when it exceeds
    /// `isize::MAX`.
    pub fn checked_len(&self) -> Result<usize> {
        self.channels
            .checked_mul(self.checked_area()?)
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| Error::overflow(format!("the size of a {self} activation")))
    }

    /// Spatial positions per channel, or [`Error::Overflow`] when they
    /// exceed `isize::MAX`.
    pub fn checked_area(&self) -> Result<usize> {
        self.height
            .checked_mul(self.width)
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| Error::overflow(format!("the area of a {self} activation")))
    }

    /// Values in a batch of `batch` such samples, or [`Error::Overflow`]
    /// when they exceed `isize::MAX`.
    pub fn checked_batch_len(&self, batch: usize) -> Result<usize> {
        self.checked_len()?
            .checked_mul(batch)
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| {
                Error::overflow(format!("the size of a batch of {batch} {self} activations"))
            })
    }

    /// True when any dimension is zero.
    pub const fn is_empty(&self) -> bool {
        self.channels == 0 || self.height == 0 || self.width == 0
    }

    /// Spatial positions per channel (overflows like [`Self::len`]; see
    /// [`Self::checked_area`]).
    pub const fn area(&self) -> usize {
        self.height * self.width
    }

    /// The NCHW shape of a batch of `batch` such samples.
    pub const fn batched(&self, batch: usize) -> [usize; 4] {
        [batch, self.channels, self.height, self.width]
    }

    /// The per-sample shape of an NCHW array shape.
    pub const fn of_nchw(shape: [usize; 4]) -> Self {
        ActShape::new(shape[1], shape[2], shape[3])
    }
}

impl fmt::Display for ActShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}×{}", self.channels, self.height, self.width)
    }
}

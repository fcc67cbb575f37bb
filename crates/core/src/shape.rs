//! Activation shapes.
//!
//! Activations are NCHW `Array4<f32>`. A flat feature vector (the input or output
//! of a fully connected layer) is stored as `[N, F, 1, 1]`, so one tensor type
//! carries every activation of a network.

use std::fmt;

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

    /// Number of values per sample.
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True when any dimension is zero.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spatial positions per channel.
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

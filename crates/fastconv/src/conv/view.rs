//! Channel views: a pending channel shuffle (survey section 3, ShuffleNet)
//! and/or spatial shift (ShiftNet) that the next convolution absorbs into
//! the way it reads its input, so neither costs a copy.
//!
//! Logical channel `c` of a view is image channel `src[c]` moved by
//! `(dy[c], dx[c])`: `logical[c, y, x] = image[src[c], y − dy, x − dx]`, zero
//! outside the image. A shuffle after a view permutes it; a shift after a
//! view is exact only if the view has no shift yet (two zero-filling shifts
//! do not compose into one), so a second shift materialises the first.

use hasten_core::{ChannelShuffle, Shift};

use crate::shift::shift_plane;

/// A per-channel (source channel, offset) map over an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelView {
    src: Vec<usize>,
    offset: Vec<(isize, isize)>,
}

impl ChannelView {
    /// The identity on `channels` channels.
    pub fn identity(channels: usize) -> Self {
        ChannelView {
            src: (0..channels).collect(),
            offset: vec![(0, 0); channels],
        }
    }

    /// Whether the view reads every channel in place.
    pub fn is_identity(&self) -> bool {
        self.src.iter().enumerate().all(|(c, &s)| c == s) && !self.has_shift()
    }

    /// Whether any channel is moved.
    pub fn has_shift(&self) -> bool {
        self.offset.iter().any(|&o| o != (0, 0))
    }

    /// Image channel and offset of logical channel `c`.
    #[inline]
    pub fn channel(&self, c: usize) -> (usize, isize, isize) {
        let (dy, dx) = self.offset[c];
        (self.src[c], dy, dx)
    }

    /// This view followed by `shuffle`.
    pub fn then_shuffle(&self, shuffle: &ChannelShuffle) -> Self {
        let channels = self.src.len();
        let pick = |o: usize| shuffle.source_channel(o, channels);
        ChannelView {
            src: (0..channels).map(|o| self.src[pick(o)]).collect(),
            offset: (0..channels).map(|o| self.offset[pick(o)]).collect(),
        }
    }

    /// This view followed by `shift`; `None` when this view already shifts.
    pub fn then_shift(&self, shift: &Shift) -> Option<Self> {
        if self.has_shift() {
            return None;
        }
        Some(ChannelView {
            src: self.src.clone(),
            offset: shift.offsets().to_vec(),
        })
    }

    /// Writes the logical channels of one `C × h × w` sample into `dst`.
    pub fn materialize(&self, src: &[f32], dst: &mut [f32], h: usize, w: usize) {
        let area = h * w;
        for (c, plane) in dst.chunks_exact_mut(area).enumerate() {
            let (s, dy, dx) = self.channel(c);
            plane.fill(0.0);
            shift_plane(&src[s * area..][..area], plane, h, w, dy, dx);
        }
    }
}

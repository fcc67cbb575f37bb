//! A growable f32 buffer whose start is aligned to a 64-byte cache line, so
//! packed GEMM panels load without line splits.

/// Floats per 64-byte line.
const LINE: usize = 16;

/// An f32 buffer with a cache-line-aligned start.
#[derive(Debug, Default, Clone)]
pub(crate) struct AlignedVec {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedVec {
    /// A zeroed buffer of `len` floats.
    pub fn zeros(len: usize) -> Self {
        let mut v = AlignedVec::default();
        v.resize(len);
        v
    }

    /// Makes room for `len` floats (contents unspecified after growth) without
    /// shrinking the allocation.
    pub fn resize(&mut self, len: usize) {
        if self.buf.len() < len + LINE {
            self.buf = vec![0.0; len + LINE];
            let addr = self.buf.as_ptr() as usize;
            self.off = (64 - addr % 64) % 64 / 4;
        }
        self.len = len;
    }

    /// The aligned contents.
    pub fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }

    /// The aligned contents, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

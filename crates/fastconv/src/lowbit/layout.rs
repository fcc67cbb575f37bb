//! The layout change at the end of the channel-minor kernels: per-pixel
//! accumulators `[n][p][t]` (NHWC) to the NCHW `[n][t][p]` f32 output, with the
//! epilogue applied on the way. Work is split into blocks of 16 output planes
//! so that each cache line of accumulators is read once per block.

use std::marker::PhantomData;

use rayon::prelude::*;

/// Shared write access to an output buffer for parallel tasks that write
/// *disjoint* indices (e.g. one output row each, scattered across planes).
#[derive(Debug)]
pub(crate) struct DisjointWriter<'a, T> {
    ptr: *mut T,
    len: usize,
    _buffer: PhantomData<&'a mut [T]>,
}

// SAFETY: the writer only hands out element writes; callers guarantee that no
// two tasks write the same index (the `write` contract), so sharing it across
// threads is sound for `Send` element types.
unsafe impl<T: Send> Sync for DisjointWriter<'_, T> {}
// SAFETY: as above; the buffer outlives the writer (the `'a` borrow).
unsafe impl<T: Send> Send for DisjointWriter<'_, T> {}

impl<'a, T> DisjointWriter<'a, T> {
    /// Borrows `buffer` mutably for the writer's lifetime.
    pub(crate) fn new(buffer: &'a mut [T]) -> Self {
        DisjointWriter {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// Writes `value` at `index` (bounds-checked).
    ///
    /// # Safety
    /// No other thread writes or reads `index` while the writer is alive.
    pub(crate) unsafe fn write(&self, index: usize, value: T) {
        assert!(
            index < self.len,
            "DisjointWriter index {index} >= {}",
            self.len
        );
        // SAFETY: in bounds (asserted); exclusive per the caller's contract.
        unsafe { self.ptr.add(index).write(value) };
    }

    /// Copies `values` to `start..start + values.len()` (bounds-checked).
    ///
    /// # Safety
    /// No other thread writes or reads that range while the writer is alive.
    pub(crate) unsafe fn write_slice(&self, start: usize, values: &[T])
    where
        T: Copy,
    {
        assert!(
            start <= self.len && values.len() <= self.len - start,
            "DisjointWriter range {start}+{} > {}",
            values.len(),
            self.len
        );
        // SAFETY: in bounds (asserted); `values` cannot alias the exclusively
        // borrowed buffer; exclusive per the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(start), values.len())
        };
    }
}

/// Planes per parallel block: 16 i32 = one 64-byte cache line per pixel.
const PLANE_BLOCK: usize = 16;

/// `out[n][t][p] = f(acc[n][p][t], n, t, p)` for `batch` samples of `area`
/// pixels and `channels` planes. `out.len() = acc.len() = batch·area·channels`.
pub(crate) fn nhwc_to_nchw<F>(
    acc: &[i32],
    batch: usize,
    area: usize,
    channels: usize,
    out: &mut [f32],
    f: F,
) where
    F: Fn(i32, usize, usize, usize) -> f32 + Sync,
{
    debug_assert_eq!(acc.len(), batch * area * channels);
    debug_assert_eq!(out.len(), acc.len());
    let blocks = channels.div_ceil(PLANE_BLOCK);
    // Split each sample's planes into blocks; the last block of a sample may be short.
    let mut pieces: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(batch * blocks);
    for (n, sample) in out.chunks_mut(area * channels).enumerate() {
        for (b, chunk) in sample.chunks_mut(PLANE_BLOCK * area).enumerate() {
            pieces.push((n, b * PLANE_BLOCK, chunk));
        }
    }
    pieces.into_par_iter().for_each(|(n, t0, chunk)| {
        let planes = chunk.len() / area;
        for p in 0..area {
            let src = &acc[(n * area + p) * channels + t0..][..planes];
            for (dt, &a) in src.iter().enumerate() {
                chunk[dt * area + p] = f(a, n, t0 + dt, p);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_every_element() {
        for (batch, area, channels) in [(1, 1, 1), (2, 7, 33), (3, 5, 16), (1, 9, 40)] {
            let acc: Vec<i32> = (0..batch * area * channels).map(|v| v as i32).collect();
            let mut out = vec![0f32; acc.len()];
            nhwc_to_nchw(&acc, batch, area, channels, &mut out, |a, n, t, p| {
                assert_eq!(a as usize, (n * area + p) * channels + t);
                a as f32
            });
            for n in 0..batch {
                for t in 0..channels {
                    for p in 0..area {
                        assert_eq!(
                            out[(n * channels + t) * area + p],
                            ((n * area + p) * channels + t) as f32
                        );
                    }
                }
            }
        }
    }
}

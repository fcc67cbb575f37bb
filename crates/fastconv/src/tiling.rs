//! Sharing one output buffer between rayon tasks that write disjoint parts.

/// A raw pointer to an output buffer that tasks write in disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);

// SAFETY: `SharedOut` is only handed to tasks that write pairwise-disjoint
// index ranges of a buffer that outlives the parallel section; no two threads
// ever touch the same element.
unsafe impl Send for SharedOut {}
// SAFETY: as above — shared references only lead to disjoint writes.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The raw pointer (a method, so closures capture the `Sync` wrapper).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

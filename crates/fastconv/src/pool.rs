//! Per-thread scratch buffers owned by a plan, so running it allocates
//! nothing once the buffers have grown to their working size.

use std::sync::Mutex;

use crate::gemm;

/// One thread's buffers.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// GEMM packing buffers.
    pub gemm: gemm::Scratch,
    /// Floats for a kernel's own use (e.g. a de-interleaved plane).
    pub floats: Vec<f32>,
    /// A second float buffer.
    pub floats2: Vec<f32>,
    /// Doubles for a kernel's own use (e.g. f64 sums).
    pub doubles: Vec<f64>,
    /// Precomputed offsets (e.g. of every tap of a kernel).
    pub offsets: Vec<usize>,
    /// Integers for a kernel's own use (e.g. one row of int8 accumulators).
    pub ints: Vec<i32>,
    /// Unsigned counters (e.g. one row of XNOR popcounts).
    pub uints: Vec<u32>,
}

/// One [`Scratch`] per rayon worker (plus one for callers outside the pool).
#[derive(Debug)]
pub(crate) struct ScratchPool {
    slots: Vec<Mutex<Scratch>>,
}

impl ScratchPool {
    /// A slot for every thread of the current rayon pool.
    pub fn new() -> Self {
        let n = rayon::current_num_threads() + 1;
        ScratchPool {
            slots: (0..n).map(|_| Mutex::new(Scratch::default())).collect(),
        }
    }

    /// Runs `f` with the calling thread's scratch. Slots are indexed by the
    /// rayon thread index, so the lock is uncontended inside the pool that
    /// built the plan; elsewhere it is still correct, only serialised.
    pub fn with<R>(&self, f: impl FnOnce(&mut Scratch) -> R) -> R {
        let i =
            rayon::current_thread_index().map_or(self.slots.len() - 1, |i| i % self.slots.len());
        let mut guard = self.slots[i].lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

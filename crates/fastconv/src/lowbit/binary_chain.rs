//! The plan step of core's `BinaryConv` with binarized inputs (XNOR-Net's
//! eq. (9) with `K`, or sign inputs without it) on [`XnorGemm`], with the
//! batch norm and ReLU / Clip the plan folds into its epilogue.
//!
//! **Chaining.** A layer in sign mode ([`ActivationScale::None`]) reads its
//! input only through `sign(x)`. When the plan feeds a binary step's output
//! to such a layer and to nothing else, the producer runs
//! [`BinaryStep::run_chained`]: its epilogue computes each output value
//! exactly as before (`post(α·K·dot + b)`, one expression for both paths)
//! and writes only its sign bit, straight into the consumer's padded packed
//! input. The consumer then starts from those bits: the pair skips the f32
//! NCHW write, its read and the sign packing — a chain of such layers packs
//! signs once at its start and writes f32 once at its end, with results
//! identical to running the steps one after the other (the bits are the same
//! function of the same f32 values; `sign(0) = +1`, as core's
//! `binary_sign`).

use hasten_core::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::MutexGuard;

use super::binary_gemm::{ActivationScale, XnorBuffers, XnorGemm, XnorState};
use super::post::Post;
use super::Isa;
use crate::conv::ConvGeometry;
use crate::pool::ScratchPool;

/// A binary convolution with binarized inputs, ready to run in a plan.
#[derive(Debug)]
pub(crate) struct BinaryStep {
    kernel: XnorGemm,
    post: Post,
    /// The packed input (and `K`) of a run, with the lock that lets a
    /// producer fill it.
    buffers: XnorState,
    /// Set by a producer's [`Self::run_chained`]: the next run starts from
    /// the packed signs in `buffers` instead of packing its `src`.
    chained_input: AtomicBool,
}

impl Clone for BinaryStep {
    /// The same step with empty buffers of its own.
    fn clone(&self) -> Self {
        BinaryStep {
            kernel: self.kernel.clone(),
            post: self.post.clone(),
            buffers: XnorState::default(),
            chained_input: AtomicBool::new(false),
        }
    }
}

impl BinaryStep {
    /// The step of `kernel`, with nothing fused after it.
    pub(crate) fn new(kernel: XnorGemm) -> Self {
        BinaryStep {
            kernel,
            post: Post::NONE,
            buffers: XnorState::default(),
            chained_input: AtomicBool::new(false),
        }
    }

    /// The same step with `post` (the batch norm and ReLU / Clip that read
    /// its output alone) applied to every output in its epilogue.
    pub(crate) fn with_post(self, post: Post) -> Self {
        BinaryStep { post, ..self }
    }

    /// The packed kernel.
    pub(crate) fn kernel(&self) -> &XnorGemm {
        &self.kernel
    }

    /// The fused element-wise ops ([`Post::NONE`] when there are none).
    pub(crate) fn post(&self) -> &Post {
        &self.post
    }

    /// Whether the layer reads its input only through its signs (no `K`),
    /// so that a producer may hand it packed sign bits.
    pub(crate) fn takes_signs(&self) -> bool {
        self.kernel.scale() == ActivationScale::None
    }

    /// Locks this step's buffers and loads its input: `src` of `dims`
    /// packed, or the signs a producer left by [`Self::run_chained`] (then
    /// `src` is not read).
    fn load(
        &self,
        src: &[f32],
        dims: [usize; 4],
        pool: &ScratchPool,
        isa: Isa,
    ) -> Result<(MutexGuard<'_, XnorBuffers>, ConvGeometry)> {
        let mut buffers = self.buffers.lock();
        let src = (!self.chained_input.swap(false, Ordering::AcqRel)).then_some(src);
        let g = self.kernel.load_input(src, dims, isa, &mut buffers, pool)?;
        Ok((buffers, g))
    }

    /// Runs on the row-major NCHW batch `src` of `dims` into the row-major
    /// NCHW output `dst` on `isa` (a checked popcount level). When a chain
    /// has filled this step's packed input ([`Self::run_chained`]), `src`
    /// is not read. Allocates nothing once the buffers have grown.
    pub(crate) fn run(
        &self,
        src: &[f32],
        dst: &mut [f32],
        dims: [usize; 4],
        pool: &ScratchPool,
        isa: Isa,
    ) -> Result<()> {
        let (buffers, g) = self.load(src, dims, pool, isa)?;
        self.kernel
            .write_values(&buffers, &g, isa, &self.post, dst, pool)
    }

    /// Runs on `src` of `dims` (or on the signs this step's own producer
    /// left) and writes the signs of the output into `next`'s packed input,
    /// for `next`'s following run on the same batch; nothing is written as
    /// f32. `next` must take signs ([`Self::takes_signs`]: else its run
    /// fails with a typed error rather than reading stale values).
    pub(crate) fn run_chained(
        &self,
        src: &[f32],
        dims: [usize; 4],
        next: &BinaryStep,
        pool: &ScratchPool,
        isa: Isa,
    ) -> Result<()> {
        let (buffers, g) = self.load(src, dims, pool, isa)?;
        let mut next_buffers = next.buffers.lock();
        self.kernel.write_signs(
            &buffers,
            &g,
            isa,
            &self.post,
            next_buffers.packed_mut(),
            next.kernel.spec().padding,
            pool,
        );
        next.chained_input.store(true, Ordering::Release);
        Ok(())
    }
}

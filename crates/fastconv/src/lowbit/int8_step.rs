//! The plan step of core's `Int8Conv` (8-bit arithmetic of Vanhoucke et al.
//! \[49\], survey Section 5): core's exact semantics — its input rounding,
//! i32 bias, fixed-point requantisation or f64 dequantisation — run on the
//! [`Int8Gemm`] kernel from f32 NCHW to f32 NCHW, on every thread and
//! without allocating.
//!
//! The input is quantised in its own order by the vector code of
//! [`super::int8_quantize`] and moved as bytes into the kernel's padded
//! NHWC image; the epilogue runs in the GEMM's row tasks, so a step costs
//! one read of its input, a byte transpose, the integer GEMM and one write
//! of its output (the profiles in `docs/performance.md` show what each
//! part cost). Inputs holding a NaN take the array path, which also marks the
//! outputs that read it ([`hasten_core::Int8Conv::nan_outputs`]); the
//! quantizing copy finds them as it codes, so finite inputs pay no scan.
//!
//! **Chaining.** When the plan feeds one step's output to the next int8
//! step and to nothing else, the producer runs [`Int8Step::run_chained`]:
//! its epilogue computes each f32 output exactly as before and codes it with
//! the consumer's own input code, written straight into the consumer's
//! padded NHWC image. The consumer then starts from that image, so the pair
//! skips the f32 NCHW write, its read, and the quantizing copy, and the
//! results stay bit-identical to running the steps one after the other
//! (the codes are the same function of the same f32 values).

use hasten_core::{Int8Conv, QuantParams, Requant, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::int8_gemm::{Image, Int8Gemm};
use super::int8_quantize::InputCode;
pub(crate) use super::post::Post;
use super::Isa;
use crate::pool::ScratchPool;

/// Core's output stage for accumulator `acc = Σ w·(q − z_in)` of filter `t`:
/// `acc + bias`, then requantisation and dequantisation, or `acc·s_in·s_w`
/// in f64; then what the plan folded in: a batch norm's per-channel
/// `scale·y + shift` (the f32 expression of the plan's own affine step) and
/// a ReLU or Clip.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Epilogue {
    bias: Vec<i32>,
    input_scale: f64,
    weight_scales: Vec<f64>,
    output: Option<(QuantParams, Vec<Requant>)>,
    post: Post,
}

impl Epilogue {
    /// The output stage of `op`, with nothing fused after it.
    pub(crate) fn new(op: &Int8Conv) -> Self {
        let rows = op.layout().rows();
        Epilogue {
            bias: op
                .bias()
                .map_or_else(|| vec![0; rows], |b| b.iter().copied().collect()),
            input_scale: f64::from(op.input_params().scale()),
            weight_scales: (0..rows).map(|t| f64::from(op.weight_scale(t))).collect(),
            output: op.output_params().map(|p| (*p, op.requant().to_vec())),
            post: Post::NONE,
        }
    }

    /// One pixel's f32 outputs (`[t]`) from its accumulators (`[t]`),
    /// exactly as core's `reference_forward` followed by the activation
    /// computes them, the loops compiled for `isa` (a level checked for the
    /// int8 kernel): the same IEEE operations in the same order on every
    /// level (no contraction), so every level gives the same bits.
    #[inline]
    fn apply(&self, acc: &[i32], out: &mut [f32], isa: Isa) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the int8 kernel's Avx512 level implies avx512f.
            Isa::Avx512 => unsafe { self.apply_avx512(acc, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the int8 kernel's Avx2 level implies avx2.
            Isa::Avx2 => unsafe { self.apply_avx2(acc, out) },
            _ => self.apply_portable(acc, out),
        }
    }

    /// [`Self::apply`] vectorised for AVX-512.
    ///
    /// # Safety
    /// AVX-512F available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn apply_avx512(&self, acc: &[i32], out: &mut [f32]) {
        self.apply_portable(acc, out);
    }

    /// [`Self::apply`] vectorised for AVX2.
    ///
    /// # Safety
    /// AVX2 available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, acc: &[i32], out: &mut [f32]) {
        self.apply_portable(acc, out);
    }

    /// [`Self::apply`]'s loops, inlined into each level's copy.
    #[inline(always)]
    fn apply_portable(&self, acc: &[i32], out: &mut [f32]) {
        self.dequantize(acc, out);
        if !self.post.is_none() {
            self.post.apply(out, |t| t);
        }
    }

    /// [`Self::apply`] without the activation.
    #[inline(always)]
    fn dequantize(&self, acc: &[i32], out: &mut [f32]) {
        let per_filter = acc.iter().zip(&self.bias).zip(out);
        match &self.output {
            Some((quant, requant)) => {
                for (((&a, &b), o), m) in per_filter.zip(requant) {
                    *o = requantized(quant, m, a + b);
                }
            }
            None => {
                for (((&a, &b), o), &s) in per_filter.zip(&self.weight_scales) {
                    *o = scaled(f64::from(a + b), self.input_scale, s);
                }
            }
        }
    }

    /// The outputs of filter `t` over a run of pixels (one output plane),
    /// in place: `plane` holds the accumulators as f32 values — integers
    /// the caller proved exact — and gets the same bits as [`Self::apply`]
    /// gives each of them, the fused ops included.
    /// The loops are compiled for `isa` (any level; one the CPU lacks runs
    /// the portable loops), the same IEEE operations on every level.
    pub(crate) fn apply_plane(&self, t: usize, plane: &mut [f32], isa: Isa) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: avx512f detected.
            Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => unsafe {
                self.plane_avx512(t, plane)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: avx2 detected.
            Isa::Avx2 if std::arch::is_x86_feature_detected!("avx2") => unsafe {
                self.plane_avx2(t, plane)
            },
            _ => self.plane_portable(t, plane),
        }
    }

    /// [`Self::apply_plane`] vectorised for AVX-512.
    ///
    /// # Safety
    /// AVX-512F available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn plane_avx512(&self, t: usize, plane: &mut [f32]) {
        self.plane_portable(t, plane);
    }

    /// [`Self::apply_plane`] vectorised for AVX2.
    ///
    /// # Safety
    /// AVX2 available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn plane_avx2(&self, t: usize, plane: &mut [f32]) {
        self.plane_portable(t, plane);
    }

    /// [`Self::apply_plane`]'s loops, inlined into each level's copy.
    #[inline(always)]
    fn plane_portable(&self, t: usize, plane: &mut [f32]) {
        let b = self.bias[t];
        match &self.output {
            Some((quant, requant)) => {
                for v in plane.iter_mut() {
                    *v = requantized(quant, &requant[t], *v as i32 + b);
                }
            }
            None => {
                // `v + b` is exact in f64 and equals the i32 sum (core
                // proves it fits), without a per-value saturating cast.
                let (s, b) = (self.weight_scales[t], f64::from(b));
                for v in plane.iter_mut() {
                    *v = scaled(f64::from(*v) + b, self.input_scale, s);
                }
            }
        }
        if !self.post.is_none() {
            self.post.apply(plane, |_| t);
        }
    }

    /// Sets the fused element-wise ops.
    pub(crate) fn set_post(&mut self, post: Post) {
        self.post = post;
    }

    /// The fused element-wise ops ([`Post::NONE`] when there are none).
    pub(crate) fn post(&self) -> &Post {
        &self.post
    }
}

/// Core's requantisation of one biased accumulator `a` with multiplier `m`,
/// clamped to the output type and dequantised.
#[inline(always)]
fn requantized(quant: &QuantParams, m: &Requant, a: i32) -> f32 {
    let (lo, hi) = quant.dtype().range();
    let r = m.apply(a) + i64::from(quant.zero_point());
    quant.dequantize(r.clamp(i64::from(lo), i64::from(hi)) as i32)
}

/// Core's dequantisation of one biased accumulator `a` (an integer, as
/// f64) without an output code: `a · s_in · s_w` in f64, rounded once to
/// f32.
#[inline(always)]
fn scaled(a: f64, input_scale: f64, weight_scale: f64) -> f32 {
    (a * input_scale * weight_scale) as f32
}

/// An `Int8Conv` compiled for the plan: the packed kernel, the input code,
/// the output stage and the padded image buffers it reuses from run to run.
#[derive(Debug)]
pub(crate) struct Int8Step {
    kernel: Int8Gemm,
    code: InputCode,
    epilogue: Epilogue,
    image: Mutex<Image>,
    /// Set by the producer of a chain once it has filled `image` with this
    /// step's input codes; taken (reset) by this step's next run.
    chained_input: AtomicBool,
}

impl Clone for Int8Step {
    /// The same step with empty image buffers of its own.
    fn clone(&self) -> Self {
        Int8Step {
            kernel: self.kernel.clone(),
            code: self.code,
            epilogue: self.epilogue.clone(),
            image: Mutex::default(),
            chained_input: AtomicBool::new(false),
        }
    }
}

impl Int8Step {
    /// The step of `op` on `kernel` (its weights packed once, here at plan
    /// compilation), inputs shifted by `shift` into u8.
    pub(crate) fn new(op: &Int8Conv, kernel: Int8Gemm, shift: i32) -> Self {
        Int8Step {
            kernel,
            code: InputCode::new(op.input_params(), shift),
            epilogue: Epilogue::new(op),
            image: Mutex::default(),
            chained_input: AtomicBool::new(false),
        }
    }

    /// The packed kernel.
    pub(crate) fn kernel(&self) -> &Int8Gemm {
        &self.kernel
    }

    /// The same step with `post` (the batch norm and ReLU / Clip that read
    /// its output alone) applied to every f32 output in its epilogue.
    pub(crate) fn with_post(mut self, post: Post) -> Self {
        self.epilogue.set_post(post);
        self
    }

    /// The fused element-wise ops ([`Post::NONE`] when there are none).
    pub(crate) fn post(&self) -> &Post {
        self.epilogue.post()
    }

    /// Runs on `batch` NCHW samples of `in_hw` (a linear layer: 1 × 1) from
    /// `src` into `dst`; `Ok(false)` when `src` holds a NaN and nothing was
    /// written (the caller takes the array path). When the previous step of
    /// a chain has filled this step's image ([`Self::run_chained`]), `src`
    /// is not read: the run starts from those codes.
    pub(crate) fn run(
        &self,
        src: &[f32],
        dst: &mut [f32],
        batch: usize,
        in_hw: (usize, usize),
        pool: &ScratchPool,
        isa: Isa,
    ) -> Result<bool> {
        let g = self.kernel.geometry(batch, in_hw)?;
        let mut image = self.image.lock().unwrap_or_else(|e| e.into_inner());
        if self.chained_input.swap(false, Ordering::AcqRel) {
            self.kernel.forward_image(
                &image,
                &g,
                |acc, out| self.epilogue.apply(acc, out, isa),
                dst,
                pool,
                isa,
            );
            return Ok(true);
        }
        // The quantizing copy finds a NaN as it codes (no scan of its own).
        Ok(self.kernel.forward_into(
            src,
            &g,
            |s, d| self.code.code_run(s, d, isa),
            |acc, out| self.epilogue.apply(acc, out, isa),
            dst,
            &mut image,
            pool,
            isa,
        ))
    }

    /// Runs as [`Self::run`] but hands the outputs to `next`, the step that
    /// reads them and nothing else: coded with `next`'s input code into
    /// `next`'s image, for its next [`Self::run`] (or `run_chained`) on the
    /// same batch; `dst` is left unwritten, and `src` too is not read when
    /// this step's own producer left its codes. `Ok(false)` (nothing done)
    /// when `src` holds a NaN: the caller runs both steps unchained.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_chained(
        &self,
        src: &[f32],
        batch: usize,
        in_hw: (usize, usize),
        next: &Int8Step,
        pool: &ScratchPool,
        isa: Isa,
    ) -> Result<bool> {
        let g = self.kernel.geometry(batch, in_hw)?;
        let next_g = next.kernel.geometry(batch, g.out_hw)?;
        let mut image = self.image.lock().unwrap_or_else(|e| e.into_inner());
        // A link inside a chain starts from the codes its producer left.
        // A NaN in `src` is found by the quantizing copy, before `next`'s
        // image is touched.
        let src = (!self.chained_input.swap(false, Ordering::AcqRel)).then_some(src);
        let mut next_image = next.image.lock().unwrap_or_else(|e| e.into_inner());
        let done = self.kernel.forward_chained(
            src,
            &g,
            |s, d| self.code.code_run(s, d, isa),
            |acc, out| self.epilogue.apply(acc, out, isa),
            &mut image,
            &next.kernel,
            &next_g,
            |s, d| next.code.code_run(s, d, isa),
            &mut next_image,
            pool,
            isa,
        );
        if done {
            next.chained_input.store(true, Ordering::Release);
        }
        Ok(done)
    }
}

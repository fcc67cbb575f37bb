//! The plan step of a depthwise `Int8Conv` (one input channel per group,
//! any channel multiplier: the `d×d` layers of MobileNet and
//! EfficientNet-Lite blocks, survey Fig. 1 and Section 3, in the 8-bit
//! arithmetic of Vanhoucke et al. \[49\], Section 5): core's exact
//! semantics, from f32 NCHW to f32 NCHW, on the direct depthwise kernel of
//! [`crate::conv`] instead of the op's f64 reference.
//!
//! **Exact integer sums in f32.** The input is coded with the int8 step's
//! own [`InputCode`] and each code becomes the f32 value `q − z` (the
//! zero point of the shifted u8 code); the weights are the i8 values as
//! f32. Then `|q − z| ≤ 255` and `|w| ≤ 128`, so every product is an
//! integer of magnitude at most 32 640 and every partial sum of at most
//! [`MAX_TAPS`] = 514 taps one of magnitude below `2^24`: each is an f32,
//! so every multiplication, addition and fused multiply-add the float
//! kernel performs — in whatever order, on whatever ISA — is exact, and
//! the plane it writes holds core's accumulators `Σ w·(q − z)` exactly
//! (zero padding reads `0.0`, core's `z_in`). The epilogue
//! ([`Epilogue::apply_plane`], on each plane as the kernel finishes it)
//! runs the int8 step's own output stage on them, so the outputs are
//! bit-identical to `Int8Conv::reference_forward` (then the fused batch
//! norm and clamp).
//!
//! The float kernel is the depthwise kernel of the f32 plans (AVX-512,
//! AVX2 + FMA, portable; every stride, dilation and padding), so a step
//! costs one coding pass over its input and the depthwise sums on f32
//! lanes, each output plane finished by the epilogue while in cache.
//! Inputs holding a NaN return `Ok(false)`: the caller runs the reference
//! (core's NaN outputs).

use std::sync::Mutex;

use hasten_core::{ActShape, ConvSpec, Int8Conv, Result};
use rayon::prelude::*;

use super::int8_quantize::InputCode;
use super::int8_step::{Epilogue, Post};
use super::Isa;
use crate::conv::{ChannelView, ConvGeometry, DepthwiseConv};
use crate::elementwise::Clamp;
use crate::pool::ScratchPool;

/// The most taps (`kh·kw`) whose sums stay exact in f32: `514 · 255 · 128
/// < 2^24` (module doc).
pub(crate) const MAX_TAPS: usize = (1 << 24) / (255 * 128);

/// Values per task of the coding pass at least.
const MIN_TASK: usize = 8192;

/// A depthwise `Int8Conv` compiled for the plan.
#[derive(Debug)]
pub(crate) struct Int8Depthwise {
    /// OIHW weight sizes (`I = 1`) and the convolution's spec.
    dims: [usize; 4],
    spec: ConvSpec,
    /// The i8 weights as f32, OIHW.
    weights: Vec<f32>,
    code: InputCode,
    /// The shifted input zero point as f32: `q − z` of a code `q`.
    zero: f32,
    epilogue: Epilogue,
    /// The buffers and the float kernel of the last input shape.
    state: Mutex<State>,
}

/// What [`Int8Depthwise`] reuses from run to run.
#[derive(Debug, Default)]
struct State {
    /// The float kernel for an input shape on an ISA level.
    kernel: Option<(ActShape, Isa, DepthwiseConv)>,
    /// `q − z` of every input code.
    centred: Vec<f32>,
}

impl Clone for Int8Depthwise {
    /// The same step with empty buffers of its own.
    fn clone(&self) -> Self {
        Int8Depthwise {
            dims: self.dims,
            spec: self.spec,
            weights: self.weights.clone(),
            code: self.code,
            zero: self.zero,
            epilogue: self.epilogue.clone(),
            state: Mutex::default(),
        }
    }
}

impl Int8Depthwise {
    /// Whether `dims` and `spec` are a depthwise convolution this step
    /// computes exactly: one input channel per group, more than one group,
    /// at most [`MAX_TAPS`] taps.
    pub(crate) fn applies(dims: [usize; 4], spec: &ConvSpec) -> bool {
        spec.groups > 1 && dims[1] == 1 && dims[2] * dims[3] <= MAX_TAPS
    }

    /// The step of `op` (with [`Self::applies`] weight sizes `dims` and
    /// `spec`), inputs shifted by `shift` into u8 codes with zero point
    /// `zero` (`z_in + shift`).
    pub(crate) fn new(
        op: &Int8Conv,
        dims: [usize; 4],
        spec: ConvSpec,
        shift: i32,
        zero: u8,
    ) -> Self {
        Int8Depthwise {
            dims,
            spec,
            weights: op.weights().iter().map(|&w| f32::from(w)).collect(),
            code: InputCode::new(op.input_params(), shift),
            zero: f32::from(zero),
            epilogue: Epilogue::new(op),
            state: Mutex::default(),
        }
    }

    /// The same step with `post` (the batch norm and ReLU / Clip that read
    /// its output alone) applied to every output in its epilogue.
    pub(crate) fn with_post(mut self, post: Post) -> Self {
        self.epilogue.set_post(post);
        self
    }

    /// The fused element-wise ops ([`Post::NONE`] when there are none).
    pub(crate) fn post(&self) -> &Post {
        self.epilogue.post()
    }

    /// Runs on `batch` NCHW samples of shape `input` from `src` into `dst`
    /// with the float kernel on `isa` (a level the caller checked for float
    /// kernels); `Ok(false)` when `src` holds a NaN and `dst` was not
    /// written (the caller runs the reference). Allocates only when the
    /// input shape or the level changes.
    pub(crate) fn run(
        &self,
        src: &[f32],
        dst: &mut [f32],
        batch: usize,
        input: ActShape,
        pool: &ScratchPool,
        isa: Isa,
    ) -> Result<bool> {
        let out = hasten_core::op::WeightLayout::Conv {
            dims: self.dims,
            spec: self.spec,
        }
        .output_shape(input)?;
        let (n_in, n_out) = (batch * input.len(), batch * out.len());
        if src.len() != n_in || dst.len() != n_out {
            return Err(hasten_core::Error::shape(
                "int8 depthwise input / output",
                format!("{n_in} / {n_out}"),
                format!("{} / {}", src.len(), dst.len()),
            ));
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { kernel, centred } = &mut *state;
        centred.resize(n_in, 0.0);
        let chunk = MIN_TASK.max(n_in.div_ceil(4 * rayon::current_num_threads()));
        let nan = src
            .par_chunks(chunk)
            .zip(centred.par_chunks_mut(chunk))
            .map(|(s, c)| {
                // Codes in cache-sized runs, widened at once.
                let mut codes = [0u8; CODE_RUN];
                let mut nan = false;
                for (s, c) in s.chunks(CODE_RUN).zip(c.chunks_mut(CODE_RUN)) {
                    let q = &mut codes[..s.len()];
                    nan |= self.code.code_run(s, q, isa);
                    centre(q, c, self.zero, isa);
                }
                nan
            })
            .reduce(|| false, |a, b| a | b);
        if nan {
            return Ok(false);
        }
        if !matches!(kernel, Some((shape, level, _)) if *shape == input && *level == isa) {
            let geo = ConvGeometry::of_dims(self.dims, &self.spec, input, out)?;
            let conv = DepthwiseConv::new(
                isa,
                geo,
                &self.weights,
                None,
                Clamp::NONE,
                ChannelView::identity(input.channels),
            );
            *kernel = Some((input, isa, conv));
        }
        let (_, _, conv) = kernel.as_ref().expect("built above");
        // The epilogue runs on each plane as the kernel finishes it.
        conv.run_then(centred, dst, batch, pool, |t, plane| {
            self.epilogue.apply_plane(t, plane, isa)
        });
        Ok(true)
    }
}

/// Input values coded per run of the coding pass.
const CODE_RUN: usize = 1024;

/// `out[k] = q[k] − zero` as f32 (exact), the loop compiled for `isa` (a
/// float level this CPU supports).
fn centre(q: &[u8], out: &mut [f32], zero: f32, isa: Isa) {
    isa.run(|| {
        for (c, &q) in out.iter_mut().zip(q) {
            *c = f32::from(q) - zero;
        }
    })
}

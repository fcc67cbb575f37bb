//! Turns the packed-format ops of the core IR into the kernels of this module
//! and runs them: the bridge between `hasten_core`'s reference semantics and
//! the fast paths, used by [`crate::Plan`]'s op dispatch.
//!
//! | core op | kernel |
//! |---|---|
//! | `BinaryConv` with binarised inputs (XNOR-Net, eq. (9), or sign inputs without `K`) | [`super::binary_chain`] on [`super::binary_gemm`]: exact integer dot products; `K` summed in another order than the reference (agreement to f32 rounding; bit-exact without `K`); a batch norm and ReLU / Clip fused; packed signs handed to a following sign-mode binary step |
//! | `Int8Conv` (u8 or i8 inputs) | [`super::int8_step`] on [`super::int8_gemm`]: exact i32 accumulators, core's rounding and requantisation, fused into the layout passes |
//! | depthwise `Int8Conv` (one input channel per group, ≤ [`super::int8_depthwise::MAX_TAPS`] taps) | [`super::int8_depthwise`]: the direct depthwise kernel on exact integer sums, the same input code and epilogue |
//! | other grouped `Int8Conv` | [`super::int8_step`] on [`super::int8_gemm`] with block-diagonal weights (zero outside each group: the same exact accumulators, `groups`× the MACs) |
//! | `CodebookConv`, linear layout, one codebook of ≤ 16 entries, ≥ [`CODEBOOK_LINEAR_MIN_BYTES`] of decoded weights, batch 1 | [`super::codebook::CodebookLinear`] (4-bit codes decoded in registers per call: the only case measured faster than the dense linear step) |
//! | `ProductQuantizedConv`, linear layout, ≤ 256 centroids | [`super::codebook::PqLinear`] |
//! | `SparseConv` / `SparseLinear` | [`super::csr`] |
//! | `GroupwiseConv` | [`super::groupwise`] |
//! | weight-only formats on real inputs (BinaryConnect `BinaryConv`, `TernaryConv`, `CodebookConv` (convolutions and linear layers, per-layer or per-channel codebooks), `ProductQuantizedConv` convolutions, `FixedPointConv`) | decoded once by [`decode_weight_only`] into a dense op for the f32 GEMM / linear kernels: with real-valued activations a ±α or codebook weight still needs one FMA per MAC, so decoding at plan time is the fastest correct choice (measured in a plan at batch 1, 2 threads, [`super::codebook::CodebookLinear`] runs 400 → 120 at 0.33×, 3136 → 256 at 0.55×, 4096 → 1000 at 0.81× and 4096 → 4096 at 1.76× the speed of the dense linear step: it wins only once the f32 weights outgrow the last-level cache). The compressed model keeps its codes; the plan holds the decoded f32 weights |
//!
//! Everything else (grouped XNOR, LCNN) returns `None` and runs its
//! reference semantics; perforated convolutions have their own plan kernel
//! (`conv/perforated.rs`).

use hasten_core::ndarray::Array4;
use hasten_core::op::{BinaryInput, WeightLayout};
use hasten_core::{Error, IntType, Op, Operator, Result};

use super::binary_chain::BinaryStep;
use super::binary_gemm::{ActivationScale, XnorGemm};
use super::codebook::{CodebookLinear, PqLinear};
use super::csr::{CsrConv, CsrLinear};
use super::groupwise::GroupwiseGemm;
use super::int8_depthwise::Int8Depthwise;
use super::int8_gemm::{Int8Gemm, U8Quant};
use super::int8_step::Int8Step;
use super::post::Post;
use super::{check_isa, Isa, Needs};

/// What a low-bit step hands the next one instead of its f32 output
/// ([`Prepared::chains_into`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chain {
    /// The next int8 step's u8 input codes.
    Int8,
    /// The next binary step's packed input signs.
    Binary,
}

/// A core op compiled to a low-bit or sparse kernel.
#[derive(Debug, Clone)]
pub struct Prepared {
    kernel: Kernel,
    /// The widest level the kernels may use (`None`: the best available).
    isa: Option<Isa>,
}

#[derive(Debug, Clone)]
enum Kernel {
    Xnor {
        step: Box<BinaryStep>,
        linear: bool,
    },
    Int8 {
        step: Box<Int8Step>,
        op: Box<hasten_core::Int8Conv>,
        shift: i32,
        linear: bool,
    },
    Int8Depthwise {
        step: Box<Int8Depthwise>,
        op: Box<hasten_core::Int8Conv>,
    },
    Codebook(CodebookLinear),
    Pq(PqLinear),
    SparseConv(CsrConv),
    SparseLinear(CsrLinear),
    Groupwise(GroupwiseGemm),
}

/// The OIHW dims and spec of a layout, a linear layer being a 1×1 convolution
/// on the flattened sample.
fn conv_dims(layout: &WeightLayout) -> Option<([usize; 4], hasten_core::ConvSpec, bool)> {
    match *layout {
        WeightLayout::Conv { dims, spec } if spec.groups == 1 => Some((dims, spec, false)),
        WeightLayout::Linear { out, inp } => {
            Some(([out, inp, 1, 1], hasten_core::ConvSpec::new(), true))
        }
        _ => None,
    }
}

/// [`conv_dims`] for int8 layers, whose grouped convolutions run as one
/// dense convolution over all channels ([`block_diagonal`]): the OIHW dims
/// of that dense convolution and its one-group spec.
fn int8_dims(layout: &WeightLayout) -> Option<([usize; 4], hasten_core::ConvSpec, bool)> {
    match *layout {
        WeightLayout::Conv {
            dims: [t, c_g, kh, kw],
            spec,
        } if spec.groups > 1 => Some(([t, c_g * spec.groups, kh, kw], spec.with_groups(1), false)),
        _ => conv_dims(layout),
    }
}

/// The weights of `q` as the dense OIHW array of sizes `dims` (all input
/// channels): filter `t` of group `g` holds its weights at the channels of
/// `g` and zeros elsewhere, so the dense sums equal the grouped ones.
fn block_diagonal(q: &hasten_core::Int8Conv, dims: [usize; 4]) -> Array4<i8> {
    let [t_n, c_n, kh, kw] = dims;
    let c_g = q.weights().ncols() / (kh * kw);
    let groups = (c_n / c_g.max(1)).max(1);
    let t_g = t_n / groups;
    let mut w = Array4::<i8>::zeros(dims);
    for ((t, j), &v) in q.weights().indexed_iter() {
        let (c, tap) = (j / (kh * kw), j % (kh * kw));
        w[[t, (t / t_g) * c_g + c, tap / kw, tap % kw]] = v;
    }
    w
}

/// Flattens `[N, C, H, W]` to `[N, C·H·W, 1, 1]` for linear layouts.
fn as_linear_input(x: &Array4<f32>) -> Array4<f32> {
    let s = x.shape();
    let x = x.as_standard_layout();
    Array4::from_shape_vec(
        (s[0], s[1] * s[2] * s[3], 1, 1),
        x.iter().copied().collect(),
    )
    .expect("same element count")
}

/// Decoded f32 weight bytes from which a 4-bit, one-codebook linear layer
/// at batch 1 keeps its codes and runs [`super::codebook::CodebookLinear`]
/// (the 32 MiB last-level cache of the machine measured: 16 MB of f32
/// weights ran 0.81×, 64 MB 1.76× the dense linear step).
pub const CODEBOOK_LINEAR_MIN_BYTES: usize = 32 << 20;

/// Whether the codebook op `c` runs on its own kernel at `batch` rather
/// than decoded: see [`CODEBOOK_LINEAR_MIN_BYTES`].
fn keeps_codes(c: &hasten_core::CodebookConv, batch: usize) -> bool {
    batch == 1
        && matches!(c.layout(), WeightLayout::Linear { .. })
        && c.codebooks().nrows() == 1
        && c.k() <= 16
        && c.layout().weight_count() * 4 >= CODEBOOK_LINEAR_MIN_BYTES
}

/// Replaces a weight-only quantized op (real-valued inputs) by the dense op
/// with its decoded weights for a plan of batches of `batch`; any other op
/// (and a codebook layer that [`keeps_codes`]) is returned unchanged.
pub fn decode_weight_only(op: &Op, batch: usize) -> Result<Op> {
    let decoded = match op {
        Op::BinaryConv(b) if !b.binarize_input() => {
            b.layout().dense_layer(b.dequantized(), b.bias().cloned())?
        }
        Op::TernaryConv(t) => t.layout().dense_layer(t.dequantized(), t.bias().cloned())?,
        Op::FixedPointConv(f) => f.layout().dense_layer(f.dequantized(), f.bias().cloned())?,
        Op::CodebookConv(c) if !keeps_codes(c, batch) => {
            c.layout().dense_layer(c.dequantized(), c.bias().cloned())?
        }
        Op::ProductQuantizedConv(p) if matches!(p.layout(), WeightLayout::Conv { .. }) => {
            p.layout().dense_layer(p.dequantized(), p.bias().cloned())?
        }
        other => return Ok(other.clone()),
    };
    Ok(decoded.to_op())
}

/// Compiles `op` to a kernel of this module, or `None` where it has none.
pub fn prepare(op: &Op) -> Result<Option<Prepared>> {
    let kernel = match op {
        Op::BinaryConv(b) if b.binarize_input() => {
            let Some((dims, spec, linear)) = conv_dims(b.layout()) else {
                return Ok(None);
            };
            let signs = Array4::from_shape_vec(dims, b.sign_matrix().iter().copied().collect())
                .map_err(|e| Error::shape("binary sign matrix", format!("{dims:?}"), e))?;
            let bias = b.bias().map(|v| v.to_vec());
            let scale = match b.input() {
                BinaryInput::XnorK => ActivationScale::XnorK,
                _ => ActivationScale::None,
            };
            let kernel = XnorGemm::new(signs.view(), b.alpha().to_vec(), bias, spec, scale)?;
            Kernel::Xnor {
                step: Box::new(BinaryStep::new(kernel)),
                linear,
            }
        }
        Op::Int8Conv(q) => {
            // i8 inputs run shifted by +128 as u8: (q + 128) − (z + 128) = q − z.
            let shift = if q.input_params().dtype() == IntType::I8 {
                128
            } else {
                0
            };
            let z = q.input_params().zero_point() + shift;
            let Ok(z) = u8::try_from(z) else {
                return Ok(None);
            };
            if let WeightLayout::Conv { dims, spec } = *q.layout() {
                if Int8Depthwise::applies(dims, &spec) {
                    let step = Int8Depthwise::new(q, dims, spec, shift, z);
                    return Ok(Some(Prepared {
                        kernel: Kernel::Int8Depthwise {
                            step: Box::new(step),
                            op: Box::new(q.clone()),
                        },
                        isa: None,
                    }));
                }
            }
            let Some((dims, spec, linear)) = int8_dims(q.layout()) else {
                return Ok(None);
            };
            let w = block_diagonal(q, dims);
            let quant = U8Quant::new(q.input_params().scale(), z)?;
            let kernel = Int8Gemm::new(w.view(), &vec![1.0; dims[0]], None, spec, quant)?;
            Kernel::Int8 {
                step: Box::new(Int8Step::new(q, kernel, shift)),
                op: Box::new(q.clone()),
                shift,
                linear,
            }
        }
        Op::CodebookConv(c) => {
            let (WeightLayout::Linear { out, inp }, 1, k) =
                (*c.layout(), c.codebooks().nrows(), c.k())
            else {
                return Ok(None);
            };
            if k > 256 {
                return Ok(None);
            }
            let codes = c.codes().unpack().into_iter().map(|v| v as u8).collect();
            let bias = c.bias().map(|b| b.to_vec());
            Kernel::Codebook(CodebookLinear::new(
                out,
                inp,
                c.codebooks().row(0).to_vec(),
                codes,
                bias,
            )?)
        }
        Op::ProductQuantizedConv(p) => {
            let WeightLayout::Linear { out, inp } = *p.layout() else {
                return Ok(None);
            };
            if p.k() > 256 {
                return Ok(None);
            }
            let s_n = p.subblocks();
            // Core stores codes [s, out]; the kernel takes [out, s].
            let cs = p.codes().unpack();
            let codes = (0..out * s_n)
                .map(|e| cs[(e % s_n) * out + e / s_n] as u8)
                .collect();
            let books = p.codebooks().iter().copied().collect();
            Kernel::Pq(PqLinear::new(
                out,
                inp,
                p.subdim(),
                books,
                codes,
                p.bias().map(|b| b.to_vec()),
            )?)
        }
        Op::SparseConv(s) => {
            let m = s.filters().clone();
            Kernel::SparseConv(CsrConv::from_csr(
                m,
                s.in_channels(),
                s.kernel_hw(),
                *s.spec(),
                s.bias().map(|b| b.to_vec()),
            )?)
        }
        Op::SparseLinear(s) => {
            let m = s.weight().clone();
            Kernel::SparseLinear(CsrLinear::new(m, s.bias().map(|b| b.to_vec()))?)
        }
        Op::GroupwiseConv(g) => {
            let (kh, kw) = g.kernel_hw();
            let rows = g
                .taps()
                .iter()
                .map(|&(c, i, j)| ((c * kh + i) * kw + j) as u32)
                .collect();
            Kernel::Groupwise(GroupwiseGemm::from_rows(
                g.out_channels(),
                g.in_channels(),
                (kh, kw),
                *g.spec(),
                rows,
                g.weight().iter().copied().collect(),
                g.bias().map(|b| b.to_vec()),
            )?)
        }
        _ => return Ok(None),
    };
    Ok(Some(Prepared { kernel, isa: None }))
}

impl Prepared {
    /// Limits the kernels to `isa` and narrower levels: each kernel runs on
    /// the widest level up to `isa` that this CPU supports for it (a plan
    /// forced to AVX2 runs its low-bit steps on AVX2 too).
    pub fn with_isa(self, isa: Isa) -> Self {
        Prepared {
            isa: Some(isa),
            ..self
        }
    }

    /// Whether [`Self::with_post`] can fold a batch norm and an activation
    /// into the kernel's epilogue (int8 and binary convolutions and linear
    /// layers).
    pub(crate) fn fuses_post(&self) -> bool {
        matches!(
            self.kernel,
            Kernel::Int8 { .. } | Kernel::Int8Depthwise { .. } | Kernel::Xnor { .. }
        )
    }

    /// Applies `post` (a batch norm and a ReLU / Clip reading this op's
    /// output alone) to every output; `None` for kernels without
    /// [`Self::fuses_post`].
    pub(crate) fn with_post(self, post: Post) -> Option<Self> {
        let kernel = match self.kernel {
            Kernel::Int8 {
                step,
                op,
                shift,
                linear,
            } => Kernel::Int8 {
                step: Box::new(step.with_post(post)),
                op,
                shift,
                linear,
            },
            Kernel::Int8Depthwise { step, op } => Kernel::Int8Depthwise {
                step: Box::new(step.with_post(post)),
                op,
            },
            Kernel::Xnor { step, linear } => Kernel::Xnor {
                step: Box::new(step.with_post(post)),
                linear,
            },
            _ => return None,
        };
        Some(Prepared { kernel, ..self })
    }

    /// The level a kernel needing `needs` runs on.
    fn level(&self, needs: Needs) -> Option<Isa> {
        self.isa.map(|isa| isa.capped(needs))
    }

    /// Runs the kernel on an NCHW batch; agrees with the op's
    /// `reference_forward` (bit-exactly for int8, to f32 rounding of `K` for
    /// XNOR, to f32 GEMM rounding for the others).
    pub fn forward(&self, x: &Array4<f32>) -> Result<Array4<f32>> {
        match &self.kernel {
            Kernel::Xnor { step, linear } => {
                let isa = self.level(Needs::Popcount);
                let mut y = if *linear {
                    step.kernel().forward_with(&as_linear_input(x), isa)?
                } else {
                    step.kernel().forward_with(x, isa)?
                };
                let post = step.post();
                if !post.is_none() {
                    for ((_, t, _, _), v) in y.indexed_iter_mut() {
                        *v = post.value(*v, t);
                    }
                }
                Ok(y)
            }
            Kernel::Int8 {
                step,
                op,
                shift,
                linear,
            } => {
                let kernel = step.kernel();
                op.output_shape(hasten_core::op::input_shape_of(x)?)?;
                let xin = if *linear {
                    as_linear_input(x)
                } else {
                    x.clone()
                };
                let params = op.input_params();
                let q = xin.mapv(|v| (params.quantize(v) + shift) as u8);
                let (acc, (oh, ow)) = kernel.accumulators(q.view(), self.level(Needs::Int8Dot))?;
                let t_n = kernel.out_channels();
                let mut y = Array4::<f32>::zeros((x.shape()[0], t_n, oh, ow));
                let s_in = f64::from(params.scale());
                for ((n, t, yy, xx), v) in y.indexed_iter_mut() {
                    let a =
                        acc[((n * oh + yy) * ow + xx) * t_n + t] + op.bias().map_or(0, |b| b[t]);
                    *v = match op.output_params() {
                        Some(out) => {
                            let (lo, hi) = out.dtype().range();
                            let r = op.requant()[t].apply(a) + i64::from(out.zero_point());
                            out.dequantize(r.clamp(i64::from(lo), i64::from(hi)) as i32)
                        }
                        None => (f64::from(a) * s_in * f64::from(op.weight_scale(t))) as f32,
                    };
                }
                // NaN activations: the outputs that read one are NaN, as in
                // the reference (`hasten_core::Int8Conv::nan_outputs`).
                if let Some(nan) = op.nan_outputs(x)? {
                    y.zip_mut_with(&nan, |v, &n| {
                        if n {
                            *v = f32::NAN;
                        }
                    });
                }
                let post = step.post();
                if !post.is_none() {
                    for ((_, t, _, _), v) in y.indexed_iter_mut() {
                        post.apply(std::slice::from_mut(v), |_| t);
                    }
                }
                Ok(y)
            }
            Kernel::Int8Depthwise { step, op } => {
                let input = hasten_core::op::input_shape_of(x)?;
                let out = op.output_shape(input)?;
                let batch = x.shape()[0];
                let mut y = Array4::<f32>::zeros(out.batched(batch));
                let x = x.as_standard_layout();
                let src = x.as_slice().expect("standard layout");
                let dst = y.as_slice_mut().expect("fresh array");
                let pool = crate::pool::ScratchPool::new();
                self.run_depthwise(step, op, src, dst, batch, input, &pool)?;
                Ok(y)
            }
            Kernel::Codebook(l) => {
                let isa = self.level(Needs::Float);
                linear_forward(x, l.out_features(), |xs, b| l.forward(xs, b, isa))
            }
            Kernel::Pq(l) => {
                let isa = self.level(Needs::Float);
                linear_forward(x, l.out_features(), |xs, b| l.forward(xs, b, isa))
            }
            Kernel::SparseLinear(l) => {
                let isa = self.level(Needs::Float);
                linear_forward(x, l.matrix().rows(), |xs, b| l.forward(xs, b, isa))
            }
            Kernel::SparseConv(c) => c.forward(x, self.level(Needs::Float)),
            Kernel::Groupwise(g) => g.forward(x, self.level(Needs::Float)),
        }
    }
}

impl Prepared {
    /// Runs on `batch` row-major NCHW samples of shape `input` from `src`
    /// into `dst`. The fully connected kernels (codebook, product-quantized,
    /// CSR), the CSR and group-wise convolutions and the int8 step read
    /// `src` in place and use `buf`, `pool` and their own buffers as their
    /// only scratch, so they allocate nothing once those have grown (int8
    /// inputs holding a NaN excepted); so does the XNOR convolution, with
    /// its packed signs and `K` in buffers of its own.
    pub(crate) fn run(
        &self,
        src: &[f32],
        dst: &mut [f32],
        batch: usize,
        input: hasten_core::ActShape,
        buf: &mut Vec<f32>,
        pool: &crate::pool::ScratchPool,
    ) -> Result<()> {
        match &self.kernel {
            Kernel::Codebook(l) => {
                let isa = check_isa(self.level(Needs::Float), Needs::Float, "CodebookLinear")?;
                l.forward_into(src, batch, isa, dst, buf, pool)
            }
            Kernel::Pq(l) => {
                let isa = check_isa(self.level(Needs::Float), Needs::Float, "PqLinear")?;
                l.forward_into(src, batch, isa, dst, buf)
            }
            Kernel::SparseLinear(l) => l.forward_into(src, batch, dst),
            Kernel::Xnor { step, linear } => {
                let dims = if *linear {
                    [batch, input.len(), 1, 1]
                } else {
                    input.batched(batch)
                };
                let isa = check_isa(self.level(Needs::Popcount), Needs::Popcount, "XnorGemm")?;
                step.run(src, dst, dims, pool, isa)
            }
            Kernel::SparseConv(c) => {
                let dims = input.batched(batch);
                c.forward_into(src, dims, self.level(Needs::Float), dst, buf)
            }
            Kernel::Groupwise(g) => {
                let dims = input.batched(batch);
                g.forward_into(src, dims, self.level(Needs::Float), dst, buf)
            }
            Kernel::Int8 { step, linear, .. } => {
                let isa = check_isa(self.level(Needs::Int8Dot), Needs::Int8Dot, "Int8Gemm")?;
                let hw = if *linear {
                    (1, 1)
                } else {
                    (input.height, input.width)
                };
                if step.run(src, dst, batch, hw, pool, isa)? {
                    return Ok(());
                }
                self.run_arrays(src, dst, batch, input)
            }
            Kernel::Int8Depthwise { step, op } => {
                self.run_depthwise(step, op, src, dst, batch, input, pool)
            }
        }
    }

    /// What [`Self::run_chained`] hands `next` of this step's output, if
    /// it can: u8 codes ([`Chain::Int8`]) when both are int8 convolutions,
    /// packed signs ([`Chain::Binary`]) when both are binary convolutions
    /// and `next` takes its input's signs only (no `K`); neither a linear
    /// layer, both on the same level.
    pub(crate) fn chains_into(&self, next: &Prepared) -> Option<Chain> {
        match (&self.kernel, &next.kernel) {
            (Kernel::Int8 { linear: false, .. }, Kernel::Int8 { linear: false, .. })
                if self.level(Needs::Int8Dot) == next.level(Needs::Int8Dot) =>
            {
                Some(Chain::Int8)
            }
            (
                Kernel::Xnor { linear: false, .. },
                Kernel::Xnor {
                    linear: false,
                    step,
                },
            ) if step.takes_signs()
                && self.level(Needs::Popcount) == next.level(Needs::Popcount) =>
            {
                Some(Chain::Binary)
            }
            _ => None,
        }
    }

    /// Runs on `batch` samples of shape `input` from `src` and leaves the
    /// output as `next`'s input codes or packed signs in `next`'s own
    /// buffers (see [`super::int8_step`], [`super::binary_chain`]), to be
    /// read by `next`'s following [`Self::run`]; `Ok(false)` when it did
    /// nothing (not a chain per [`Self::chains_into`], or a NaN input to an
    /// int8 step): run both unchained.
    pub(crate) fn run_chained(
        &self,
        src: &[f32],
        batch: usize,
        input: hasten_core::ActShape,
        next: &Prepared,
        pool: &crate::pool::ScratchPool,
    ) -> Result<bool> {
        match (&self.kernel, &next.kernel) {
            (
                Kernel::Int8 { step, .. },
                Kernel::Int8 {
                    step: next_step, ..
                },
            ) if self.chains_into(next).is_some() => {
                let isa = check_isa(self.level(Needs::Int8Dot), Needs::Int8Dot, "Int8Gemm")?;
                let hw = (input.height, input.width);
                step.run_chained(src, batch, hw, next_step, pool, isa)
            }
            (
                Kernel::Xnor { step, .. },
                Kernel::Xnor {
                    step: next_step, ..
                },
            ) if self.chains_into(next).is_some() => {
                let isa = check_isa(self.level(Needs::Popcount), Needs::Popcount, "XnorGemm")?;
                let dims = input.batched(batch);
                step.run_chained(src, dims, next_step, pool, isa)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Runs the depthwise int8 step on its float kernel's level; an input
    /// holding a NaN runs the op's reference (core's NaN outputs), then the
    /// fused ops.
    #[allow(clippy::too_many_arguments)]
    fn run_depthwise(
        &self,
        step: &Int8Depthwise,
        op: &hasten_core::Int8Conv,
        src: &[f32],
        dst: &mut [f32],
        batch: usize,
        input: hasten_core::ActShape,
        pool: &crate::pool::ScratchPool,
    ) -> Result<()> {
        let isa = check_isa(self.level(Needs::Float), Needs::Float, "Int8Depthwise")?;
        if step.run(src, dst, batch, input, pool, isa)? {
            return Ok(());
        }
        let x = hasten_core::ndarray::ArrayView4::from_shape(input.batched(batch), src)
            .map_err(|e| Error::shape("int8 depthwise input", input, e))?
            .to_owned();
        let y = op.reference_forward(&x)?;
        let channels = y.shape()[1];
        let area = y.shape()[2] * y.shape()[3];
        let y = y.as_standard_layout();
        let ys = y.as_slice().expect("standard layout");
        if ys.len() != dst.len() {
            return Err(Error::shape("int8 depthwise output", dst.len(), ys.len()));
        }
        dst.copy_from_slice(ys);
        let post = step.post();
        if !post.is_none() {
            for (plane, values) in dst.chunks_mut(area.max(1)).enumerate() {
                post.apply(values, |_| plane % channels);
            }
        }
        Ok(())
    }

    /// [`Self::forward`] on a copy of the batch, the result copied to `dst`.
    fn run_arrays(
        &self,
        src: &[f32],
        dst: &mut [f32],
        batch: usize,
        input: hasten_core::ActShape,
    ) -> Result<()> {
        let x = hasten_core::ndarray::ArrayView4::from_shape(input.batched(batch), src)
            .map_err(|e| Error::shape("low-bit step input", input, e))?
            .to_owned();
        let y = self.forward(&x)?;
        let y = y.as_standard_layout();
        let ys = y.as_slice().expect("standard layout");
        if ys.len() != dst.len() {
            return Err(Error::shape("low-bit step output", dst.len(), ys.len()));
        }
        dst.copy_from_slice(ys);
        Ok(())
    }
}

/// Runs a `[batch, in] → [batch, out]` kernel on a flattened NCHW batch.
fn linear_forward(
    x: &Array4<f32>,
    out: usize,
    f: impl Fn(&[f32], usize) -> Result<Vec<f32>>,
) -> Result<Array4<f32>> {
    let batch = x.shape()[0];
    let xs = x.as_standard_layout();
    let y = f(xs.as_slice().expect("standard layout"), batch)?;
    Array4::from_shape_vec((batch, out, 1, 1), y).map_err(|e| Error::shape("linear output", out, e))
}

//! Convolution kernels (equation (1) of the survey): GEMM with lazy im2col
//! for dense and grouped layers (on the rows of a zero-padded copy split into
//! stride phases, without im2col, for layers with short output rows and
//! strided layers), plain GEMM for `1×1` layers, a direct kernel
//! for depthwise layers, Winograd F(2×2, 3×3) or F(4×4, 3×3) for stride-1 3×3 layers, and
//! GEMM over the kept positions for perforated layers.
//! [`ConvStep::new`] picks one and folds a following
//! batch norm and ReLU into it.

mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx2;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx512;
mod direct_1x1;
mod gemm_conv;
mod geometry;
mod im2col;
mod padded_rows;
mod perforated;
mod view;
mod winograd;
mod winograd_tile;

pub(crate) use depthwise::DepthwiseConv;
pub(crate) use geometry::ConvGeometry;
pub(crate) use perforated::PerforatedKernel;
pub(crate) use view::ChannelView;

use hasten_core::{
    memory, ActShape, BatchNorm, ConvLayer, ConvSpec, Error, Op, Result, WeightLayout,
};

use crate::elementwise::Clamp;
use crate::gemm::Kernel;
use crate::pool::ScratchPool;
use crate::{Isa, Winograd};
use gemm_conv::GemmConv;
use winograd::{WinogradConv, WinogradTile};

/// A convolution with its kernel chosen and its weights prepared.
#[derive(Debug)]
pub(crate) enum ConvStep {
    /// Dense, grouped or pointwise: GEMM.
    Gemm(GemmConv),
    /// Depthwise: direct.
    Depthwise(DepthwiseConv),
    /// Stride-1 3×3: Winograd F(2×2, 3×3) or F(4×4, 3×3).
    Winograd(WinogradConv),
}

/// Where a convolution step writes: the distance between the starts of two
/// samples' outputs (the output length for a plain tensor, more for a
/// channel slice of a concatenation) and an optional residual (a tensor of
/// the output's shape, contiguous per sample) added before the ReLU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvOut<'a> {
    /// Floats from one sample's output to the next's.
    pub stride: usize,
    /// A residual to add, `batch × T × OH × OW`.
    pub residual: Option<&'a [f32]>,
}

/// Which kernel runs a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Gemm,
    Depthwise,
    Winograd(WinogradTile),
}

impl Choice {
    fn of(winograd: Winograd, geo: &ConvGeometry, view: &ChannelView) -> Choice {
        let tile = match winograd {
            _ if !WinogradConv::supports(geo, view) => None,
            Winograd::Off => None,
            Winograd::Auto => WinogradConv::auto_tile(geo),
            Winograd::Always | Winograd::F4 => Some(WinogradTile::F4),
            Winograd::F2 => Some(WinogradTile::F2),
        };
        if let Some(tile) = tile {
            Choice::Winograd(tile)
        } else if DepthwiseConv::applies(geo) {
            Choice::Depthwise
        } else {
            Choice::Gemm
        }
    }
}

impl ConvStep {
    /// Whether the kernel [`ConvStep::new`] would pick for these arguments
    /// is the GEMM, which alone adds a residual in its epilogue and writes
    /// samples at a stride ([`ConvOut`]).
    pub fn gemm_chosen(
        winograd: Winograd,
        layer: &ConvLayer,
        input: ActShape,
        view: &ChannelView,
    ) -> Result<bool> {
        let geo = ConvGeometry::new(layer, input)?;
        Ok(Choice::of(winograd, &geo, view) == Choice::Gemm)
    }

    /// Prepares `layer` for inputs of shape `input` read through `view`,
    /// folding an inference batch norm (`W'[t] = γ'[t]·W[t]`,
    /// `b'[t] = γ'[t]·b[t] + β'[t]`) and an activation clamp (ReLU, Clip) into the epilogue.
    pub fn new(
        isa: Isa,
        winograd: Winograd,
        layer: &ConvLayer,
        input: ActShape,
        bn: Option<&BatchNorm>,
        clamp: Clamp,
        view: ChannelView,
    ) -> Result<Self> {
        let geo = ConvGeometry::new(layer, input)?;
        let per_filter = geo.depth();
        let mut weights = layer.weight().array().iter().copied().collect::<Vec<f32>>();
        let mut bias = layer.bias().map(|b| b.to_vec());
        if let Some(bn) = bn {
            let (scale, shift) = bn.affine();
            for (t, filter) in weights.chunks_exact_mut(per_filter).enumerate() {
                filter.iter_mut().for_each(|w| *w *= scale[t]);
            }
            let b = bias.get_or_insert_with(|| vec![0.0; geo.out_channels()]);
            for (t, v) in b.iter_mut().enumerate() {
                *v = *v * scale[t] + shift[t];
            }
        }
        Ok(match Choice::of(winograd, &geo, &view) {
            Choice::Winograd(tile) => ConvStep::Winograd(WinogradConv::new(
                tile,
                isa,
                // Few tiles (7×7 or 14×14 outputs): a tall microkernel
                // pads the GEMM columns less.
                Kernel::for_shape(isa, geo.t_g, WinogradConv::tiles(&geo, tile), geo.c_g),
                geo,
                &weights,
                bias.as_deref(),
                clamp,
                view,
            )),
            Choice::Depthwise => ConvStep::Depthwise(DepthwiseConv::new(
                isa,
                geo,
                &weights,
                bias.as_deref(),
                clamp,
                view,
            )),
            Choice::Gemm => ConvStep::Gemm(GemmConv::new(
                Kernel::for_shape(isa, geo.t_g, GemmConv::columns(&geo, &view), geo.depth()),
                geo,
                &weights,
                bias.as_deref(),
                clamp,
                view,
            )),
        })
    }

    /// The kernel's name, for plan descriptions.
    pub fn name(&self) -> &'static str {
        match self {
            ConvStep::Gemm(c) if c.on_padded_rows() => "conv gemm (padded rows)",
            ConvStep::Gemm(_) => "conv gemm",
            ConvStep::Depthwise(_) => "conv depthwise",
            ConvStep::Winograd(c) => match c.tile() {
                WinogradTile::F2 => "conv winograd",
                WinogradTile::F4 => "conv winograd f4",
            },
        }
    }

    /// Runs on `batch` samples (`input` row-major NCHW, `output` as `out`
    /// says; a residual or a stride other than the output length only on
    /// the GEMM path, see [`ConvStep::gemm_chosen`]).
    pub fn run(
        &self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        pool: &ScratchPool,
        out: ConvOut<'_>,
    ) {
        match self {
            ConvStep::Gemm(c) => c.run(input, output, batch, pool, out),
            ConvStep::Depthwise(c) => {
                assert!(out.residual.is_none() && out.stride * batch == output.len());
                c.run(input, output, batch, pool)
            }
            ConvStep::Winograd(c) => {
                assert!(out.residual.is_none() && out.stride * batch == output.len());
                c.run(input, output, batch, pool)
            }
        }
    }
}

/// The spec, kernel extent and input channels of an op that slides a kernel
/// over a zero-padded input, or `None` for the others.
fn sliding_window(op: &Op) -> Option<(ConvSpec, (usize, usize), usize)> {
    let of_layout = |layout: &WeightLayout| match *layout {
        WeightLayout::Conv { dims, spec } => {
            Some((spec, (dims[2], dims[3]), dims[1] * spec.groups))
        }
        WeightLayout::Linear { .. } => None,
    };
    match op {
        Op::Conv(l) => Some((*l.spec(), l.weight().kernel_hw(), l.in_channels())),
        Op::PerforatedConv(p) => {
            let l = p.conv();
            Some((*l.spec(), l.weight().kernel_hw(), l.in_channels()))
        }
        Op::GroupwiseConv(g) => Some((*g.spec(), g.kernel_hw(), g.in_channels())),
        Op::SparseConv(s) => Some((*s.spec(), s.kernel_hw(), s.in_channels())),
        Op::BinaryConv(b) => of_layout(b.layout()),
        Op::TernaryConv(t) => of_layout(t.layout()),
        Op::CodebookConv(c) => of_layout(c.layout()),
        Op::ProductQuantizedConv(p) => of_layout(p.layout()),
        Op::FixedPointConv(f) => of_layout(f.layout()),
        Op::Int8Conv(i) => of_layout(i.layout()),
        Op::LcnnConv(l) => of_layout(l.layout()),
        _ => None,
    }
}

/// Checks, before a plan allocates anything, that for every op that slides
/// a kernel over a zero-padded input (given with its per-sample input
/// shape) a zero-padded copy of its batch of `batch` fits in `limit` bytes —
/// the bound on the scratch of the depthwise, perforated and low-bit
/// kernels (the GEMM and Winograd kernels work in cache-sized tiles below
/// it). The plan checks its activation arena against the same limit.
///
/// [`Error::MemoryLimit`] names the first buffer over the limit;
/// [`Error::Overflow`] a size that does not fit in `usize`.
pub(crate) fn check_padded_inputs<'a>(
    ops: impl IntoIterator<Item = (&'a Op, ActShape)>,
    batch: usize,
    limit: u64,
) -> Result<()> {
    for (op, input) in ops {
        let Some((spec, (kh, kw), _)) = sliding_window(op) else {
            continue;
        };
        spec.output_hw(input.height, input.width, kh, kw)?;
        let (hp, wp) = spec.padding.padded_hw(input.height, input.width)?;
        let floats = [input.channels, hp, wp]
            .iter()
            .try_fold(batch, |acc, &f| acc.checked_mul(f))
            .ok_or_else(|| Error::overflow(format!("the zero-padded input of a {}", op.kind())))?;
        memory::check_against(
            &format!("the zero-padded input of a {} on {input}", op.kind()),
            floats,
            4,
            limit,
        )?;
    }
    Ok(())
}

//! Convolution kernels (equation (1) of the survey): GEMM with lazy im2col
//! for dense and grouped layers, plain GEMM for `1×1` layers, a direct kernel
//! for depthwise layers, Winograd F(2×2, 3×3) for stride-1 3×3 layers, and
//! GEMM over the kept positions for perforated layers.
//! [`ConvStep::new`] picks one and folds a following
//! batch norm and ReLU into it.

mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx512;
mod direct_1x1;
mod gemm_conv;
mod geometry;
mod im2col;
mod perforated;
mod view;
mod winograd;

pub(crate) use geometry::Geometry;
pub(crate) use perforated::PerforatedKernel;
pub(crate) use view::ChannelView;

use hasten_core::{ActShape, BatchNorm, ConvLayer, Result};

use crate::elementwise::Clamp;
use crate::gemm::Kernel;
use crate::pool::ScratchPool;
use crate::{Isa, Winograd};
use depthwise::DepthwiseConv;
use gemm_conv::GemmConv;
use winograd::WinogradConv;

/// A convolution with its kernel chosen and its weights prepared.
#[derive(Debug)]
pub(crate) enum ConvStep {
    /// Dense, grouped or pointwise: GEMM.
    Gemm(GemmConv),
    /// Depthwise: direct.
    Depthwise(DepthwiseConv),
    /// Stride-1 3×3: Winograd F(2×2, 3×3).
    Winograd(WinogradConv),
}

impl ConvStep {
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
        let geo = Geometry::new(layer, input)?;
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
        let use_winograd = WinogradConv::supports(&geo, &view)
            && match winograd {
                Winograd::Off => false,
                Winograd::Auto => WinogradConv::profitable(&geo),
                Winograd::Always => true,
            };
        Ok(if use_winograd {
            ConvStep::Winograd(WinogradConv::new(
                Kernel::for_rows(isa, geo.t_g),
                geo,
                &weights,
                bias.as_deref(),
                clamp,
                view,
            ))
        } else if DepthwiseConv::applies(&geo) {
            ConvStep::Depthwise(DepthwiseConv::new(
                isa,
                geo,
                &weights,
                bias.as_deref(),
                clamp,
                view,
            ))
        } else {
            ConvStep::Gemm(GemmConv::new(
                Kernel::for_rows(isa, geo.t_g),
                geo,
                &weights,
                bias.as_deref(),
                clamp,
                view,
            ))
        })
    }

    /// Runs on `batch` samples (`input`, `output` row-major NCHW).
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize, pool: &ScratchPool) {
        match self {
            ConvStep::Gemm(c) => c.run(input, output, batch, pool),
            ConvStep::Depthwise(c) => c.run(input, output, batch, pool),
            ConvStep::Winograd(c) => c.run(input, output, batch, pool),
        }
    }
}

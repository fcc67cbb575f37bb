//! Low-bit and sparse convolution kernels: the fast execution of the packed
//! weight formats of the survey's Section 5 (quantization, binarization,
//! codebooks, product quantization) and Section 6 (pruning).
//!
//! The survey notes that "the actual speed ups brought by quantization methods
//! are not nearly as high as the operation-count based prediction suggests"
//! because implementations are rarely published. This module publishes ours:
//!
//! - [`bitpack`] / [`popcount`] / [`binary_gemm`]: XNOR–popcount convolution
//!   for binary weights *and* activations (XNOR-Net, survey ref. on
//!   binarization), with exact zero-padding correction; consecutive binary
//!   steps of a plan whose consumers take `sign(x)` without `K` pass each
//!   other packed sign bits ([`binary_chain`]);
//! - [`ternary`]: ternary weights as two bit-planes on the binary kernel;
//! - [`int8_gemm`]: u8 × i8 → i32 convolution (AVX-512 VNNI `vpdpbusd`, AVX2
//!   `vpmaddwd` on u16 × i16, exact without saturation) with fused
//!   per-channel requantisation; consecutive int8 steps of a plan pass u8
//!   codes to each other ([`int8_step`]); depthwise int8 layers run exactly
//!   on the direct depthwise kernel ([`int8_depthwise`]), other grouped ones
//!   on the GEMM with block-diagonal weights;
//! - [`codebook`]: scalar-codebook (k-means) and product-quantized fully
//!   connected layers, decoding codes in registers or through lookup tables;
//! - [`csr`]: CSR-sparse convolution (sparse × dense GEMM over im2col) and FC;
//! - [`groupwise`]: group-wise pruned convolution, im2col without the pruned rows.
//!
//! Every SIMD path sits behind runtime feature detection and can be forced
//! with an [`Isa`] argument (an unavailable ISA is an error, never undefined
//! behaviour), so tests check each path against a naive scalar truth.

pub(crate) mod binary_chain;
pub(crate) mod binary_gemm;
pub(crate) mod bitpack;
pub(crate) mod codebook;
pub(crate) mod csr;
pub(crate) mod dense;
pub(crate) mod groupwise;
pub(crate) mod int8_depthwise;
pub(crate) mod int8_gemm;
pub(crate) mod int8_quantize;
pub(crate) mod int8_step;
pub(crate) mod layout;
pub(crate) mod popcount;
pub(crate) mod post;
pub(crate) mod prepare;
pub(crate) mod ternary;

pub use binary_gemm::{ActivationScale, PackedFilters, XnorGemm};
pub use bitpack::PackedSigns;
pub use codebook::{CodebookLinear, PqLinear};
pub use csr::{CsrConv, CsrLinear};
pub use dense::{dense_conv, dense_gemv};
pub use groupwise::GroupwiseGemm;
pub use int8_gemm::{Int8Gemm, Int8Output, U8Quant};
pub use popcount::xor_popcount;
pub use ternary::TernaryGemm;

/// The instruction-set level a kernel can be forced to use — the crate's
/// [`crate::Isa`]. What each level needs depends on the kernel family
/// ([`crate::Needs`], the table of [`Isa::supports`]); a level the machine
/// lacks is rejected with [`hasten_core::Error::Unsupported`].
pub use crate::Isa;

pub(crate) use crate::isa::{check_isa, Needs};

/// Rounds `x` up to a multiple of `m` (`m ≥ 1`).
pub(crate) const fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

#[cfg(test)]
mod no_panic_tests {
    use super::binary_gemm::{ActivationScale, XnorGemm};
    use super::csr::CsrConv;
    use super::groupwise::GroupwiseGemm;
    use super::int8_gemm::{Int8Gemm, U8Quant};
    use super::ternary::TernaryGemm;
    use hasten_core::ndarray::Array4;
    use hasten_core::{ConvSpec, Padding};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Arbitrary (also invalid) shapes, specs and channel counts: every
        /// kernel returns `Ok` or `Err`, never panics, and `Ok` only when the
        /// geometry is valid.
        #[test]
        fn kernels_never_panic(
            x_dims in proptest::array::uniform4(0usize..5),
            w_dims in proptest::array::uniform4(0usize..4),
            stride in 0usize..3, dil in 0usize..3, pad in 0usize..3, groups in 0usize..3,
        ) {
            let spec = ConvSpec::new().with_stride(stride).with_dilation(dil).with_groups(groups)
                .with_padding_sides(Padding { top: pad, bottom: 0, left: 0, right: pad });
            let x = Array4::<f32>::from_elem(x_dims, -0.5);
            let w = Array4::<f32>::from_elem(w_dims, 1.0);
            let valid = x_dims.iter().all(|&d| d > 0) && w_dims.iter().all(|&d| d > 0)
                && groups == 1 && x_dims[1] == w_dims[1]
                && spec.output_hw(x_dims[2], x_dims[3], w_dims[2], w_dims[3]).is_ok();
            let t = w_dims[0];
            if let Ok(b) = XnorGemm::new(w.view(), vec![1.0; t], None, spec, ActivationScale::XnorK) {
                prop_assert_eq!(b.forward(&x).is_ok(), valid);
            }
            if let Ok(tc) = TernaryGemm::new(w.view(), vec![1.0; t], None, spec, ActivationScale::None) {
                prop_assert_eq!(tc.forward(&x).is_ok(), valid);
            }
            let wq = w.mapv(|v| v as i8);
            if let Ok(q) = Int8Gemm::new(wq.view(), &vec![1.0; t], None, spec, U8Quant { scale: 0.1, zero_point: 3 }) {
                prop_assert_eq!(q.forward(&x).is_ok(), valid);
            }
            if let Ok(c) = CsrConv::from_dense(w.view(), None, spec) {
                prop_assert_eq!(c.forward(&x, None).is_ok(), valid);
            }
            if let Ok(g) = GroupwiseGemm::from_dense(w.view(), None, spec, 2) {
                prop_assert_eq!(g.forward(&x, None).is_ok(), valid);
            }
        }
    }
}

//! # hasten-tensor-decomp
//!
//! Tensor decompositions of section 2 of the survey (and the FC-layer SVD of
//! section 5, eq. (2)): each method is a [`hasten_core::Transform`] that
//! replaces a layer by a block of cheaper convolutions, and each exposes its
//! raw algorithm for users who want the factors.
//!
//! | method | transform | block |
//! | --- | --- | --- |
//! | truncated SVD (eq. (2)) / channel SVD | [`TruncatedSvd`] | `Linear, Linear` / `k×k C→K, 1×1 K→N` |
//! | separable filters, Jaderberg et al. \[15\] | [`SeparableFilters`] | `d×1 C→K, 1×d K→N` |
//! | clustering, Denton et al. \[17\] | [`Monochromatic`], [`BiclusterSvd`], [`BiclusterCp`] | channel gathers and grouped convolutions |
//! | CP: ALS, deflation \[17\], power method \[19\], LM \[18\] | [`CpConv`] | `1×1 C→K, d×1 dw, 1×d dw, 1×1 K→N` (or one `d×d` dw) |
//! | asymmetric reconstruction, Zhang et al. \[23\] | [`AsymmetricReconstruction`] | `k×k C→K, 1×1 K→N` |
//! | Tucker-2 (HOOI), Kim et al. \[24\] | [`Tucker2`] | `1×1 C→R₁, d×d R₁→R₂, 1×1 R₂→N` |
//! | Tensor-Train (TT-SVD), Novikov et al. \[26\] | [`TtMatrix`], [`TtConv`] | `TtLinear` / `1×1, kh×1, 1×kw, 1×1` |
//!
//! Every rank is chosen by one [`RankSpec`]: a fixed rank, an energy
//! fraction, a target MAC speed-up, or EVBMF where a matrix spectrum exists
//! (SVD, separable, asymmetric, Tucker-2; CP and TT take fixed ranks or a
//! speed-up, TT also energy as an accuracy). Computations run in f64 through
//! `hasten_core::linalg`; blocks store f32.
//!
//! Conventions of every block: it replaces one layer with `groups == 1`
//! (grouped layers return [`hasten_core::Error::Unsupported`]); the layer's
//! stride, padding and dilation go on the spatial convolutions (split into
//! vertical and horizontal parts for `d×1` / `1×d` pairs), `1×1`
//! convolutions get none, and the bias goes on the last convolution. Each
//! transform's report carries the relative weight error of the kernel the
//! block computes.
//!
//! ```
//! use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
//! use hasten_tensor_decomp::{RankSpec, Tucker2};
//!
//! let w = SeededRng::new(0).normal_array((64, 32, 3, 3), 0.1);
//! let layer = Layer::from(ConvLayer::from_array(w, ConvSpec::new().with_padding(1))?);
//! let c = Tucker2::new(RankSpec::Speedup(3.0)).apply(&layer, ActShape::new(32, 16, 16))?;
//! assert!(c.report.mac_speedup() >= 3.0);
//! # Ok::<(), hasten_core::Error>(())
//! ```

pub mod asymmetric;
pub mod clustering;
pub mod common;
pub mod cp;
pub mod evbmf;
pub mod kmeans;
pub mod rank;
pub mod separable;
pub mod svd;
pub mod tensor;
pub mod tt;
pub mod tucker;

pub use asymmetric::{AsymmetricOptions, AsymmetricReconstruction};
pub use clustering::{BiclusterCp, BiclusterSvd, Monochromatic};
pub use cp::CpConv;
pub use evbmf::{evbmf, Evbmf};
pub use rank::RankSpec;
pub use separable::SeparableFilters;
pub use svd::{low_rank, LowRank, TruncatedSvd};
pub use tt::{tt_svd, TtConv, TtMatrix, TtRank, TtTensor};
pub use tucker::{partial_tucker, tucker2, Tucker2};

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testutil;

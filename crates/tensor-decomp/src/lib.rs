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
//! | Tucker-2 (HOOI), Kim et al. \[24\] | [`Tucker2`] | `1×1 C→R₁, d×d R₁→R₂, 1×1 R₂→N` |
//! | Tensor-Train (TT-SVD), Novikov et al. \[26\] | [`TtMatrix`], [`TtConv`] | `TtLinear` / `1×1, kh×1, 1×kw, 1×1` |
//! | asymmetric reconstruction, Zhang et al. \[23\] | [`AsymmetricReconstruction`] | `k×k C→K, 1×1 K→N` |
//! | clustering, Denton et al. \[17\] | [`Monochromatic`], [`BiclusterSvd`], [`BiclusterCp`] | gathers and grouped convolutions |
//! | CP (ALS, deflation \[17\], power method \[19\], LM \[18\]) | [`CpConv`] | `1×1 C→K, d×1 dw, 1×d dw, 1×1 K→N` |
//!
//! Every rank is chosen by one [`RankSpec`]: fixed, energy, target MAC
//! speed-up or EVBMF. Computations run in f64 through `hasten_core::linalg`.

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
mod testutil;

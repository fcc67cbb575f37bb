//! # hasten-quant
//!
//! Quantization methods of section 5 of the survey *Speeding-up convolutional
//! neural networks* (Lebedev & Lempitsky). Each quantizer is a
//! [`hasten_core::Transform`] whose block holds the real packed storage (a
//! packed op of `hasten_core`), so its report's bits per weight and
//! compression ratio count the real payload (packed codes, scales,
//! codebooks).
//!
//! | method | survey | module | op |
//! | --- | --- | --- | --- |
//! | binarization, XNOR-Net | eq. (3), (8), (9) | [`binary`] | `BinaryConv` |
//! | BinaryConnect stochastic binarization | eq. (6)–(7) | [`binary`] | `BinaryConv` |
//! | ternary (Lin et al., TWN) | [55] | [`ternary`] | `TernaryConv` |
//! | scalar k-means | eq. (4), [51] | [`scalar`], [`kmeans1d`] | `CodebookConv` |
//! | product quantization | [52] | [`product`], [`kmeans`] | `ProductQuantizedConv` |
//! | fixed point, int8 | [49], [53] | [`fixed_point`], [`int8`] | `FixedPointConv`, `Int8Conv` |
//! | DoReFa | [61] | [`dorefa`] | `FixedPointConv` |
//! | LCNN | eq. (10)–(12), [63] | [`lcnn`] | `LcnnConv` |
//! | quantization-aware training | eq. (5) | [`ste`] | — |

pub mod binary;
pub mod kmeans1d;
pub mod scalar;
pub mod ste;
pub mod ternary;
pub mod weights;

pub use binary::{xnor_alpha, Binarize, StochasticBinarize};
pub use scalar::{ScalarKMeans, Solver};
pub use ternary::Ternarize;
pub use weights::{relative_error, Granularity, LayerWeights};

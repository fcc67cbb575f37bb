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
//! | ternary (Lin et al., TWN) | \[55\] | [`ternary`] | `TernaryConv` |
//! | scalar k-means | eq. (4), \[51\] | [`scalar`], [`kmeans1d`] | `CodebookConv` |
//! | product quantization | \[52\] | [`product`], [`kmeans`] | `ProductQuantizedConv` |
//! | fixed point, int8 | \[49\], \[53\] | [`fixed_point`], [`int8`] | `FixedPointConv`, `Int8Conv` |
//! | DoReFa | \[61\] | [`dorefa`] | `FixedPointConv` |
//! | LCNN | eq. (10)–(12), \[63\] | [`lcnn`] | `LcnnConv` |
//! | quantization-aware training | eq. (5) | [`ste`] | — |
//!
//! ```
//! use hasten_core::{ActShape, ConvLayer, ConvSpec, Layer, SeededRng, Transform};
//! use hasten_quant::{Granularity, ScalarKMeans, Solver};
//!
//! let mut rng = SeededRng::new(0);
//! let layer: Layer = ConvLayer::from_array(
//!     rng.normal_array((64, 64, 3, 3), 0.05),
//!     ConvSpec::new().with_padding(1),
//! )?
//! .into();
//! let k16 = ScalarKMeans::new(16, Granularity::PerTensor, Solver::Optimal)?;
//! let c = k16.apply(&layer, ActShape::new(64, 8, 8))?;
//! // 4-bit indices (576 per filter = 36 words) plus a 16-entry codebook.
//! assert_eq!(c.report.after.weight_bytes, 64 * 36 * 8 + 16 * 4);
//! assert!(c.report.compression_ratio() > 7.9);
//! assert!(c.report.weight_error.unwrap() < 0.12);
//! # Ok::<(), hasten_core::Error>(())
//! ```

pub mod binary;
pub mod dorefa;
pub mod fixed_point;
pub mod int8;
pub mod kmeans;
pub mod kmeans1d;
pub mod lcnn;
pub mod product;
pub mod scalar;
pub mod ste;
pub mod ternary;
pub mod weights;

pub use binary::{xnor_alpha, Binarize, StochasticBinarize};
pub use dorefa::DoReFa;
pub use fixed_point::{calibrate, Calibration, FixedPoint, Mode, UniformQuantizer};
pub use int8::{activation_params, Int8Quantize};
pub use lcnn::Lcnn;
pub use product::ProductQuantize;
pub use scalar::{ScalarKMeans, Solver};
pub use ternary::Ternarize;
pub use weights::{Granularity, LayerWeights};

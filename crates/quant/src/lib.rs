//! # hasten-quant
//!
//! Quantization methods of section 5 of the survey: each quantizer is a
//! [`hasten_core::Transform`] whose block holds the real packed storage.

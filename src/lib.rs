//! # Hasten
//!
//! Make trained convolutional networks fast and small.
//!
//! This facade re-exports the workspace crates:
//! [`core`], [`tensor_decomp`], [`quant`], [`prune`], [`distill`], [`fastconv`],
//! [`models`], [`train`], [`onnx`];
//! [`bench`](mod@bench) holds the latency measurement the examples share;
//! [`pipeline`] compresses a whole network by a recipe; [`qat`] composes
//! training and quantization into quantization-aware training that freezes
//! into packed ops.

pub mod bench;
pub mod pipeline;
pub mod qat;

pub use hasten_core as core;
pub use hasten_distill as distill;
pub use hasten_fastconv as fastconv;
pub use hasten_models as models;
pub use hasten_onnx as onnx;
pub use hasten_prune as prune;
pub use hasten_quant as quant;
pub use hasten_tensor_decomp as tensor_decomp;
pub use hasten_train as train;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

//! # Hasten
//!
//! Make trained convolutional networks fast and small.
//!
//! This facade re-exports the workspace crates:
//! [`core`], [`tensor_decomp`], [`quant`], [`prune`], [`distill`], [`fastconv`],
//! [`models`], [`train`], [`onnx`];
//! [`bench`](mod@bench) holds the latency measurement the examples share and
//! [`workloads`] the standard benchmark layers; [`pipeline`] compresses a
//! whole network by a recipe; [`qat`] composes training and quantization
//! into quantization-aware training that freezes into packed ops;
//! [`teacher_student`] trains a student graph against a teacher with
//! `distill`'s losses.
//!
//! Start with [`prelude`]: `use hasten::prelude::*;` brings what the common
//! path needs (graphs, layers, model builders, ONNX and weight files, the
//! most used transforms, the fast [`Plan`](fastconv::Plan)).

pub mod bench;
pub mod pipeline;
pub mod prelude;
pub mod qat;
pub mod teacher_student;
pub mod workloads;

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

//! The ONNX protobuf messages (`onnx.proto`, generated once with prost; see
//! the header of `onnx.rs` for the onnx release they come from).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!("onnx.rs");

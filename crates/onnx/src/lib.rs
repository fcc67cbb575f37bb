//! # hasten-onnx
//!
//! Real models in and out of Hasten:
//!
//! - [`import_file`] / [`import_bytes`] read an ONNX model (opsets 11–21) into
//!   a [`hasten_core::Graph`], folding the shape-computing subgraphs of
//!   exported models to constants for the declared input shape
//!   ([`ImportOptions`] sets the batch size and any symbolic dims).
//! - [`export_bytes`] / [`export_file`] write any graph — compressed ones
//!   included — as standard ONNX opset 17 that onnxruntime runs.
//! - [`weights`] loads and saves a graph's named parameters (PyTorch
//!   `state_dict` names) as safetensors, npy or npz.
//!
//! Every reader checks declared sizes against the bytes present before
//! allocating and reports problems as an [`OnnxError`].
//!
//! ```
//! use hasten_core::{ActShape, ConvLayer, ConvSpec, GraphBuilder, Relu, SeededRng};
//! use hasten_onnx::{export_bytes, import_bytes, ImportOptions};
//!
//! let mut rng = SeededRng::new(0);
//! let mut b = GraphBuilder::new();
//! let x = b.input("input", ActShape::new(3, 8, 8));
//! let conv = ConvLayer::from_array(rng.normal_array((4, 3, 3, 3), 0.1), ConvSpec::new().with_padding(1))?;
//! let y = b.op("conv1", conv, x);
//! let y = b.op("relu", Relu, y);
//! b.output(y);
//! let graph = b.build()?;
//!
//! let bytes = export_bytes(&graph)?;
//! let back = import_bytes(&bytes, &ImportOptions::default())?;
//! let input = rng.normal_array((2, 3, 8, 8), 1.0);
//! assert_eq!(graph.reference_forward(&[&input])?, back.reference_forward(&[&input])?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
mod export;
mod fold;
mod import;
mod node;
pub mod proto;
pub mod tensor;
pub mod weights;

pub use error::{OnnxError, Result};
pub use export::{export_bytes, export_file, export_model, EXPORT_OPSET};
pub use import::{
    decode_model, import_bytes, import_file, import_model, sanitize_name, ImportOptions,
    OPSET_RANGE,
};
pub use tensor::Tensor;

//! [`OnnxError`]: everything that can go wrong reading or writing a model or
//! its weights. Each variant names the file part at fault (tensor, node, op
//! type, opset) so a user can tell what to change.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = OnnxError> = std::result::Result<T, E>;

/// An import, export or weight-file failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a well-formed protobuf message.
    #[error("malformed ONNX protobuf ({what}): {reason}")]
    Decode {
        /// Which message was being decoded.
        what: String,
        /// The decoder's message.
        reason: String,
    },
    /// The model imports no default-domain opset this crate supports.
    #[error("unsupported opset {domain:?} version {version}: supported are ai.onnx 11..=21")]
    UnsupportedOpset {
        /// The opset domain (empty for the default domain).
        domain: String,
        /// Its version.
        version: i64,
    },
    /// A node's op (or one of its attributes or input forms) has no Hasten
    /// equivalent and cannot be folded to a constant.
    #[error("unsupported {op_type} (opset {opset}) at node `{node}`: {reason}")]
    UnsupportedOp {
        /// The ONNX op type.
        op_type: String,
        /// The ONNX node name (or its first output when unnamed).
        node: String,
        /// The default-domain opset version of the model.
        opset: i64,
        /// What exactly is unsupported.
        reason: String,
    },
    /// A node is malformed: missing inputs or attributes, bad values.
    #[error("invalid {op_type} at node `{node}`: {reason}")]
    InvalidNode {
        /// The ONNX op type.
        op_type: String,
        /// The node name.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// The model's graph is malformed (dangling names, bad inputs).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A tensor keeps its data in an external file, which this crate does not
    /// read.
    #[error("tensor `{tensor}` stores its data externally; embed the data in the model file")]
    ExternalData {
        /// The tensor name.
        tensor: String,
    },
    /// A tensor's element type is not supported.
    #[error("tensor `{tensor}` has unsupported element type {data_type}")]
    UnsupportedDataType {
        /// The tensor name.
        tensor: String,
        /// The ONNX `TensorProto.DataType` code.
        data_type: i32,
    },
    /// A tensor's declared dims and its data disagree, or the dims are
    /// negative or too large.
    #[error("tensor `{tensor}`: {reason}")]
    TensorData {
        /// The tensor name (or file entry).
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A weight file is malformed (safetensors, npy or npz).
    #[error("weight file ({format}): {reason}")]
    WeightFile {
        /// `safetensors`, `npy` or `npz`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A Hasten op or graph rejected what the model describes.
    #[error("{context}: {source}")]
    Core {
        /// Where (node, op).
        context: String,
        /// The core error.
        #[source]
        source: hasten_core::Error,
    },
}

impl From<hasten_core::Error> for OnnxError {
    fn from(source: hasten_core::Error) -> Self {
        OnnxError::Core {
            context: "graph".into(),
            source,
        }
    }
}

impl OnnxError {
    /// Wraps a core error with the place it happened.
    pub fn core(context: impl Into<String>, source: hasten_core::Error) -> Self {
        OnnxError::Core {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn tensor(tensor: impl Into<String>, reason: impl Into<String>) -> Self {
        OnnxError::TensorData {
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OnnxError::Io {
            path: path.into(),
            source,
        }
    }
}

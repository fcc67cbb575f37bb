//! [`TrainError`]: what training, optimizers and data loading can fail with.

use std::path::PathBuf;

/// The error type of `hasten-train`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// An error of the core crate (shapes, parameters, graph evaluation).
    #[error(transparent)]
    Core(#[from] hasten_core::Error),
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A data file is malformed.
    #[error("malformed {format} data in {what}: {reason}")]
    Format {
        /// The file format (`IDX`, `npy`).
        format: &'static str,
        /// The file or stream.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A parameter, gradient or optimizer state is missing or mismatched.
    #[error("parameter `{name}`: {reason}")]
    Param {
        /// The parameter's `state_dict` name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An invalid hyper-parameter or argument.
    #[error("invalid {name} = {value}: expected {expected}")]
    Invalid {
        /// What was given.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl TrainError {
    pub(crate) fn invalid(
        name: &'static str,
        value: impl ToString,
        expected: &'static str,
    ) -> Self {
        TrainError::Invalid {
            name,
            value: value.to_string(),
            expected,
        }
    }

    pub(crate) fn param(name: &str, reason: impl Into<String>) -> Self {
        TrainError::Param {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

/// `Result` with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

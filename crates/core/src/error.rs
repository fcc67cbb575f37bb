//! The error type shared by every Hasten crate.
//!
//! Every public function of the workspace returns [`Result`]. Each variant says
//! what was given and what was expected, so a user can fix the call without
//! reading the source.

/// Result alias used across Hasten.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when building, transforming or running a layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two shapes that must agree do not.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which quantity was checked.
        what: String,
        /// The shape the call needed.
        expected: String,
        /// The shape it received.
        got: String,
    },
    /// A dimension that must be at least 1 is zero.
    #[error("{what} has a zero-sized dimension: {shape}")]
    EmptyDimension {
        /// Which tensor or parameter.
        what: String,
        /// Its full shape.
        shape: String,
    },
    /// `groups` does not divide the channel counts.
    #[error("groups = {groups} must divide both input channels ({in_channels}) and output channels ({out_channels})")]
    InvalidGroups {
        /// Requested group count.
        groups: usize,
        /// Input channels of the layer.
        in_channels: usize,
        /// Output channels of the layer.
        out_channels: usize,
    },
    /// The (dilated) kernel does not fit in the padded input.
    #[error("kernel extent {kernel:?} (after dilation) exceeds the padded input {padded_input:?}")]
    KernelLargerThanInput {
        /// Effective kernel height and width.
        kernel: (usize, usize),
        /// Padded input height and width.
        padded_input: (usize, usize),
    },
    /// A NaN or infinity where it would poison every result.
    #[error("{what} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Which tensor.
        what: String,
        /// Flat (row-major) index of the first offending element.
        index: usize,
        /// The value found.
        value: f64,
    },
    /// A decomposition rank outside `1..=max`.
    #[error("rank {rank} is out of range: expected 1..={max}")]
    InvalidRank {
        /// Requested rank.
        rank: usize,
        /// Largest rank that makes sense for this tensor.
        max: usize,
    },
    /// A scalar parameter outside its valid range.
    #[error("invalid {name} = {value}: expected {expected}")]
    InvalidParameter {
        /// Parameter name.
        name: String,
        /// Value given (formatted).
        value: String,
        /// Valid range or form.
        expected: String,
    },
    /// The method does not apply to this kind of layer or op.
    #[error("{method} does not support {what}")]
    Unsupported {
        /// The method or function.
        method: String,
        /// What it was given.
        what: String,
    },
    /// A whole-network graph is malformed or cannot be rewritten as asked.
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    /// A size, shape or cost computed from the inputs does not fit in the
    /// integer type that holds it.
    #[error("{what} overflows the integer range")]
    Overflow {
        /// Which quantity overflowed.
        what: String,
    },
    /// A buffer would exceed the configured memory limit
    /// ([`crate::memory::limit`] or a plan's own limit).
    #[error("{what} needs {bytes} bytes, more than the memory limit of {limit} bytes")]
    MemoryLimit {
        /// Which buffer.
        what: String,
        /// Bytes it would take.
        bytes: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A block was built from an empty list of ops.
    #[error("a block needs at least one op")]
    EmptyBlock,
    /// Op `index` of a block rejected the output of the ops before it; the
    /// op's own error is the [`source`](std::error::Error::source).
    #[error("op #{index} ({kind}) of the block cannot take input {input}")]
    Op {
        /// Position of the op in the block (from 0).
        index: usize,
        /// The op's kind.
        kind: &'static str,
        /// The per-sample input shape it was given.
        input: crate::shape::ActShape,
        /// Why the op rejected it.
        #[source]
        cause: Box<Error>,
    },
    /// A numerical routine failed (no convergence, singular system).
    #[error("numerical failure in {routine}: {reason}")]
    Numerical {
        /// The routine.
        routine: String,
        /// Why it failed.
        reason: String,
    },
}

impl Error {
    /// Convenience constructor for [`Error::ShapeMismatch`].
    pub fn shape(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::ShapeMismatch {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    /// Convenience constructor for [`Error::InvalidParameter`].
    pub fn param(
        name: impl Into<String>,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name: name.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// Convenience constructor for [`Error::Numerical`].
    pub fn numerical(routine: impl Into<String>, reason: impl ToString) -> Self {
        Error::Numerical {
            routine: routine.into(),
            reason: reason.to_string(),
        }
    }

    /// Convenience constructor for [`Error::Overflow`].
    pub fn overflow(what: impl Into<String>) -> Self {
        Error::Overflow { what: what.into() }
    }

    /// Convenience constructor for [`Error::Unsupported`].
    pub fn unsupported(method: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Unsupported {
            method: method.into(),
            what: what.into(),
        }
    }
}

/// Checks that every element is finite; reports the first one that is not.
pub fn ensure_finite<'a, F>(what: &str, values: impl IntoIterator<Item = &'a F>) -> Result<()>
where
    F: num_traits::Float + 'a,
{
    for (index, v) in values.into_iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::NonFinite {
                what: what.to_string(),
                index,
                value: v.to_f64().unwrap_or(f64::NAN),
            });
        }
    }
    Ok(())
}

/// Checks that no dimension of `shape` is zero.
pub fn ensure_nonempty(what: &str, shape: &[usize]) -> Result<()> {
    if shape.contains(&0) {
        return Err(Error::EmptyDimension {
            what: what.to_string(),
            shape: format!("{shape:?}"),
        });
    }
    Ok(())
}

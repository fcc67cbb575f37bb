//! [`PipelineError`]: what can go wrong parsing a recipe or compressing a
//! network with it. Errors about a step name it (`step 2 (int8)`).

use hasten_train::TrainError;

/// A recipe or compression failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The recipe text is not valid TOML or JSON, or its top level is malformed.
    #[error("cannot parse the recipe ({format}): {message}")]
    Parse {
        /// `TOML` or `JSON`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A recipe-wide setting is invalid (no steps, a bad fine-tuning setting, …).
    #[error("invalid recipe: {0}")]
    Invalid(String),
    /// A step is malformed (unknown method, bad parameter) or selects nothing.
    #[error("step {step} ({method}): {message}")]
    Step {
        /// The step, counted from 1.
        step: usize,
        /// Its method name, or `?` when the method itself could not be read.
        method: String,
        /// What is wrong.
        message: String,
    },
    /// A step's transform failed on a node.
    #[error("step {step} ({method})")]
    Transform {
        /// The step, counted from 1.
        step: usize,
        /// Its method name.
        method: String,
        /// The graph surgery's error, which names the node.
        #[source]
        source: hasten_core::Error,
    },
    /// Fine-tuning or evaluation failed.
    #[error("fine-tuning failed")]
    Train(#[from] TrainError),
    /// Costing, compiling or running a graph failed.
    #[error(transparent)]
    Core(#[from] hasten_core::Error),
}

/// Results of the pipeline.
pub type Result<T> = std::result::Result<T, PipelineError>;

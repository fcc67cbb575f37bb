//! Command failures: a message with an optional cause, printed as one line
//! by `main`.

use std::error::Error as StdError;
use std::fmt;

pub(crate) type Result<T> = std::result::Result<T, Box<dyn StdError + Send + Sync>>;

/// A failure with a message and an optional cause.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) source: Option<Box<dyn StdError + Send + Sync>>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

pub(crate) fn fail(message: impl Into<String>) -> Box<dyn StdError + Send + Sync> {
    Box::new(Failure {
        message: message.into(),
        source: None,
    })
}

/// Wraps an error with what was being done.
pub(crate) trait Context<T> {
    fn context(self, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: StdError + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| {
            Box::new(Failure {
                message: message(),
                source: Some(Box::new(e)),
            }) as Box<dyn StdError + Send + Sync>
        })
    }
}

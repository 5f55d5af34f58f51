//! The one error type of the training engine.
//!
//! Variants are named after what failed; communication errors keep the
//! collectives core's error as their cause. [`Error::kind`] gives the same
//! small classification the core uses, so a caller can tell a bad argument
//! from a failed peer.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller can do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Fix the arguments (a spec, a shape, a file's contents).
    InvalidArgument,
    /// The engine was used in a way it does not support (yet).
    InvalidUsage,
    /// Another rank failed, or a collective failed.
    RemoteFailure,
    /// The machine refused (files, threads).
    System,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid model spec: {0}")]
    Spec(String),

    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("data: {0}")]
    Data(String),

    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("checkpoint {path}: {what}")]
    Checkpoint { path: PathBuf, what: String },

    #[error("{op} failed: {source}")]
    Comm {
        op: &'static str,
        #[source]
        source: oxccl::Error,
    },

    #[error("a replica thread panicked: {0}")]
    Panicked(String),
}

impl Error {
    /// The classification a caller can act on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Spec(_)
            | Error::Shape { .. }
            | Error::Config(_)
            | Error::Data(_)
            | Error::File { .. }
            | Error::Checkpoint { .. } => ErrorKind::InvalidArgument,
            Error::Comm { .. } | Error::Panicked(_) => ErrorKind::RemoteFailure,
            Error::Io { .. } => ErrorKind::System,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn comm(op: &'static str) -> impl FnOnce(oxccl::Error) -> Self {
        move |source| Error::Comm { op, source }
    }
}

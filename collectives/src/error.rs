//! The one error type of the collectives core.
//!
//! Errors are cheap to clone (a failure is reported by every rank that
//! waited on it) and keep their cause where there is one: an operating
//! system's error travels as [`OsError`], the source of [`Error::Io`].

use std::sync::Arc;
use std::time::Duration;

use crate::schedule::Rank;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller can do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Fix the arguments of this call.
    InvalidArgument,
    /// The ranks disagree, or the communicator is used wrongly.
    InvalidUsage,
    /// Another rank failed or aborted.
    RemoteFailure,
    /// A deadline passed.
    Timeout,
    /// The machine refused (memory, threads, files, sockets).
    System,
    /// oxccl broke one of its own rules: a bug, to be reported.
    Internal,
}

/// An operating-system error kept as the cause of an [`Error`]: shared, so
/// errors stay cheap to clone, and equal when their kind and message are.
#[derive(Clone, Debug)]
pub struct OsError(Arc<std::io::Error>);

impl OsError {
    /// The error as the standard library gave it.
    pub fn get(&self) -> &std::io::Error {
        &self.0
    }

    pub fn kind(&self) -> std::io::ErrorKind {
        self.0.kind()
    }
}

impl From<std::io::Error> for OsError {
    fn from(e: std::io::Error) -> OsError {
        OsError(Arc::new(e))
    }
}

impl PartialEq for OsError {
    fn eq(&self, other: &OsError) -> bool {
        self.kind() == other.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for OsError {}

impl std::fmt::Display for OsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for OsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("{what}: buffer too small: need {need} elements, got {got}")]
    BufferTooSmall { what: &'static str, need: usize, got: usize },

    #[error("rank {rank} out of range for a world of {world}")]
    RankOutOfRange { rank: usize, world: usize },

    #[error("a communicator needs at least one rank")]
    ZeroRanks,

    #[error("{call}: ranks disagree on {field}: rank {rank} has {mine}, rank {peer} has {theirs}")]
    Mismatch {
        /// The call and its sequence number, e.g. `all_reduce #5`.
        call: String,
        field: &'static str,
        rank: Rank,
        mine: String,
        peer: Rank,
        theirs: String,
    },

    #[error("{} on rank {rank}: timed out after {waited:?} waiting for rank {peer} ({what})", .call.as_deref().unwrap_or("a call"))]
    Timeout {
        /// The call and its sequence number, e.g. `all_reduce #5`; `None`
        /// where the error was raised by a transport, which does not know it.
        call: Option<String>,
        rank: Rank,
        peer: Rank,
        what: &'static str,
        waited: Duration,
    },

    #[error("{} on rank {rank}: rank {peer} is gone ({what})", .call.as_deref().unwrap_or("a call"))]
    PeerGone {
        /// The call and its sequence number, e.g. `all_reduce #5`; `None`
        /// where the error was raised by a transport, which does not know it.
        call: Option<String>,
        rank: Rank,
        peer: Rank,
        what: String,
    },

    #[error("communicator aborted: {0}")]
    Aborted(String),

    #[error("{algorithm} needs ranks that share an address space; this transport has none")]
    NeedsSharedMemory { algorithm: &'static str },

    #[error("protocol error from rank {peer}: {what}")]
    Protocol { peer: Rank, what: String },

    /// The machine refused, with no operating-system error to show.
    #[error("system error: {0}")]
    System(String),

    /// An operating-system call failed: what oxccl was doing, and the error.
    #[error("system error: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: OsError,
    },

    /// oxccl broke one of its own rules (a bug): the message says where.
    #[error("internal error (a bug in oxccl, please report it): {0}")]
    Internal(String),

    /// A wait on the rendezvous key-value store ran past its deadline.
    #[error("rendezvous store on rank {rank}: timed out after {waited:?} waiting for key(s) {keys:?}")]
    StoreTimeout { rank: Rank, keys: Vec<String>, waited: Duration },

    /// Some ranks never arrived (or never finished) at rendezvous.
    #[error("rendezvous on rank {rank}: timed out after {waited:?} waiting for rank(s) {missing:?} ({what})")]
    Rendezvous { rank: Rank, missing: Vec<Rank>, waited: Duration, what: String },
}

impl Error {
    /// The classification a caller can act on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_)
            | Error::BufferTooSmall { .. }
            | Error::RankOutOfRange { .. }
            | Error::ZeroRanks => ErrorKind::InvalidArgument,
            Error::Mismatch { .. } | Error::NeedsSharedMemory { .. } => ErrorKind::InvalidUsage,
            Error::Aborted(_) | Error::Protocol { .. } | Error::PeerGone { .. } => ErrorKind::RemoteFailure,
            Error::Timeout { .. } | Error::StoreTimeout { .. } | Error::Rendezvous { .. } => ErrorKind::Timeout,
            Error::System(_) | Error::Io { .. } => ErrorKind::System,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The failure of an operating-system call while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source: source.into() }
    }

    /// [`Error::io`] with the calling thread's last operating-system error.
    pub fn last_os_error(what: impl Into<String>) -> Error {
        Error::io(what, std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_source() {
        use std::error::Error as _;
        let e = Error::io("TCP listen on 127.0.0.1:1", std::io::Error::from(std::io::ErrorKind::AddrInUse));
        assert_eq!(e.kind(), ErrorKind::System);
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string());
        assert!(e.to_string().starts_with("system error: TCP listen on 127.0.0.1:1: "), "{e}");
        assert_eq!(e.clone(), e);
    }

    #[test]
    fn a_call_name_is_optional() {
        let t = |call: Option<&str>| Error::Timeout {
            call: call.map(str::to_string),
            rank: 1,
            peer: 2,
            what: "message",
            waited: Duration::from_secs(1),
        };
        assert!(t(Some("all_reduce #3")).to_string().starts_with("all_reduce #3 on rank 1"));
        assert!(t(None).to_string().starts_with("a call on rank 1"));
        assert_eq!(Error::Internal("x".into()).kind(), ErrorKind::Internal);
    }
}

//! The one error type of the collectives core.

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
    /// The machine refused (memory, threads, files).
    System,
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

    #[error("{call} on rank {rank}: timed out after {waited:?} waiting for rank {peer} ({what})")]
    Timeout {
        /// The call and its sequence number, e.g. `all_reduce #5`.
        call: String,
        rank: Rank,
        peer: Rank,
        what: &'static str,
        waited: Duration,
    },

    #[error("{call} on rank {rank}: rank {peer} is gone ({what})")]
    PeerGone {
        /// The call and its sequence number, e.g. `all_reduce #5`.
        call: String,
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

    #[error("system error: {0}")]
    System(String),

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
            Error::System(_) => ErrorKind::System,
        }
    }
}

//! Starting a job: who am I, how many are we, and where do we meet.
//!
//! - [`env`](mod@env): the rank, world size and rendezvous address, read from the
//!   environment of whichever launcher started the process (`oxccl run`,
//!   Open MPI, Slurm, torchrun-style): [`Launch`].
//! - `store` (internal): a small TCP key-value store served by rank 0, like
//!   NCCL's unique-id bootstrap; every wait on it has a deadline.
//! - `rendezvous` (internal): every rank publishes a [`PeerInfo`] in the
//!   store and reads everyone else's; a rank that never arrives is named in
//!   the error.
//! - [`connect`](mod@connect): from the environment to a transport, through
//!   the transport table ([`connect::connect_over`]).
//!
//! Public: [`Launch`] and [`Master`] (tools and transports outside this
//! crate read the launcher's environment), [`PeerInfo`] and [`host_id`]
//! (what a transport's connector judges reachability from), and
//! [`connect::TransportKind`] / [`connect::connect_over`].

pub mod connect;
pub mod env;
pub(crate) mod rendezvous;
pub(crate) mod store;

pub use env::{Launch, Master};
pub use rendezvous::host_id;

use std::collections::BTreeMap;

use crate::schedule::Rank;

/// What a rank tells the others at rendezvous.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub rank: Rank,
    /// Identifies the machine: ranks with equal host ids can use shared memory.
    pub host_id: String,
    pub pid: u32,
    /// Each transport's endpoint (one line of text the transport writes and
    /// reads: a segment name, a listening address, an RDMA card), keyed by
    /// the transport's name (see [`crate::transport::connector`]); absent
    /// for transports this rank did not set up.
    pub endpoints: BTreeMap<String, String>,
}

impl PeerInfo {
    /// The endpoint this rank published for transport `name`.
    pub fn endpoint(&self, name: &str) -> Option<&str> {
        self.endpoints.get(name).map(String::as_str)
    }

    /// Sets the endpoint of transport `name`.
    pub fn with_endpoint(mut self, name: &str, endpoint: impl Into<String>) -> PeerInfo {
        self.endpoints.insert(name.to_string(), endpoint.into());
        self
    }
}

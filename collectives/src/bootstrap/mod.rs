//! Starting a job: who am I, how many are we, and where do we meet.
//!
//! - [`env`](mod@env): the rank, world size and rendezvous address, read from the
//!   environment of whichever launcher started the process (`oxccl run`,
//!   Open MPI, Slurm, torchrun-style).
//! - [`store`]: a small TCP key-value store served by rank 0, like NCCL's
//!   unique-id bootstrap; every wait on it has a deadline.
//! - [`rendezvous`](mod@rendezvous): every rank publishes a [`PeerInfo`] in the store and
//!   reads everyone else's; a rank that never arrives is named in the error.

pub mod connect;
pub mod env;
pub mod rendezvous;
pub mod store;

pub use env::{Launch, Master};
pub use rendezvous::{host_id, rendezvous};
pub use store::Store;

use std::net::SocketAddr;

use crate::schedule::Rank;

/// What a rank tells the others at rendezvous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub rank: Rank,
    /// Identifies the machine: ranks with equal host ids can use shared memory.
    pub host_id: String,
    pub pid: u32,
    /// Where this rank's TCP transport accepts connections.
    pub tcp_addr: SocketAddr,
    /// Name of this rank's shared-memory segment (under /dev/shm), if it made one.
    pub shm_name: Option<String>,
    /// This rank's RDMA endpoint (an opaque line the RDMA transport writes
    /// and reads), if it set one up.
    pub rdma: Option<String>,
}

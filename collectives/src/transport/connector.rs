//! The transport table: how a rank of a launched job finds a transport for
//! each peer.
//!
//! Every transport that processes can use has a [`Connector`]: its name, the
//! endpoint it publishes at rendezvous (made before it: a shared-memory
//! segment's name, a listening address, an RDMA card), whether it can carry
//! a given pair of ranks, what it can do ([`Caps`]), and how it connects.
//! [`crate::bootstrap::connect::connect_over`] takes a table of connectors in
//! priority order, meets the other ranks, and gives each peer the first
//! connector that reaches it — shared memory on one host before RDMA before
//! TCP, as NCCL does. Transports outside this crate (the RDMA crate, the
//! CUDA crate next) add their own connector to the table.

use std::sync::Arc;

use crate::bootstrap::PeerInfo;
use crate::error::Result;
use crate::schedule::Rank;
use crate::transport::{Signals, Transport};

/// What a transport can do for the algorithms that run over it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// Ranks read and write each other's posted buffers (the direct
    /// algorithm, and the small all-reduce's inline step).
    pub shares_memory: bool,
    /// Messages can be sent straight from registered user memory
    /// ([`Transport::commit_from`]).
    pub registers_memory: bool,
    /// Device buffers can travel as they are.
    pub device_memory: bool,
}

impl Caps {
    /// True when every capability `need` asks for is here.
    pub fn covers(self, need: Caps) -> bool {
        (self.shares_memory || !need.shares_memory)
            && (self.registers_memory || !need.registers_memory)
            && (self.device_memory || !need.device_memory)
    }

    /// What both `self` and `other` can do (a group over two transports can
    /// do only what both can).
    pub fn both(self, other: Caps) -> Caps {
        Caps {
            shares_memory: self.shares_memory && other.shares_memory,
            registers_memory: self.registers_memory && other.registers_memory,
            device_memory: self.device_memory && other.device_memory,
        }
    }

    /// The names of the capabilities `need` asks for and `self` lacks.
    pub fn missing(self, need: Caps) -> Vec<&'static str> {
        let mut out = Vec::new();
        if need.shares_memory && !self.shares_memory {
            out.push("ranks that share an address space");
        }
        if need.registers_memory && !self.registers_memory {
            out.push("registered memory");
        }
        if need.device_memory && !self.device_memory {
            out.push("device memory");
        }
        out
    }
}

/// What every connector of one rank connects with.
pub struct Join<'a> {
    pub rank: Rank,
    pub world: usize,
    /// Every rank's rendezvous entry, indexed by rank.
    pub peers: &'a [PeerInfo],
    /// An id every rank of the job computes alike (frames of other jobs are
    /// refused by it).
    pub comm_id: u64,
}

/// A connected transport, and the doorbell and abort flag it offers to the
/// transports connected after it when it serves only some peers.
pub struct Connected {
    pub transport: Arc<dyn Transport>,
    pub signals: Option<Arc<dyn Signals>>,
}

/// A transport's entry in the table; see the module docs.
pub trait Connector {
    /// The name peers' endpoints are published under: `shm`, `tcp`, `rdma`.
    fn name(&self) -> &'static str;

    /// This rank's endpoint, published at rendezvous under [`Connector::name`]
    /// (one line of text); `None` when the transport is not available on
    /// this rank (no device, not asked for).
    fn endpoint(&self) -> Option<String>;

    /// True when this transport can carry messages between `me` and `peer`,
    /// judged from both ranks' entries (both sides must come to the same
    /// answer): same host, a device on both, an endpoint published by both.
    fn reaches(&self, me: &PeerInfo, peer: &PeerInfo) -> bool;

    /// What the transport can do.
    fn caps(&self) -> Caps;

    /// True when the transport, connected to a few peers only, can serve
    /// the others' traffic through another (it offers [`Signals`], which
    /// the other transport wakes and stops the rank through). Only such a
    /// transport can be the first of two in one group.
    fn serves_some(&self) -> bool {
        false
    }

    /// Connects this rank to the peers marked in `to` (its own entry is
    /// set). A transport that is not the first of a group is connected to
    /// every rank (`to` all set): it carries the group-wide operations
    /// (postings, barriers, progress) and wakes the rank through `signals`,
    /// the first transport's.
    fn connect(self: Box<Self>, join: &Join<'_>, to: &[bool], signals: Option<Arc<dyn Signals>>) -> Result<Connected>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_cover_what_they_hold() {
        let shm = Caps { shares_memory: true, ..Caps::default() };
        let rdma = Caps { registers_memory: true, ..Caps::default() };
        assert!(shm.covers(Caps::default()) && shm.covers(shm) && !rdma.covers(shm));
        assert_eq!(shm.both(rdma), Caps::default());
        assert_eq!(rdma.missing(shm), vec!["ranks that share an address space"]);
        assert!(shm.missing(shm).is_empty());
    }
}

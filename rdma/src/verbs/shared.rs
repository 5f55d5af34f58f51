//! What an RDMA transport and its progress thread share: the connected
//! peers with their per-peer state, the registered memory ([`Layout`]), the
//! completion queue and the abort state; and the one way either of them
//! writes to a peer ([`Shared::write`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxccl::mem::{Lines, Region};
use oxccl::transport::unshared::{AbortState, Answer};
use oxccl::transport::wire::Limits;
use oxccl::{Error, Rank, Result};

use super::cq::Cq;
use super::layout::Layout;
use super::memory::{Mr, Pd};
use super::qp::{Connected, QueuePair, Sge};
use super::work::{wr_id, Work};
use crate::channel::Channel;
use crate::imm::Imm;

/// One connected peer.
pub(crate) struct Peer {
    pub rank: Rank,
    pub qp: QueuePair<Connected>,
    /// Where this rank writes in the peer's memory: its ring for this rank.
    pub remote_ring: u64,
    pub rkey: u32,
    pub chan: Channel,
    /// Send work requests posted and not yet completed.
    pub in_flight: AtomicU32,
    /// Released count a credit could not be posted for yet (0: none).
    pub credit_owed: AtomicU64,
    /// The last released count posted as a credit.
    pub credit_sent: Mutex<u64>,
    /// A message was written from the caller's memory since the last settle.
    pub unsettled: AtomicBool,
    pub aborts_sent: AtomicU64,
    /// When the pending heartbeat was written (ms since `Shared::epoch`, plus
    /// 1); 0 when none is pending.
    pub beat_at: AtomicU64,
    /// The peer said goodbye: it closed its transport on purpose.
    pub left: AtomicBool,
    /// The peer's answer to the last probe.
    pub answer: Answer,
    /// An answer to the peer's probe is being written from the staging
    /// state line (which is not rewritten before its completion).
    pub answering: AtomicBool,
}

/// What the transport and its progress thread share.
pub(crate) struct Shared {
    pub rank: Rank,
    pub world: usize,
    pub comm_id: u64,
    pub slot_bytes: usize,
    pub timeout: Duration,
    pub layout: Layout,
    /// Indexed by rank; `None` for this rank. Dropped before the memory.
    pub peers: Vec<Option<Peer>>,
    pub mr: Mr,
    pub mem: Lines,
    pub cq: Arc<Cq>,
    pub pd: Arc<Pd>,
    /// Regions from `Transport::alloc`, registered.
    pub user: Mutex<Vec<(Lines, Mr)>>,
    /// Doorbell, abort flag (or another transport's [`Signals`]) and cause.
    ///
    /// [`Signals`]: oxccl::transport::Signals
    pub signal: AbortState,
    pub closing: AtomicBool,
    /// Start of the transport, for heartbeat times.
    pub epoch: Instant,
    /// Messages written straight from registered user memory.
    pub zero_copy: AtomicU64,
}

impl Shared {
    pub(super) fn peer(&self, p: Rank) -> &Peer {
        match self.peers.get(p) {
            Some(Some(peer)) => peer,
            _ => panic!("rank {} has no channel with rank {p} (world {})", self.rank, self.world),
        }
    }

    pub(super) fn limits(&self) -> Limits {
        Limits { comm_id: self.comm_id, max_payload: self.slot_bytes, world: self.world }
    }

    pub(super) fn region(&self, at: usize, len: usize) -> Region {
        self.mem.region().sub(at..at + len).expect("inside the registered block")
    }

    pub(super) fn sge(&self, at: usize, len: usize) -> Sge {
        Sge { addr: (self.mem.region().addr() + at) as u64, len: len as u32, lkey: self.mr.lkey() }
    }

    /// Posts a write to `peer` (see `QueuePair::post_write`), counted in flight.
    pub(super) fn write(
        &self,
        peer: &Peer,
        work: Work,
        sges: &[Sge],
        remote_off: usize,
        imm: Option<Imm>,
    ) -> Result<()> {
        peer.in_flight.fetch_add(1, Ordering::SeqCst);
        // SAFETY: every gathered byte lies in this transport's registered
        // block (or a registered user region), which outlives the queue
        // pairs; staging bytes are not rewritten before their completion
        // (channel accounting for messages, one abort per staging slot).
        let r = unsafe {
            peer.qp.post_write(
                wr_id(work, peer.rank),
                sges,
                peer.remote_ring + remote_off as u64,
                peer.rkey,
                imm.map(Imm::encode),
            )
        };
        if r.is_err() {
            peer.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        r
    }

    pub(super) fn gone_error(&self, peer: Rank, what: String) -> Error {
        Error::PeerGone { call: None, rank: self.rank, peer, what }
    }
}

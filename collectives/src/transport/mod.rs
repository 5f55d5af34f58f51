//! Transports: how a rank's messages reach its peers.
//!
//! A transport offers, for every ordered pair of ranks, a FIFO channel of
//! message slots of [`Transport::slot_bytes`] each: the sender asks for a free
//! slot, writes a message into it and commits it with a [`Header`]; the
//! receiver looks at the oldest committed message, uses its bytes in place and
//! releases it. Nothing blocks inside a transport: the executor polls and
//! waits on its rank's [`Doorbell`], which the transport rings whenever
//! something that rank may wait for changes. A transport also offers a
//! barrier, a board where each rank posts what it is about to do (for
//! mismatch detection and, where ranks share an address space, for reading
//! each other's buffers), an abort flag, and what each rank is doing
//! ([`Transport::activity`]: whom it waits for), which a rank that timed out
//! follows to the rank that holds everyone up.
//!
//! Implementations: `local` (ranks are threads of one process), [`shm`]
//! (processes on one host), [`tcp`] (processes on any hosts), `composite`
//! (shared memory to the ranks on this host, a network transport to the
//! others); the RDMA transport lives in the `oxccl-rdma` crate. Their
//! insides are internal; [`shm`] and [`tcp`] are public for their
//! connectors (and, for this crate's integration tests, their set-up; see
//! each module's docs).
//!
//! # Implementing a transport outside this crate
//!
//! The RDMA crate (`oxccl-rdma`) does it today; a CUDA transport would do
//! it the same way. Such a transport uses exactly these items:
//!
//! - The trait: [`Transport`], with the types of its methods: [`Header`]
//!   and [`Kind`] (what every message carries), [`Args`] (a collective's
//!   arguments, inside a header and a posting), [`Posting`], [`Activity`],
//!   and [`crate::mem::Region`] (a span of bytes, the slots and buffers the
//!   executor hands over). [`SLOTS`] is the number of message slots every
//!   channel must hold; [`HISTORY`] is how many calls a rank's postings
//!   (and [`Transport::inline_scratch`]) stay readable.
//! - Waking and stopping a rank: [`Doorbell`] (ring it whenever something
//!   its rank may wait for changes; [`Doorbell::state`] and
//!   [`Doorbell::activity`] say whom it waits for), and [`Signals`], the
//!   doorbell and abort flag a transport borrows when it serves a rank beside
//!   shared memory.
//! - Its entry in the transport table, [`connector`]: a
//!   [`Connector`](connector::Connector) (name, endpoint, reach, [`Caps`](connector::Caps),
//!   connect) that receives a [`Join`](connector::Join) and returns a
//!   [`Connected`](connector::Connected). Put it in a table with the
//!   built-in [`shm::connector::ShmConnector`] and
//!   [`tcp::connector::TcpConnector`] as you need, and connect with
//!   [`crate::bootstrap::connect::connect_over`]: it publishes every
//!   endpoint in the rank's [`PeerInfo`](crate::bootstrap::PeerInfo) (under
//!   the connector's name), meets the other ranks, chooses a transport per
//!   pair and builds the composite where two serve one rank. Read the
//!   launcher's environment with [`crate::bootstrap::Launch`]; hand the
//!   result to [`crate::Communicator::from_transport`].
//! - The shared blocks of transports whose ranks share no memory:
//!   [`unshared`] (own postings, scratch and finished count: [`unshared::Own`];
//!   the abort flag and first cause: [`unshared::AbortState`]; a probe's
//!   answer: [`unshared::Answer`]; the two ends of a credited channel:
//!   [`unshared::Outbox`], [`unshared::Inbox`]; [`unshared::fresh_id`],
//!   [`unshared::lock`]) and [`wire`], the 64-byte frame codec (data
//!   headers, abort causes, probe answers).
//! - For memory it registers: [`crate::mem::Lines`] (owned, 64-byte aligned
//!   bytes reached through regions).
//! - Errors: [`crate::Error`], [`crate::Result`]; ranks: [`crate::Rank`];
//!   settings: [`crate::Config`].
//!
//! Everything else in this module (the posting board and channel in shared
//! memory, waiting, the composite, the local transport) is internal.

pub(crate) mod board;
pub(crate) mod channel;
pub(crate) mod composite;
pub mod connector;
pub(crate) mod local;
pub mod shm;
pub mod tcp;
pub mod unshared;
pub(crate) mod wait;
pub mod wire;

use std::sync::atomic::AtomicBool;

use crate::algo::Algorithm;
use crate::dtype::{DType, ReduceOp};
use crate::error::Error;
use crate::mem::Region;
use crate::schedule::{Collective, Rank};
pub use board::HISTORY;

/// Message slots of every channel from one rank to another, in every
/// transport: the checker proves the schedules deadlock-free with
/// [`crate::checker::MIN_SLOTS`], and more slots let a sender run further ahead.
pub const SLOTS: usize = 4;
const _: () = assert!(SLOTS >= crate::checker::MIN_SLOTS);
pub use wait::{Activity, Doorbell};

/// What a message belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Collective,
    PointToPoint,
}

/// The header every message carries, checked on receipt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// Collective sequence number, or point-to-point message number.
    pub seq: u64,
    /// Bytes in this message.
    pub len: usize,
    /// Point to point: bytes of the whole transfer; collectives: 0.
    pub total: usize,
    /// Collectives: the sender's arguments, checked against the receiver's.
    pub args: Option<Args>,
}

/// The arguments of a collective that every rank must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args {
    pub collective: Collective,
    pub dtype: DType,
    /// Reductions only.
    pub op: Option<ReduceOp>,
    pub count: usize,
    /// Rooted collectives only.
    pub root: Option<Rank>,
    pub algorithm: Algorithm,
}

impl Args {
    /// The first field on which `self` and `other` differ: (name, mine, theirs).
    pub fn difference(&self, other: &Args) -> Option<(&'static str, String, String)> {
        fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
            v.map_or("none".into(), |v| v.to_string())
        }
        let fields = [
            ("collective", self.collective.to_string(), other.collective.to_string()),
            ("count", self.count.to_string(), other.count.to_string()),
            ("dtype", self.dtype.to_string(), other.dtype.to_string()),
            ("reduction op", opt(self.op), opt(other.op)),
            ("root", opt(self.root), opt(other.root)),
            ("algorithm", self.algorithm.to_string(), other.algorithm.to_string()),
        ];
        fields.into_iter().find(|(_, a, b)| a != b)
    }
}

/// What a rank posts when it enters a collective.
#[derive(Clone, Copy, Debug)]
pub struct Posting {
    pub seq: u64,
    pub args: Args,
    /// The rank's input, output and scratch, as the reader can reach them:
    /// `None` where the transport cannot share that buffer with other ranks.
    pub bufs: [Option<Region>; 3],
}

/// A rank's doorbell and abort flag, when two transports serve one rank
/// (shared memory to some peers, TCP to others) and must wake and stop it
/// through the same ones.
pub trait Signals: Send + Sync {
    fn bell(&self) -> &Doorbell;
    fn flag(&self) -> &AtomicBool;
}

/// See the module docs.
pub trait Transport: Send + Sync {
    fn world(&self) -> usize;
    /// Bytes one message may hold.
    fn slot_bytes(&self) -> usize;
    /// True when ranks can read and write each other's posted buffers.
    fn shares_memory(&self) -> bool;
    /// What the transport can do for algorithms (see [`connector::Caps`]).
    fn caps(&self) -> connector::Caps {
        connector::Caps { shares_memory: self.shares_memory(), ..connector::Caps::default() }
    }

    /// A free slot from `from` to `to`, if there is one.
    fn try_send_slot(&self, from: Rank, to: Rank) -> Option<Region>;
    /// Publishes the message written into the free slot from `from` to `to`.
    fn commit(&self, from: Rank, to: Rank, header: Header);
    /// Sends `src` (this rank's memory, at most a slot: a region from
    /// [`Transport::alloc`]) as the next message from `from` to `to` straight
    /// from where it is, with no copy into the slot; a slot must be free, as
    /// for [`Transport::commit`]. False when the transport cannot reach
    /// `src` that way (the default): nothing was sent, and the caller copies
    /// into the slot and commits. The transport may read `src` until
    /// [`Transport::settle`] returns.
    fn commit_from(&self, from: Rank, to: Rank, header: Header, src: Region) -> bool {
        let _ = (from, to, header, src);
        false
    }

    /// Waits until no message of `rank` sent with [`Transport::commit_from`]
    /// still reads its memory, within the transport's deadline. The executor
    /// calls it before a call that sent such messages returns.
    fn settle(&self, rank: Rank) -> Result<(), Error> {
        let _ = rank;
        Ok(())
    }

    /// The oldest unreleased message from `from` to `to`, if one has arrived.
    fn try_recv(&self, to: Rank, from: Rank) -> Option<(Header, Region)>;
    /// Frees the oldest message from `from` to `to`.
    fn release(&self, to: Rank, from: Rank);

    /// Records that `rank` entered its `k`-th barrier (k counts from 1).
    fn barrier_arrive(&self, rank: Rank, k: u64);
    /// A rank that has not yet entered its `k`-th barrier, if any.
    fn barrier_missing(&self, k: u64) -> Option<Rank>;

    /// Posts `rank`'s call for its sequence number. Peers that may sleep
    /// waiting for it are woken by [`Transport::wake_peers`], which the
    /// caller calls later: once it has to wait itself, or at the end of the
    /// call, so that the doorbell's fence, which waits for the posting's
    /// stores to reach the peers, costs nothing on the critical path.
    fn post(&self, rank: Rank, posting: Posting);
    /// Rings every other rank's doorbell after `rank` posted.
    fn wake_peers(&self, rank: Rank) {
        let _ = rank;
    }
    /// `rank`'s posting for sequence number `seq`, if it is there.
    fn posting(&self, rank: Rank, seq: u64) -> Option<Posting>;
    /// Posts `rank`'s call `seq` as an exact repeat of its call `seq - 1`
    /// (the same arguments and buffers, its scratch the posting's inline
    /// space at the same length: see [`Transport::inline_scratch`]), copying
    /// the words the transport stored rather than encoding the posting
    /// again. False, posting nothing, where the transport cannot (the
    /// default); the caller then posts with [`Transport::post`].
    fn repost(&self, rank: Rank, seq: u64) -> bool {
        let _ = (rank, seq);
        false
    }
    /// `peer`'s staged scratch (`bytes` of its posting's inline space) when
    /// it has posted `seq` with the same arguments as `rank` posted for it,
    /// and both postings' scratch is their inline space at the same length:
    /// compared as the words the transport stores, with no decoding. `None`
    /// when they differ or the transport cannot tell (the default): the
    /// caller then reads [`Transport::posting`].
    fn staged_alike(&self, peer: Rank, rank: Rank, seq: u64, bytes: usize) -> Option<Region> {
        let _ = (peer, rank, seq, bytes);
        None
    }
    /// True once `rank` has posted `seq` (or may have: [`Transport::posting`]
    /// decides). What a wait polls: one load where postings are shared.
    fn posted(&self, rank: Rank, seq: u64) -> bool {
        self.posting(rank, seq).is_some()
    }

    /// `rank`'s scratch space number `half` (0 or 1), grown to at least
    /// `bytes`. It belongs to the group, not the rank, because peers may read
    /// it after the rank has returned (even after its communicator is
    /// dropped); growing it frees the old space, so the caller makes sure no
    /// peer still reads it.
    fn scratch(&self, rank: Rank, half: usize, bytes: usize) -> Result<Region, Error>;

    /// True when other ranks can read and write `region` (a buffer of this
    /// process) through [`Transport::post`]: any memory in one process, the
    /// shared pool across processes, nothing over a network.
    fn can_share(&self, region: Region) -> bool {
        let _ = region;
        self.shares_memory()
    }

    /// Memory other ranks can reach ([`Communicator::alloc_shared`]), or
    /// `None` when any memory will do (or none can be shared): the caller
    /// then uses ordinary memory.
    ///
    /// [`Communicator::alloc_shared`]: crate::Communicator::alloc_shared
    fn alloc(&self, bytes: usize) -> Result<Option<Region>, Error> {
        let _ = bytes;
        Ok(None)
    }

    /// Returns memory from [`Transport::alloc`].
    fn free(&self, region: Region) {
        let _ = region;
    }

    /// Scratch space of at least `bytes` that travels with `rank`'s posting
    /// for `seq`, if the transport has room for it there: a peer that reads
    /// the posting then finds the payload in the same cache lines. It is
    /// rewritten when `rank` prepares its call `seq + HISTORY` (see
    /// [`HISTORY`]), so that call must first make sure every peer has
    /// finished `seq`.
    fn inline_scratch(&self, rank: Rank, seq: u64, bytes: usize) -> Option<Region> {
        let _ = (rank, seq, bytes);
        None
    }

    /// Records that `rank` has finished its collective number `seq`.
    fn finish(&self, rank: Rank, seq: u64);
    /// The last collective `rank` has finished.
    fn finished(&self, rank: Rank) -> u64;
    /// True once `rank` has finished its collective number `seq`. Transports
    /// whose postings peers can read also say so once `rank` has posted a
    /// later call (a rank enters a call only after leaving the one before).
    fn has_finished(&self, rank: Rank, seq: u64) -> bool {
        self.finished(rank) >= seq
    }

    /// False once `peer` can no longer answer (its process died). Polled by
    /// waits that sleep; transports that learn of failures otherwise (a
    /// closed connection aborts the group) keep the default.
    fn peer_alive(&self, peer: Rank) -> bool {
        let _ = peer;
        true
    }

    fn doorbell(&self, rank: Rank) -> &Doorbell;
    fn abort_flag(&self) -> &AtomicBool;
    /// Sets the abort flag with its cause and wakes every rank. The first
    /// cause wins (a rank that times out names the rank that holds everyone
    /// up, see [`Transport::activity`], so every timeout names the same).
    fn abort(&self, cause: Error);
    /// The cause of the abort, once aborted.
    fn abort_cause(&self) -> Option<Error>;

    /// What `rank` is doing, for following who waits for whom after a
    /// timeout: waiting for a rank (and looking within `fresh`), busy, or
    /// stopped. Transports that can tell read it where ranks share memory
    /// ([`Doorbell::activity`]) or ask the rank's process; `None` (the
    /// default) when this one cannot.
    fn activity(&self, rank: Rank, fresh: std::time::Duration) -> Option<Activity> {
        let _ = (rank, fresh);
        None
    }

    /// What carries this rank's messages, for people: `shm`, `tcp`,
    /// `rdma`, `shm+tcp (2 of 4 ranks on this host)`.
    fn describe(&self) -> String;
}

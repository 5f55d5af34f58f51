//! [`RdmaTransport`]: one rank's RDMA transport (see the crate docs for the
//! design; [`crate::channel`] for the per-peer bookkeeping).
//!
//! **Memory.** One allocation per transport, registered once: per peer a
//! receive ring (`SLOTS` frames of a 64-byte header plus a slot, then
//! [`ABORTS`] abort slots and a heartbeat line) and a staging area of the
//! same shape. A frame is written with one RDMA write with immediate from
//! the staging slot into the peer's receive slot; the immediate says what
//! it is ([`crate::imm`]). The header is the TCP transport's 64-byte data
//! header, checked on receipt in the same way.
//!
//! **Progress.** A thread drains the completion queue: it checks and
//! publishes arrived messages, takes credits, frees staging slots, reposts
//! receives and rings the rank's doorbell. It spins briefly when idle, then
//! sleeps on the completion channel. Every [`BEAT`] it writes a heartbeat
//! to each peer: a peer whose process died fails the write after the queue
//! pair's retries, or leaves it unacknowledged for [`BEAT_DEADLINE`] (Soft-RoCE
//! never fails a write to a queue pair that vanished), and is then gone
//! ([`Transport::peer_alive`]).
//!
//! **Failures.** Like the TCP transport: an abort writes its cause (the
//! TCP abort frame) to every peer before the flag goes up; a completion
//! error on a message marks the peer gone and aborts the group with
//! [`Error::PeerGone`] naming the status; a malformed arrival aborts with
//! [`Error::Protocol`]. A transport that closes says goodbye first, so that
//! peers know it left rather than died.
//!
//! **Who waits for whom.** A rank that timed out asks the rank it waited
//! for what that one is doing ([`Transport::activity`]): a probe (a write
//! with immediate and no data), which the peer's progress thread answers by
//! writing the TCP transport's state frame into the prober's state line. A
//! process that is stopped answers nothing.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oxccl::mem::{Lines, Region};
use oxccl::transport::unshared::{lock, AbortState, Answer, Own, WaitState};
use oxccl::transport::wire::{self, Frame, Limits, HEADER_BYTES, MAX_CAUSE_BYTES};
use oxccl::transport::{Activity, Doorbell, Header, Posting, Transport};
use oxccl::{Error, Rank, Result};

use super::cq::{Completion, Cq};
use super::memory::{Mr, Pd};
use super::qp::{Connected, QueuePair, Sge};
use crate::channel::{Channel, SLOTS};
use crate::imm::Imm;

/// Abort frames a rank may send to one peer before the first is read.
pub const ABORTS: usize = 4;
const ABORT_BYTES: usize = HEADER_BYTES + MAX_CAUSE_BYTES;
/// How often an idle rank checks that its peers still answer.
pub const BEAT: Duration = Duration::from_millis(500);
/// How long a heartbeat may go unacknowledged before its peer counts as gone.
pub const BEAT_DEADLINE: Duration = Duration::from_secs(4);
/// Longest a dropped transport waits for peers to take what it sent.
const LINGER: Duration = Duration::from_secs(5);
/// Polls of an empty completion queue before the progress thread sleeps.
const SPINS: u32 = 2000;
/// Longest sleep of the progress thread (it also checks for closing).
const NAP: Duration = Duration::from_millis(50);
/// Send work requests per queue pair: messages, credits, abort, goodbye,
/// heartbeat, probe, state.
pub const SEND_DEPTH: u32 = 4 * SLOTS as u32 + 10;
/// Receives kept posted per queue pair (every write with immediate consumes one).
pub const RECV_DEPTH: u32 = 4 * SLOTS as u32 + 10;
/// Longest a probe waits for its answer.
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// What a work request was, in the top byte of its id (the peer is below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Work {
    Recv = 1,
    Message = 2,
    Credit = 3,
    Abort = 4,
    Bye = 5,
    Beat = 6,
    Probe = 7,
    State = 8,
}

fn wr_id(work: Work, peer: Rank) -> u64 {
    (work as u64) << 56 | peer as u64
}

/// The id of a receive posted for `peer`'s writes.
pub(crate) fn recv_id(peer: Rank) -> u64 {
    wr_id(Work::Recv, peer)
}

fn parse_wr_id(id: u64) -> (Option<Work>, Rank) {
    let work = match id >> 56 {
        1 => Some(Work::Recv),
        2 => Some(Work::Message),
        3 => Some(Work::Credit),
        4 => Some(Work::Abort),
        5 => Some(Work::Bye),
        6 => Some(Work::Beat),
        7 => Some(Work::Probe),
        8 => Some(Work::State),
        _ => None,
    };
    (work, (id & 0xffff_ffff) as Rank)
}

/// What a failed work completion means for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Unreachable or gone (retries exhausted, no response, the queue pair
    /// flushed after an earlier error): as a closed connection on TCP.
    Gone,
    /// Reached, but the operation was refused (a bad key, address or
    /// length): the two sides disagree, a protocol error.
    Refused,
}

/// The meaning of a work completion status other than success.
pub fn classify(status: u32) -> Failure {
    use ibverbs_sys::ibv_wc_status::*;
    match status {
        IBV_WC_REM_ACCESS_ERR
        | IBV_WC_REM_INV_REQ_ERR
        | IBV_WC_REM_OP_ERR
        | IBV_WC_LOC_PROT_ERR
        | IBV_WC_LOC_LEN_ERR
        | IBV_WC_LOC_ACCESS_ERR
        | IBV_WC_LOC_QP_OP_ERR
        | IBV_WC_BAD_RESP_ERR => Failure::Refused,
        _ => Failure::Gone,
    }
}

/// Byte layout of one peer's block of the registered memory.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub frame: usize,
}

impl Layout {
    pub fn new(slot_bytes: usize) -> Layout {
        Layout { frame: HEADER_BYTES + slot_bytes.div_ceil(64) * 64 }
    }
    /// Bytes of a ring (or a staging area).
    pub fn ring(&self) -> usize {
        SLOTS * self.frame + ABORTS * ABORT_BYTES + 128
    }
    pub fn slot(&self, i: usize) -> usize {
        i * self.frame
    }
    pub fn abort(&self, k: usize) -> usize {
        SLOTS * self.frame + k * ABORT_BYTES
    }
    pub fn beat(&self) -> usize {
        SLOTS * self.frame + ABORTS * ABORT_BYTES
    }
    /// The line a probe's answer (a state frame) is written to.
    pub fn state(&self) -> usize {
        self.beat() + 64
    }
    /// Offsets of peer `p`'s receive ring and staging area in the block of a
    /// rank with `world` ranks.
    pub fn ring_of(&self, p: Rank) -> usize {
        2 * p * self.ring()
    }
    pub fn staging_of(&self, p: Rank) -> usize {
        2 * p * self.ring() + self.ring()
    }
    pub fn total(&self, world: usize) -> usize {
        2 * world * self.ring()
    }
}

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
    fn peer(&self, p: Rank) -> &Peer {
        match self.peers.get(p) {
            Some(Some(peer)) => peer,
            _ => panic!("rank {} has no channel with rank {p} (world {})", self.rank, self.world),
        }
    }

    fn limits(&self) -> Limits {
        Limits { comm_id: self.comm_id, max_payload: self.slot_bytes, world: self.world }
    }

    fn region(&self, at: usize, len: usize) -> Region {
        self.mem.region().sub(at..at + len).expect("inside the registered block")
    }

    fn sge(&self, at: usize, len: usize) -> Sge {
        Sge { addr: (self.mem.region().addr() + at) as u64, len: len as u32, lkey: self.mr.lkey() }
    }

    /// Posts a write to `peer` (see `QueuePair::post_write`), counted in flight.
    fn write(&self, peer: &Peer, work: Work, sges: &[Sge], remote_off: usize, imm: Option<Imm>) -> Result<()> {
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

    /// The local key of the registered user region holding all of `r`.
    fn user_lkey(&self, r: Region) -> Option<u32> {
        lock(&self.user).iter().find(|(_, mr)| mr.covers(r)).map(|(_, mr)| mr.lkey())
    }

    /// Writes message `header` to `p` from its staging slot: the header, then
    /// `payload` (the rest of the staging slot, or registered user memory).
    fn send_message(&self, p: &Peer, header: &Header, payload: Option<Sge>) {
        if let Some(why) = p.chan.gone() {
            self.abort(self.gone_error(p.rank, format!("{why}, before this rank could send to it")));
            return;
        }
        let index = p.chan.count_sent();
        let slot = index as usize % SLOTS;
        let at = self.layout.staging_of(p.rank) + self.layout.slot(slot);
        // SAFETY: the staging slot is this rank's executor's until the write's
        // completion (the channel hands it out again only after that).
        unsafe { self.region(at, HEADER_BYTES).bytes_mut() }.copy_from_slice(&wire::encode_data(
            self.comm_id,
            index,
            header,
        ));
        let sges = match payload {
            None => vec![self.sge(at, HEADER_BYTES + header.len)],
            Some(user) if user.len == 0 => vec![self.sge(at, HEADER_BYTES)],
            Some(user) => vec![self.sge(at, HEADER_BYTES), user],
        };
        let imm = Some(Imm::Data(Imm::low(index)));
        if let Err(e) = self.write(p, Work::Message, &sges, self.layout.slot(slot), imm) {
            self.abort(self.gone_error(p.rank, e.to_string()));
        }
    }

    fn gone_error(&self, peer: Rank, what: String) -> Error {
        Error::PeerGone { call: String::new(), rank: self.rank, peer, what }
    }

    /// Aborts the group: peers are told (the cause written into their abort
    /// slots) before the flag goes up here.
    pub fn abort(&self, cause: Error) {
        let frame = wire::encode_abort(self.comm_id, &cause);
        if self.signal.keep_cause(cause) {
            for p in self.peers.iter().flatten() {
                if p.chan.gone().is_none() {
                    self.send_abort(p, &frame);
                }
            }
        }
        self.signal.raise();
    }

    fn send_abort(&self, p: &Peer, frame: &[u8]) {
        let k = p.aborts_sent.fetch_add(1, Ordering::AcqRel);
        if k >= ABORTS as u64 {
            return; // the peer has enough causes to choose from
        }
        let k = k as usize;
        let len = frame.len().min(ABORT_BYTES);
        let at = self.layout.staging_of(p.rank) + self.layout.abort(k);
        // SAFETY: abort staging slot `k` is used once, by this call only.
        unsafe { self.region(at, len).bytes_mut() }.copy_from_slice(&frame[..len]);
        let imm = Imm::Abort((k << 12 | len) as u32);
        let _ = self.write(p, Work::Abort, &[self.sge(at, len)], self.layout.abort(k), Some(imm));
    }

    fn abort_from_peer(&self, cause: Error) {
        self.signal.keep_cause(cause);
        self.signal.raise();
    }

    /// Owes `p` a credit for `released` messages and pays what is owed.
    fn credit(&self, p: &Peer, released: u64) -> Result<()> {
        p.credit_owed.fetch_max(released, Ordering::SeqCst);
        self.pay_credit(p)
    }

    /// Posts the credit owed to `p` unless its send queue is nearly full; then
    /// the next completion of `p`'s sends pays it. Credits leave one at a
    /// time and only grow (the receiver takes them in order).
    fn pay_credit(&self, p: &Peer) -> Result<()> {
        let mut sent = lock(&p.credit_sent);
        // With `credit`'s fetch_max and `complete`'s decrement of `in_flight`
        // (all SeqCst): either this sees the room, or the completion that
        // makes it sees what is owed.
        if p.in_flight.load(Ordering::SeqCst) + 3 >= SEND_DEPTH {
            return Ok(());
        }
        let owed = p.credit_owed.swap(0, Ordering::SeqCst);
        if owed <= *sent {
            return Ok(());
        }
        *sent = owed;
        self.write(p, Work::Credit, &[], 0, Some(Imm::Credit(Imm::low(owed))))
    }

    /// The progress thread's handling of one completion.
    pub fn complete(&self, c: &Completion) {
        let (work, from) = parse_wr_id(c.wr_id);
        let Some(Some(p)) = self.peers.get(from) else { return };
        let Some(work) = work else { return };
        if work != Work::Recv {
            p.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some((code, status)) = c.error {
            let what = format!("an RDMA {} to or from it failed: {status}", format!("{work:?}").to_lowercase());
            match classify(code) {
                Failure::Gone => self.failed(p, work, what),
                // The peer refused what this rank wrote (or the reverse): a
                // disagreement about memory, not a lost peer.
                Failure::Refused if !self.closing.load(Ordering::Acquire) && !p.left.load(Ordering::Acquire) => {
                    p.chan.set_gone(what.clone());
                    self.abort(Error::Protocol { peer: p.rank, what });
                }
                Failure::Refused => {}
            }
            return;
        }
        match work {
            Work::Recv => {
                if let Err(e) = self.arrived(p, c) {
                    self.abort(e);
                }
                if !self.closing.load(Ordering::Acquire) && p.chan.gone().is_none() {
                    if let Err(e) = p.qp.post_recv(wr_id(Work::Recv, p.rank)) {
                        self.abort(self.gone_error(p.rank, format!("reposting a receive failed: {e}")));
                    }
                }
            }
            Work::Message => {
                if p.chan.written() {
                    self.signal.bell().ring();
                }
            }
            Work::Beat => p.beat_at.store(0, Ordering::Release),
            Work::State => p.answering.store(false, Ordering::Release),
            Work::Credit | Work::Abort | Work::Bye | Work::Probe => {}
        }
        if work != Work::Recv && p.chan.gone().is_none() {
            if let Err(e) = self.pay_credit(p) {
                self.abort(self.gone_error(p.rank, format!("sending a credit failed: {e}")));
            }
        }
    }

    /// A work request to or from `p` failed with `status`.
    fn failed(&self, p: &Peer, work: Work, why: String) {
        if self.closing.load(Ordering::Acquire) || p.left.load(Ordering::Acquire) {
            return; // expected once either side closes
        }
        let first = p.chan.set_gone(why.clone());
        self.signal.bell().ring();
        if first && matches!(work, Work::Message | Work::Credit) && !self.signal.aborted() {
            self.abort(self.gone_error(p.rank, format!("{why} (its process died or the link is down)")));
        }
    }

    /// A write with immediate from `p` arrived.
    fn arrived(&self, p: &Peer, c: &Completion) -> Result<()> {
        let protocol = |what: String| Error::Protocol { peer: p.rank, what };
        let Some(imm) = c.imm else { return Err(protocol("a write without an immediate value".into())) };
        let ring = self.layout.ring_of(p.rank);
        match Imm::decode(imm) {
            Imm::Data(low) => {
                let Some(payload) = c.byte_len.checked_sub(HEADER_BYTES) else {
                    return Err(protocol(format!("a message of {} bytes, shorter than its header", c.byte_len)));
                };
                let slot = crate::imm::widen(low, p.chan.expected()) as usize % SLOTS;
                let at = ring + self.layout.slot(slot);
                // SAFETY: the peer wrote this slot before the completion; it
                // writes it again only after this rank releases it.
                let bytes: &[u8; HEADER_BYTES] =
                    unsafe { self.region(at, HEADER_BYTES).bytes() }.try_into().expect("64 bytes");
                p.chan.arrive(low, bytes, payload, &self.limits()).map_err(|e| protocol(e.to_string()))?;
                self.signal.bell().ring();
            }
            Imm::Credit(low) => {
                if p.chan.credit(low).map_err(|e| protocol(e.to_string()))? {
                    self.signal.bell().ring();
                }
            }
            Imm::Abort(v) => {
                let (k, len) = ((v >> 12) as usize, (v & 0xfff) as usize);
                if k >= ABORTS || len > ABORT_BYTES || len != c.byte_len {
                    return Err(protocol(format!("an abort frame of {len} bytes in slot {k}")));
                }
                // SAFETY: abort slot `k` is written once by the peer, before this completion.
                let bytes = unsafe { self.region(ring + self.layout.abort(k), len).bytes() };
                match wire::decode(bytes, &self.limits()) {
                    Ok((Frame::Abort { .. }, payload)) => {
                        let cause = wire::decode_cause(payload).map_err(|e| protocol(e.to_string()))?;
                        self.abort_from_peer(cause);
                    }
                    Ok((f, _)) => return Err(protocol(format!("a {f:?} frame in an abort slot"))),
                    Err(e) => return Err(protocol(e.to_string())),
                }
            }
            Imm::Bye => {
                p.left.store(true, Ordering::Release);
                p.chan.set_gone("it closed its transport".into());
                self.signal.bell().ring();
            }
            Imm::Probe(nonce) => self.answer_probe(p, u64::from(nonce)),
            Imm::State => {
                if c.byte_len != HEADER_BYTES {
                    return Err(protocol(format!("a probe's answer of {} bytes", c.byte_len)));
                }
                // SAFETY: the peer wrote the state line before this
                // completion; a later answer may overwrite it, and a torn
                // line fails to decode below and is dropped.
                let bytes: &[u8; HEADER_BYTES] =
                    unsafe { self.region(ring + self.layout.state(), HEADER_BYTES).bytes() }
                        .try_into()
                        .expect("64 bytes");
                if let Ok(Frame::State { nonce, state }) = wire::decode_header(bytes, &self.limits()) {
                    p.answer.put(nonce, state);
                    self.signal.bell().ring();
                }
            }
            Imm::Unknown(v) => return Err(protocol(format!("an immediate value of unknown kind {v:#x}"))),
        }
        Ok(())
    }

    /// Answers `p`'s probe number `nonce` with what this rank is doing,
    /// unless an answer to it is still being written (the prober gave up
    /// on that one).
    fn answer_probe(&self, p: &Peer, nonce: u64) {
        if p.answering.swap(true, Ordering::AcqRel) {
            return;
        }
        let at = self.layout.staging_of(p.rank) + self.layout.state();
        // SAFETY: the staging state line is rewritten only here, and only
        // once the previous answer's write has completed (`answering`).
        unsafe { self.region(at, HEADER_BYTES).bytes_mut() }.copy_from_slice(&wire::encode_state(
            self.comm_id,
            nonce,
            self.signal.bell().state(),
        ));
        let sges = [self.sge(at, HEADER_BYTES)];
        if self.write(p, Work::State, &sges, self.layout.state(), Some(Imm::State)).is_err() {
            p.answering.store(false, Ordering::Release);
        }
    }

    /// Asks `peer` what its rank is doing; `None` when no answer comes
    /// within `wait` (the process is stopped, or gone).
    fn probe(&self, peer: Rank, wait: Duration) -> Option<WaitState> {
        let p = self.peer(peer);
        let nonce = oxccl::transport::unshared::fresh_id(peer as u64) & u64::from(crate::imm::PROBE_BITS);
        if p.chan.gone().is_some() || self.write(p, Work::Probe, &[], 0, Some(Imm::Probe(nonce as u32))).is_err() {
            return None;
        }
        // The progress thread brings the answer in.
        p.answer.wait(nonce, wait, || p.chan.gone().is_some(), || {})
    }

    /// Writes a heartbeat to every peer that has none pending; a peer whose
    /// last one has gone unacknowledged for [`BEAT_DEADLINE`] is gone (some
    /// devices never fail a write to a queue pair that vanished).
    fn beat(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        for p in self.peers.iter().flatten() {
            if p.chan.gone().is_some() {
                continue;
            }
            let since = p.beat_at.load(Ordering::Acquire);
            if since != 0 {
                if now - since > BEAT_DEADLINE.as_millis() as u64 {
                    let why = format!("it acknowledged no heartbeat for {BEAT_DEADLINE:?}");
                    self.failed(p, Work::Beat, why);
                }
                continue;
            }
            p.beat_at.store(now, Ordering::Release);
            let at = self.layout.staging_of(p.rank) + self.layout.beat();
            if self.write(p, Work::Beat, &[self.sge(at, 8)], self.layout.beat(), None).is_err() {
                p.beat_at.store(0, Ordering::Release);
            }
        }
    }
}

/// The progress thread: drains the completion queue until the transport closes.
pub(crate) fn progress(s: &Shared) {
    let mut batch = [Completion::default(); 16];
    let mut idle = 0u32;
    let mut last_beat = Instant::now();
    // Handles what has completed; how many (`Err`: the queue failed, the group is aborted).
    let mut drain = || -> std::result::Result<usize, ()> {
        let n = s.cq.poll(&mut batch).map_err(|e| s.abort(e))?;
        batch[..n].iter().for_each(|c| s.complete(c));
        Ok(n)
    };
    loop {
        let Ok(n) = drain() else { return };
        // Beats go out busy or idle: traffic with some peers says nothing
        // of the others.
        if last_beat.elapsed() >= BEAT {
            last_beat = Instant::now();
            s.beat();
        }
        if n > 0 {
            idle = 0;
            continue;
        }
        if s.closing.load(Ordering::Acquire) {
            return;
        }
        idle += 1;
        if idle < SPINS {
            std::hint::spin_loop();
            continue;
        }
        // Sleep: arm, look once more (a completion may have come before the
        // arm), then wait for the event.
        if s.cq.arm().is_err() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        match drain() {
            Err(()) => return,
            Ok(0) => {}
            Ok(_) => {
                idle = 0;
                continue;
            }
        }
        s.cq.wait(NAP.min(BEAT.saturating_sub(last_beat.elapsed())).max(Duration::from_millis(1)));
    }
}

/// One rank's RDMA transport; see the module docs.
pub struct RdmaTransport {
    pub(crate) shared: Arc<Shared>,
    pub(crate) thread: Option<JoinHandle<()>>,
    /// This rank's postings, scratch and finished count (peers never see them).
    own: Own,
}

impl RdmaTransport {
    pub(crate) fn start(shared: Shared) -> Result<RdmaTransport> {
        let shared = Arc::new(shared);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("oxccl-rdma-{}", shared.rank))
            .spawn(move || progress(&sh))
            .map_err(|e| Error::System(format!("RDMA progress thread: {e}")))?;
        Ok(RdmaTransport { shared, thread: Some(thread), own: Own::default() })
    }

    /// This transport's rank.
    pub fn rank(&self) -> Rank {
        self.shared.rank
    }

    /// Messages sent so far straight from registered memory (no copy).
    pub fn zero_copy_messages(&self) -> u64 {
        self.shared.zero_copy.load(Ordering::Relaxed)
    }

    fn me(&self, rank: Rank, what: &str) {
        assert_eq!(
            rank, self.shared.rank,
            "{what}: the RDMA transport of rank {} serves only that rank",
            self.shared.rank
        );
    }

    /// Waits until `done`, the group aborts, or `limit` passes.
    fn linger(&self, limit: Duration, done: impl Fn(&Shared) -> bool) {
        let s = &self.shared;
        let deadline = Instant::now() + limit;
        while !s.signal.aborted() && Instant::now() < deadline && !done(s) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        let s = self.shared.clone();
        let limit = s.timeout.min(LINGER);
        // Let peers take what was sent to them, then say goodbye and wait
        // until every write has completed (the memory goes away after).
        self.linger(limit, |s| s.peers.iter().flatten().all(|p| p.chan.drained() || p.chan.gone().is_some()));
        for p in s.peers.iter().flatten() {
            if p.chan.gone().is_none() {
                let _ = s.write(p, Work::Bye, &[], 0, Some(Imm::Bye));
            }
        }
        let deadline = Instant::now() + limit;
        // (Writes to a peer that is gone may never complete; its queue pair
        // goes before the memory, so not waiting for them is safe.)
        let busy = |p: &Peer| p.in_flight.load(Ordering::Acquire) > 0 && p.chan.gone().is_none();
        while Instant::now() < deadline && s.peers.iter().flatten().any(busy) {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.closing.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Transport for RdmaTransport {
    fn describe(&self) -> String {
        "rdma".into()
    }

    fn world(&self) -> usize {
        self.shared.world
    }

    fn slot_bytes(&self) -> usize {
        self.shared.slot_bytes
    }

    fn shares_memory(&self) -> bool {
        false
    }

    fn try_send_slot(&self, from: Rank, to: Rank) -> Option<Region> {
        self.me(from, "try_send_slot");
        let s = &self.shared;
        let i = s.peer(to).chan.next_send()?;
        let at = s.layout.staging_of(to) + s.layout.slot(i) + HEADER_BYTES;
        Some(s.region(at, s.slot_bytes))
    }

    fn commit(&self, from: Rank, to: Rank, header: Header) {
        self.me(from, "commit");
        let s = &self.shared;
        if s.signal.aborted() {
            return;
        }
        assert!(header.len <= s.slot_bytes, "message of {} bytes in slots of {}", header.len, s.slot_bytes);
        s.send_message(s.peer(to), &header, None);
    }

    /// Zero copy: a message from registered memory (`alloc`) is written
    /// straight from it, gathered behind its header.
    fn commit_from(&self, from: Rank, to: Rank, header: Header, src: Region) -> bool {
        self.me(from, "commit_from");
        let s = &self.shared;
        let Some(lkey) = s.user_lkey(src) else { return false };
        assert!(header.len == src.len() && header.len <= s.slot_bytes, "message of {} bytes", header.len);
        if s.signal.aborted() {
            return true; // as `commit`: nothing more leaves an aborted group
        }
        let p = s.peer(to);
        p.unsettled.store(true, Ordering::Release);
        s.zero_copy.fetch_add(1, Ordering::Relaxed);
        s.send_message(p, &header, Some(Sge { addr: src.addr() as u64, len: src.len() as u32, lkey }));
        true
    }

    /// Waits until every message written from registered memory has been
    /// acknowledged (a peer that is gone, or an aborted group, reads nothing
    /// more of it that matters).
    fn settle(&self, rank: Rank) -> Result<()> {
        self.me(rank, "settle");
        let s = &self.shared;
        let start = Instant::now();
        for p in s.peers.iter().flatten().filter(|p| p.unsettled.swap(false, Ordering::AcqRel)) {
            let mut spins = 0u32;
            while !p.chan.all_written() && p.chan.gone().is_none() && !s.signal.aborted() {
                let waited = start.elapsed();
                if waited >= s.timeout {
                    let what = "it to acknowledge messages sent from this rank's buffer";
                    let err = Error::Timeout { call: String::new(), rank, peer: p.rank, what, waited };
                    s.abort(err.clone());
                    return Err(err);
                }
                spins += 1;
                if spins < 1000 {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        Ok(())
    }

    fn try_recv(&self, to: Rank, from: Rank) -> Option<(Header, Region)> {
        self.me(to, "try_recv");
        let s = &self.shared;
        let (h, slot) = s.peer(from).chan.try_recv()?;
        let at = s.layout.ring_of(from) + s.layout.slot(slot) + HEADER_BYTES;
        Some((h, s.region(at, h.len)))
    }

    fn release(&self, to: Rank, from: Rank) {
        self.me(to, "release");
        let s = &self.shared;
        let p = s.peer(from);
        let released = p.chan.release();
        if s.signal.aborted() || p.chan.gone().is_some() {
            return;
        }
        if let Err(e) = s.credit(p, released) {
            s.abort(s.gone_error(from, e.to_string()));
        }
    }

    /// Never called: without shared memory no schedule with barriers runs.
    fn barrier_arrive(&self, _rank: Rank, _k: u64) {}

    fn barrier_missing(&self, _k: u64) -> Option<Rank> {
        None
    }

    /// Keeps this rank's postings (peers compare arguments through message headers).
    fn post(&self, rank: Rank, posting: Posting) {
        self.me(rank, "post");
        self.own.post(&posting);
    }

    fn posting(&self, rank: Rank, seq: u64) -> Option<Posting> {
        (rank == self.shared.rank).then(|| self.own.posting(seq)).flatten()
    }

    fn scratch(&self, rank: Rank, half: usize, bytes: usize) -> Result<Region> {
        self.me(rank, "scratch");
        Ok(self.own.scratch(half, bytes))
    }

    /// Registered memory: messages sent from it need no copy into staging.
    fn alloc(&self, bytes: usize) -> Result<Option<Region>> {
        let s = &self.shared;
        let lines = Lines::new(bytes);
        // SAFETY: the lines are kept with their registration until `free`
        // (or the transport's end); a Lines allocation never moves.
        let mr = unsafe { Mr::register(&s.pd, lines.region())? };
        let r = lines.region();
        lock(&s.user).push((lines, mr));
        Ok(Some(r))
    }

    fn free(&self, region: Region) {
        lock(&self.shared.user).retain(|(l, _)| l.region() != region);
    }

    fn finish(&self, rank: Rank, seq: u64) {
        self.me(rank, "finish");
        self.own.finish(seq);
    }

    /// See [`Own::finished`].
    fn finished(&self, rank: Rank) -> u64 {
        self.own.finished(self.shared.rank, rank)
    }

    /// False once the peer failed to answer or said goodbye (unless the
    /// group is aborted: then its cause says more).
    fn peer_alive(&self, peer: Rank) -> bool {
        let s = &self.shared;
        peer == s.rank || s.signal.aborted() || !matches!(s.peers.get(peer), Some(Some(p)) if p.chan.gone().is_some())
    }

    fn doorbell(&self, rank: Rank) -> &Doorbell {
        self.me(rank, "doorbell");
        self.shared.signal.bell()
    }

    fn abort_flag(&self) -> &AtomicBool {
        self.shared.signal.flag()
    }

    fn abort(&self, cause: Error) {
        self.shared.abort(cause);
    }

    fn abort_cause(&self) -> Option<Error> {
        self.shared.signal.cause()
    }

    /// This rank's from its doorbell; a peer's by probing it (no answer
    /// within the probe's wait: stopped).
    fn activity(&self, rank: Rank, fresh: Duration) -> Option<Activity> {
        let s = &self.shared;
        if rank == s.rank {
            return Some(s.signal.bell().activity(fresh));
        }
        Some(Activity::answered(s.probe(rank, fresh.min(PROBE_WAIT)), fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibverbs_sys::ibv_wc_status::*;

    #[test]
    fn completion_errors_are_named_failures() {
        for s in [IBV_WC_RETRY_EXC_ERR, IBV_WC_RNR_RETRY_EXC_ERR, IBV_WC_WR_FLUSH_ERR, IBV_WC_RESP_TIMEOUT_ERR] {
            assert_eq!(classify(s), Failure::Gone, "{}", super::super::cq::status_name(s));
        }
        for s in [IBV_WC_REM_ACCESS_ERR, IBV_WC_REM_INV_REQ_ERR, IBV_WC_LOC_PROT_ERR, IBV_WC_LOC_LEN_ERR] {
            assert_eq!(classify(s), Failure::Refused, "{}", super::super::cq::status_name(s));
        }
    }

    #[test]
    fn work_request_ids_round_trip() {
        for work in
            [Work::Recv, Work::Message, Work::Credit, Work::Abort, Work::Bye, Work::Beat, Work::Probe, Work::State]
        {
            for peer in [0, 1, 4095] {
                assert_eq!(parse_wr_id(wr_id(work, peer)), (Some(work), peer));
            }
        }
        assert_eq!(parse_wr_id(0).0, None);
    }

    #[test]
    fn layout_keeps_every_area_apart() {
        let l = Layout::new(1000);
        assert_eq!(l.frame % 64, 0);
        assert!(l.slot(SLOTS) <= l.abort(0) && l.abort(ABORTS) <= l.beat() && l.beat() + 64 <= l.state());
        assert!(l.state() + 64 <= l.ring());
        assert_eq!(l.staging_of(2), l.ring_of(2) + l.ring());
        assert_eq!(l.total(3), l.ring_of(3));
    }
}

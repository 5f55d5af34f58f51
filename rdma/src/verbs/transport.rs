//! [`RdmaTransport`]: one rank's RDMA transport (see the crate docs for the
//! design; [`crate::channel`] for the per-peer bookkeeping), and how it
//! closes.
//!
//! Its parts, each in its own file: the registered memory
//! ([`super::layout`]), the work requests and what their failures mean
//! ([`super::work`]), what the transport shares with its progress thread
//! (`shared.rs`), what it writes to peers: messages, credits, aborts
//! (`send.rs`), the progress thread with its heartbeats
//! ([`super::progress`]), and probes (`probe.rs`).
//!
//! **Closing.** A transport that is dropped lets its peers take what it
//! sent them (at most `LINGER`, or the timeout if shorter), says goodbye
//! to each, so that they know it left rather than died, waits for its writes
//! to complete and stops the progress thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oxccl::mem::{Lines, Region};
use oxccl::transport::unshared::{lock, Own};
use oxccl::transport::wire::HEADER_BYTES;
use oxccl::transport::{Activity, Doorbell, Header, Posting, Transport};
use oxccl::{Error, Rank, Result};

use super::memory::Mr;
use super::probe::PROBE_WAIT;
use super::qp::Sge;
use super::shared::{Peer, Shared};
use super::work::Work;
use crate::imm::Imm;

/// Longest a dropped transport waits for peers to take what it sent.
const LINGER: Duration = Duration::from_secs(5);

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
            .spawn(move || sh.progress())
            .map_err(|e| Error::io("RDMA progress thread", e))?;
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

    /// The local key of the registered user region (from `alloc`) holding
    /// all of `r`.
    fn user_lkey(&self, r: Region) -> Option<u32> {
        lock(&self.shared.user).iter().find(|(_, mr)| mr.covers(r)).map(|(_, mr)| mr.lkey())
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

    /// Messages go straight from registered user memory (`commit_from`).
    fn caps(&self) -> oxccl::transport::connector::Caps {
        oxccl::transport::connector::Caps { registers_memory: true, ..Default::default() }
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
        let Some(lkey) = self.user_lkey(src) else { return false };
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
                    let err = Error::Timeout { call: None, rank, peer: p.rank, what, waited };
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
        Some(Activity::answered(s.probe(rank, fresh.min(PROBE_WAIT))))
    }
}

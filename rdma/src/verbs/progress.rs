//! The progress thread of an RDMA transport (`Shared::progress`, started
//! by `RdmaTransport::start`) and what it does with each completion.
//!
//! The thread drains the completion queue: it checks and publishes arrived
//! messages, takes credits, frees staging slots, reposts receives and rings
//! the rank's doorbell. It spins briefly when idle, then sleeps on the
//! completion channel. Every [`BEAT`] it writes a heartbeat to each peer: a
//! peer whose process died fails the write after the queue pair's retries,
//! or leaves it unacknowledged for [`BEAT_DEADLINE`] (Soft-RoCE never fails a
//! write to a queue pair that vanished), and is then gone
//! ([`Transport::peer_alive`]).
//!
//! A completion error on a message marks the peer gone and aborts the group
//! with [`Error::PeerGone`] naming the status; a malformed arrival aborts
//! with [`Error::Protocol`]; an abort frame from a peer aborts this rank
//! with its cause. A peer that said goodbye (its transport closed) is gone
//! without an abort: it left rather than died.
//!
//! [`Transport::peer_alive`]: oxccl::transport::Transport::peer_alive

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use oxccl::transport::wire::{self, Frame, HEADER_BYTES};
use oxccl::{Error, Result};

use super::cq::Completion;
use super::layout::{ABORTS, ABORT_BYTES};
use super::shared::{Peer, Shared};
use super::work::{classify, parse_wr_id, wr_id, Failure, Work};
use crate::channel::SLOTS;
use crate::imm::Imm;

/// How often an idle rank checks that its peers still answer.
pub const BEAT: Duration = Duration::from_millis(500);
/// How long a heartbeat may go unacknowledged before its peer counts as gone.
pub const BEAT_DEADLINE: Duration = Duration::from_secs(4);
/// Polls of an empty completion queue before the progress thread sleeps.
const SPINS: u32 = 2000;
/// Longest sleep of the progress thread (it also checks for closing).
const NAP: Duration = Duration::from_millis(50);

impl Shared {
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

    fn abort_from_peer(&self, cause: Error) {
        self.signal.keep_cause(cause);
        self.signal.raise();
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

    /// The progress thread: drains the completion queue until the transport
    /// closes. A method of `Shared`, as `complete` is: the compiler places
    /// methods with their type, so the two stay in one codegen unit and
    /// `complete` is inlined into the loop.
    pub(super) fn progress(&self) {
        let mut batch = [Completion::default(); 16];
        let mut idle = 0u32;
        let mut last_beat = Instant::now();
        // Handles what has completed; how many (`Err`: the queue failed, the group is aborted).
        let mut drain = || -> std::result::Result<usize, ()> {
            let n = self.cq.poll(&mut batch).map_err(|e| self.abort(e))?;
            batch[..n].iter().for_each(|c| self.complete(c));
            Ok(n)
        };
        loop {
            let Ok(n) = drain() else { return };
            // Beats go out busy or idle: traffic with some peers says nothing
            // of the others.
            if last_beat.elapsed() >= BEAT {
                last_beat = Instant::now();
                self.beat();
            }
            if n > 0 {
                idle = 0;
                continue;
            }
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            idle += 1;
            if idle < SPINS {
                std::hint::spin_loop();
                continue;
            }
            // Sleep: arm, look once more (a completion may have come before the
            // arm), then wait for the event.
            if self.cq.arm().is_err() {
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
            self.cq.wait(NAP.min(BEAT.saturating_sub(last_beat.elapsed())).max(Duration::from_millis(1)));
        }
    }
}

//! Issuing one rank's schedule onto a stream: every step becomes copies,
//! reducer kernels and stream-level writes and waits on the words of the
//! ranks' areas ([`super::area`]), so the call returns once it is enqueued
//! and nothing in it needs the host while it runs.
//!
//! * An xfer waits until every message it receives has arrived and every
//!   peer it sends to has a free inbox slot, combines its terms straight
//!   into its destination (or into the first receiver's inbox slot when it
//!   stores nothing), copies the result into any further receivers' slots,
//!   counts each message as arrived in its receiver's area and each one it
//!   consumed as acknowledged in its sender's area. Channels are the areas'
//!   inboxes: [`SLOTS`] messages each, message counts that only grow.
//! * A direct step reads its sources (peers' buffers, named by the
//!   addresses every rank posted when it entered the call): with several
//!   (up to [`MULTI_MAX`]) one multi-reducer kernel reads each once and
//!   writes every destination, avg's division fused; otherwise it combines
//!   them into one of its destinations, or the rank's work area when every
//!   destination overlaps a source it must still read, then copies the
//!   result to the others.
//! * A barrier counts this rank's arrival in every peer's area and waits
//!   for every peer's arrival in its own.
//! * Every value written or awaited is relative to the rank's epoch, a word
//!   of its area its stream advances at the end of every call (`area.rs`),
//!   and counts restart with each call: so a call's stream work is the
//!   same every time it runs, and a CUDA graph that captured it can be
//!   replayed. The host's counts below are the call's offsets.
//! * A call starts writing into a peer's inbox, or its scratch (which
//!   peers read), only once that peer has finished the previous call,
//!   which peers say by writing their `DONE` word at the end of a call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxccl::mem::Region;
use oxccl::schedule::{At, Buf, Direct, Inline, Loc, Step, Xfer};
use oxccl::{AbortHandle, Entered, Error, Rank};

use super::area::{Area, Word, SLOTS};
use super::backend::{DeviceMemory, DeviceQueue, Wait};
use crate::emudev::Watch;
use crate::kernels::MULTI_MAX;

/// Message counts of one rank's channels and its barriers in a call.
struct Counts {
    /// Messages sent to / received from each rank.
    pub sent: Vec<u64>,
    pub recvd: Vec<u64>,
    pub barriers: u64,
}

impl Counts {
    fn new(world: usize) -> Counts {
        Counts { sent: vec![0; world], recvd: vec![0; world], barriers: 0 }
    }
}

/// What a stream's wait consults: the group's abort, whether the peer it
/// waits for is still alive (a process that died), the communicator's
/// timeout, and whom it waits for, named in the group's error if it gives up.
struct Waiting {
    group: AbortHandle,
    timeout: Duration,
    call: String,
    rank: Rank,
    peer: Rank,
    what: &'static str,
    since: Instant,
    /// Milliseconds after `since` of the last look at the peer's liveness.
    looked: AtomicU64,
}

/// How often a wait looks whether its peer is still alive.
const LIVENESS_EVERY_MS: u64 = 10;

impl Watch for Waiting {
    fn stop(&self) -> Option<String> {
        if let Some(e) = self.group.cause() {
            return Some(e.to_string());
        }
        let now = self.since.elapsed().as_millis() as u64;
        if now >= self.looked.load(Ordering::Relaxed) + LIVENESS_EVERY_MS {
            self.looked.store(now, Ordering::Relaxed);
            if !self.group.peer_alive(self.peer) {
                let gone = Error::PeerGone {
                    call: Some(self.call.clone()),
                    rank: self.rank,
                    peer: self.peer,
                    what: format!("its process ended while rank {} waited ({})", self.rank, self.what),
                };
                self.group.fail(gone.clone());
                return Some(gone.to_string());
            }
        }
        None
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn timed_out(&self, waited: Duration) {
        self.group.fail(Error::Timeout {
            call: Some(self.call.clone()),
            rank: self.rank,
            peer: self.peer,
            what: self.what,
            waited,
        });
    }
}

/// One call being issued on one rank's stream.
pub struct Issuer<'a, D: DeviceMemory> {
    stream: &'a D::Stream,
    areas: &'a [Area<D>],
    counts: Counts,
    group: &'a AbortHandle,
    timeout: Duration,
    /// A private work area of at least the largest direct step.
    work: Region,
}

/// `DONE`'s offset: the writer's epoch plus one, in the epoch's place.
const NEXT_EPOCH: u64 = 1 << 32;

impl<'a, D: DeviceMemory> Issuer<'a, D> {
    pub fn new(
        stream: &'a D::Stream,
        areas: &'a [Area<D>],
        group: &'a AbortHandle,
        timeout: Duration,
        work: Region,
    ) -> Issuer<'a, D> {
        Issuer { stream, areas, counts: Counts::new(areas.len()), group, timeout, work }
    }

    /// Issues every step of the entered call, then this rank's `DONE` word
    /// in every peer's area, then advances its epoch.
    pub fn issue(&mut self, e: &Entered<'_>) -> Result<(), Error> {
        let (me, n) = (e.rank, e.bufs.len());
        if e.schedule.scratch_len > 0 {
            for p in (0..n).filter(|&p| p != me) {
                self.wait(e, Word::Done, p, 0, "peer still in the previous call, which reads scratch")?;
            }
        }
        for step in &e.schedule.steps {
            match step {
                Step::Xfer(x) => self.xfer(e, x)?,
                Step::Direct(d) => self.direct(e, d)?,
                Step::Barrier => self.barrier(e)?,
                Step::Inline(i) => self.inline(e, i)?,
            }
        }
        for p in (0..n).filter(|&p| p != me) {
            self.signal(p, Word::Done, me, NEXT_EPOCH)?;
        }
        self.stream.advance(self.areas[me].epoch()).map_err(|err| Error::System(err.to_string()))
    }

    fn xfer(&mut self, e: &Entered<'_>, x: &Xfer) -> Result<(), Error> {
        let (me, bytes) = (e.rank, x.len * e.args.dtype.size());
        let mut terms = Vec::with_capacity(1 + x.recv.len());
        if let Some(src) = x.src {
            terms.push(locate(e, me, src, x.len)?);
        }
        for p in x.recv.iter() {
            let m = self.counts.recvd[p];
            self.wait(e, Word::Arrived, p, m + 1, "message")?;
            terms.push(self.areas[me].slot(p, m, bytes));
        }
        for q in x.send.iter() {
            let m = self.counts.sent[q];
            if m == 0 {
                self.wait(e, Word::Done, q, 0, "peer still in the previous call, which reads its inbox")?;
            } else if m + 1 > SLOTS as u64 {
                self.wait(e, Word::Acked, q, m + 1 - SLOTS as u64, "free slot")?;
            }
        }
        let slot_of = |q: Rank, counts: &Counts| self.areas[q].slot(me, counts.sent[q], bytes);
        let target = match (x.dst, x.send.get(0)) {
            (Some(dst), _) => locate(e, me, dst, x.len)?,
            (None, Some(q)) => slot_of(q, &self.counts),
            (None, None) => return Err(internal(e, "an xfer that neither stores nor sends")),
        };
        if bytes > 0 {
            self.combine(e, target, &terms)?;
            if x.finalize {
                self.finalize(e, target)?;
            }
            for q in x.send.iter() {
                let slot = slot_of(q, &self.counts);
                if slot != target {
                    self.copy(slot, target)?;
                }
            }
        }
        for q in x.send.iter() {
            self.counts.sent[q] += 1;
            self.signal(q, Word::Arrived, me, self.counts.sent[q])?;
        }
        for p in x.recv.iter() {
            self.counts.recvd[p] += 1;
            self.signal(p, Word::Acked, me, self.counts.recvd[p])?;
        }
        Ok(())
    }

    fn direct(&mut self, e: &Entered<'_>, d: &Direct) -> Result<(), Error> {
        let srcs = d.srcs.iter().map(|a| resolve(e, a, d.len)).collect::<Result<Vec<_>, _>>()?;
        let dsts = d.dsts.iter().map(|a| resolve(e, a, d.len)).collect::<Result<Vec<_>, _>>()?;
        if d.len == 0 || dsts.is_empty() {
            return Ok(());
        }
        // Several sources: one kernel reads each once and writes every
        // destination (avg's division fused), the direct all-reduce's floor.
        if srcs.len() >= 2 && srcs.len() <= MULTI_MAX && dsts.len() <= MULTI_MAX {
            let (op, avg) = match e.args.op {
                Some(oxccl::ReduceOp::Avg) => (oxccl::ReduceOp::Sum, if d.finalize { e.bufs.len() as u32 } else { 0 }),
                op => (op.unwrap_or(oxccl::ReduceOp::Sum), 0),
            };
            // SAFETY: as in `combine`.
            return unsafe { self.stream.reduce_multi(e.args.dtype, op, &srcs, &dsts, avg) }
                .map_err(|err| device_error(e, err));
        }
        // Combine into a destination that is the first source itself or
        // overlaps none (a reduction may read and write its first term).
        let fits = |t: &Region| srcs.iter().enumerate().all(|(i, s)| !s.overlaps(t) || (i == 0 && s == t));
        let target = match dsts.iter().find(|t| fits(t)) {
            Some(&t) => t,
            None if srcs.len() == 1 => srcs[0],
            None => self.work.sub(0..d.len * e.args.dtype.size()).ok_or_else(|| internal(e, "work area too small"))?,
        };
        self.combine(e, target, &srcs)?;
        if d.finalize {
            self.finalize(e, target)?;
        }
        for &dst in dsts.iter().filter(|&&t| t != target) {
            self.copy(dst, target)?;
        }
        Ok(())
    }

    fn barrier(&mut self, e: &Entered<'_>) -> Result<(), Error> {
        let (me, n) = (e.rank, e.bufs.len());
        self.counts.barriers += 1;
        let k = self.counts.barriers;
        for p in (0..n).filter(|&p| p != me) {
            self.signal(p, Word::Barrier, me, k)?;
        }
        for p in (0..n).filter(|&p| p != me) {
            self.wait(e, Word::Barrier, p, k, "barrier")?;
        }
        Ok(())
    }

    fn inline(&mut self, e: &Entered<'_>, i: &Inline) -> Result<(), Error> {
        let me = e.rank;
        let (src, stage) = (locate(e, me, i.src, i.len)?, locate(e, me, i.stage, i.len)?);
        if i.len > 0 {
            self.copy(stage, src)?;
        }
        self.barrier(e)?;
        let terms = i.terms.iter().map(|a| resolve(e, a, i.len)).collect::<Result<Vec<_>, _>>()?;
        if i.len > 0 {
            let dst = locate(e, me, i.dst, i.len)?;
            self.combine(e, dst, &terms)?;
            if i.finalize {
                self.finalize(e, dst)?;
            }
        }
        Ok(())
    }

    /// `target` = the terms combined in order (one term is a copy).
    fn combine(&self, e: &Entered<'_>, target: Region, terms: &[Region]) -> Result<(), Error> {
        // Avg reduces as a sum; its division is `finalize`.
        let op = match e.args.op {
            None | Some(oxccl::ReduceOp::Avg) => oxccl::ReduceOp::Sum,
            Some(op) => op,
        };
        let dtype = e.args.dtype;
        let reduce = |dst, a, b| {
            // SAFETY: every region is live until the stream has run the call (the caller's
            // contract, and the group's areas outlive its streams); the schedule discipline
            // (proven by the checker) and the waits issued before give this rank sole access
            // to what it writes and no concurrent writer of what it reads.
            unsafe { self.stream.reduce(dtype, op, dst, a, b) }.map_err(|err| device_error(e, err))
        };
        match terms {
            [] => Err(internal(e, "nothing to combine")),
            [only] if *only == target => Ok(()),
            [only] => self.copy(target, *only),
            [first, second, rest @ ..] => {
                reduce(target, *first, *second)?;
                rest.iter().try_for_each(|&t| reduce(target, target, t))
            }
        }
    }

    /// Applies the operator's final step to a complete reduction: avg's
    /// division by the world size (nothing for the other operators).
    fn finalize(&self, e: &Entered<'_>, target: Region) -> Result<(), Error> {
        if e.args.op != Some(oxccl::ReduceOp::Avg) || !e.args.collective.reduces() {
            return Ok(());
        }
        let world = u32::try_from(e.bufs.len()).unwrap_or(u32::MAX);
        // SAFETY: as in `combine`.
        unsafe { self.stream.avg_div(e.args.dtype, target, world) }.map_err(|err| device_error(e, err))
    }

    fn copy(&self, dst: Region, src: Region) -> Result<(), Error> {
        // SAFETY: as in `combine`.
        unsafe { self.stream.copy(dst, src) }.map_err(|err| Error::System(err.to_string()))
    }

    /// Writes `offset` (relative to this rank's epoch) into `peer`'s word
    /// of `kind` for rank `of` (this rank).
    fn signal(&self, peer: Rank, kind: Word, of: Rank, offset: u64) -> Result<(), Error> {
        self.stream
            .write_signal(self.areas[peer].word(kind, of), self.areas[of].epoch(), offset)
            .map_err(|err| Error::System(err.to_string()))
    }

    /// Waits until `peer`'s word of `kind` in this rank's area reaches
    /// `offset` relative to this rank's epoch.
    fn wait(&self, e: &Entered<'_>, kind: Word, peer: Rank, offset: u64, what: &'static str) -> Result<(), Error> {
        let call = format!("{} #{}", e.args.collective, e.seq);
        let label = format!("{call}: rank {} waits for rank {peer} ({what} {offset})", e.rank);
        let watch = Waiting {
            group: self.group.clone(),
            timeout: self.timeout,
            call,
            rank: e.rank,
            peer,
            what,
            since: Instant::now(),
            looked: AtomicU64::new(0),
        };
        let area = &self.areas[e.rank];
        let wait = Wait {
            what: label,
            watch: Arc::new(watch),
            timeout: self.timeout,
            fault: area.fault(),
            code: fault_code(kind, peer),
        };
        self.stream
            .wait_signal(area.word(kind, peer), area.epoch(), offset, wait)
            .map_err(|err| Error::System(err.to_string()))
    }
}

/// What a wait that gave up stores in its rank's fault word: never 0.
pub(crate) fn fault_code(kind: Word, peer: Rank) -> u64 {
    (1 << 63) | ((kind as u64) << 32) | peer as u64
}

/// The word kind's name and the peer a fault word names, if it names one.
pub fn fault_of(code: u64) -> Option<(&'static str, Rank)> {
    if code >> 63 == 0 {
        return None;
    }
    let what = match (code >> 32) & 0xff {
        0 => "a message (the device's wait timed out)",
        1 => "a free slot (the device's wait timed out)",
        2 => "a barrier (the device's wait timed out)",
        _ => "the end of its previous call (the device's wait timed out)",
    };
    Some((what, (code & 0xffff_ffff) as Rank))
}

/// `len` elements at `loc` in rank `rank`'s buffers of the call.
fn locate(e: &Entered<'_>, rank: Rank, loc: Loc, len: usize) -> Result<Region, Error> {
    let es = e.args.dtype.size();
    let buf = e.bufs[rank][match loc.buf {
        Buf::Input => 0,
        Buf::Output => 1,
        Buf::Scratch => 2,
    }];
    if len == 0 {
        return Ok(Region::EMPTY);
    }
    let Some(buf) = buf else {
        return Err(Error::InvalidArgument(format!(
            "{} #{} on rank {}: rank {rank}'s {:?} buffer is another process's device memory, which this \
             algorithm would read; choose ring, tree or halving-doubling",
            e.args.collective, e.seq, e.rank, loc.buf
        )));
    };
    buf.sub(loc.off * es..(loc.off + len) * es)
        .ok_or_else(|| internal(e, &format!("rank {rank}'s {:?}[{}..{}] is outside", loc.buf, loc.off, loc.off + len)))
}

fn resolve(e: &Entered<'_>, a: &At, len: usize) -> Result<Region, Error> {
    locate(e, a.rank, a.loc, len)
}

fn internal(e: &Entered<'_>, what: &str) -> Error {
    Error::Internal(format!("{} #{} on rank {}: {what}", e.args.collective, e.seq, e.rank))
}

fn device_error(e: &Entered<'_>, err: crate::error::Error) -> Error {
    Error::InvalidArgument(format!("{} #{} on rank {}: {err}", e.args.collective, e.seq, e.rank))
}

//! The executor: runs one rank's schedule over a transport with real data.
//!
//! Xfers are executed as NCCL's fused primitives: the result is computed once,
//! straight into its final place — the destination buffer when the xfer
//! stores, otherwise the first receiver's slot — reading received data in
//! place from the sender's slot, then copied to any further receivers. Each
//! xfer moves at most one slice, and a rank streams xfer after xfer, so a ring
//! or tree pipelines slice by slice through the channels' slots. Direct steps
//! read and write peers' posted buffers in cache-sized blocks, combining into
//! a small local block and writing it to every destination. Every wait has a
//! deadline and stops when the group is aborted.
//!
//! This file holds the call (`Exec`: how it is built, its scratch, the run
//! loop, copies and reductions through the memory space, barriers); the
//! steps and the rest live beside it: `entry.rs` (posting the call, and the
//! inline step), `xfer.rs`, `direct.rs`, `waiting.rs` (deadlines, and whom a
//! timeout names) and `p2p.rs` (send and recv).

use std::time::Duration;

use crate::dtype::{DType, ReduceOp};
use crate::error::{Error, Result};
use crate::mem::{Lines, Region};
use crate::schedule::{Buf, Collective, Loc, Rank, Schedule, Step};
use crate::space::{MemorySpace, HOST};
use crate::transport::{Args, Transport, HISTORY};

mod direct;
mod entry;
mod p2p;
pub(crate) use p2p::GroupOp;
mod waiting;
mod xfer;

/// Bytes combined at a time by direct steps (fits in L1 with its sources).
const DIRECT_BLOCK: usize = 128 << 10;

/// Direct steps that write at least this many bytes use streaming stores.
const STREAM_BYTES: usize = 8 << 20;

/// Per-rank state that outlives one collective.
pub struct RankState {
    /// Barriers this rank has entered (not counting those that wait for
    /// postings, see `Exec::run`).
    pub barriers: u64,
    /// The last call every peer was seen entering (so has finished the
    /// call before).
    pub peers_entered: u64,
    /// Other ranks' buffers in the current collective, from the postings
    /// read on entering it (others are read from the board when needed).
    pub peers: Vec<Option<[Option<Region>; 3]>>,
    /// Peers' staged scratch in a repeated inline step, by rank (see
    /// `Exec::wait_alike`); valid only in the call that filled it.
    staged: Vec<Region>,
    /// Reused lists of a direct step's sources and destinations.
    srcs: Vec<Region>,
    dsts: Vec<Region>,
    pub block: Lines,
    /// Messages were sent straight from this rank's buffers
    /// (`Transport::commit_from`) and the transport may still read them.
    unsettled: bool,
}

impl RankState {
    pub fn new() -> RankState {
        RankState {
            barriers: 0,
            peers_entered: 0,
            peers: Vec::new(),
            staged: Vec::new(),
            srcs: Vec::new(),
            dsts: Vec::new(),
            block: Lines::new(DIRECT_BLOCK),
            unsettled: false,
        }
    }
}

impl Default for RankState {
    fn default() -> Self {
        Self::new()
    }
}

/// One call in flight on one rank, built by [`Exec::collective`] or
/// [`Exec::point_to_point`].
pub(crate) struct Exec<'a> {
    t: &'a dyn Transport,
    /// Where the buffers live; every copy and reduction goes through it.
    space: &'a dyn MemorySpace,
    rank: Rank,
    seq: u64,
    collective: Collective,
    dtype: DType,
    op: ReduceOp,
    timeout: Duration,
    /// Input, output and scratch of this rank.
    bufs: [Region; 3],
    state: &'a mut RankState,
    /// `Some("send")` or `Some("recv")` for point-to-point calls.
    p2p: Option<&'static str>,
    /// The collective's arguments (sent in every message header and checked
    /// by the receiver); `None` for point-to-point calls.
    args: Option<Args>,
    /// The call repeats this rank's previous call exactly (same arguments,
    /// same buffers), so its posting may repeat the previous one's words.
    repeat: bool,
    /// The scratch is the inline space of this call's posting.
    inline: bool,
    /// The memory space is the host's: its operations are called directly
    /// (not through the trait) and complete as they return.
    host: bool,
    /// This rank's doorbell shows it touching peers' buffers in this call
    /// (see [`crate::transport::Doorbell::touch`]); cleared when the call ends.
    touched: bool,
}

fn buf_index(b: Buf) -> usize {
    match b {
        Buf::Input => 0,
        Buf::Output => 1,
        Buf::Scratch => 2,
    }
}

impl<'a> Exec<'a> {
    /// Collective number `seq` of `rank` with the arguments every rank
    /// agrees on, on this rank's `input` and `output` in `space`; `repeat` when it
    /// repeats this rank's previous call exactly (same arguments, same
    /// buffers). Waits end after `timeout` without progress.
    #[allow(clippy::too_many_arguments)]
    pub fn collective(
        t: &'a dyn Transport,
        space: &'a dyn MemorySpace,
        rank: Rank,
        seq: u64,
        args: Args,
        [input, output]: [Region; 2],
        timeout: Duration,
        state: &'a mut RankState,
        repeat: bool,
    ) -> Exec<'a> {
        Exec {
            t,
            space,
            rank,
            seq,
            collective: args.collective,
            dtype: args.dtype,
            op: args.op.unwrap_or(ReduceOp::Sum),
            timeout,
            bufs: [input, output, Region::EMPTY],
            state,
            p2p: None,
            args: Some(args),
            repeat,
            inline: false,
            host: space.as_host().is_some(),
            touched: false,
        }
    }

    /// A point-to-point transfer of `dtype` elements (`what`: `"send"` or
    /// `"recv"`, for error messages); run it with [`Exec::send`] or
    /// [`Exec::recv`].
    pub fn point_to_point(
        t: &'a dyn Transport,
        space: &'a dyn MemorySpace,
        rank: Rank,
        what: &'static str,
        dtype: DType,
        timeout: Duration,
        state: &'a mut RankState,
    ) -> Exec<'a> {
        Exec {
            t,
            space,
            rank,
            seq: 0,
            collective: Collective::Barrier,
            dtype,
            op: ReduceOp::Sum,
            timeout,
            bufs: [Region::EMPTY; 3],
            state,
            p2p: Some(what),
            args: None,
            repeat: false,
            inline: false,
            host: space.as_host().is_some(),
            touched: false,
        }
    }
}

impl Exec<'_> {
    /// This collective's scratch, which peers may read until the collective
    /// after next (see `schedule`): the inline space of this call's posting
    /// when it fits there, which is rewritten [`HISTORY`] calls later; else
    /// one of two spaces, alternating with the sequence number. Either way,
    /// first waits until every peer has finished the collective that last
    /// used the space.
    fn scratch(&mut self, bytes: usize) -> Result<Region> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
        if bytes == 0 {
            return Ok(Region::EMPTY);
        }
        // A space of its own (a device) gives its own scratch; the board's
        // inline space is host memory.
        let inline = if self.host { t.inline_scratch(me, seq, bytes) } else { None };
        let reuse = if inline.is_some() { HISTORY as u64 } else { 2 };
        // Peers seen entering a call have finished the one before.
        if seq > reuse && self.state.peers_entered <= seq - reuse && t.shares_memory() {
            let last = seq - reuse;
            {
                self.wait("peer still reading scratch", || {
                    (0..t.world()).find(|&p| p != me && !t.has_finished(p, last)).map_or(Ok(()), Err)
                })?;
            }
        }
        self.inline = inline.is_some();
        let half = (seq % 2) as usize;
        match inline {
            Some(region) => Ok(region),
            None if self.host => t.scratch(me, half, bytes),
            None => self.space.scratch(half, bytes).unwrap_or_else(|| t.scratch(me, half, bytes)),
        }
    }

    /// The rank's private work area: its memory space's where it has one
    /// (a device), else the executor's host block.
    fn work_area(&self) -> Result<Region> {
        match self.host {
            true => Ok(self.state.block.region()),
            false => self.work_area_of(DIRECT_BLOCK),
        }
    }

    /// At least `bytes` of the work area of the memory space (not the host:
    /// the executor's host block is [`DIRECT_BLOCK`] long).
    fn work_area_of(&self, bytes: usize) -> Result<Region> {
        match self.space.work_area(bytes) {
            Some(area) => area,
            None => self.state.block.region().sub(0..bytes).ok_or_else(|| {
                self.internal(format!("{} has no work area of its own for {bytes} bytes", self.space.name()))
            }),
        }
    }

    /// Runs `sched` for this collective. The rank posts its call just
    /// before its first step that waits for a peer; when that step is a
    /// barrier (or an inline step's barrier), the barrier is the wait for
    /// every peer's posting of this call, which then also carries any
    /// scratch payload the steps before it wrote. Peers are woken for the
    /// posting before this rank next waits, or at the end: by then the
    /// posting's stores have reached them, so the doorbell's fence costs
    /// little (see [`Transport::post`]).
    pub fn run(&mut self, sched: &Schedule) -> Result<()> {
        let done = self.run_steps(sched);
        if self.touched {
            self.t.doorbell(self.rank).untouch();
        }
        done
    }

    /// [`Exec::run`] but for clearing the doorbell's touching mark.
    #[inline(always)]
    fn run_steps(&mut self, sched: &Schedule) -> Result<()> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
        self.bufs[2] = self.scratch(sched.scratch_len * self.esize())?;
        let (mut entered, mut unrung) = (false, false);
        for step in &sched.steps {
            match step {
                // Before entering, direct steps stage data in this rank's own
                // memory; after, they touch peers' buffers, which a failing
                // peer must not free while they do (see `Doorbell::touch`).
                Step::Direct(d) => {
                    if entered && !self.touched {
                        self.touched = true;
                        if t.doorbell(me).touch(seq, t.abort_flag()) {
                            return Err(aborted(t));
                        }
                    }
                    self.direct(d)?
                }
                Step::Barrier if !entered => {
                    entered = true;
                    unrung = self.enter(true)?;
                }
                Step::Inline(i) if !entered => {
                    entered = true;
                    unrung = self.inline(i, true)?;
                }
                _ => {
                    if !entered {
                        entered = true;
                        unrung = self.enter(false)?;
                    }
                    if std::mem::take(&mut unrung) {
                        t.wake_peers(me);
                    }
                    match step {
                        Step::Barrier => self.barrier()?,
                        Step::Xfer(x) => self.xfer(x)?,
                        Step::Inline(i) => {
                            self.inline(i, false)?;
                        }
                        Step::Direct(_) => unreachable!("handled above"),
                    }
                }
            }
        }
        if !entered {
            unrung = self.enter(false)?;
        }
        if self.state.unsettled {
            self.settle()?;
        }
        self.complete()?;
        t.finish(me, seq);
        if unrung {
            t.wake_peers(me);
        }
        Ok(())
    }

    fn esize(&self) -> usize {
        self.dtype.size()
    }

    #[cold]
    fn internal(&self, what: String) -> Error {
        Error::Internal(format!("{} on rank {}: {what}", self.label(), self.rank))
    }

    /// The call in error messages: `all_reduce #5`, `send #2`.
    fn label(&self) -> String {
        match self.p2p {
            Some(what) => format!("{what} #{}", self.seq),
            None => format!("{} #{}", self.collective, self.seq),
        }
    }

    /// `len` elements at `loc` in `bufs`.
    fn locate(&self, bufs: &[Region; 3], loc: Loc, len: usize) -> Result<Region> {
        self.locate_in(bufs[buf_index(loc.buf)], loc, len)
    }

    /// `len` elements at `loc` in `b`, the buffer `loc` names.
    fn locate_in(&self, b: Region, loc: Loc, len: usize) -> Result<Region> {
        let es = self.esize();
        match b.sub(loc.off * es..(loc.off + len) * es) {
            Some(r) => Ok(r),
            None => Err(self.outside(loc, len)),
        }
    }

    #[cold]
    fn outside(&self, loc: Loc, len: usize) -> Error {
        self.internal(format!("{:?}[{}..{}] is outside the buffer", loc.buf, loc.off, loc.off + len))
    }

    /// dst = src (no-op when they are the same bytes).
    fn copy(&self, dst: Region, src: Region) -> Result<()> {
        self.copy_with(dst, src, false)
    }

    /// dst = src, bypassing the cache when `stream`.
    fn copy_with(&self, dst: Region, src: Region, stream: bool) -> Result<()> {
        if dst == src {
            return Ok(());
        }
        if dst.overlaps(&src) || dst.len() != src.len() {
            return Err(self.internal("copy between overlapping or unequal regions".into()));
        }
        // SAFETY: the regions are disjoint and live for this collective; the
        // schedule discipline gives this rank sole access to `dst` and no
        // writer to `src` while this step runs.
        unsafe {
            match self.host {
                true => HOST.copy(dst, src, stream),
                false => self.space.copy(dst, src, stream),
            }
        };
        Ok(())
    }

    /// dst = a ⊕ b, where dst may be a itself.
    fn reduce(&self, dst: Region, a: Region, b: Region) -> Result<()> {
        if dst.overlaps(&b) || (dst != a && dst.overlaps(&a)) || a.len() != dst.len() || b.len() != dst.len() {
            return Err(self.internal("reduction over overlapping or unequal regions".into()));
        }
        // SAFETY: dst overlaps neither source unless it is `a`; sole access as in `copy_with`.
        unsafe {
            match self.host {
                true => HOST.reduce(self.dtype, self.op, dst, a, b),
                false => self.space.reduce(self.dtype, self.op, dst, a, b),
            }
        };
        Ok(())
    }

    /// Completes what this rank issued to its memory space before it
    /// announces a result to another rank.
    fn complete(&self) -> Result<()> {
        match self.host {
            true => Ok(()),
            false => self.space.complete(),
        }
    }

    /// Applies the operator's final step (avg's division) to `dst`, a
    /// complete reduction this rank alone writes, when the call reduces
    /// with an operator that has one.
    fn finalize(&self, dst: Region) {
        if self.op == ReduceOp::Avg && self.collective.reduces() {
            // SAFETY: the caller holds `dst` alone (its own destination, a
            // slot it holds, or its private block).
            unsafe { self.space.finalize(self.dtype, self.op, self.t.world(), dst) };
        }
    }

    fn barrier(&mut self) -> Result<()> {
        self.state.barriers += 1;
        let k = self.state.barriers;
        let t = self.t;
        self.complete()?;
        // The phase's direct steps are done (and complete): peers' buffers
        // are untouched until the next step that reaches into them.
        if self.touched {
            self.touched = false;
            t.doorbell(self.rank).untouch();
        }
        t.barrier_arrive(self.rank, k);
        self.wait("barrier", || t.barrier_missing(k).map_or(Ok(()), Err))
    }
}

/// The error a rank reports when the group was aborted.
pub fn aborted(t: &dyn Transport) -> Error {
    match t.abort_cause() {
        Some(Error::Aborted(why)) => Error::Aborted(why),
        // A malformed message is reported as itself on every rank.
        Some(e @ Error::Protocol { .. }) => e,
        Some(cause) => Error::Aborted(cause.to_string()),
        None => Error::Aborted("unknown cause".into()),
    }
}

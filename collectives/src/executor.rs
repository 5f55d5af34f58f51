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

use std::cell::Cell;
use std::time::Duration;

use crate::dtype::{DType, ReduceOp};
use crate::error::{Error, Result};
use crate::mem::{Lines, Region};
use crate::schedule::{At, Buf, Collective, Direct, Loc, Rank, Schedule, Step, Xfer};
use crate::space::MemorySpace;
use crate::transport::wait::{wait_until, WaitError, Watch};
use crate::transport::{Activity, Args, Header, Kind, Transport, HISTORY};

mod entry;

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
        let inline = t.inline_scratch(me, seq, bytes);
        let reuse = if inline.is_some() { HISTORY as u64 } else { 2 };
        if seq > reuse && t.shares_memory() {
            let last = seq - reuse;
            // Peers seen entering a call have finished the one before.
            if self.state.peers_entered <= last {
                self.wait("peer still reading scratch", || {
                    (0..t.world()).find(|&p| p != me && !t.has_finished(p, last)).map_or(Ok(()), Err)
                })?;
            }
        }
        self.inline = inline.is_some();
        match inline {
            Some(region) => Ok(region),
            None => t.scratch(me, (seq % 2) as usize, bytes),
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
        let (t, me, seq) = (self.t, self.rank, self.seq);
        self.bufs[2] = self.scratch(sched.scratch_len * self.esize())?;
        let (mut entered, mut unrung) = (false, false);
        for step in &sched.steps {
            match step {
                // Before entering, direct steps stage data in this rank's own memory.
                Step::Direct(d) => self.direct(d)?,
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
        self.settle()?;
        self.space.complete()?;
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
        Error::InvalidArgument(format!("{} on rank {}: {what}", self.label(), self.rank))
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

    /// Turns a failed wait into the error every rank reports.
    fn wait_error(&self, e: WaitError, peer: Rank, what: &'static str) -> Error {
        let (t, me) = (self.t, self.rank);
        match e {
            WaitError::Timeout(waited) => {
                // Ranks wait on each other in chains (a ring: 3 waits for 2,
                // which waits for 1, which stopped), and all time out at about
                // the same moment: name the rank at the end of the chain.
                let (peer, what) = self.culprit(peer).unwrap_or((peer, what));
                let err = Error::Timeout { call: self.label(), rank: me, peer, what, waited };
                t.abort(err.clone());
                err
            }
            WaitError::PeerGone => {
                let err = Error::PeerGone {
                    call: self.label(),
                    rank: me,
                    peer,
                    what: format!("its process exited or its connection closed while this rank waited for a {what}"),
                };
                t.abort(err.clone());
                err
            }
            WaitError::Aborted => {
                match t.abort_cause() {
                    // A transport that lost a peer aborts the group naming it;
                    // say which call was waiting.
                    Some(Error::PeerGone { peer, what, .. }) => {
                        Error::PeerGone { call: self.label(), rank: me, peer, what }
                    }
                    // Raised inside a transport, which does not know the call.
                    Some(Error::Timeout { call, rank, peer, what, waited }) if call.is_empty() => {
                        Error::Aborted(Error::Timeout { call: self.label(), rank, peer, what, waited }.to_string())
                    }
                    _ => aborted(t),
                }
            }
        }
    }

    /// How recently a waiting rank must have looked to count as waiting
    /// rather than stopped: half the deadline (ranks that wait look at
    /// least every 50 ms).
    fn fresh(&self) -> Duration {
        (self.timeout / 2).max(Duration::from_millis(200))
    }

    /// Follows who waits for whom from `peer`, the rank this one timed out
    /// waiting for, to the rank that holds everyone up: the first that is
    /// not waiting and looking itself — stopped, or busy outside the call.
    /// `None` where the transport cannot tell what ranks do.
    fn culprit(&self, peer: Rank) -> Option<(Rank, &'static str)> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
        let fresh = self.fresh();
        let mut seen = vec![me];
        let mut r = peer;
        loop {
            // A rank that gave up first has named one: every rank names the same.
            if let Some(Error::Timeout { rank, peer: named, .. }) = t.abort_cause() {
                if rank != me {
                    return Some((named, "another rank that timed out found it holding everyone up"));
                }
            }
            match t.activity(r, fresh)? {
                Activity::Waiting(next) if !seen.contains(&next) => {
                    seen.push(r);
                    r = next;
                }
                Activity::Waiting(_) => return Some((r, "it is in a cycle of ranks waiting for each other")),
                Activity::Busy if t.shares_memory() && self.p2p.is_none() && t.posting(r, seq).is_none() => {
                    return Some((r, "it never entered this call"))
                }
                Activity::Busy => return Some((r, "it was not waiting in a call: busy, or stopped outside a wait")),
                Activity::Stopped => return Some((r, "it stopped: its wait no longer looks")),
                Activity::Unanswered => return Some((r, "it does not answer: stopped, or its link is down")),
            }
        }
    }

    fn wait(&self, what: &'static str, mut ready: impl FnMut() -> std::result::Result<(), Rank>) -> Result<()> {
        // The rank waited for, once a look found it missing (the doorbell
        // shows it, and a timeout follows who waits for whom from it).
        let blocker = Cell::new(self.rank);
        let mut check = || match ready() {
            Ok(()) => true,
            Err(p) => {
                blocker.set(p);
                false
            }
        };
        // The first look before anything else is set up: usually it is all.
        if check() {
            return Ok(());
        }
        let t = self.t;
        let alive = || t.peer_alive(blocker.get());
        let peer = || blocker.get();
        let watch = Watch {
            bell: t.doorbell(self.rank),
            abort: t.abort_flag(),
            timeout: self.timeout,
            peer: &peer,
            alive: &alive,
        };
        wait_until(&watch, &mut check).map_err(|e| self.wait_error(e, blocker.get(), what))
    }

    fn xfer(&mut self, x: &Xfer) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        let bytes = x.len * self.esize();
        // Wait until every message has arrived and every receiver has room.
        self.wait("message or free slot", || {
            if let Some(p) = x.recv.iter().find(|&p| t.try_recv(me, p).is_none()) {
                return Err(p);
            }
            match x.send.iter().find(|&p| t.try_send_slot(me, p).is_none()) {
                Some(p) => Err(p),
                None => Ok(()),
            }
        })?;
        let mut recvd = [Region::EMPTY; 3];
        for (i, p) in x.recv.iter().enumerate() {
            let (h, data) = t.try_recv(me, p).expect("checked ready");
            self.check_args(p, &h)?;
            self.check_header(p, h, Kind::Collective, self.seq, bytes)?;
            recvd[i] = data;
        }
        let mut slots = [Region::EMPTY; 3];
        for (i, p) in x.send.iter().enumerate() {
            let slot = t.try_send_slot(me, p).expect("checked ready");
            slots[i] = slot.sub(0..bytes).ok_or_else(|| self.internal(format!("{bytes} bytes exceed a slot")))?;
        }
        let src = x.src.map(|l| self.locate(&self.bufs, l, x.len)).transpose()?;
        let dst = x.dst.map(|l| self.locate(&self.bufs, l, x.len)).transpose()?;
        let nrecv = x.recv.len();
        if let (Some(s), 0, None) = (src, nrecv, dst) {
            if !(x.finalize && self.collective.reduces()) {
                return self.send_from(x, s, &slots);
            }
        }
        let target = dst.unwrap_or(slots[0]);
        // Combine: start from the source or the first message, reduce the rest.
        let reduced = match src {
            Some(s) if nrecv == 0 => {
                self.copy(target, s)?;
                0
            }
            Some(s) => {
                self.reduce(target, s, recvd[0])?;
                1
            }
            None => {
                self.copy(target, recvd[0])?;
                1
            }
        };
        for &r in &recvd[reduced..nrecv] {
            self.reduce(target, target, r)?;
        }
        if x.finalize {
            // `target` is this rank's own destination or a slot it holds.
            self.finalize(target);
        }
        if !x.send.is_empty() {
            self.space.complete()?;
        }
        for (i, p) in x.send.iter().enumerate() {
            if slots[i] != target {
                self.copy(slots[i], target)?;
            }
            t.commit(me, p, Header { kind: Kind::Collective, seq: self.seq, len: bytes, total: 0, args: self.args });
        }
        for p in x.recv.iter() {
            t.release(me, p);
        }
        Ok(())
    }

    /// A step that only sends this rank's own data `src`: straight from it
    /// where the transport can reach it (registered memory), else copied
    /// into each slot.
    fn send_from(&mut self, x: &Xfer, src: Region, slots: &[Region; 3]) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        let header = Header { kind: Kind::Collective, seq: self.seq, len: src.len(), total: 0, args: self.args };
        for (i, p) in x.send.iter().enumerate() {
            if t.commit_from(me, p, header, src) {
                self.state.unsettled = true;
                continue;
            }
            self.copy(slots[i], src)?;
            self.space.complete()?;
            t.commit(me, p, header);
        }
        Ok(())
    }

    /// Waits until the transport no longer reads this rank's buffers for
    /// messages sent straight from them.
    fn settle(&mut self) -> Result<()> {
        if std::mem::take(&mut self.state.unsettled) {
            self.t.settle(self.rank).map_err(|e| match e {
                Error::Timeout { call, rank, peer, what, waited } if call.is_empty() => {
                    Error::Timeout { call: self.label(), rank, peer, what, waited }
                }
                e => e,
            })?;
        }
        Ok(())
    }

    /// A message of the same collective carries the sender's arguments: any
    /// difference is a mismatch, reported with both values.
    fn check_args(&self, peer: Rank, h: &Header) -> Result<()> {
        let (Some(mine), Some(theirs)) = (self.args, h.args) else { return Ok(()) };
        if h.seq != self.seq || mine == theirs {
            return Ok(());
        }
        let Some((field, mine, theirs)) = mine.difference(&theirs) else { return Ok(()) };
        let err = Error::Mismatch { call: self.label(), field, rank: self.rank, mine, peer, theirs };
        self.t.abort(err.clone());
        Err(err)
    }

    fn check_header(&self, peer: Rank, h: Header, kind: Kind, seq: u64, len: usize) -> Result<()> {
        if h.kind != kind || h.seq != seq || h.len != len {
            let err = Error::Protocol {
                peer,
                what: format!(
                    "rank {} expected a {kind:?} message #{seq} of {len} bytes, got a {:?} message #{} of {} bytes",
                    self.rank, h.kind, h.seq, h.len
                ),
            };
            self.t.abort(err.clone());
            return Err(err);
        }
        Ok(())
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
        unsafe { self.space.copy(dst, src, stream) };
        Ok(())
    }

    /// dst = a ⊕ b, where dst may be a itself.
    fn reduce(&self, dst: Region, a: Region, b: Region) -> Result<()> {
        if dst.overlaps(&b) || (dst != a && dst.overlaps(&a)) || a.len() != dst.len() || b.len() != dst.len() {
            return Err(self.internal("reduction over overlapping or unequal regions".into()));
        }
        // SAFETY: dst overlaps neither source unless it is `a`; sole access as in `copy_with`.
        unsafe { self.space.reduce(self.dtype, self.op, dst, a, b) };
        Ok(())
    }

    /// Applies the operator's final step (avg's division) to `dst`, a
    /// complete reduction this rank alone writes, when the call reduces.
    fn finalize(&self, dst: Region) {
        if self.collective.reduces() {
            // SAFETY: the caller holds `dst` alone (its own destination, a
            // slot it holds, or its private block).
            unsafe { self.space.finalize(self.dtype, self.op, self.t.world(), dst) };
        }
    }

    fn barrier(&mut self) -> Result<()> {
        self.state.barriers += 1;
        let k = self.state.barriers;
        let t = self.t;
        self.space.complete()?;
        t.barrier_arrive(self.rank, k);
        self.wait("barrier", || t.barrier_missing(k).map_or(Ok(()), Err))
    }

    /// Buffer `i` of peer `r`, as posted for this call: read when it entered,
    /// else from the board.
    fn peer_buf(&self, r: Rank, i: usize) -> Result<Option<Region>> {
        if !self.t.shares_memory() {
            return Err(Error::NeedsSharedMemory { algorithm: "direct" });
        }
        if let Some(bufs) = self.state.peers[r] {
            return Ok(bufs[i]);
        }
        match self.t.posting(r, self.seq) {
            Some(post) => Ok(post.bufs[i]),
            None => Err(self.not_posted(r)),
        }
    }

    #[cold]
    fn not_posted(&self, r: Rank) -> Error {
        Error::Protocol { peer: r, what: format!("no buffers posted for {}", self.label()) }
    }

    /// `len` elements at `a`, in this rank's buffers or a peer's.
    fn resolve(&self, a: &At, len: usize) -> Result<Region> {
        let i = buf_index(a.loc.buf);
        let buf = if a.rank == self.rank { Some(self.bufs[i]) } else { self.peer_buf(a.rank, i)? };
        match buf {
            Some(buf) => self.locate_in(buf, a.loc, len),
            None => Err(self.not_shared(a)),
        }
    }

    #[cold]
    fn not_shared(&self, a: &At) -> Error {
        Error::InvalidArgument(format!(
            "{}: rank {}'s {:?} buffer is not shared with other ranks (allocate buffers with \
             Communicator::alloc_shared to use the direct algorithm across processes)",
            self.label(),
            a.rank,
            a.loc.buf
        ))
    }

    fn direct(&mut self, d: &Direct) -> Result<()> {
        // The lists live in the rank's state so their memory is reused.
        self.state.srcs.clear();
        for a in &d.srcs {
            self.state.srcs.push(self.resolve(a, d.len)?);
        }
        self.state.dsts.clear();
        for a in &d.dsts {
            self.state.dsts.push(self.resolve(a, d.len)?);
        }
        self.combine_direct(d, &self.state.srcs, &self.state.dsts)
    }

    /// Combines `srcs` in blocks and writes each block to every one of `dsts`.
    fn combine_direct(&self, d: &Direct, srcs: &[Region], dsts: &[Region]) -> Result<()> {
        let bytes = d.len * self.esize();
        let finalize = d.finalize && self.collective.reduces();
        if srcs.len() == 1 && !finalize {
            for &dst in dsts {
                self.copy(dst, srcs[0])?;
            }
            return Ok(());
        }
        // One small destination that no source overlaps: combine straight into it.
        if let [dst] = dsts {
            if bytes <= DIRECT_BLOCK && srcs.len() > 1 && !srcs.iter().any(|s| s.overlaps(dst)) {
                self.reduce(*dst, srcs[0], srcs[1])?;
                for &s in &srcs[2..] {
                    self.reduce(*dst, *dst, s)?;
                }
                if finalize {
                    self.finalize(*dst);
                }
                return Ok(());
            }
        }
        // Outputs far larger than the caches are written around them.
        let stream = bytes * dsts.len() >= STREAM_BYTES;
        let block = self.state.block.region();
        let step = DIRECT_BLOCK / self.esize() * self.esize();
        let mut off = 0;
        while off < bytes {
            let n = step.min(bytes - off);
            let piece = |r: &Region| r.sub(off..off + n).expect("inside the region");
            let tmp = block.sub(0..n).expect("inside the block");
            match srcs.len() {
                1 => self.copy(tmp, piece(&srcs[0]))?,
                _ => self.reduce(tmp, piece(&srcs[0]), piece(&srcs[1]))?,
            }
            for s in srcs.iter().skip(2) {
                self.reduce(tmp, tmp, piece(s))?;
            }
            if finalize {
                self.finalize(tmp);
            }
            for dst in dsts {
                // A destination that is also a source (in place) was just
                // read into the cache: a plain store is cheaper there.
                let cached = srcs.contains(dst);
                self.copy_with(piece(dst), tmp, stream && !cached)?;
            }
            off += n;
        }
        Ok(())
    }

    /// Sends `data` to `peer` as point-to-point message number `seq`.
    pub fn send(&mut self, peer: Rank, data: Region, seq: u64) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        self.seq = seq;
        let slot_bytes = t.slot_bytes() / self.esize() * self.esize();
        let mut off = 0;
        loop {
            let n = slot_bytes.min(data.len() - off);
            self.wait("free slot", || t.try_send_slot(me, peer).map(|_| ()).ok_or(peer))?;
            let slot = t.try_send_slot(me, peer).expect("checked ready");
            let piece = data.sub(off..off + n).expect("within data");
            let header = Header { kind: Kind::PointToPoint, seq, len: n, total: data.len(), args: None };
            if t.commit_from(me, peer, header, piece) {
                self.state.unsettled = true;
            } else {
                self.copy(slot.sub(0..n).expect("within slot"), piece)?;
                self.space.complete()?;
                t.commit(me, peer, header);
            }
            off += n;
            if off >= data.len() {
                return self.settle();
            }
        }
    }

    /// Receives point-to-point message number `seq` from `peer` into `out`.
    pub fn recv(&mut self, peer: Rank, out: Region, seq: u64) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        self.seq = seq;
        let slot_bytes = t.slot_bytes() / self.esize() * self.esize();
        let mut off = 0;
        loop {
            let n = slot_bytes.min(out.len() - off);
            self.wait("message", || t.try_recv(me, peer).map(|_| ()).ok_or(peer))?;
            let (h, data) = t.try_recv(me, peer).expect("checked ready");
            if h.kind == Kind::PointToPoint && h.seq == seq && h.total != out.len() {
                let err = Error::Mismatch {
                    call: self.label(),
                    field: "bytes",
                    rank: me,
                    mine: out.len().to_string(),
                    peer,
                    theirs: h.total.to_string(),
                };
                t.abort(err.clone());
                return Err(err);
            }
            self.check_header(peer, h, Kind::PointToPoint, seq, n)?;
            self.copy(out.sub(off..off + n).expect("within out"), data)?;
            t.release(me, peer);
            off += n;
            if off >= out.len() {
                return Ok(());
            }
        }
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

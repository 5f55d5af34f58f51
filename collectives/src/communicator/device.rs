//! Collectives on memory this process names by address only: a device's,
//! worked on through its memory space (`oxccl-cuda` provides them).

use super::plan::Key;
use super::{Call, Communicator, Regions};
use crate::error::{Error, Result};
use crate::executor::Exec;
use crate::mem::Region;
use crate::schedule::{Rank, Schedule};
use crate::space::{MemorySpace, HOST};
use crate::transport::Args;

/// A call every rank has entered, handed to a caller that issues the
/// schedule's steps itself (the stream-ordered device calls of
/// `oxccl-cuda`): see [`Communicator::enter_in`].
pub struct Entered<'a> {
    /// The call's sequence number on this communicator (1, 2, ...).
    pub seq: u64,
    pub rank: Rank,
    /// The arguments every rank posted (and agreed on).
    pub args: Args,
    /// This rank's steps.
    pub schedule: &'a Schedule,
    /// Input, output and scratch of every rank for this call, this rank's
    /// included, exactly as long as the call uses them; `None` where a
    /// peer's buffer cannot be reached from here (another process's
    /// memory), which only the direct algorithm would need.
    pub bufs: &'a [[Option<Region>; 3]],
}

impl Communicator {
    /// Runs any collective on buffers in `space` (a device's memory), named
    /// by their regions, waiting until the space has completed the work (the
    /// blocking form). The direct algorithm reaches peers' buffers, so it
    /// runs only between ranks of one process; the others stage through
    /// the transport's host slots. What the space cannot run is an error.
    ///
    /// # Safety
    /// The regions are memory of `space`, live for the call; nothing else
    /// touches them while it runs (as for the slices of [`Communicator::run`]).
    pub unsafe fn run_in(&self, space: &dyn MemorySpace, call: &Call, bufs: Regions) -> Result<()> {
        self.check_alive(|| format!("{} #{}", call.collective, self.seq.get() + 1))?;
        match bufs {
            Regions::OutOfPlace { send, recv } => {
                space.check("send buffer", send)?;
                space.check("receive buffer", recv)?;
            }
            Regions::InPlace(buf) => space.check("buffer", buf)?,
        }
        let key = Key::of_regions(call, &bufs);
        let plan = self.plan_regions(key, call, bufs, Some(space.name()), None)?;
        // The plan is not kept: the next host call must not take it for its own.
        self.last.set(None);
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let cache = self.cache.borrow();
        let sched = &cache[plan.schedule].2;
        let mut state = self.state.borrow_mut();
        let timeout = self.config.timeout;
        Exec::collective(
            &*self.t,
            space,
            self.rank,
            seq,
            plan.args,
            [plan.input, plan.output],
            timeout,
            &mut state,
            false,
        )
        .run(sched)
        .inspect_err(|e| {
            // Nothing issued may outlive the call (it may use the transport's memory).
            let _ = space.complete();
            self.fail_call(seq, e);
        })
    }

    /// Enters a call on buffers in `memory` (a device's, named for people)
    /// without running it: checks the buffers (`check`, before anything
    /// else: `Err` when one is not memory of the device), chooses the algorithm (messages of at
    /// most `slot_bytes`), asks `scratch` for this rank's scratch of the
    /// call (`scratch(seq, bytes)`), posts the call and waits until every
    /// rank has posted it with the same arguments, then hands the schedule
    /// and every rank's buffers to `issue`, which issues the steps (on a
    /// stream, for instance). Ranks must share memory (threads, or
    /// processes over shm: the postings are read in place); peers' buffers
    /// are named by address where they can be reached (threads), which the
    /// direct algorithm needs. A failure once the
    /// call was posted (in `scratch` or `issue`) aborts the group, since
    /// peers may be waiting for this rank's part.
    ///
    /// # Safety
    /// The regions are the device's memory, live until what `issue` issued
    /// has run; nothing else touches them meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn enter_in<R>(
        &self,
        memory: &str,
        check: impl Fn(&'static str, Region) -> Result<()>,
        call: &Call,
        bufs: Regions,
        slot_bytes: usize,
        scratch: impl FnOnce(u64, usize) -> Result<Region>,
        issue: impl FnOnce(Entered<'_>) -> Result<R>,
    ) -> Result<R> {
        self.check_alive(|| format!("{} #{}", call.collective, self.seq.get() + 1))?;
        let (send, recv) = match bufs {
            Regions::OutOfPlace { send, recv } => (send, recv),
            Regions::InPlace(buf) => (buf, buf),
        };
        check("send buffer", send)?;
        check("receive buffer", recv)?;
        if !self.t.shares_memory() {
            return Err(Error::InvalidArgument(format!(
                "{} on {} memory: stream-ordered calls run between ranks that share memory (threads, or \
                 processes over shm), not over {}",
                call.collective,
                memory,
                self.t.describe()
            )));
        }
        let key = Key::of_regions(call, &bufs);
        let plan = self.plan_regions(key, call, bufs, Some(memory), Some(slot_bytes))?;
        self.last.set(None);
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let cache = self.cache.borrow();
        let sched = &cache[plan.schedule].2;
        let mut state = self.state.borrow_mut();
        let timeout = self.config.timeout;
        let fail = |e: Error| {
            self.t.abort(e.clone());
            e
        };
        let scratch = scratch(seq, sched.scratch_len * call.dtype.size()).map_err(fail)?;
        let mut exec = Exec::collective(
            &*self.t,
            &HOST,
            self.rank,
            seq,
            plan.args,
            [plan.input, plan.output],
            timeout,
            &mut state,
            false,
        );
        let all = exec.rendezvous(scratch).inspect_err(|e| self.t.abort(e.clone()))?;
        issue(Entered { seq, rank: self.rank, args: plan.args, schedule: sched, bufs: &all }).map_err(fail)
    }
}

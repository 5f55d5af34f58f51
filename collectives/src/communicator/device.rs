//! Collectives on memory this process names by address only: a device's,
//! worked on through its memory space (`oxccl-cuda` provides them).

use super::plan::Key;
use super::{Call, Communicator, Regions};
use crate::error::Result;
use crate::executor::Exec;
use crate::space::MemorySpace;

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
        let plan = self.plan_regions(key, call, bufs, Some(space.name()))?;
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
            self.t.abort(e.clone());
        })
    }
}

//! Entering a call: a rank posts its call, and the first barrier of a
//! schedule that reaches into peers' memory is the wait for every peer's
//! posting of the same call — which also carries the staged payload of the
//! eager all-reduce, run here as one fused routine.

use std::cell::Cell;

use super::Exec;
use crate::error::{Error, Result};
use crate::reduce;
use crate::schedule::{At, Buf, Loc, Rank, Schedule, Step};
use crate::transport::Posting;

impl Exec<'_> {
    /// Runs the eager all-reduce of [`crate::algo::direct`] — stage the
    /// input in scratch, barrier, reduce every rank's scratch in rank order
    /// straight into the output — as one routine: the same reads, writes and
    /// order of operations as its three steps run one by one, without
    /// resolving each place through the schedule, which costs more than
    /// moving the data at these sizes. `None` when `sched` is not that.
    pub(super) fn run_eager(&mut self, sched: &Schedule) -> Option<Result<()>> {
        let [Step::Direct(stage), Step::Barrier, Step::Direct(sum)] = sched.steps.as_slice() else {
            return None;
        };
        let me = self.rank;
        let mine = |list: &[At], buf: Buf| list.len() == 1 && list[0] == At { rank: me, loc: Loc { buf, off: 0 } };
        let mut every_scratch = sum.srcs.len() == self.t.world() && sum.srcs.len() > 1;
        for (p, a) in sum.srcs.iter().enumerate() {
            every_scratch &= *a == At { rank: p, loc: Loc::scratch(0) };
        }
        let eager = every_scratch
            && mine(&stage.srcs, Buf::Input)
            && mine(&stage.dsts, Buf::Scratch)
            && mine(&sum.dsts, Buf::Output)
            && !stage.finalize
            && sum.len == stage.len;
        eager.then(|| self.eager(stage.len, sum.finalize))
    }

    fn eager(&mut self, len: usize, finalize: bool) -> Result<()> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
        let input = self.locate_in(self.bufs[0], Loc::input(0), len)?;
        let output = self.locate_in(self.bufs[1], Loc::output(0), len)?;
        let scratch = self.locate_in(self.bufs[2], Loc::scratch(0), len)?;
        self.copy(scratch, input)?;
        let unrung = self.enter(true)?;
        // This rank's own term is not read back from the staged copy: that
        // was just written into the posting's cache lines, and reading it may
        // wait until they have gone to the peers and back. The input holds
        // the same values — unless it is the output, overwritten before its
        // turn (in place, on ranks after the first): then a private copy.
        let own = match me == 0 || !input.overlaps(&output) {
            true => input,
            false => {
                let private = self.state.block.region().sub(0..input.len()).expect("small");
                self.copy(private, input)?;
                private
            }
        };
        let staged = |p: Rank| match p == me {
            true => Ok(own),
            false => self.resolve(&At { rank: p, loc: Loc::scratch(0) }, len),
        };
        self.reduce(output, staged(0)?, staged(1)?)?;
        for p in 2..t.world() {
            self.reduce(output, output, staged(p)?)?;
        }
        if finalize && self.collective.reduces() {
            // SAFETY: the output is this rank's own, and nobody else touches it.
            reduce::finalize(self.dtype, self.op, t.world(), unsafe { output.bytes_mut() });
        }
        t.finish(me, seq);
        if unrung {
            t.wake_peers(me);
        }
        Ok(())
    }

    /// Posts this call. As a barrier (`wait`), then waits until every peer
    /// has posted it too; otherwise only looks at what peers posted already.
    /// Either way a peer's posting with other arguments is a mismatch, and
    /// the peers' buffers found serve the direct steps. True when the caller
    /// still has to wake the peers (see [`Transport::post`]).
    pub(super) fn enter(&mut self, wait: bool) -> Result<bool> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
        let Some(args) = self.args else { return Ok(false) };
        t.post(me, Posting { seq, args, bufs: self.bufs.map(Some) });
        let n = t.world();
        let mut peers = std::mem::take(&mut self.state.peers);
        peers.clear();
        peers.resize(n, None);
        let mismatch = Cell::new(None);
        let mut next = 0;
        // Reads postings from rank `next` on; stops at the first one absent
        // (or skips it, when `skip`) or mismatched.
        let mut look = |skip: bool| {
            while next < n {
                if next != me {
                    let Some(other) = t.posting(next, seq) else {
                        if skip {
                            next += 1;
                            continue;
                        }
                        return Err(next);
                    };
                    if other.args != args {
                        mismatch.set(Some((next, other.args)));
                        return Ok(());
                    }
                    peers[next] = Some(other.bufs);
                }
                next += 1;
            }
            Ok(())
        };
        // Peers are woken once this rank has to wait anyway (the doorbell's
        // fence then overlaps the wait), else by the caller.
        let mut rung = false;
        let result = if wait {
            self.wait("barrier", || {
                let seen = look(false);
                if seen.is_err() && !rung {
                    t.wake_peers(me);
                    rung = true;
                }
                seen
            })
        } else {
            let _ = look(true); // skips absent peers: never an error
            Ok(())
        };
        self.state.peers = peers;
        result?;
        if let Some((p, theirs)) = mismatch.get() {
            if let Some((field, mine, theirs)) = args.difference(&theirs) {
                let err = Error::Mismatch { call: self.label(), field, rank: me, mine, peer: p, theirs };
                t.abort(err.clone());
                return Err(err);
            }
        }
        if wait {
            self.state.peers_entered = seq;
        }
        Ok(!rung)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Algorithm, Communicator, Config, Error, ReduceOp};

    /// Ranks drifting apart by up to one call, through more calls than a
    /// board holds postings: inline payloads are never overwritten while a
    /// peer may read them, also after runs of ring calls (which do not wait
    /// for postings) and with every count around the inline limit.
    #[test]
    fn eager_payloads_survive_drift_and_reuse() {
        let comms = Communicator::local_group_with(3, Config { timeout: Duration::from_secs(20), ..Config::default() })
            .unwrap();
        std::thread::scope(|s| {
            for mut c in comms {
                s.spawn(move || {
                    let r = c.rank() as f32;
                    for i in 0..200usize {
                        c.set_algorithm((i % 40 >= 20).then_some(Algorithm::Ring));
                        let count = [1, 7, 511, 1024, 1025, 1365][i % 6];
                        let send: Vec<f32> = (0..count).map(|k| r * 1000.0 + (k + i) as f32).collect();
                        let mut recv = vec![0f32; count];
                        if (i + c.rank()) % 7 == 0 {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        c.all_reduce(&send, &mut recv, ReduceOp::Sum).unwrap();
                        for (k, v) in recv.iter().enumerate() {
                            assert_eq!(*v, 3000.0 + 3.0 * (k + i) as f32, "call {i}, element {k}");
                        }
                    }
                });
            }
        });
    }

    /// A peer posting other arguments is a mismatch naming the field on the
    /// eager path, on the rank that sees it; the other ranks are aborted.
    #[test]
    fn eager_mismatch_names_the_field() {
        let comms = Communicator::local_group(2).unwrap();
        let outs: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let op = if c.rank() == 0 { ReduceOp::Sum } else { ReduceOp::Max };
                        c.all_reduce_in_place(&mut [1f32; 2], op)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(outs.iter().any(|r| matches!(r, Err(Error::Mismatch { field: "reduction op", .. }))), "{outs:?}");
        assert!(outs.iter().all(|r| matches!(r, Err(Error::Mismatch { .. }) | Err(Error::Aborted(_)))), "{outs:?}");
    }
}

//! Entering a call: a rank posts its call, and the first barrier of a
//! schedule that reaches into peers' memory is the wait for every peer's
//! posting of the same call — which also carries the staged terms of an
//! [`Inline`] step (the small all-reduce) where the transport keeps scratch
//! inside the posting.

use std::cell::Cell;

use super::Exec;
use crate::error::{Error, Result};
use crate::mem::Region;
use crate::schedule::{At, Buf, Inline};
use crate::transport::Posting;

impl Exec<'_> {
    /// Runs an [`Inline`] step: stages this rank's term, waits until every
    /// rank has posted the call (`entering`: this step enters the call, so
    /// the wait for the postings is the barrier; otherwise a barrier), then
    /// combines the terms into the destination. Returns true when the
    /// caller still has to wake the peers (see [`Exec::enter`]).
    pub(super) fn inline(&mut self, step: &Inline, entering: bool) -> Result<bool> {
        let (t, me, seq, len) = (self.t, self.rank, self.seq, step.len);
        let src = self.locate(&self.bufs, step.src, len)?;
        let stage = self.locate(&self.bufs, step.stage, len)?;
        self.copy(stage, src)?;
        // A call that repeats the previous one on the same buffers, with its
        // scratch inline: the posting is the previous one's words again,
        // and peers that posted alike have their terms in their postings.
        // (The barrier and `enter` complete the staging themselves.)
        let reposted = entering && self.repeat && self.inline && {
            self.complete()?;
            t.repost(me, seq)
        };
        let (unrung, alike) = if !entering {
            self.barrier()?;
            (false, false)
        } else if reposted {
            match self.wait_alike()? {
                Some(unrung) => (unrung, true),
                None => (self.enter(true)?, false),
            }
        } else {
            (self.enter(true)?, false)
        };
        let dst = self.locate(&self.bufs, step.dst, len)?;
        // This rank's own term is not read back from the staged copy: that
        // was just written into the posting's cache lines, and reading it may
        // wait until they have gone to the peers and back. The source holds
        // the same values — unless it is the destination, overwritten before
        // its turn (in place, when it is not the first term): then a private
        // copy, or the staged one when that does not fit.
        let own_at = At { rank: me, loc: step.stage };
        let own = match step.terms.first() == Some(&own_at) || !src.overlaps(&dst) {
            true => src,
            false => match self.work_area()?.sub(0..src.len()) {
                Some(private) => {
                    self.copy(private, src)?;
                    private
                }
                None => stage,
            },
        };
        let term = |a: &At| self.term(a, own_at, own, alike, len);
        match step.terms.as_slice() {
            [] => return Err(self.internal("an inline step without terms".into())),
            [only] => self.copy(dst, term(only)?)?,
            [first, second, rest @ ..] => {
                self.reduce(dst, term(first)?, term(second)?)?;
                for a in rest {
                    self.reduce(dst, dst, term(a)?)?;
                }
            }
        }
        if step.finalize {
            self.finalize(dst);
        }
        Ok(unrung)
    }

    /// Where an inline step's term `a` is: this rank's own term (`own_at`)
    /// is `own`; a peer's staged scratch was found by [`Exec::wait_alike`]
    /// when `alike`; anything else is resolved through the postings.
    #[inline(always)]
    fn term(&self, a: &At, own_at: At, own: Region, alike: bool, len: usize) -> Result<Region> {
        if *a == own_at {
            return Ok(own);
        }
        if alike && a.loc.buf == Buf::Scratch {
            if let Some(&theirs) = self.state.staged.get(a.rank) {
                return self.locate_in(theirs, a.loc, len);
            }
        }
        self.resolve(a, len)
    }

    /// The wait of a repeated inline step, once this rank has reposted: until
    /// every peer has posted this call. `Some(unrung)` when every peer
    /// posted the same arguments with its scratch inline at this rank's
    /// length (the transport compares the words it stores, with no
    /// decoding), with each peer's staged scratch in `state.staged`; `None`
    /// when one did not, and the caller reads the postings in full,
    /// reporting any mismatch.
    fn wait_alike(&mut self) -> Result<Option<bool>> {
        let (t, me, seq, n) = (self.t, self.rank, self.seq, self.t.world());
        let (mut next, mut rung) = (0, false);
        self.wait("barrier", || {
            while next < n {
                if next != me && !t.posted(next, seq) {
                    if !rung {
                        t.wake_peers(me);
                        rung = true;
                    }
                    return Err(next);
                }
                next += 1;
            }
            Ok(())
        })?;
        let bytes = self.bufs[2].len();
        let staged = &mut self.state.staged;
        staged.clear();
        for p in 0..n {
            match p == me {
                true => staged.push(Region::EMPTY),
                false => match t.staged_alike(p, me, seq, bytes) {
                    Some(theirs) => staged.push(theirs),
                    None => return Ok(None),
                },
            }
        }
        self.state.peers_entered = seq;
        Ok(Some(!rung))
    }

    /// Posts this call. As a barrier (`wait`), then waits until every peer
    /// has posted it too; otherwise only looks at what peers posted already.
    /// Either way a peer's posting with other arguments is a mismatch, and
    /// the peers' buffers found serve the direct steps. True when the caller
    /// still has to wake the peers (see [`Transport::post`](crate::transport::Transport::post)).
    pub(super) fn enter(&mut self, wait: bool) -> Result<bool> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
        let Some(args) = self.args else { return Ok(false) };
        self.complete()?;
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
                    let Some(other) = t.posted(next, seq).then(|| t.posting(next, seq)).flatten() else {
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

impl Exec<'_> {
    /// Posts this call with this rank's `scratch` and waits until every peer
    /// has posted it too (comparing their arguments with this rank's), for
    /// a caller that issues the schedule's steps itself (a stream-ordered
    /// device call): the call is finished as far as the transport knows.
    /// Every rank's input, output and scratch, this rank's included (`None`
    /// where a peer's buffer is not reachable from here: another process's
    /// memory that is not in a shared pool).
    pub(crate) fn rendezvous(&mut self, scratch: Region) -> Result<Vec<[Option<Region>; 3]>> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
        self.bufs[2] = scratch;
        let unrung = self.enter(true)?;
        t.finish(me, seq);
        if unrung {
            t.wake_peers(me);
        }
        let all = (0..t.world())
            .map(|p| match p == me {
                true => self.bufs.map(Some),
                false => self.state.peers.get(p).copied().flatten().unwrap_or([None; 3]),
            })
            .collect();
        Ok(all)
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

    /// Calls repeated on the same buffers (the path that reposts and reads
    /// peers' boards directly) give the right sums with fresh data every
    /// call, in and out of place, while some ranks switch buffers (so take
    /// the first-call path) and ranks drift apart.
    #[test]
    fn repeated_calls_on_the_same_buffers() {
        let comms = Communicator::local_group(3).unwrap();
        std::thread::scope(|s| {
            for c in comms {
                s.spawn(move || {
                    let r = c.rank();
                    for count in [1usize, 2, 7, 64, 1023, 1024] {
                        let (mut send, mut recv) = (vec![vec![0f32; count]; 2], vec![vec![0f32; count]; 2]);
                        let mut buf = vec![0f32; count];
                        for i in 0..120usize {
                            // Rank 1 alternates between two pairs of buffers every 10 calls.
                            let pair = if r == 1 { (i / 10) % 2 } else { 0 };
                            let value = |rank: usize, k: usize| (rank * 1000 + k + 7 * i) as f32;
                            let expect = |k: usize| (0..3).map(|p| value(p, k)).sum::<f32>();
                            if (i + r) % 13 == 0 {
                                std::thread::sleep(Duration::from_micros(100));
                            }
                            if (i / 30) % 2 == 0 {
                                send[pair].iter_mut().enumerate().for_each(|(k, x)| *x = value(r, k));
                                c.all_reduce(&send[pair], &mut recv[pair], ReduceOp::Sum).unwrap();
                                for (k, v) in recv[pair].iter().enumerate() {
                                    assert_eq!(*v, expect(k), "count {count}, call {i}, element {k}");
                                }
                            } else {
                                buf.iter_mut().enumerate().for_each(|(k, x)| *x = value(r, k));
                                c.all_reduce_in_place(&mut buf, ReduceOp::Sum).unwrap();
                                for (k, v) in buf.iter().enumerate() {
                                    assert_eq!(*v, expect(k), "count {count}, in place call {i}, element {k}");
                                }
                            }
                        }
                    }
                });
            }
        });
    }

    /// Two ranks make `repeats` equal calls, then disagree on the reduction
    /// op: a mismatch naming the field on the rank that sees it; the other
    /// rank is aborted.
    fn op_mismatch_after(repeats: usize) {
        let comms = Communicator::local_group(2).unwrap();
        let outs: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut buf = [1f32; 4];
                        for _ in 0..repeats {
                            c.all_reduce_in_place(&mut buf, ReduceOp::Max)?;
                        }
                        let op = if c.rank() == 0 { ReduceOp::Max } else { ReduceOp::Min };
                        c.all_reduce_in_place(&mut buf, op)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(outs.iter().any(|r| matches!(r, Err(Error::Mismatch { field: "reduction op", .. }))), "{outs:?}");
        assert!(outs.iter().all(|r| matches!(r, Err(Error::Mismatch { .. }) | Err(Error::Aborted(_)))), "{outs:?}");
    }

    /// On the first call of the eager path.
    #[test]
    fn eager_mismatch_names_the_field() {
        op_mismatch_after(0);
    }

    /// After a run of repeated calls (the path that reposts), on the rank
    /// still repeating its call.
    #[test]
    fn a_changed_repeat_is_a_mismatch() {
        op_mismatch_after(20);
    }
}

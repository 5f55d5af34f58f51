//! Entering a call: a rank posts its call, and the first barrier of a
//! schedule that reaches into peers' memory is the wait for every peer's
//! posting of the same call — which also carries the staged payload of the
//! eager all-reduce, run here as one fused routine.

use std::cell::Cell;

use super::Exec;
use crate::dtype::ReduceOp;
use crate::error::{Error, Result};
use crate::mem::Region;
use crate::reduce;
use crate::schedule::{At, Buf, Loc, Rank, Schedule, Step};
use crate::transport::local::board::{self, HISTORY};
use crate::transport::Posting;

impl Exec<'_> {
    /// The eager all-reduce of [`crate::algo::direct`] — stage the input in
    /// scratch, barrier, reduce every rank's scratch in rank order straight
    /// into the output — is run as one routine ([`Exec::eager`]): the
    /// (bytes staged, finalize) of `sched` on rank `me` of `world` when it is
    /// that schedule, `None` otherwise.
    pub(crate) fn eager_shape(sched: &Schedule, me: Rank, world: usize) -> Option<(usize, bool)> {
        let [Step::Direct(stage), Step::Barrier, Step::Direct(sum)] = sched.steps.as_slice() else {
            return None;
        };
        let mine = |list: &[At], buf: Buf| list.len() == 1 && list[0] == At { rank: me, loc: Loc { buf, off: 0 } };
        let mut every_scratch = sum.srcs.len() == world && sum.srcs.len() > 1;
        for (p, a) in sum.srcs.iter().enumerate() {
            every_scratch &= *a == At { rank: p, loc: Loc::scratch(0) };
        }
        let eager = every_scratch
            && mine(&stage.srcs, Buf::Input)
            && mine(&stage.dsts, Buf::Scratch)
            && mine(&sum.dsts, Buf::Output)
            && !stage.finalize
            && sum.len == stage.len;
        eager.then_some((stage.len, sum.finalize))
    }

    /// Runs the eager all-reduce (see [`Exec::eager_shape`]) with the same
    /// reads, writes and order of operations as its three steps run one by
    /// one, without resolving each place through the schedule, which costs
    /// more than moving the data at these sizes.
    pub(crate) fn eager(&mut self, len: usize, finalize: bool) -> Result<()> {
        let input = self.locate_in(self.bufs[0], Loc::input(0), len)?;
        let output = self.locate_in(self.bufs[1], Loc::output(0), len)?;
        let scratch = self.locate_in(self.bufs[2], Loc::scratch(0), len)?;
        self.copy(scratch, input)?;
        let unrung = self.enter(true)?;
        // Peers' scratch as their postings, read on entering, gave it.
        let peers = std::mem::take(&mut self.state.peers);
        let staged = |p: Rank| match peers[p].and_then(|b| b[2]) {
            Some(b) => self.locate_in(b, Loc::scratch(0), len),
            None => self.resolve(&At { rank: p, loc: Loc::scratch(0) }, len),
        };
        let summed = self.sum_staged(input, output, staged, finalize, unrung);
        self.state.peers = peers;
        summed
    }

    /// [`Exec::eager`] for a call that repeats this rank's previous call on
    /// the same buffers, over a transport whose posting boards this rank
    /// reads directly: the posting is the previous one's words again, and
    /// peers' postings are compared as packed words and their staged terms
    /// found in their slots' inline scratch, with no decoding. Anything else
    /// (no boards, scratch outside the slot, a peer posting other
    /// arguments, which it reports) goes the way of [`Exec::eager`].
    /// `scratch`: the bytes of scratch space the schedule needs.
    pub(crate) fn eager_again(&mut self, len: usize, finalize: bool, scratch: usize) -> Result<()> {
        let (t, me, seq, n) = (self.t, self.rank, self.seq, self.t.world());
        let bytes = len * self.esize();
        let [input, output, _] = self.bufs;
        let inline = t.board(me).map(|b| (b, board::inline(b, seq)));
        // The slot's inline space is free without a look at the peers when
        // they were all seen entering a call since it was last used.
        let free = self.state.peers_entered + HISTORY as u64 > seq && seq > 1;
        let (mine, slot) = match inline {
            Some((mine, slot)) if free && scratch == bytes && bytes <= slot.len() => (mine, slot),
            _ => {
                self.bufs[2] = self.scratch(scratch)?;
                return self.eager(len, finalize);
            }
        };
        let scratch = slot.sub(0..bytes).expect("fits");
        self.bufs[2] = scratch;
        if [input.len(), output.len()] != [bytes; 2] {
            return self.eager(len, finalize);
        }
        self.copy(scratch, input)?;
        let args = board::repost(mine, seq, seq - 1);
        let (mut next, mut rung) = (0, false);
        self.wait("barrier", || {
            while next < n {
                if next != me && !t.board(next).is_some_and(|b| board::posted(b, seq)) {
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
        let expected = (board::INLINE, bytes as u64);
        let same = |p: Rank| {
            p == me
                || t.board(p).and_then(|b| board::get_raw(b, seq)).is_some_and(|(a, b)| a == args && b[2] == expected)
        };
        if !(0..n).all(same) {
            return self.eager(len, finalize);
        }
        self.state.peers_entered = seq;
        let staged = |p: Rank| {
            let slot = t.board(p).map(|b| board::inline(b, seq));
            Ok(slot.and_then(|r| r.sub(0..bytes)).expect("checked above"))
        };
        self.sum_staged(input, output, staged, finalize, !rung)
    }

    /// The eager all-reduce once every rank's input is staged: reduces the
    /// terms (`staged(p)` for peers) in rank order into the output, and
    /// finishes the call (waking peers if `unrung`).
    fn sum_staged(
        &self,
        input: Region,
        output: Region,
        staged: impl Fn(Rank) -> Result<Region>,
        finalize: bool,
        unrung: bool,
    ) -> Result<()> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
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
        let term = |p: Rank| if p == me { Ok(own) } else { staged(p) };
        self.reduce(output, term(0)?, term(1)?)?;
        for p in 2..t.world() {
            self.reduce(output, output, term(p)?)?;
        }
        if finalize && self.op == ReduceOp::Avg && self.collective.reduces() {
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

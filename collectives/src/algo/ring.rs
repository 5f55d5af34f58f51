//! Ring algorithms, in the style of NCCL's `runRing`.
//!
//! The ranks form a ring: rank `r` only ever sends to its successor `r + 1`
//! and receives from its predecessor `r - 1` (both modulo the world size).
//!
//! Every step that receives also sends in the same xfer (NCCL's fused
//! primitives), and every rank sends first, so each channel must hold two
//! messages: one waiting to be received and one being written. The checker
//! runs with that capacity; every transport offers at least that many slots.
//!
//! Words used in this file:
//! - **slice**: the largest message ([`Spec::slice`]). Every xfer moves at
//!   most one slice, so the ring streams slice by slice instead of waiting for
//!   whole buffers.
//! - **round**: one pass of the pipeline over a stretch of the buffers. The
//!   all-reduce processes up to `world × slice` elements per round; the other
//!   collectives process one slice per round.
//! - **chunk**: the all-reduce's share of a round that one rank finishes:
//!   the round's elements are split into `world` nearly equal chunks
//!   ([`block`]), so a chunk never exceeds a slice. Chunks may be unequal, or
//!   empty when a round holds fewer elements than there are ranks; an empty
//!   chunk is a zero-length message. For reduce-scatter and all-gather, chunk
//!   `c` of a round is the round's slice of block `c` (the block rank `c`
//!   ends up owning or started with).
//! - **step**: one xfer of a round. In round
//!   after round, a rank's steps all look alike; the comments below number
//!   them from 0.
//!
//! A world of one has no ring: outputs are local copies of the inputs
//! (finalized for reductions).

use crate::schedule::{block, slices, Collective, Loc, Peers, Rank, Schedule, Spec, Xfer};

pub fn schedule(spec: &Spec, rank: Rank) -> Schedule {
    let mut s = Schedule::new();
    if spec.world == 1 {
        alone(spec, &mut s);
        return s;
    }
    let ring = Ring { spec, rank, next: (rank + 1) % spec.world, prev: (rank + spec.world - 1) % spec.world };
    match spec.collective {
        Collective::AllReduce => ring.all_reduce(&mut s),
        Collective::ReduceScatter => ring.reduce_scatter(&mut s),
        Collective::AllGather => ring.all_gather(&mut s),
        Collective::Broadcast => ring.broadcast(&mut s),
        Collective::Reduce => ring.reduce(&mut s),
        Collective::AllToAll => ring.all_to_all(&mut s),
        Collective::Barrier => ring.barrier(&mut s),
    }
    s
}

/// A world of one: with a single rank every collective's input, at offset 0,
/// already is its output; copy it over unless it is already in place, and
/// finalize reductions (avg divides by one, but it must still be applied).
fn alone(spec: &Spec, s: &mut Schedule) {
    let (reduces, len) = (spec.collective.reduces(), spec.output_len());
    if len > 0 && (reduces || !spec.in_place) {
        s.copy(Loc::input(0), Loc::output(0), len, reduces);
    }
}

/// Copy `src` to `dst` locally and send it to `to`, in one step.
fn copy_send(s: &mut Schedule, src: Loc, dst: Loc, to: Rank, len: usize) {
    s.xfer(Xfer { src: Some(src), recv: Peers::NONE, dst: Some(dst), send: Peers::one(to), len, finalize: false });
}

struct Ring<'a> {
    spec: &'a Spec,
    rank: Rank,
    next: Rank,
    prev: Rank,
}

impl Ring<'_> {
    /// NCCL's recv-reduce-send: add our `src` to the partial sum from the
    /// predecessor and pass it on.
    fn recv_reduce_send(&self, s: &mut Schedule, src: Loc, len: usize) {
        self.relay(s, Some(src), None, len, false);
    }

    /// NCCL's recv-reduce-copy-send: add our `src` as the last contribution,
    /// finalize, store at `dst` and pass the result on.
    fn recv_reduce_copy_send(&self, s: &mut Schedule, src: Loc, dst: Loc, len: usize) {
        self.relay(s, Some(src), Some(dst), len, true);
    }

    /// NCCL's recv-copy-send: store what the predecessor sends at `dst` and
    /// pass it on.
    fn recv_copy_send(&self, s: &mut Schedule, dst: Loc, len: usize) {
        self.relay(s, None, Some(dst), len, false);
    }

    /// Receive from the predecessor, combine with `src` (if any), finalize
    /// if asked, store at `dst` (if any) and send the result to the
    /// successor, in one step.
    fn relay(&self, s: &mut Schedule, src: Option<Loc>, dst: Option<Loc>, len: usize, finalize: bool) {
        let (recv, send) = (Peers::one(self.prev), Peers::one(self.next));
        s.xfer(Xfer { src, recv, dst, send, len, finalize });
    }

    /// The rank `k` places before this one on the ring.
    fn back(&self, k: usize) -> Rank {
        let n = self.spec.world;
        (self.rank + n - k % n) % n
    }

    /// Reduce-scatter then all-gather, fused per round. In each round every
    /// chunk travels the ring twice: once gathering contributions, once
    /// spreading the finished sum. Rank `r` finishes chunk `r`.
    fn all_reduce(&self, s: &mut Schedule) {
        let (n, r, next, prev) = (self.spec.world, self.rank, self.next, self.prev);
        for (base, round) in slices(self.spec.count, n * self.spec.slice) {
            // Chunk c of this round as (offset in the buffers, length).
            let chunk = |c: Rank| {
                let (off, len) = block(round, n, c);
                (base + off, len)
            };
            // Step 0: start the partial sum of chunk r-1; it visits every
            // other rank before rank r-1 finishes it.
            let (o, l) = chunk(self.back(1));
            s.send(next, Loc::input(o), l);
            // Steps 1..=n-2: add our contribution to chunk r-k, pass it on.
            for k in 2..n {
                let (o, l) = chunk(self.back(k));
                self.recv_reduce_send(s, Loc::input(o), l);
            }
            // Step n-1: our own chunk gets its last contribution: finalize,
            // store it and start it around the ring.
            let (o, l) = chunk(r);
            self.recv_reduce_copy_send(s, Loc::input(o), Loc::output(o), l);
            // Steps n..=2n-3: store each finished chunk and forward it. In
            // place these overwrite inputs, all of which steps 0..=n-1 read.
            for k in 1..n - 1 {
                let (o, l) = chunk(self.back(k));
                self.recv_copy_send(s, Loc::output(o), l);
            }
            // Step 2n-2: the chunk finished by our successor has gone all the
            // way round; it stops here.
            let (o, l) = chunk(self.back(n - 1));
            s.recv(prev, Loc::output(o), l);
        }
    }

    /// The first half of the all-reduce, one slice of every block per round.
    /// Rank `r` finishes block `r` into its output.
    fn reduce_scatter(&self, s: &mut Schedule) {
        let (n, count, r) = (self.spec.world, self.spec.count, self.rank);
        for (off, len) in slices(count, self.spec.slice) {
            let input = |c: Rank| Loc::input(c * count + off);
            // Step 0: start the partial sum of block r-1.
            s.send(self.next, input(self.back(1)), len);
            // Steps 1..=n-2: add our contribution to block r-k, pass it on.
            for k in 2..n {
                self.recv_reduce_send(s, input(self.back(k)), len);
            }
            // Step n-1: the last contribution to block r is ours. In place the
            // output is our block of the input, so this overwrites only what
            // it has just read.
            s.recv_reduce_copy(self.prev, input(r), Loc::output(off), len, true);
        }
    }

    /// The second half of the all-reduce, one slice of every block per round.
    /// Rank `r`'s input travels the ring into everyone's output block `r`.
    fn all_gather(&self, s: &mut Schedule) {
        let (n, count, r) = (self.spec.world, self.spec.count, self.rank);
        for (off, len) in slices(count, self.spec.slice) {
            let output = |c: Rank| Loc::output(c * count + off);
            // Step 0: send our own slice; out of place it is also copied to
            // our output block (in place it is already there).
            if self.spec.in_place {
                s.send(self.next, Loc::input(off), len);
            } else {
                copy_send(s, Loc::input(off), output(r), self.next, len);
            }
            // Steps 1..=n-2: store rank r-k's slice and forward it.
            for k in 1..n - 1 {
                self.recv_copy_send(s, output(self.back(k)), len);
            }
            // Step n-1: rank r+1's slice has gone all the way round.
            s.recv(self.prev, output(self.back(n - 1)), len);
        }
    }

    /// A pipelined chain root → root+1 → … → root-1, one slice per round.
    fn broadcast(&self, s: &mut Schedule) {
        let n = self.spec.world;
        let pos = (self.rank + n - self.spec.root) % n;
        for (off, len) in slices(self.spec.count, self.spec.slice) {
            let (input, output) = (Loc::input(off), Loc::output(off));
            match pos {
                // The root sends; out of place it also copies to its output.
                0 if self.spec.in_place => {
                    s.send(self.next, input, len);
                }
                0 => copy_send(s, input, output, self.next, len),
                // The end of the chain only stores.
                p if p == n - 1 => {
                    s.recv(self.prev, output, len);
                }
                // Everyone else stores and forwards.
                _ => {
                    s.recv_copy_send(self.prev, output, self.next, len);
                }
            }
        }
    }

    /// A pipelined chain root+1 → root+2 → … → root, one slice per round,
    /// adding each rank's contribution on the way. Only the root writes.
    fn reduce(&self, s: &mut Schedule) {
        let n = self.spec.world;
        let pos = (self.rank + n - self.spec.root - 1) % n;
        for (off, len) in slices(self.spec.count, self.spec.slice) {
            let input = Loc::input(off);
            match pos {
                // The start of the chain sends its input as it is.
                0 => s.send(self.next, input, len),
                // The root adds the last contribution and stores the result.
                p if p == n - 1 => s.recv_reduce_copy(self.prev, input, Loc::output(off), len, true),
                // Everyone else adds theirs and passes the partial sum on.
                _ => s.recv_reduce_send(self.prev, input, self.next, len),
            };
        }
    }

    /// Pairwise exchange (not a ring): in step k = 1..n-1 rank r sends its
    /// block for rank r+k to r+k and receives rank r-k's block for it, one
    /// slice at a time (send first, so one free slot per channel suffices).
    fn all_to_all(&self, s: &mut Schedule) {
        let (n, count, r) = (self.spec.world, self.spec.count, self.rank);
        if count == 0 {
            return;
        }
        // Out of place, copy our own block across. In place it already sits
        // in the output, but received blocks would overwrite input blocks
        // not yet sent, so the input is first staged in scratch and sent
        // from there.
        let from_scratch = self.spec.in_place;
        if from_scratch {
            s.need_scratch(n * count);
            s.copy(Loc::input(0), Loc::scratch(0), n * count, false);
        } else {
            s.copy(Loc::input(r * count), Loc::output(r * count), count, false);
        }
        let source = |off: usize| {
            if from_scratch {
                Loc::scratch(off)
            } else {
                Loc::input(off)
            }
        };
        for k in 1..n {
            let (to, from) = ((r + k) % n, self.back(k));
            for (off, len) in slices(count, self.spec.slice) {
                s.send(to, source(to * count + off), len);
                s.recv(from, Loc::output(from * count + off), len);
            }
        }
    }

    /// A zero-length token goes round the ring from rank 0 and back (after
    /// which rank 0 has heard from everyone), then round once more to tell
    /// ranks 1..n-1, stopping at rank n-1: 2n-1 hops.
    fn barrier(&self, s: &mut Schedule) {
        let n = self.spec.world;
        let (token, sink) = (Loc::input(0), Loc::output(0));
        match self.rank {
            0 => {
                s.send(self.next, token, 0).recv(self.prev, sink, 0).send(self.next, token, 0);
            }
            r if r == n - 1 => {
                s.recv_copy_send(self.prev, sink, self.next, 0).recv(self.prev, sink, 0);
            }
            _ => {
                s.recv_copy_send(self.prev, sink, self.next, 0).recv_copy_send(self.prev, sink, self.next, 0);
            }
        }
    }
}

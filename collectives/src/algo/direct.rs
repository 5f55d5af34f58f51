//! Direct algorithms, for ranks that share an address space (threads of one
//! process, or processes mapping one shared pool).
//!
//! Nothing is sent: each rank reads other ranks' buffers and writes into them
//! with one-sided [`Direct`] steps, and barriers order those accesses. Every
//! collective has the same shape: a barrier (every rank has entered the call,
//! so its buffers may be touched), one phase of direct steps, and a barrier
//! (nobody leaves while others still touch its buffers); in-place all-to-all
//! first stages its input in scratch. Within a phase no two ranks touch the
//! same element unless both only read it.
//!
//! Words used in this file:
//! - **shard**: a rank's share of the work when every rank works on the same
//!   array: shard `r` is block `r` of `world` nearly equal blocks of the
//!   count ([`block`]). Shards may be empty when the count is below the
//!   world size; empty shards need no step.
//! - **block**: a rank's `count` elements of an input or output that holds
//!   `world × count` (reduce-scatter's input, all-gather's output, both
//!   buffers of all-to-all).
//! - **step**: one direct step: read its sources (several are combined in
//!   order), finalize if asked, write every destination. Steps are not
//!   messages, so they are not cut into slices; the executor streams each
//!   one internally.
//! - **phase**: the steps between two barriers.
//!
//! All-reduce is the algorithm meant to reach the memory floor: each element
//! of every input is read once and each element of every output written once,
//! 2·world·count elements in all, with no staging copies.
//!
//! Small all-reduces take an eager path with one barrier, as one
//! [`Inline`] step ([`EAGER_ELEMENTS`]).
//!
//! In place, input and output are views of one array, so a rank's writes can
//! land on what others read; each collective below says why it does not race.

use crate::schedule::{block, At, Collective, Direct, Inline, Loc, Rank, Schedule, Spec};

pub fn schedule(spec: &Spec, rank: Rank) -> Schedule {
    let (n, count, r, root) = (spec.world, spec.count, rank, spec.root);
    let one = |p: Rank, loc: Loc| vec![At { rank: p, loc }];
    let everyone = |loc: Loc| (0..n).map(|p| At { rank: p, loc }).collect::<Vec<_>>();
    let mut s = Schedule::new();
    if spec.collective == Collective::AllReduce && count > 0 && count * n <= EAGER_ELEMENTS.min(spec.slice) {
        eager_all_reduce(&mut s, spec);
        return s;
    }
    // In place, all-to-all's writes would land on blocks peers are still
    // reading, so each rank first stages its input in its own scratch (only
    // its own memory: no barrier needed yet) and peers read the staged copy.
    let staged = spec.collective == Collective::AllToAll && spec.in_place;
    if staged {
        s.need_scratch(n * count);
        let (srcs, dsts) = (one(r, Loc::input(0)), one(r, Loc::scratch(0)));
        step(&mut s, srcs, dsts, n * count, false);
    }
    s.barrier();
    match spec.collective {
        // Sum shard r of every input; write it into shard r of every output.
        // In place, shard r of any rank's array is only touched by rank r.
        Collective::AllReduce => {
            let (off, len) = block(count, n, r);
            let (srcs, dsts) = (everyone(Loc::input(off)), everyone(Loc::output(off)));
            step(&mut s, srcs, dsts, len, true);
        }
        // Sum block r of every input into our output. In place our output is
        // our input's block r, which only we touch.
        Collective::ReduceScatter => {
            let srcs = everyone(Loc::input(r * count));
            step(&mut s, srcs, one(r, Loc::output(0)), count, true);
        }
        // Write our input into block r of every output. Others only touch
        // their own input, which in place is their block, never block r;
        // our own block already holds our input in place.
        Collective::AllGather => {
            let mut dsts = everyone(Loc::output(r * count));
            dsts.retain(|d| d.rank != r || !spec.in_place);
            step(&mut s, one(r, Loc::input(0)), dsts, count, false);
        }
        // Everyone reads the root's input into their own output; in place
        // the root's output is its input, which it must not write while
        // others read it.
        Collective::Broadcast => {
            if r != root || !spec.in_place {
                let (srcs, dsts) = (one(root, Loc::input(0)), one(r, Loc::output(0)));
                step(&mut s, srcs, dsts, count, false);
            }
        }
        // Sum shard r of every input into shard r of the root's output. In
        // place the root's shard r is only touched by rank r.
        Collective::Reduce => {
            let (off, len) = block(count, n, r);
            let (srcs, dsts) = (everyone(Loc::input(off)), one(root, Loc::output(off)));
            step(&mut s, srcs, dsts, len, true);
        }
        // Read block r of every rank's input (or its staged copy) into our
        // output block p. In place our own block already sits there.
        Collective::AllToAll => {
            let source = if staged { Loc::scratch } else { Loc::input };
            for p in (0..n).filter(|&p| p != r || !staged) {
                let (srcs, dsts) = (one(p, source(r * count)), one(r, Loc::output(p * count)));
                step(&mut s, srcs, dsts, count, false);
            }
        }
        Collective::Barrier => {}
    }
    s.barrier();
    s
}

/// All-reduces with at most this many elements over all ranks take the
/// eager path.
pub const EAGER_ELEMENTS: usize = 4096;

/// Small all-reduce with one barrier instead of two, as one [`Inline`] step:
/// each rank stages its input in its own scratch (its own memory: no barrier
/// needed yet), and after the barrier reduces every rank's staged copy, in
/// rank order, into its own output. Nobody touches another rank's input or
/// output, so nobody waits at the end; the staged copies stay intact until
/// the collective after next, by which time every rank has finished reading
/// them. Each rank reads world × count elements instead of count, which is
/// cheaper than a second barrier while the whole thing fits in cache; where
/// the transport carries scratch inside the posting, the barrier is the wait
/// for every rank's posting and brings the staged terms with it.
fn eager_all_reduce(s: &mut Schedule, spec: &Spec) {
    let (n, count) = (spec.world, spec.count);
    s.need_scratch(count);
    let terms = (0..n).map(|p| At { rank: p, loc: Loc::scratch(0) }).collect();
    s.inline(Inline {
        src: Loc::input(0),
        stage: Loc::scratch(0),
        terms,
        dst: Loc::output(0),
        len: count,
        finalize: true,
    });
}

/// Adds a direct step unless it moves nothing.
fn step(s: &mut Schedule, srcs: Vec<At>, dsts: Vec<At>, len: usize, finalize: bool) {
    if len > 0 && !dsts.is_empty() {
        s.direct(Direct { srcs, dsts, len, finalize });
    }
}

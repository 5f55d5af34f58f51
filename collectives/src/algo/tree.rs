//! Double binary tree, after NCCL's tree algorithm.
//!
//! Words used in this file:
//! - **virtual rank**: a rank renumbered so that the collective's root is 0,
//!   `v = rank - root mod n` (root 0 for the collectives without one).
//! - **shape**: NCCL's in-order binary tree over `0..n`. A node `x ≠ 0` whose
//!   lowest set bit is `b` has parent `(x - b) | 2b`, or `x - b` when that is
//!   out of range; 0 has one child, the highest power of two below `n`. Odd
//!   nodes are leaves, even nodes interior.
//! - **tree A** is the shape over virtual ranks. **Tree B** is the shape with
//!   virtual ranks `1..n` renumbered: mirrored (`x ↦ n - x`) when `n - 1` is
//!   even, shifted by one (`x ↦ x - 1`, and 1 to the last place) when it is
//!   odd. Either way B's interior ranks are odd where A's are even, so no
//!   rank but the root is interior in both and the two trees together load
//!   every rank's links about evenly. Both are rooted at virtual rank 0, which
//!   has one child in each. (NCCL roots its second tree at another rank, which
//!   suits only all-reduce; one root serves reduce and broadcast as well.)
//! - **half**: the data is split in two ([`block`]`(len, 2, t)`); tree `t`
//!   carries half `t`. For reduce-scatter and all-gather each of the `n`
//!   blocks is halved.
//! - **chunk**: one slice of a half, the unit that streams through a tree.
//! - **up** / **down**: a chunk's step at a rank on its way to the root and
//!   back. Up, leaves send their input to their parent; interior ranks receive
//!   from their children, reduce with their input and send on; the root
//!   reduces, finalizes and turns the chunk around. Down, each rank receives
//!   from its parent, stores and forwards to its children.
//! - **clock**: each step has a tick, and every rank runs its steps in tick
//!   order. Chunk `k` of tree `t` is at the root at tick `16k + 4t`; an
//!   interior rank at depth `d` handles it `8d` ticks earlier going up and
//!   `8d` later going down, a leaf 1 tick before its parent going up and 1
//!   tick after it going down. On a link that one tree uses, a message lasts
//!   at most 8 of the tree's 16 ticks per chunk. The trees share a link only
//!   between a leaf of A and a leaf of B that is its parent in A and its child
//!   in B (or the root and its only child when `n = 2`); there the non-leaf
//!   ends tick at 0 (A) and 4 (B) modulo 8 and leaf messages last one tick, so
//!   the trees' messages take turns. Every message thus arrives after it is
//!   sent and before the next one on its link is sent: all ranks' steps in
//!   tick order are a run with channels of one message. Since a rank can only
//!   lose a ready step by taking one itself, any fair executor finishes too,
//!   and both trees stream, up and down at once.
//!
//! Collectives:
//! - all-reduce: up then down, per tree, pipelined.
//! - reduce: up only, to the root. Partial sums travel in messages, so other
//!   ranks' outputs stay untouched.
//! - broadcast: down only, from the root.
//! - reduce-scatter: up with the whole input (root: rank 0), then each
//!   finished chunk goes down only along the path to the rank that owns it.
//! - all-gather: each chunk goes up only along the path from its owner to
//!   the root (stored on the way), then down to the rest of the tree.
//! - all-to-all: a tree has no natural all-to-all (everything would funnel
//!   through the root), so this is the pairwise exchange of
//!   [`halving_doubling`](super::halving_doubling).
//! - barrier: zero-length messages up tree A to the root and back down.
//!
//! A world of one copies its input.

use super::halving_doubling::{pairwise_all_to_all, single_rank};
use crate::schedule::{block, slices, Collective, Loc, Peers, Rank, Schedule, Spec, Xfer};

pub fn schedule(spec: &Spec, rank: Rank) -> Schedule {
    match spec.collective {
        _ if spec.world == 1 => single_rank(spec),
        Collective::AllToAll => pairwise_all_to_all(spec, rank),
        Collective::Barrier => barrier(spec.world, rank),
        _ => streamed(spec, rank),
    }
}

/// Parent of `x` in the shape over `0..n`.
fn shape_parent(x: usize, n: usize) -> Option<usize> {
    if x == 0 {
        return None;
    }
    let b = x & x.wrapping_neg();
    let up = (x ^ b) | (b << 1);
    Some(if up < n { up } else { x ^ b })
}

/// Children of `x` in the shape over `0..n`.
fn shape_children(x: usize, n: usize) -> Vec<usize> {
    if x == 0 {
        return if n > 1 { vec![1 << (n - 1).ilog2()] } else { vec![] };
    }
    let mut half = (x & x.wrapping_neg()) / 2;
    if half == 0 {
        return vec![];
    }
    let left = x - half;
    while half > 0 && x + half >= n {
        half /= 2;
    }
    if half > 0 {
        vec![left, x + half]
    } else {
        vec![left]
    }
}

/// Where a chunk owned by some rank passes a rank on its way to the root.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Not on the way: the owner is outside this rank's subtree.
    Off,
    /// This rank owns it.
    Here,
    /// The owner is below this child.
    Below(usize),
}

/// Tree A (`second == false`) or B over virtual ranks `0..n`.
#[derive(Clone, Copy)]
struct Tree {
    n: usize,
    second: bool,
}

impl Tree {
    /// The place of virtual rank `x` in the shape.
    fn pos(self, x: usize) -> usize {
        let m = self.n - 1;
        match x {
            _ if !self.second || x == 0 => x,
            _ if m % 2 == 0 => self.n - x,
            1 => m,
            _ => x - 1,
        }
    }

    /// The virtual rank at place `p` of the shape (inverse of `pos`).
    fn at(self, p: usize) -> usize {
        let m = self.n - 1;
        match p {
            _ if !self.second || p == 0 => p,
            _ if m % 2 == 0 => self.n - p,
            _ if p == m => 1,
            _ => p + 1,
        }
    }

    fn parent(self, x: usize) -> Option<usize> {
        shape_parent(self.pos(x), self.n).map(|p| self.at(p))
    }

    fn children(self, x: usize) -> Vec<usize> {
        shape_children(self.pos(x), self.n).into_iter().map(|p| self.at(p)).collect()
    }

    fn depth(self, mut x: usize) -> i64 {
        let mut d = 0;
        while let Some(p) = self.parent(x) {
            (x, d) = (p, d + 1);
        }
        d
    }

    /// How chunks owned by `owner` pass `x`.
    fn path(self, x: usize, owner: usize) -> Path {
        let (mut at, mut below) = (owner, None);
        loop {
            if at == x {
                return below.map_or(Path::Here, Path::Below);
            }
            match self.parent(at) {
                Some(p) => (at, below) = (p, Some(at)),
                None => return Path::Off,
            }
        }
    }
}

fn xfer(src: Option<Loc>, recv: &[Rank], dst: Option<Loc>, send: &[Rank], len: usize, finalize: bool) -> Xfer {
    Xfer { src, recv: Peers::from_slice(recv), dst, send: Peers::from_slice(send), len, finalize }
}

/// A slice of one tree's half: `off` in the input (the output for
/// all-gather), and the rank whose block it is, for reduce-scatter and
/// all-gather.
struct Chunk {
    off: usize,
    len: usize,
    owner: Option<Rank>,
}

fn chunks(spec: &Spec, t: usize) -> Vec<Chunk> {
    let (h_off, h_len) = block(spec.count, 2, t);
    let owners: Vec<Option<Rank>> = match spec.collective {
        Collective::ReduceScatter | Collective::AllGather => (0..spec.world).map(Some).collect(),
        _ => vec![None],
    };
    let mut out = Vec::new();
    for owner in owners {
        let base = owner.map_or(0, |b| b * spec.count) + h_off;
        out.extend(slices(h_len, spec.slice).map(|(o, len)| Chunk { off: base + o, len, owner }));
    }
    out
}

/// Every collective but all-to-all and barrier: chunks up and/or down both
/// trees, in clock order.
fn streamed(spec: &Spec, rank: Rank) -> Schedule {
    let mut s = Schedule::new();
    for (_, x) in clocked(spec, rank) {
        s.xfer(x);
    }
    s
}

/// [`streamed`]'s steps with their ticks, in order.
fn clocked(spec: &Spec, rank: Rank) -> Vec<(i64, Xfer)> {
    let n = spec.world;
    let root = if spec.collective.rooted() { spec.root } else { 0 };
    let v = (rank + n - root) % n;
    let mut steps: Vec<(i64, Xfer)> = Vec::new();
    for t in 0..2 {
        let tree = Tree { n, second: t == 1 };
        let node = Node { spec, rank, root, tree, v, up: tree.parent(v).map(|p| (p + root) % n).into_iter().collect() };
        // The clock (see the header): this rank's ticks for chunk 0.
        let (d, base) = (tree.depth(v), 4 * t as i64);
        let leaf = tree.children(v).is_empty();
        let (t_up, t_down) = if leaf { (base - 8 * d + 7, base + 8 * d - 7) } else { (base - 8 * d, base + 8 * d) };
        for (k, chunk) in chunks(spec, t).iter().enumerate() {
            let (up, down) = node.steps(chunk);
            let at = 16 * k as i64;
            steps.extend(up.map(|x| (at + t_up, x)));
            steps.extend(down.filter(|_| v != 0).map(|x| (at + t_down, x)));
        }
    }
    steps.sort_by_key(|&(time, _)| time);
    steps
}

/// One rank in one tree.
struct Node<'a> {
    spec: &'a Spec,
    rank: Rank,
    root: Rank,
    tree: Tree,
    /// This rank's virtual rank.
    v: usize,
    /// The parent's rank, none at the root.
    up: Vec<Rank>,
}

impl Node<'_> {
    fn real(&self, x: usize) -> Rank {
        (x + self.root) % self.spec.world
    }

    /// Children's ranks, except the one a chunk comes from on its way up.
    fn kids_but(&self, path: Path) -> Vec<Rank> {
        self.tree.children(self.v).into_iter().filter(|&x| path != Path::Below(x)).map(|x| self.real(x)).collect()
    }

    /// The child a chunk comes from on its way up (or goes to on its way down).
    fn toward(&self, path: Path) -> Vec<Rank> {
        match path {
            Path::Below(x) => vec![self.real(x)],
            _ => vec![],
        }
    }

    /// This rank's up and down steps for one chunk (the root's down step is
    /// part of its up step).
    fn steps(&self, ch: &Chunk) -> (Option<Xfer>, Option<Xfer>) {
        let (spec, is_root, up) = (self.spec, self.v == 0, &self.up[..]);
        let kids = self.kids_but(Path::Off);
        let (off, len) = (ch.off, ch.len);
        let (input, output) = (Loc::input, Loc::output);
        // For reduce-scatter and all-gather: where the owner's chunks pass us.
        let path = ch.owner.map_or(Path::Off, |b| self.tree.path(self.v, (b + spec.world - self.root) % spec.world));
        let mine = |off| output(off - self.rank * spec.count);
        match spec.collective {
            Collective::AllReduce | Collective::Reduce | Collective::ReduceScatter => {
                // Up: reduce the children's partial sums with our input and
                // pass the result on; the root finalizes it.
                let up_step = if !is_root {
                    xfer(Some(input(off)), &kids, None, up, len, false)
                } else {
                    let (dst, send) = match (spec.collective, path) {
                        (Collective::AllReduce, _) => (Some(output(off)), kids.clone()),
                        (Collective::Reduce, _) => (Some(output(off)), vec![]),
                        (_, Path::Here) => (Some(mine(off)), vec![]),
                        _ => (None, self.toward(path)),
                    };
                    xfer(Some(input(off)), &kids, dst, &send, len, true)
                };
                // Down: all-reduce stores and forwards to every child;
                // reduce-scatter goes only the way to the chunk's owner.
                let down_step = match (spec.collective, path) {
                    (Collective::AllReduce, _) => Some(xfer(None, up, Some(output(off)), &kids, len, false)),
                    (Collective::ReduceScatter, Path::Here) => Some(xfer(None, up, Some(mine(off)), &[], len, false)),
                    (Collective::ReduceScatter, Path::Below(_)) => {
                        Some(xfer(None, up, None, &self.toward(path), len, false))
                    }
                    _ => None,
                };
                (Some(up_step), down_step)
            }
            Collective::Broadcast => {
                let dst = (!spec.in_place).then(|| output(off));
                let up_step = is_root.then(|| xfer(Some(input(off)), &[], dst, &kids, len, false));
                (up_step, Some(xfer(None, up, Some(output(off)), &kids, len, false)))
            }
            Collective::AllGather => {
                // Up: only the way from the owner, stored as it goes; the
                // root sends it down the other side.
                let others = self.kids_but(path);
                let to = if is_root { &others[..] } else { up };
                let up_step = match path {
                    Path::Off => None,
                    Path::Here => {
                        let dst = (!spec.in_place).then(|| output(off));
                        Some(xfer(Some(input(off - self.rank * spec.count)), &[], dst, to, len, false))
                    }
                    Path::Below(_) => Some(xfer(None, &self.toward(path), Some(output(off)), to, len, false)),
                };
                // Down: ranks on the way hold it already and pass it to their
                // other children; the rest receive and forward.
                let down_step = match path {
                    Path::Off => Some(xfer(None, up, Some(output(off)), &kids, len, false)),
                    _ if others.is_empty() => None,
                    _ => Some(xfer(Some(output(off)), &[], None, &others, len, false)),
                };
                (up_step, down_step)
            }
            Collective::AllToAll | Collective::Barrier => unreachable!("not streamed"),
        }
    }
}

/// Zero-length messages up tree A (hearing from each child, then telling the
/// parent) and back down (the root's message carries everyone's word).
fn barrier(n: usize, rank: Rank) -> Schedule {
    let tree = Tree { n, second: false };
    let kids = tree.children(rank);
    let mut s = Schedule::new();
    for &k in &kids {
        s.recv(k, Loc::output(0), 0);
    }
    match tree.parent(rank) {
        Some(p) => {
            s.send(p, Loc::input(0), 0);
            s.xfer(xfer(None, &[p], Some(Loc::output(0)), &kids, 0, false));
        }
        None => {
            s.xfer(xfer(Some(Loc::input(0)), &[], None, &kids, 0, false));
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::algo::Algorithm;
    use crate::schedule::Step;
    use crate::Checker;
    use std::collections::{HashMap, VecDeque};

    /// Checks `algo` over every collective for the given worlds, counts and
    /// slices, both in and out of place, at every root (or `roots` of them).
    pub(crate) fn grid(
        algo: Algorithm,
        worlds: &[usize],
        counts: &[usize],
        slices: &[usize],
        roots: fn(usize) -> Vec<Rank>,
    ) {
        for collective in Collective::ALL {
            for &world in worlds {
                for &count in counts {
                    for &slice in slices {
                        for in_place in [false, true] {
                            let rs = if collective.rooted() { roots(world) } else { vec![0] };
                            for root in rs {
                                let spec = Spec { collective, world, count, root, slice, in_place };
                                if let Err(e) = Checker::check_algorithm(spec, algo) {
                                    panic!("{spec:?}: {e}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub(crate) const COUNTS: [usize; 11] = [0, 1, 2, 3, 5, 7, 13, 31, 64, 97, 100];
    pub(crate) const SLICES: [usize; 4] = [1, 3, 16, 1000];

    pub(crate) fn all_roots(n: usize) -> Vec<Rank> {
        (0..n).collect()
    }

    pub(crate) fn some_roots(n: usize) -> Vec<Rank> {
        vec![0, 1, n / 2, n - 2, n - 1]
    }

    /// The checker's message flow alone (one-message channels, lengths that
    /// match, no deadlock, nothing left over), for worlds past its 64 ranks.
    pub(crate) fn flows(algo: Algorithm, spec: Spec) -> Result<(), String> {
        let n = spec.world;
        let scheds: Vec<Schedule> = (0..n).map(|r| algo.schedule(&spec, r)).collect();
        let mut pc = vec![0; n];
        let mut chans: HashMap<(Rank, Rank), VecDeque<usize>> = HashMap::new();
        loop {
            let mut moved = false;
            for r in 0..n {
                while let Some(Step::Xfer(x)) = scheds[r].steps.get(pc[r]) {
                    let has = |p| chans.get(&(p, r)).is_some_and(|q| !q.is_empty());
                    let room = |p| chans.get(&(r, p)).is_none_or(|q| q.is_empty());
                    if !(x.recv.iter().all(has) && x.send.iter().all(room)) {
                        break;
                    }
                    for p in x.recv.iter() {
                        let len = chans.get_mut(&(p, r)).and_then(|q| q.pop_front());
                        if len != Some(x.len) {
                            return Err(format!("rank {r} step {}: {len:?} elements from {p}, wants {}", pc[r], x.len));
                        }
                    }
                    for p in x.send.iter() {
                        chans.entry((r, p)).or_default().push_back(x.len);
                    }
                    (pc[r], moved) = (pc[r] + 1, true);
                }
            }
            if (0..n).all(|r| pc[r] == scheds[r].steps.len()) {
                return match chans.iter().find(|(_, q)| !q.is_empty()) {
                    Some((c, _)) => Err(format!("unreceived message on {c:?}")),
                    None => Ok(()),
                };
            }
            if !moved {
                return Err(format!("deadlock: {pc:?}"));
            }
        }
    }

    #[test]
    fn tree_grid() {
        grid(Algorithm::Tree, &(1..=17).collect::<Vec<_>>(), &COUNTS, &SLICES, all_roots);
    }

    #[test]
    fn tree_larger_worlds() {
        grid(Algorithm::Tree, &[23, 32, 33, 47, 64], &[0, 1, 5, 64, 97], &[1, 7, 1000], some_roots);
    }

    #[test]
    fn tree_flows_past_64_ranks() {
        for collective in Collective::ALL {
            for world in [65, 100, 127, 128, 129, 200] {
                for (count, slice) in [(1, 1), (40, 3), (9, 1000)] {
                    let spec = Spec { collective, world, count, root: world / 3, slice, in_place: false };
                    if let Err(e) = flows(Algorithm::Tree, spec) {
                        panic!("{spec:?}: {e}");
                    }
                }
            }
        }
    }

    /// The clock's promise, for worlds the checker cannot reach: on every
    /// link each message arrives after it is sent and before the next is sent.
    #[test]
    fn clock_spaces_messages() {
        let all_reduce = (2..=1000).map(|n| (Collective::AllReduce, n));
        let by_blocks = (2..=100).flat_map(|n| [(Collective::ReduceScatter, n), (Collective::AllGather, n)]);
        for (collective, world) in all_reduce.chain(by_blocks) {
            let count = if collective == Collective::AllReduce { 6 } else { 2 };
            let spec = Spec { collective, world, count, root: 0, slice: 1, in_place: false };
            let timed: Vec<Vec<(i64, Xfer)>> = (0..world).map(|r| clocked(&spec, r)).collect();
            let mut sent: HashMap<(Rank, Rank), VecDeque<i64>> = HashMap::new();
            for (r, steps) in timed.iter().enumerate() {
                for (time, x) in steps {
                    for p in x.send.iter() {
                        sent.entry((r, p)).or_default().push_back(*time);
                    }
                }
            }
            for (r, steps) in timed.iter().enumerate() {
                for (time, x) in steps {
                    for p in x.recv.iter() {
                        let q = sent.get_mut(&(p, r)).expect("a message");
                        let at = q.pop_front().expect("a message");
                        assert!(at < *time, "{spec:?}: {p} -> {r} sent at {at}, received at {time}");
                        if let Some(next) = q.front() {
                            assert!(*time < *next, "{spec:?}: {p} -> {r} received at {time}, next sent {next}");
                        }
                    }
                }
            }
        }
    }

    /// Both trees span the ranks, and no rank but the root is interior in both.
    #[test]
    fn trees_are_disjointly_interior() {
        for n in 1..300 {
            let (a, b) = (Tree { n, second: false }, Tree { n, second: true });
            for x in 0..n {
                for t in [a, b] {
                    assert!(t.pos(x) < n && t.at(t.pos(x)) == x, "n {n}: {x} misplaced");
                    for c in t.children(x) {
                        assert_eq!(t.parent(c), Some(x), "n {n}: {c}'s parent");
                    }
                    assert!(t.depth(x) <= 2 * i64::from(n.ilog2()) + 2, "n {n}: {x} too deep");
                }
                if x != 0 {
                    assert!(a.children(x).is_empty() || b.children(x).is_empty(), "n {n}: {x} interior twice");
                }
            }
        }
    }
}

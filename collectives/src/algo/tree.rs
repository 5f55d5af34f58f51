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
//! - **clock**: each step has a time, and every rank runs its steps in time
//!   order. Chunk `k` of tree `t` is at the root at `16k + 4t`; an interior
//!   rank at depth `d` handles it `8d` ticks earlier going up and `8d` later
//!   going down, a leaf 1 tick before its parent going up and 1 tick after
//!   going down. So every message is received after it is sent and before
//!   the next message on its link is sent, even where the trees share a link
//!   (always between a leaf of each: their parents' times are 4 apart modulo
//!   8 and leaf messages last one tick). Running the steps in that order
//!   therefore never deadlocks with channels of one message, and both trees
//!   stream, each at one chunk per 16 ticks, up and down at once.
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
    let (n, c) = (spec.world, spec.collective);
    let root = if c.rooted() { spec.root } else { 0 };
    let v = (rank + n - root) % n;
    let real = |x: usize| (x + root) % n;
    let (input, output) = (Loc::input, Loc::output);
    let mut steps: Vec<(i64, Xfer)> = Vec::new();
    for t in 0..2 {
        let tree = Tree { n, second: t == 1 };
        let up: Vec<Rank> = tree.parent(v).map(real).into_iter().collect();
        let kids_v = tree.children(v);
        let kids: Vec<Rank> = kids_v.iter().map(|&k| real(k)).collect();
        let is_root = v == 0;
        // The clock (see the header): ticks of this rank's up and down steps.
        let (d, base) = (tree.depth(v), 4 * t as i64);
        let (t_up, t_down) = if kids.is_empty() { (base - 8 * d + 7, base + 8 * d - 7) } else { (base - 8 * d, base + 8 * d) };
        for (k, ch) in chunks(spec, t).into_iter().enumerate() {
            let (off, len) = (ch.off, ch.len);
            // The owner's virtual rank and where its chunks pass this rank.
            let path = ch.owner.map_or(Path::Off, |b| tree.path(v, (b + n - root) % n));
            let toward = |p: Path| match p {
                Path::Below(x) => vec![real(x)],
                _ => vec![],
            };
            let others = |p: Path| -> Vec<Rank> {
                kids_v.iter().filter(|&&x| p != Path::Below(x)).map(|&x| real(x)).collect()
            };
            let (step_up, step_down) = match c {
                Collective::AllReduce | Collective::Reduce | Collective::ReduceScatter => {
                    // Up: reduce the children's partial sums into our input
                    // and pass them on; the root finalizes.
                    let up_step = if !is_root {
                        xfer(Some(input(off)), &kids, None, &up, len, false)
                    } else {
                        let (dst, send) = match c {
                            Collective::AllReduce => (Some(output(off)), kids.clone()),
                            Collective::Reduce => (Some(output(off)), vec![]),
                            _ => match path {
                                Path::Here => (Some(output(off - rank * spec.count)), vec![]),
                                _ => (None, toward(path)),
                            },
                        };
                        xfer(Some(input(off)), &kids, dst, &send, len, true)
                    };
                    // Down: all-reduce stores and forwards everywhere;
                    // reduce-scatter only along the way to the owner.
                    let down_step = match (c, path) {
                        (Collective::AllReduce, _) => Some(xfer(None, &up, Some(output(off)), &kids, len, false)),
                        (Collective::ReduceScatter, Path::Here) => {
                            Some(xfer(None, &up, Some(output(off - rank * spec.count)), &[], len, false))
                        }
                        (Collective::ReduceScatter, Path::Below(_)) => {
                            Some(xfer(None, &up, None, &toward(path), len, false))
                        }
                        _ => None,
                    };
                    (Some(up_step), down_step)
                }
                Collective::Broadcast => {
                    let dst = (!spec.in_place).then(|| output(off));
                    let up_step = is_root.then(|| xfer(Some(input(off)), &[], dst, &kids, len, false));
                    (up_step, Some(xfer(None, &up, Some(output(off)), &kids, len, false)))
                }
                Collective::AllGather => {
                    // Up: only along the way from the owner, storing as it
                    // goes; the root sends it down the other side.
                    let to = if is_root { others(path) } else { up.clone() };
                    let up_step = match path {
                        Path::Off => None,
                        Path::Here => {
                            let dst = (!spec.in_place).then(|| output(off));
                            Some(xfer(Some(input(off - rank * spec.count)), &[], dst, &to, len, false))
                        }
                        Path::Below(_) => Some(xfer(None, &toward(path), Some(output(off)), &to, len, false)),
                    };
                    // Down: ranks on the way already hold it and pass it to
                    // their other children; the rest receive and forward.
                    let down_step = match path {
                        Path::Off => Some(xfer(None, &up, Some(output(off)), &kids, len, false)),
                        _ if others(path).is_empty() => None,
                        _ => Some(xfer(Some(output(off)), &[], None, &others(path), len, false)),
                    };
                    (up_step, down_step)
                }
                Collective::AllToAll | Collective::Barrier => unreachable!("not streamed"),
            };
            let at = 16 * k as i64;
            steps.extend(step_up.map(|x| (at + t_up, x)));
            steps.extend(step_down.filter(|_| !is_root).map(|x| (at + t_down, x)));
        }
    }
    steps.sort_by_key(|&(time, _)| time);
    let mut s = Schedule::new();
    for (_, x) in steps {
        s.xfer(x);
    }
    s
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
mod tests {
    use super::*;
    use crate::schedule::Algorithm;
    use crate::Checker;

    #[test]
    fn tree_grid() {
        for collective in Collective::ALL {
            for world in 1..=17 {
                for count in [0, 1, 2, 3, 5, 7, 13, 31, 64, 97, 100] {
                    for slice in [1, 3, 16, 1000] {
                        for in_place in [false, true] {
                            let roots: Vec<usize> = if collective.rooted() { (0..world).collect() } else { vec![0] };
                            for root in roots {
                                let spec = Spec { collective, world, count, root, slice, in_place };
                                if let Err(e) = Checker::check_algorithm(spec, Algorithm::Tree) {
                                    panic!("{spec:?}: {e}");
                                }
                            }
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
                    assert_eq!(t.pos(x) < n && t.at(t.pos(x)) == x, true, "n {n} x {x}");
                    for c in t.children(x) {
                        assert_eq!(t.parent(c), Some(x), "n {n}: {c}'s parent");
                    }
                    assert!(t.depth(x) <= 2 * (n as i64).ilog2() as i64 + 2);
                }
                if x != 0 {
                    assert!(a.children(x).is_empty() || b.children(x).is_empty(), "n {n}: {x} interior twice");
                }
            }
        }
    }
}
#[cfg(test)]
mod tmp_big {
    use crate::schedule::{Algorithm, Collective, Spec};
    use crate::Checker;
    #[test]
    fn tree_big_tmp() {
        let mut checked = 0;
        for collective in Collective::ALL {
            for world in 18..=64 {
                for count in [0, 1, 5, 64, 97] {
                    for slice in [1, 7, 1000] {
                        for in_place in [false, true] {
                            let roots: Vec<usize> = if collective.rooted() { vec![0, 1, world / 2, world - 1, world-2] } else { vec![0] };
                            for root in roots {
                                let spec = Spec { collective, world, count, root, slice, in_place };
                                if let Err(e) = Checker::check_algorithm(spec, Algorithm::Tree) {
                                    panic!("{spec:?}: {e}");
                                }
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        eprintln!("checked {checked}");
    }
}

//! Recursive halving and doubling (Rabenseifner), for any world size.
//!
//! Words used in this file:
//! - **p**, **rem**: `p` is the largest power of two not above the world size
//!   `n`, and `rem = n - p`.
//! - **fold**: the first `2·rem` ranks pair up, even rank `2i` with odd rank
//!   `2i + 1`. The even one is **folded**: it hands its data to its odd
//!   **partner** at the start and gets the result back at the end, and sits
//!   out in between. The odd one is the even one's **host**.
//! - **virtual rank**: the `p` ranks that are not folded, numbered `0..p` in
//!   order (host `2i + 1` is virtual `i`, rank `r ≥ 2·rem` is `r - rem`). The
//!   power-of-two algorithms run among virtual ranks only.
//! - **block**: virtual rank `v` is responsible for the elements
//!   `bounds[v]..bounds[v + 1]`. For all-reduce, reduce and broadcast these
//!   are `p` nearly equal pieces of the vector; for reduce-scatter and
//!   all-gather they are the NCCL blocks of the real ranks behind `v` (two
//!   blocks for a host, its folded partner's and its own, which are adjacent).
//! - **group**: the `size` virtual ranks that agree with `v` on all bits
//!   above `size - 1` (`size` a power of two), and the blocks they own, which
//!   are contiguous.
//! - **halving step** at distance `d` (`p/2` down to 1): `v` and `v ^ d`
//!   split the group of size `2d` they share; each sends the half that is the
//!   other's group of size `d` and reduces the half that is its own. After the
//!   last step `v` holds the complete reduction of its block.
//! - **doubling step** at distance `d` (1 up to `p/2`): the reverse; `v` and
//!   `v ^ d` swap their groups of size `d`, so afterwards each holds the group
//!   of size `2d`.
//! - **exchange**: a halving or doubling step on the wire. Both sides cut
//!   their ranges into slices and, for each slice index, send their slice and
//!   then take the partner's, so with one-message channels neither waits for
//!   more than the slice the other just sent.
//!
//! Collectives:
//! - all-reduce: fold, halving steps, doubling steps, unfold (Rabenseifner).
//!   The fold is fused into the first halving step (the host reduces its
//!   partner's slices as they arrive) and the unfold into the doubling steps
//!   (the host forwards every range it holds or receives to its partner).
//!   Small vectors (up to 1/[`DOUBLING_FRACTION`] of a slice: 4 KiB with the
//!   default 128 KiB slots), where each round's latency is the cost, use
//!   recursive doubling instead, as MPICH does: after the fold, `log2 p`
//!   rounds in which `v` and `v ^ d` swap their whole partial sums and both
//!   reduce — half the rounds of halving and doubling, each moving the whole
//!   vector. Both partners reduce the same two operands, so every rank ends
//!   with the same bits.
//! - reduce-scatter: the same halving steps over NCCL's blocks; a host then
//!   passes its partner its block.
//! - all-gather: a host and its partner swap inputs, then doubling steps.
//! - reduce: halving steps, then a binomial gather of the finished blocks to
//!   the root (Rabenseifner's reduce). Partial sums live in scratch on ranks
//!   other than the root, whose output is not theirs to touch.
//! - broadcast: a binomial scatter of the root's blocks, then doubling steps
//!   (van de Geijn). The root takes part in the doubling like everyone else,
//!   so it receives blocks it already holds (identical values).
//! - all-to-all: no halving or doubling at all; a pairwise exchange
//!   (`pairwise_all_to_all`) in `n - 1` or `n` rounds.
//! - barrier: dissemination: in round `k` every rank sends a zero-length
//!   message to `r + 2^k` and receives one from `r - 2^k`; after
//!   `⌈log2 n⌉` rounds everyone has heard from everyone.
//!
//! A world of one copies its input (`single_rank`).

use crate::schedule::{block, slices, Collective, Loc, Peers, Rank, Schedule, Spec, Xfer};

/// All-reduces of at most 1/`DOUBLING_FRACTION` of a slice use recursive
/// doubling (see the module docs).
pub const DOUBLING_FRACTION: usize = 32;

pub fn schedule(spec: &Spec, rank: Rank) -> Schedule {
    if spec.world == 1 {
        return single_rank(spec);
    }
    let mut s = Schedule::new();
    let hd = Hd::new(spec);
    match spec.collective {
        Collective::AllReduce => hd.all_reduce(&mut s, rank),
        Collective::ReduceScatter => hd.reduce_scatter(&mut s, rank),
        Collective::AllGather => hd.all_gather(&mut s, rank),
        Collective::Broadcast => hd.broadcast(&mut s, rank),
        Collective::Reduce => hd.reduce(&mut s, rank),
        Collective::AllToAll => return pairwise_all_to_all(spec, rank),
        Collective::Barrier => dissemination_barrier(&mut s, spec.world, rank),
    }
    s
}

/// A world of one: the output is the input (finalized for reductions).
pub(crate) fn single_rank(spec: &Spec) -> Schedule {
    let mut s = Schedule::new();
    let (reduces, len) = (spec.collective.reduces(), spec.output_len());
    if len > 0 && (reduces || !spec.in_place) {
        s.copy(Loc::input(0), Loc::output(0), len, reduces);
    }
    s
}

/// All-to-all as `n - 1` (or `n`) rounds of pairwise exchange. In each round
/// every rank swaps one block with one partner: `r ^ s` in round `s` when
/// `n` is a power of two, otherwise a round-robin tournament (odd `n`: the
/// partner in round `s` is `s - r mod n`, and the one rank paired with itself
/// sits out; even `n`: the same over ranks `0..n-1`, the rank left alone
/// pairing with `n - 1`). Pairs are symmetric, so a rank sends its input
/// block `q` to `q` and receives `q`'s block into output block `q`: the same
/// element range, which lets the in-place version overwrite each slice right
/// after sending it.
pub(crate) fn pairwise_all_to_all(spec: &Spec, rank: Rank) -> Schedule {
    let (n, c) = (spec.world, spec.count);
    let mut s = Schedule::new();
    if c > 0 && !spec.in_place {
        s.copy(Loc::input(rank * c), Loc::output(rank * c), c, false);
    }
    let partner = |round: usize| -> Rank {
        if n.is_power_of_two() {
            rank ^ round
        } else if n % 2 == 1 {
            (round + n - rank) % n
        } else {
            let m = n - 1;
            match rank {
                r if r == m => round * (n / 2) % m,
                r if (round + m - r) % m == r => m,
                r => (round + m - r) % m,
            }
        }
    };
    let rounds = if n.is_power_of_two() {
        1..n
    } else if n % 2 == 1 {
        0..n
    } else {
        0..n - 1
    };
    for q in rounds.map(partner).filter(|&q| q != rank) {
        exchange(
            &mut s,
            spec.slice,
            (q * c, c),
            (q * c, c),
            |off, len| xfer(Some(Loc::input(off)), &[], None, &[q], len, false),
            |off, len| xfer(None, &[q], Some(Loc::output(off)), &[], len, false),
        );
    }
    s
}

/// Round `k` sends to `r + 2^k` and receives from `r - 2^k`.
fn dissemination_barrier(s: &mut Schedule, n: usize, rank: Rank) {
    let mut dist = 1;
    while dist < n {
        s.send((rank + dist) % n, Loc::input(0), 0);
        s.recv((rank + n - dist) % n, Loc::output(0), 0);
        dist *= 2;
    }
}

/// Builds an xfer from peer lists.
fn xfer(src: Option<Loc>, recv: &[Rank], dst: Option<Loc>, send: &[Rank], len: usize, finalize: bool) -> Xfer {
    Xfer { src, recv: Peers::from_slice(recv), dst, send: Peers::from_slice(send), len, finalize }
}

/// Cuts `a = (off, len)` and `b` into slices and, for each slice index, pushes
/// `mk_a` of `a`'s slice and then `mk_b` of `b`'s (either may have run out).
fn exchange(
    s: &mut Schedule,
    slice: usize,
    a: (usize, usize),
    b: (usize, usize),
    mut mk_a: impl FnMut(usize, usize) -> Xfer,
    mut mk_b: impl FnMut(usize, usize) -> Xfer,
) {
    let (mut xs, mut ys) = (slices(a.1, slice), slices(b.1, slice));
    loop {
        let (x, y) = (xs.next(), ys.next());
        if x.is_none() && y.is_none() {
            break;
        }
        if let Some((o, l)) = x {
            s.xfer(mk_a(a.0 + o, l));
        }
        if let Some((o, l)) = y {
            s.xfer(mk_b(b.0 + o, l));
        }
    }
}

/// Sends `range` (offset, len) to `to`, slice by slice, from `at(offset)`.
fn send_all(s: &mut Schedule, slice: usize, to: Rank, range: (usize, usize), at: impl Fn(usize) -> Loc) {
    for (o, l) in slices(range.1, slice) {
        s.send(to, at(range.0 + o), l);
    }
}

/// Receives `range` (offset, len) from `from`, slice by slice, into `at(offset)`.
fn recv_all(s: &mut Schedule, slice: usize, from: Rank, range: (usize, usize), at: impl Fn(usize) -> Loc) {
    for (o, l) in slices(range.1, slice) {
        s.recv(from, at(range.0 + o), l);
    }
}

/// What a rank is during the power-of-two part.
enum Role {
    /// Virtual rank `v`, hosting the folded rank `guest` if any.
    Virtual { v: usize, guest: Option<Rank> },
    /// Folded into `host`, which runs as virtual rank `v`.
    Folded { host: Rank, v: usize },
}

struct Hd<'a> {
    spec: &'a Spec,
    p: usize,
    rem: usize,
    /// Element ranges of the virtual ranks' blocks: `bounds[v]..bounds[v + 1]`.
    bounds: Vec<usize>,
}

impl<'a> Hd<'a> {
    fn new(spec: &'a Spec) -> Hd<'a> {
        let n = spec.world;
        let p = 1 << n.ilog2();
        let rem = n - p;
        let c = spec.count;
        let bounds = match spec.collective {
            // NCCL's blocks: a host owns its guest's block and its own.
            Collective::ReduceScatter | Collective::AllGather => {
                (0..=p).map(|v| c * if v < rem { 2 * v } else { v + rem }).collect()
            }
            _ => (0..=p).map(|v| if v == p { c } else { block(c, p, v).0 }).collect(),
        };
        Hd { spec, p, rem, bounds }
    }

    fn role(&self, r: Rank) -> Role {
        match r {
            r if r >= 2 * self.rem => Role::Virtual { v: r - self.rem, guest: None },
            r if r % 2 == 1 => Role::Virtual { v: r / 2, guest: Some(r - 1) },
            r => Role::Folded { host: r + 1, v: r / 2 },
        }
    }

    /// The virtual rank that `r` runs as or is folded into.
    fn seat(&self, r: Rank) -> usize {
        match self.role(r) {
            Role::Virtual { v, .. } | Role::Folded { v, .. } => v,
        }
    }

    /// The rank that runs as virtual rank `v`.
    fn real(&self, v: usize) -> Rank {
        if v < self.rem {
            2 * v + 1
        } else {
            v + self.rem
        }
    }

    /// (offset, len) of the blocks of `v`'s group of `size` virtual ranks.
    fn group(&self, v: usize, size: usize) -> (usize, usize) {
        let first = v & !(size - 1);
        (self.bounds[first], self.bounds[first + size] - self.bounds[first])
    }

    /// Halving steps for virtual rank `v`: its own data is in the input, each
    /// kept half is reduced into `work`, and the last step finalizes into
    /// `last`. A guest's slices are reduced in during the first step.
    fn halving(
        &self,
        s: &mut Schedule,
        v: usize,
        guest: Option<Rank>,
        work: impl Fn(usize) -> Loc,
        last: impl Fn(usize) -> Loc,
    ) {
        let mut d = self.p / 2;
        while d >= 1 {
            let first = d == self.p / 2;
            let peer = self.real(v ^ d);
            let mine = |x| if first { Loc::input(x) } else { work(x) };
            let guests: Vec<Rank> = guest.filter(|_| first).into_iter().collect();
            let from: Vec<Rank> = guests.iter().copied().chain([peer]).collect();
            let dst = |x| if d == 1 { last(x) } else { work(x) };
            exchange(
                s,
                self.spec.slice,
                self.group(v ^ d, d),
                self.group(v, d),
                |x, len| xfer(Some(mine(x)), &guests, None, &[peer], len, false),
                |x, len| xfer(Some(mine(x)), &from, Some(dst(x)), &[], len, d == 1),
            );
            d /= 2;
        }
    }

    /// A folded rank's part of its host's first halving step: its input
    /// slices, in the order the host consumes them.
    fn feed(&self, s: &mut Schedule, host: Rank, v: usize) {
        let d = self.p / 2;
        let send = |x, len| xfer(Some(Loc::input(x)), &[], None, &[host], len, false);
        exchange(s, self.spec.slice, self.group(v ^ d, d), self.group(v, d), send, send);
    }

    /// Doubling steps for virtual rank `v`, whose block is in the output.
    /// Everything it receives, and its own block when `own` is set, also goes
    /// to its guest.
    fn doubling(&self, s: &mut Schedule, v: usize, guest: Option<Rank>, own: bool) {
        let mut d = 1;
        while d < self.p {
            let peer = self.real(v ^ d);
            let to: Vec<Rank> = [peer].into_iter().chain(guest.filter(|_| own && d == 1)).collect();
            let fwd: Vec<Rank> = guest.into_iter().collect();
            exchange(
                s,
                self.spec.slice,
                self.group(v, d),
                self.group(v ^ d, d),
                |x, len| xfer(Some(Loc::output(x)), &[], None, &to, len, false),
                |x, len| xfer(None, &[peer], Some(Loc::output(x)), &fwd, len, false),
            );
            d *= 2;
        }
    }

    /// A folded rank's part of its host's doubling steps: receive what the
    /// host forwards, in its order.
    fn unfold(&self, s: &mut Schedule, host: Rank, v: usize, own: bool) {
        let mut d = 1;
        while d < self.p {
            let mine = if own && d == 1 { self.group(v, d) } else { (0, 0) };
            let recv = |x, len| xfer(None, &[host], Some(Loc::output(x)), &[], len, false);
            exchange(s, self.spec.slice, mine, self.group(v ^ d, d), recv, recv);
            d *= 2;
        }
    }

    fn all_reduce(&self, s: &mut Schedule, rank: Rank) {
        if self.spec.count <= self.spec.slice / DOUBLING_FRACTION {
            return self.all_reduce_doubling(s, rank);
        }
        match self.role(rank) {
            Role::Folded { host, v } => {
                self.feed(s, host, v);
                self.unfold(s, host, v, true);
            }
            Role::Virtual { v, guest } => {
                // The output is this rank's to use for partial sums.
                self.halving(s, v, guest, Loc::output, Loc::output);
                self.doubling(s, v, guest, true);
            }
        }
    }

    /// Recursive doubling (see the module docs): partial sums live in the
    /// output from the first reduction on.
    fn all_reduce_doubling(&self, s: &mut Schedule, rank: Rank) {
        let (c, slice) = (self.spec.count, self.spec.slice);
        match self.role(rank) {
            Role::Folded { host, .. } => {
                send_all(s, slice, host, (0, c), Loc::input);
                recv_all(s, slice, host, (0, c), Loc::output);
            }
            Role::Virtual { v, guest } => {
                let mut partial: fn(usize) -> Loc = Loc::input;
                if let Some(g) = guest {
                    for (o, l) in slices(c, slice) {
                        s.xfer(xfer(Some(Loc::input(o)), &[g], Some(Loc::output(o)), &[], l, false));
                    }
                    partial = Loc::output;
                }
                let mut d = 1;
                while d < self.p {
                    let (peer, last) = (self.real(v ^ d), 2 * d == self.p);
                    exchange(
                        s,
                        slice,
                        (0, c),
                        (0, c),
                        |x, len| xfer(Some(partial(x)), &[], None, &[peer], len, false),
                        |x, len| xfer(Some(partial(x)), &[peer], Some(Loc::output(x)), &[], len, last),
                    );
                    partial = Loc::output;
                    d *= 2;
                }
                if let Some(g) = guest {
                    send_all(s, slice, g, (0, c), Loc::output);
                }
            }
        }
    }

    fn reduce_scatter(&self, s: &mut Schedule, rank: Rank) {
        let (c, spec) = (self.spec.count, self.spec);
        match self.role(rank) {
            Role::Folded { host, v } => {
                self.feed(s, host, v);
                // Step: the host passes this rank its finished block.
                recv_all(s, spec.slice, host, (0, c), Loc::output);
            }
            Role::Virtual { v, guest } => {
                // Partial sums: in place the input is ours to overwrite;
                // otherwise scratch, covering the half kept by the first step.
                let (lo, len) = self.group(v, self.p / 2);
                let work = |x: usize| if spec.in_place { Loc::input(x) } else { Loc::scratch(x - lo) };
                if !spec.in_place && (self.p > 2 || guest.is_some()) {
                    s.need_scratch(len);
                }
                match guest {
                    None => self.halving(s, v, None, work, |x| Loc::output(x - rank * c)),
                    Some(g) => {
                        self.halving(s, v, guest, work, work);
                        // Step: pass the guest its block, keep ours.
                        send_all(s, spec.slice, g, (g * c, c), work);
                        if !spec.in_place && c > 0 {
                            s.copy(work(rank * c), Loc::output(0), c, false);
                        }
                    }
                }
            }
        }
    }

    fn all_gather(&self, s: &mut Schedule, rank: Rank) {
        let (c, spec) = (self.spec.count, self.spec);
        if !spec.in_place && c > 0 {
            s.copy(Loc::input(0), Loc::output(rank * c), c, false);
        }
        // Step: a folded rank and its host swap inputs.
        let swap = |s: &mut Schedule, other: Rank| {
            exchange(
                s,
                spec.slice,
                (0, c),
                (other * c, c),
                |x, len| xfer(Some(Loc::input(x)), &[], None, &[other], len, false),
                |x, len| xfer(None, &[other], Some(Loc::output(x)), &[], len, false),
            );
        };
        match self.role(rank) {
            Role::Folded { host, v } => {
                swap(s, host);
                self.unfold(s, host, v, false);
            }
            Role::Virtual { v, guest } => {
                if let Some(g) = guest {
                    swap(s, g);
                }
                self.doubling(s, v, guest, false);
            }
        }
    }

    fn reduce(&self, s: &mut Schedule, rank: Rank) {
        let root = self.spec.root;
        // The virtual rank the result gathers at: the root, or its host.
        let top = self.seat(root);
        let (v, guest) = match self.role(rank) {
            Role::Folded { host, v } => {
                self.feed(s, host, v);
                if rank == root {
                    // Step: receive the blocks as the host forwards them.
                    let mut order = vec![self.group(v, 1)];
                    let mut d = 1;
                    while d < self.p {
                        order.push(self.group(v ^ d, d));
                        d *= 2;
                    }
                    for range in order {
                        recv_all(s, self.spec.slice, host, range, Loc::output);
                    }
                }
                return;
            }
            Role::Virtual { v, guest } => (v, guest),
        };
        // Partial sums: the root's own output, scratch elsewhere (covering
        // the half kept by the first step).
        let (lo, len) = self.group(v, self.p / 2);
        let work = |x: usize| if rank == root { Loc::output(x) } else { Loc::scratch(x - lo) };
        if rank != root {
            s.need_scratch(len);
        }
        self.halving(s, v, guest, work, work);
        // Gather: at distance d the rank whose bit d (relative to `top`) is
        // set hands its group to its partner and is done.
        let fwd: Vec<Rank> = guest.filter(|&g| g == root).into_iter().collect();
        for &g in &fwd {
            send_all(s, self.spec.slice, g, self.group(v, 1), work);
        }
        let mut d = 1;
        while d < self.p {
            let peer = self.real(v ^ d);
            if (v ^ top) & d != 0 {
                send_all(s, self.spec.slice, peer, self.group(v, d), work);
                break;
            }
            let (off, len) = self.group(v ^ d, d);
            for (o, l) in slices(len, self.spec.slice) {
                let dst = fwd.is_empty().then(|| work(off + o));
                s.xfer(xfer(None, &[peer], dst, &fwd, l, false));
            }
            d *= 2;
        }
    }

    fn broadcast(&self, s: &mut Schedule, rank: Rank) {
        let (spec, root) = (self.spec, self.spec.root);
        let count = spec.count;
        if rank == root && !spec.in_place && count > 0 {
            s.copy(Loc::input(0), Loc::output(0), count, false);
        }
        let top = self.seat(root);
        let (v, guest) = match self.role(rank) {
            Role::Folded { host, v } => {
                if rank == root {
                    // Step: hand everything to the host, which scatters it.
                    send_all(s, spec.slice, host, (0, count), Loc::input);
                } else {
                    self.unfold(s, host, v, true);
                }
                return;
            }
            Role::Virtual { v, guest } => (v, guest),
        };
        if guest == Some(root) {
            recv_all(s, spec.slice, root, (0, count), Loc::output);
        }
        // Scatter: at distance d (p/2 down to 1) the holder of a group of
        // size 2d passes its partner the partner's half.
        let mut d = self.p / 2;
        while d >= 1 {
            let (u, peer) = ((v ^ top) % (2 * d), self.real(v ^ d));
            if u == 0 {
                send_all(s, spec.slice, peer, self.group(v ^ d, d), Loc::output);
            } else if u == d {
                recv_all(s, spec.slice, peer, self.group(v, d), Loc::output);
            }
            d /= 2;
        }
        self.doubling(s, v, guest.filter(|&g| g != root), true);
    }
}

#[cfg(test)]
mod tests {
    use crate::algo::tree::tests::{all_roots, flows, grid, some_roots, COUNTS, SLICES};
    use crate::algo::Algorithm;
    use crate::schedule::{Collective, Spec};

    #[test]
    fn halving_doubling_grid() {
        grid(Algorithm::HalvingDoubling, &(1..=17).collect::<Vec<_>>(), &COUNTS, &SLICES, all_roots);
    }

    #[test]
    fn halving_doubling_larger_worlds() {
        grid(Algorithm::HalvingDoubling, &[23, 32, 33, 47, 64], &[0, 1, 5, 64, 97], &[1, 7, 1000], some_roots);
    }

    #[test]
    fn halving_doubling_flows_past_64_ranks() {
        for collective in Collective::ALL {
            for world in [65, 100, 127, 128, 129, 200] {
                for (count, slice) in [(1, 1), (40, 3), (9, 1000)] {
                    let spec = Spec { collective, world, count, root: world / 3, slice, in_place: false };
                    if let Err(e) = flows(Algorithm::HalvingDoubling, spec) {
                        panic!("{spec:?}: {e}");
                    }
                }
            }
        }
    }
}

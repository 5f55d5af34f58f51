//! Schedules: what each rank does in a collective, as data.
//!
//! An algorithm is a pure function of a [`Spec`] (collective, world size,
//! element count, root, slice size, in-place or not) and a rank, returning a
//! [`Schedule`]: the list of [`Step`]s that rank takes. A schedule knows nothing
//! of memory, wires or clocks; the executor runs it over a transport, the
//! checker runs it on symbolic data, and a cost model can replay it.
//!
//! Words used throughout:
//! - **buffer**: one of a rank's three element arrays, [`Buf::Input`],
//!   [`Buf::Output`] and [`Buf::Scratch`]. In place, input and output are
//!   views of one array at the offsets NCCL uses ([`Collective::in_place_offsets`]).
//! - **slice**: the largest message, in elements ([`Spec::slice`]). Every
//!   [`Xfer`] moves at most one slice, so a transport needs slots of one slice.
//! - **xfer**: NCCL's fused primitive (send, recv, recv-reduce-send,
//!   recv-reduce-copy-send, recv-copy-send ...). Per xfer: start from the local
//!   source (if any), combine the message from each `recv` peer in order (the
//!   first one is copied when there is no source, later ones are reduced), apply
//!   the final operator if `finalize`, store at `dst` (if any), then send the
//!   result to every `send` peer. An xfer fires only when every message it
//!   receives has arrived and every peer it sends to has a free slot.
//! - **direct**: a one-sided step for ranks that share an address space: read
//!   other ranks' buffers, combine, and write into any rank's buffers.
//! - **inline**: the small all-reduce as one step ([`Inline`]): stage the
//!   input in scratch, a barrier, then combine every rank's staged copy.
//! - **barrier**: every rank waits for every other; one-sided accesses before it
//!   happen before those after it. Two ranks' direct steps between the same two
//!   barriers must not touch the same element unless both only read it.
//!   After the last barrier a rank may return, so others may no longer touch
//!   its input or output; its scratch stays intact until the collective after
//!   next (the executor alternates two scratch spaces), so peers may still
//!   read that.

use std::fmt;
use std::str::FromStr;

pub type Rank = usize;

/// The collective operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collective {
    AllReduce,
    ReduceScatter,
    AllGather,
    Broadcast,
    Reduce,
    AllToAll,
    Barrier,
}

impl Collective {
    pub const ALL: [Collective; 7] = [
        Collective::AllReduce,
        Collective::ReduceScatter,
        Collective::AllGather,
        Collective::Broadcast,
        Collective::Reduce,
        Collective::AllToAll,
        Collective::Barrier,
    ];

    /// True when contributions are combined with a reduction operator.
    pub const fn reduces(self) -> bool {
        matches!(self, Collective::AllReduce | Collective::ReduceScatter | Collective::Reduce)
    }

    /// True when a root rank is part of the arguments.
    pub const fn rooted(self) -> bool {
        matches!(self, Collective::Broadcast | Collective::Reduce)
    }

    /// Elements in each rank's input for a per-rank `count` (NCCL's
    /// convention: reduce-scatter's count is the received count, all-gather's
    /// the sent count, all-to-all's the count exchanged with each peer).
    pub const fn input_len(self, world: usize, count: usize) -> usize {
        match self {
            Collective::ReduceScatter | Collective::AllToAll => world * count,
            Collective::Barrier => 0,
            _ => count,
        }
    }

    /// Elements in each rank's output.
    pub const fn output_len(self, world: usize, count: usize) -> usize {
        match self {
            Collective::AllGather | Collective::AllToAll => world * count,
            Collective::Barrier => 0,
            _ => count,
        }
    }

    /// Offsets of (input, output) inside the single array used in place:
    /// all-gather's input is the rank's block of the output, reduce-scatter's
    /// output is the rank's block of the input, everything else aliases fully.
    pub const fn in_place_offsets(self, rank: Rank, count: usize) -> (usize, usize) {
        match self {
            Collective::AllGather => (rank * count, 0),
            Collective::ReduceScatter => (0, rank * count),
            _ => (0, 0),
        }
    }

    /// Elements of the single array used in place.
    pub const fn in_place_len(self, world: usize, count: usize) -> usize {
        let i = self.input_len(world, count);
        let o = self.output_len(world, count);
        if i > o {
            i
        } else {
            o
        }
    }

    /// The name nccl-tests uses.
    pub const fn name(self) -> &'static str {
        match self {
            Collective::AllReduce => "all_reduce",
            Collective::ReduceScatter => "reduce_scatter",
            Collective::AllGather => "all_gather",
            Collective::Broadcast => "broadcast",
            Collective::Reduce => "reduce",
            Collective::AllToAll => "alltoall",
            Collective::Barrier => "barrier",
        }
    }
}

impl fmt::Display for Collective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Collective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let k = s.replace('-', "_");
        Ok(match k.as_str() {
            "all_reduce" | "allreduce" => Collective::AllReduce,
            "reduce_scatter" | "reducescatter" => Collective::ReduceScatter,
            "all_gather" | "allgather" => Collective::AllGather,
            "broadcast" | "bcast" => Collective::Broadcast,
            "reduce" => Collective::Reduce,
            "alltoall" | "all_to_all" => Collective::AllToAll,
            "barrier" => Collective::Barrier,
            _ => {
                return Err(format!(
                    "unknown collective '{s}' (expected one of: all_reduce, reduce_scatter, \
                     all_gather, broadcast, reduce, alltoall, barrier)"
                ))
            }
        })
    }
}

/// Everything a schedule depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    pub collective: Collective,
    pub world: usize,
    /// Per-rank element count, in NCCL's convention (see [`Collective::input_len`]).
    pub count: usize,
    /// Root of broadcast and reduce; 0 otherwise.
    pub root: Rank,
    /// Largest message in elements (at least 1).
    pub slice: usize,
    /// Input and output are one array ([`Collective::in_place_offsets`]).
    pub in_place: bool,
}

impl Spec {
    pub fn input_len(&self) -> usize {
        self.collective.input_len(self.world, self.count)
    }
    pub fn output_len(&self) -> usize {
        self.collective.output_len(self.world, self.count)
    }
}

/// A rank's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buf {
    Input,
    Output,
    Scratch,
}

/// A place in one of a rank's buffers, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    pub buf: Buf,
    pub off: usize,
}

impl Loc {
    pub const fn input(off: usize) -> Loc {
        Loc { buf: Buf::Input, off }
    }
    pub const fn output(off: usize) -> Loc {
        Loc { buf: Buf::Output, off }
    }
    pub const fn scratch(off: usize) -> Loc {
        Loc { buf: Buf::Scratch, off }
    }
    /// The place `n` elements further on.
    pub const fn add(self, n: usize) -> Loc {
        Loc { buf: self.buf, off: self.off + n }
    }
}

/// Up to [`Peers::CAP`] ranks, inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Peers {
    len: u8,
    ranks: [u32; Peers::CAP],
}

impl Peers {
    pub const CAP: usize = 3;
    pub const NONE: Peers = Peers { len: 0, ranks: [0; Peers::CAP] };

    pub fn one(r: Rank) -> Peers {
        Peers::from_slice(&[r])
    }

    /// Panics when `rs` holds more than [`Peers::CAP`] ranks (a schedule bug).
    pub fn from_slice(rs: &[Rank]) -> Peers {
        assert!(rs.len() <= Peers::CAP, "at most {} peers per xfer", Peers::CAP);
        let mut p = Peers::NONE;
        for &r in rs {
            p.ranks[p.len as usize] = r as u32;
            p.len += 1;
        }
        p
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = Rank> + '_ {
        self.ranks[..self.len as usize].iter().map(|&r| r as Rank)
    }
    pub fn get(&self, i: usize) -> Option<Rank> {
        (i < self.len as usize).then(|| self.ranks[i] as Rank)
    }
}

impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// NCCL's fused primitive; see the module docs for its meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xfer {
    pub src: Option<Loc>,
    pub recv: Peers,
    pub dst: Option<Loc>,
    pub send: Peers,
    pub len: usize,
    /// The value is complete: apply the operator's final step (avg's division).
    pub finalize: bool,
}

/// A place in any rank's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct At {
    pub rank: Rank,
    pub loc: Loc,
}

/// A one-sided step: combine `srcs` in order (one source is a copy), apply the
/// final operator if `finalize`, and write the result to every `dsts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Direct {
    pub srcs: Vec<At>,
    pub dsts: Vec<At>,
    pub len: usize,
    pub finalize: bool,
}

/// The small all-reduce's one step, for ranks that share an address space:
/// copy `len` elements from this rank's `src` to `stage` in its own scratch,
/// post the call and wait until every rank has posted it (a barrier), then
/// combine `terms` — places in ranks' scratch, read one-sidedly — in order,
/// apply the final operator if `finalize`, and store the result at this
/// rank's `dst`. Where a transport carries scratch inside the posting
/// ([`crate::transport::Transport::inline_scratch`]), a rank's staged term
/// travels in the same cache lines as its posting, so the wait for the
/// posting also brings the data. The executor may read this rank's own term
/// from `src` instead of its staged copy (they hold the same values), so
/// nothing else may write `src` in the phase after the barrier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inline {
    pub src: Loc,
    pub stage: Loc,
    pub terms: Vec<At>,
    pub dst: Loc,
    pub len: usize,
    pub finalize: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Xfer(Xfer),
    Direct(Direct),
    Barrier,
    Inline(Inline),
}

/// One rank's part of a collective.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    pub steps: Vec<Step>,
    /// Elements of scratch space the steps use.
    pub scratch_len: usize,
}

impl Schedule {
    pub fn new() -> Schedule {
        Schedule::default()
    }

    /// Grows the scratch space to at least `n` elements.
    pub fn need_scratch(&mut self, n: usize) {
        self.scratch_len = self.scratch_len.max(n);
    }

    pub fn xfer(&mut self, x: Xfer) -> &mut Self {
        self.steps.push(Step::Xfer(x));
        self
    }

    /// Send `len` elements at `src` to `to`.
    pub fn send(&mut self, to: Rank, src: Loc, len: usize) -> &mut Self {
        self.xfer(Xfer { src: Some(src), recv: Peers::NONE, dst: None, send: Peers::one(to), len, finalize: false })
    }

    /// Receive `len` elements from `from` into `dst`.
    pub fn recv(&mut self, from: Rank, dst: Loc, len: usize) -> &mut Self {
        self.xfer(Xfer { src: None, recv: Peers::one(from), dst: Some(dst), send: Peers::NONE, len, finalize: false })
    }

    /// Receive from `from`, reduce with `src`, send the partial result to `to`.
    pub fn recv_reduce_send(&mut self, from: Rank, src: Loc, to: Rank, len: usize) -> &mut Self {
        self.xfer(Xfer {
            src: Some(src),
            recv: Peers::one(from),
            dst: None,
            send: Peers::one(to),
            len,
            finalize: false,
        })
    }

    /// Receive from `from`, reduce with `src`, store at `dst`; `finalize` when
    /// the stored value is the complete reduction.
    pub fn recv_reduce_copy(&mut self, from: Rank, src: Loc, dst: Loc, len: usize, finalize: bool) -> &mut Self {
        self.xfer(Xfer { src: Some(src), recv: Peers::one(from), dst: Some(dst), send: Peers::NONE, len, finalize })
    }

    /// Receive from `from`, reduce with `src` into the complete result, store it
    /// at `dst` and send it to `to`.
    pub fn recv_reduce_copy_send(&mut self, from: Rank, src: Loc, dst: Loc, to: Rank, len: usize) -> &mut Self {
        self.xfer(Xfer {
            src: Some(src),
            recv: Peers::one(from),
            dst: Some(dst),
            send: Peers::one(to),
            len,
            finalize: true,
        })
    }

    /// Receive from `from`, store at `dst` and forward to `to`.
    pub fn recv_copy_send(&mut self, from: Rank, dst: Loc, to: Rank, len: usize) -> &mut Self {
        self.xfer(Xfer {
            src: None,
            recv: Peers::one(from),
            dst: Some(dst),
            send: Peers::one(to),
            len,
            finalize: false,
        })
    }

    /// Copy `len` local elements from `src` to `dst`; `finalize` when `src`
    /// already holds the complete reduction (a world of one).
    pub fn copy(&mut self, src: Loc, dst: Loc, len: usize, finalize: bool) -> &mut Self {
        self.xfer(Xfer { src: Some(src), recv: Peers::NONE, dst: Some(dst), send: Peers::NONE, len, finalize })
    }

    pub fn direct(&mut self, d: Direct) -> &mut Self {
        self.steps.push(Step::Direct(d));
        self
    }

    pub fn barrier(&mut self) -> &mut Self {
        self.steps.push(Step::Barrier);
        self
    }

    pub fn inline(&mut self, i: Inline) -> &mut Self {
        self.steps.push(Step::Inline(i));
        self
    }
}

/// Splits `len` elements into pieces of at most `slice`: yields (offset, len).
/// Zero elements yield nothing.
pub fn slices(len: usize, slice: usize) -> impl Iterator<Item = (usize, usize)> {
    let slice = slice.max(1);
    (0..len.div_ceil(slice)).map(move |i| (i * slice, slice.min(len - i * slice)))
}

/// The `i`-th of `parts` nearly equal blocks of `len` elements: (offset, len).
/// The first `len % parts` blocks are one element longer.
pub fn block(len: usize, parts: usize, i: usize) -> (usize, usize) {
    let base = len / parts;
    let extra = len % parts;
    let off = i * base + i.min(extra);
    (off, base + usize::from(i < extra))
}

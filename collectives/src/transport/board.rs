//! The board: each rank's recent postings, readable by every other rank
//! without locks, in memory that may be shared between processes.
//!
//! Each rank has [`HISTORY`] slots; the posting for sequence number `s` goes
//! to slot `s % HISTORY`. A slot is a seqlock made of atomics: the writer
//! marks it invalid (sequence 0), stores the fields, then stores the sequence
//! number with release ordering; a reader loads the sequence number, the
//! fields, and the sequence number again, and keeps the fields only when both
//! loads show the number it wants. Nothing is ever read torn, nobody waits
//! for a lock, and a slot is plain atomics (`repr(C)`, valid when zeroed), so
//! it can live in a shared-memory segment. Buffers are stored as two words
//! each whose meaning the transport chooses (addresses in one process,
//! offsets into a shared pool across processes).
//!
//! A slot also carries [`INLINE_BYTES`] of scratch space ([`inline`]), right
//! after the sequence number, the arguments and the scratch buffer's words
//! (the input and output buffers' words come last): a rank writes a small payload
//! there before it posts, and a peer that sees the posting finds the payload
//! in the same cache lines (up to 16 bytes share the sequence number's), so
//! one transfer brings both. The payload is plain
//! memory, reached through a [`Region`] under the executor's rules (written
//! only before the posting, and not rewritten until every peer has finished
//! the call, [`HISTORY`] calls later).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};

use crate::algo::Algorithm;
use crate::dtype::{DType, ReduceOp};
use crate::mem::Region;
use crate::schedule::Collective;
use crate::transport::Args;

/// Postings remembered per rank; ranks can run ahead of each other by fewer
/// collectives than this and still have their arguments compared.
pub const HISTORY: usize = 16;
const _: () = assert!(HISTORY <= 32, "Last::slots is a 32-bit mask of slots");

/// A posting's buffers as the transport encodes them: (word, length) each.
pub type RawBufs = [(u64, u64); 3];

/// The word of a posted buffer that is the slot's own inline scratch space:
/// the same in every slot, so a call repeated on the same buffers posts the
/// same words ([`repost`]).
pub const INLINE: u64 = u64::MAX;

/// Bytes of scratch space a slot carries inline.
pub const INLINE_BYTES: usize = 8 * INLINE_WORDS;
const INLINE_WORDS: usize = 512;
/// Cache lines of the slot after the first that a poller touches (see
/// [`get`]): payloads up to 16 + 4 × 64 = 272 bytes then arrive together.
const TOUCHED_LINES: usize = 4;

/// One posting slot. The first cache line holds everything a peer reads
/// of a repeated small all-reduce ([`staged_alike`]): the sequence number,
/// the arguments, the scratch buffer's words and the payload's first bytes.
#[repr(C, align(128))]
pub struct Slot {
    seq: AtomicU64,
    args: [AtomicU64; 3],
    /// The scratch buffer's words (the posting's third buffer).
    scratch: [AtomicU64; 2],
    /// Scratch space published with the posting (16-byte aligned).
    inline: [AtomicU64; INLINE_WORDS],
    /// The input and output buffers' words.
    io: [[AtomicU64; 2]; 2],
}

const _: () = assert!(std::mem::offset_of!(Slot, inline) == 48, "the payload starts in the first line");

impl Slot {
    /// The posting's three buffers' words, in order.
    fn bufs(&self) -> [&[AtomicU64; 2]; 3] {
        [&self.io[0], &self.io[1], &self.scratch]
    }
}

impl Default for Slot {
    fn default() -> Slot {
        let zero = || AtomicU64::new(0);
        Slot {
            seq: zero(),
            args: [zero(), zero(), zero()],
            scratch: Default::default(),
            inline: std::array::from_fn(|_| zero()),
            io: Default::default(),
        }
    }
}

/// The code of a reduction op: its place in [`ReduceOp::ALL`].
const fn op_code(op: ReduceOp) -> u64 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Prod => 1,
        ReduceOp::Max => 2,
        ReduceOp::Min => 3,
        ReduceOp::Avg => 4,
    }
}

/// The code of a dtype: its place in [`DType::ALL`].
const fn dtype_code(d: DType) -> u64 {
    match d {
        DType::I8 => 0,
        DType::U8 => 1,
        DType::I32 => 2,
        DType::U32 => 3,
        DType::I64 => 4,
        DType::U64 => 5,
        DType::F16 => 6,
        DType::F32 => 7,
        DType::F64 => 8,
        DType::BF16 => 9,
    }
}

/// Packs arguments into three words (also used by message headers): each
/// kind is coded by its place in its `ALL` list (the order collectives and
/// algorithms are declared in).
pub fn pack_args(a: &Args) -> [u64; 3] {
    let op = a.op.map_or(0xff, op_code);
    let kinds = a.collective as u64 | dtype_code(a.dtype) << 8 | op << 16 | (a.algorithm as u64) << 24;
    [kinds, a.count as u64, a.root.map_or(u64::MAX, |r| r as u64)]
}

/// The inverse of [`pack_args`]; `None` for words no packing produced.
pub fn unpack_args(w: [u64; 3]) -> Option<Args> {
    let byte = |i: u32| (w[0] >> (8 * i) & 0xff) as usize;
    Some(Args {
        collective: *Collective::ALL.get(byte(0))?,
        dtype: *DType::ALL.get(byte(1))?,
        op: match byte(2) {
            0xff => None,
            i => Some(*ReduceOp::ALL.get(i)?),
        },
        count: usize::try_from(w[1]).ok()?,
        root: (w[2] != u64::MAX).then_some(usize::try_from(w[2]).ok()?),
        algorithm: *Algorithm::ALL.get(byte(3))?,
    })
}

/// What a rank posted last, and for which call, kept in memory that only
/// the rank itself touches: a repost copies these words rather than read
/// them back from the board, whose lines peers have just read (a read there
/// can wait for the line to come back), and knows which slots hold them
/// already, so it writes only the sequence number there.
#[repr(C, align(128))]
#[derive(Default)]
pub struct Last {
    seq: AtomicU64,
    args: [AtomicU64; 3],
    bufs: [[AtomicU64; 2]; 3],
    /// Bit `i` set: slot `i` holds these words (only this rank writes its
    /// slots, so this is exact).
    slots: AtomicU32,
}

/// Writes `rank`'s posting for `seq` into its slots, and into `last`. The
/// words are rewritten (under the seqlock's mark) only when they differ: a
/// rank that repeats a call posts the same words as HISTORY calls ago, which
/// peers keep cached, so then only the sequence number's cache line moves.
pub fn post(slots: &[Slot], last: &Last, seq: u64, args: &Args, bufs: RawBufs) {
    let words = pack_args(args);
    let same = last.args.iter().zip(words).all(|(w, v)| w.load(Relaxed) == v)
        && last.bufs.iter().zip(bufs).all(|(w, (a, b))| w[0].load(Relaxed) == a && w[1].load(Relaxed) == b);
    if !same {
        for (w, v) in last.args.iter().zip(words) {
            w.store(v, Relaxed);
        }
        for (w, (a, b)) in last.bufs.iter().zip(bufs) {
            w[0].store(a, Relaxed);
            w[1].store(b, Relaxed);
        }
        last.slots.store(0, Relaxed);
    }
    put(slots, last, seq, words, bufs);
}

/// Posts for `seq` the words this rank posted for `seq - 1` (a call
/// repeated on the same buffers, whose words do not depend on the slot: see
/// [`INLINE`]), as `last` keeps them. False, posting nothing, when `last`
/// holds another call's words.
pub fn repost(slots: &[Slot], last: &Last, seq: u64) -> bool {
    if last.seq.load(Relaxed) + 1 != seq {
        return false;
    }
    let args = last.args.each_ref().map(|w| w.load(Relaxed));
    let bufs = last.bufs.each_ref().map(|w| (w[0].load(Relaxed), w[1].load(Relaxed)));
    put(slots, last, seq, args, bufs);
    true
}

/// Writes `last`'s words (`words`, `bufs`) as the posting for `seq`: only
/// the sequence number where the slot is known to hold them, else the
/// words that differ (under the seqlock's mark) and then the number.
fn put(slots: &[Slot], last: &Last, seq: u64, words: [u64; 3], bufs: RawBufs) {
    let i = seq as usize % HISTORY;
    let s = &slots[i];
    let held = last.slots.load(Relaxed);
    if held & 1 << i == 0 {
        let same = s.args.iter().zip(words).all(|(w, v)| w.load(Relaxed) == v)
            && s.bufs().into_iter().zip(bufs).all(|(w, (a, b))| w[0].load(Relaxed) == a && w[1].load(Relaxed) == b);
        if !same {
            s.seq.store(0, Relaxed);
            fence(Release);
            for (w, v) in s.args.iter().zip(words) {
                w.store(v, Relaxed);
            }
            for (w, (a, b)) in s.bufs().into_iter().zip(bufs) {
                w[0].store(a, Relaxed);
                w[1].store(b, Relaxed);
            }
        }
        last.slots.store(held | 1 << i, Relaxed);
    }
    last.seq.store(seq, Relaxed);
    s.seq.store(seq, Release);
}

/// True once the slot for `seq` shows that sequence number (a poll: one
/// load, and while absent a touch of the inline space's next cache lines,
/// word 8k - 6 of it starting line k of the slot, so that a payload longer
/// than the first line's share arrives together with the sequence number
/// rather than one transfer after it).
pub fn posted(slots: &[Slot], seq: u64) -> bool {
    let s = &slots[seq as usize % HISTORY];
    if s.seq.load(Acquire) == seq {
        return true;
    }
    for line in 1..=TOUCHED_LINES {
        std::hint::black_box(s.inline[line * 8 - 6].load(Relaxed));
    }
    false
}

/// Reads the posting for `seq` from a rank's slots, if it is there.
pub fn get(slots: &[Slot], seq: u64) -> Option<(Args, RawBufs)> {
    let (args, bufs) = get_raw(slots, seq)?;
    Some((unpack_args(args)?, bufs))
}

/// [`get`] without unpacking: the arguments as [`pack_args`] packed them.
pub fn get_raw(slots: &[Slot], seq: u64) -> Option<([u64; 3], RawBufs)> {
    let s = &slots[seq as usize % HISTORY];
    if s.seq.load(Acquire) != seq {
        return None;
    }
    let args = s.args.each_ref().map(|w| w.load(Relaxed));
    let bufs = s.bufs().map(|w| (w[0].load(Relaxed), w[1].load(Relaxed)));
    fence(Acquire);
    if s.seq.load(Relaxed) != seq {
        return None;
    }
    Some((args, bufs))
}

/// The first `bytes` of the inline space of `theirs`'s posting for `seq`,
/// when that posting has the same arguments as this rank's posting for
/// `seq` (as `last` keeps it) and both postings' scratch is their slot's
/// inline space at `bytes`; else `None`. Compares against `last`, in this
/// rank's own memory, not against its slot, whose line peers are reading;
/// reads only the words compared (a seqlock read, as [`get_raw`]).
pub fn staged_alike(last: &Last, theirs: &[Slot], seq: u64, bytes: usize) -> Option<Region> {
    let other = &theirs[seq as usize % HISTORY];
    let scratch = [INLINE, bytes as u64];
    let mine = |w: &AtomicU64, v: u64| w.load(Relaxed) == v;
    if bytes > INLINE_BYTES
        || last.seq.load(Relaxed) != seq
        || !last.bufs[2].iter().zip(scratch).all(|(w, v)| mine(w, v))
        || other.seq.load(Acquire) != seq
    {
        return None;
    }
    let same = other.scratch.iter().zip(scratch).all(|(w, v)| mine(w, v))
        && other.args.iter().zip(&last.args).all(|(w, v)| mine(w, v.load(Relaxed)));
    fence(Acquire);
    (same && other.seq.load(Relaxed) == seq).then(|| Region::from_raw(other.inline.as_ptr() as usize, bytes))
}

/// The inline scratch space of the slot that holds (or will hold) the
/// posting for `seq`.
pub fn inline(slots: &[Slot], seq: u64) -> Region {
    let words = &slots[seq as usize % HISTORY].inline;
    Region::from_raw(words.as_ptr() as usize, INLINE_BYTES)
}

/// True once the rank has posted `seq` or a later call (a slot only ever
/// holds larger sequence numbers, and 0 while being rewritten: then false,
/// and the caller looks again).
pub fn entered(slots: &[Slot], seq: u64) -> bool {
    slots[seq as usize % HISTORY].seq.load(Acquire) >= seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_places_in_all() {
        assert!(Collective::ALL.iter().enumerate().all(|(i, &c)| c as usize == i));
        assert!(DType::ALL.iter().enumerate().all(|(i, &d)| dtype_code(d) == i as u64));
        assert!(Algorithm::ALL.iter().enumerate().all(|(i, &a)| a as usize == i));
        assert!(ReduceOp::ALL.iter().enumerate().all(|(i, &o)| op_code(o) == i as u64));
    }

    #[test]
    fn args_round_trip() {
        for c in Collective::ALL {
            for d in DType::ALL {
                let a = Args {
                    collective: c,
                    dtype: d,
                    op: c.reduces().then_some(ReduceOp::Avg),
                    count: 12345,
                    root: c.rooted().then_some(3),
                    algorithm: Algorithm::Tree,
                };
                assert_eq!(unpack_args(pack_args(&a)), Some(a));
            }
        }
        assert_eq!(unpack_args([0xffff_ffff, 0, 0]), None);
    }

    #[test]
    fn posts_are_found_by_sequence_number() {
        let slots: Vec<Slot> = (0..HISTORY).map(|_| Slot::default()).collect();
        let a = Args {
            collective: Collective::AllReduce,
            dtype: DType::F32,
            op: Some(ReduceOp::Sum),
            count: 7,
            root: None,
            algorithm: Algorithm::Ring,
        };
        let last = Last::default();
        post(&slots, &last, 5, &a, [(1, 2), (3, 4), (0, 0)]);
        assert_eq!(get(&slots, 5), Some((a, [(1, 2), (3, 4), (0, 0)])));
        assert_eq!(get(&slots, 4), None);
        assert_eq!(get(&slots, 5 + HISTORY as u64), None);
    }

    /// A peer's staged scratch is found only when its posting for the call
    /// has this rank's arguments and inline scratch at the same length.
    #[test]
    fn staged_alike_compares_the_words_that_matter() {
        let board = || -> Vec<Slot> { (0..HISTORY).map(|_| Slot::default()).collect() };
        let (mine, theirs, other) = (board(), board(), board());
        let (last, their_last, other_last) = (Last::default(), Last::default(), Last::default());
        let a = Args {
            collective: Collective::AllReduce,
            dtype: DType::F32,
            op: Some(ReduceOp::Sum),
            count: 2,
            root: None,
            algorithm: Algorithm::Direct,
        };
        let bufs = [(1, 8), (2, 8), (INLINE, 8)];
        post(&mine, &last, 3, &a, bufs);
        assert_eq!(staged_alike(&last, &theirs, 3, 8), None, "not posted yet");
        post(&theirs, &their_last, 3, &a, [(5, 8), (6, 8), (INLINE, 8)]);
        let found = staged_alike(&last, &theirs, 3, 8).expect("alike");
        assert_eq!(found.addr(), inline(&theirs, 3).addr());
        assert_eq!(found.len(), 8);
        assert_eq!(staged_alike(&last, &theirs, 3, 4), None, "another length");
        assert_eq!(staged_alike(&last, &theirs, 4, 8), None, "another call");
        post(&other, &other_last, 3, &Args { op: Some(ReduceOp::Max), ..a }, bufs);
        assert_eq!(staged_alike(&last, &other, 3, 8), None, "other arguments");
        post(&other, &other_last, 4, &a, [(1, 8), (2, 8), (9, 8)]);
        post(&mine, &last, 4, &a, bufs);
        assert_eq!(staged_alike(&last, &other, 4, 8), None, "scratch outside the slot");
    }

    /// A repost repeats the previous call's words, and only that call's.
    #[test]
    fn repost_repeats_only_the_previous_call() {
        let slots: Vec<Slot> = (0..HISTORY).map(|_| Slot::default()).collect();
        let last = Last::default();
        let a = Args {
            collective: Collective::AllReduce,
            dtype: DType::F32,
            op: Some(ReduceOp::Max),
            count: 3,
            root: None,
            algorithm: Algorithm::Direct,
        };
        let bufs = [(1, 12), (2, 12), (INLINE, 12)];
        post(&slots, &last, 7, &a, bufs);
        assert!(!repost(&slots, &last, 9), "call 8 was never posted");
        assert_eq!(get(&slots, 9), None);
        for seq in 8..8 + 2 * HISTORY as u64 {
            assert!(repost(&slots, &last, seq));
            assert_eq!(get(&slots, seq), Some((a, bufs)), "call {seq}");
        }
        // Other words, then repeats of them: every slot comes to hold them.
        let b = Args { count: 4, ..a };
        let other = [(1, 16), (2, 16), (INLINE, 16)];
        let first = 8 + 2 * HISTORY as u64;
        post(&slots, &last, first, &b, other);
        assert_eq!(get(&slots, first), Some((b, other)));
        for seq in first + 1..first + 1 + 2 * HISTORY as u64 {
            assert!(repost(&slots, &last, seq));
            assert_eq!(get(&slots, seq), Some((b, other)), "call {seq}");
        }
        // And back: a slot that held the first words before holds them again.
        let back = first + 1 + 2 * HISTORY as u64;
        post(&slots, &last, back, &a, bufs);
        assert!(repost(&slots, &last, back + 1));
        assert_eq!(get(&slots, back + 1), Some((a, bufs)));
    }
}

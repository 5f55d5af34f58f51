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
//! after the sequence number and arguments: a rank writes a small payload
//! there before it posts, and a peer that sees the posting finds the payload
//! in the same cache lines (up to 32 bytes share the sequence number's), so
//! one transfer brings both. The payload is plain
//! memory, reached through a [`Region`] under the executor's rules (written
//! only before the posting, and not rewritten until every peer has finished
//! the call, [`HISTORY`] calls later).

use std::sync::atomic::{fence, AtomicU64, Ordering::*};

use crate::algo::Algorithm;
use crate::dtype::{DType, ReduceOp};
use crate::mem::Region;
use crate::schedule::Collective;
use crate::transport::Args;

/// Postings remembered per rank; ranks can run ahead of each other by fewer
/// collectives than this and still have their arguments compared.
pub const HISTORY: usize = 16;

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
/// [`get`]): payloads up to 32 + 4 × 64 = 288 bytes then arrive together.
const TOUCHED_LINES: usize = 4;

/// One posting slot.
#[repr(C, align(128))]
pub struct Slot {
    seq: AtomicU64,
    args: [AtomicU64; 3],
    /// Scratch space published with the posting (8-byte aligned).
    inline: [AtomicU64; INLINE_WORDS],
    bufs: [[AtomicU64; 2]; 3],
}

impl Default for Slot {
    fn default() -> Slot {
        let zero = || AtomicU64::new(0);
        Slot {
            seq: zero(),
            args: [zero(), zero(), zero()],
            inline: std::array::from_fn(|_| zero()),
            bufs: Default::default(),
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

/// Writes `rank`'s posting for `seq` into its slots. The words are
/// rewritten (under the seqlock's mark) only when they differ: a rank that
/// repeats a call posts the same words as HISTORY calls ago, which peers
/// keep cached, so then only the sequence number's cache line moves.
pub fn post(slots: &[Slot], seq: u64, args: &Args, bufs: RawBufs) {
    post_words(&slots[seq as usize % HISTORY], seq, pack_args(args), bufs);
}

fn post_words(s: &Slot, seq: u64, words: [u64; 3], bufs: RawBufs) {
    let same = s.args.iter().zip(words).all(|(w, v)| w.load(Relaxed) == v)
        && s.bufs.iter().zip(bufs).all(|(w, (a, b))| w[0].load(Relaxed) == a && w[1].load(Relaxed) == b);
    if !same {
        s.seq.store(0, Relaxed);
        fence(Release);
        for (w, v) in s.args.iter().zip(words) {
            w.store(v, Relaxed);
        }
        for (w, (a, b)) in s.bufs.iter().zip(bufs) {
            w[0].store(a, Relaxed);
            w[1].store(b, Relaxed);
        }
    }
    s.seq.store(seq, Release);
}

/// True once the slot for `seq` shows that sequence number (a poll: one
/// load, and while absent a touch of the inline space's next cache lines,
/// word 8k - 4 of it starting line k of the slot, so that a payload longer
/// than the first line's share arrives together with the sequence number
/// rather than one transfer after it).
pub fn posted(slots: &[Slot], seq: u64) -> bool {
    let s = &slots[seq as usize % HISTORY];
    if s.seq.load(Acquire) == seq {
        return true;
    }
    for line in 1..=TOUCHED_LINES {
        std::hint::black_box(s.inline[line * 8 - 4].load(Relaxed));
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
    let bufs = s.bufs.each_ref().map(|w| (w[0].load(Relaxed), w[1].load(Relaxed)));
    fence(Acquire);
    if s.seq.load(Relaxed) != seq {
        return None;
    }
    Some((args, bufs))
}

/// Posts for `seq` the words this rank posted for `prev` (a call repeated
/// on the same buffers, whose words do not depend on the slot: see
/// [`INLINE`]). `prev` must be one of the rank's last [`HISTORY`]
/// postings, which only this rank writes.
pub fn repost(slots: &[Slot], seq: u64, prev: u64) {
    let from = &slots[prev as usize % HISTORY];
    let args = from.args.each_ref().map(|w| w.load(Relaxed));
    let bufs = from.bufs.each_ref().map(|w| (w[0].load(Relaxed), w[1].load(Relaxed)));
    post_words(&slots[seq as usize % HISTORY], seq, args, bufs);
}

/// True when `theirs` holds a posting for `seq` with the same arguments as
/// the one in `mine` for `seq` (which this rank wrote), and both postings'
/// scratch is their slot's inline space at the same length.
pub fn alike(mine: &[Slot], theirs: &[Slot], seq: u64) -> bool {
    let own = &mine[seq as usize % HISTORY];
    let scratch = (own.bufs[2][0].load(Relaxed), own.bufs[2][1].load(Relaxed));
    if scratch.0 != INLINE {
        return false;
    }
    let Some((args, bufs)) = get_raw(theirs, seq) else { return false };
    bufs[2] == scratch && own.args.iter().zip(args).all(|(w, v)| w.load(Relaxed) == v)
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
        post(&slots, 5, &a, [(1, 2), (3, 4), (0, 0)]);
        assert_eq!(get(&slots, 5), Some((a, [(1, 2), (3, 4), (0, 0)])));
        assert_eq!(get(&slots, 4), None);
        assert_eq!(get(&slots, 5 + HISTORY as u64), None);
    }
}

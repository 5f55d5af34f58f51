//! The board: each rank's recent postings, readable by every other rank
//! without locks.
//!
//! Each rank has [`HISTORY`] slots; the posting for sequence number `s` goes
//! to slot `s % HISTORY`. A slot is a seqlock made of atomics: the writer
//! marks it invalid (sequence 0), stores the fields, then stores the sequence
//! number with release ordering; a reader loads the sequence number, the
//! fields, and the sequence number again, and keeps the fields only when both
//! loads show the number it wants. Nothing is ever read torn, and nobody
//! waits for a lock on the collective's hot path.

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering::*};

use crate::dtype::{DType, ReduceOp};
use crate::mem::Region;
use crate::schedule::{Algorithm, Collective};
use crate::transport::{Args, Posting};

/// Postings remembered per rank; ranks can run ahead of each other by fewer
/// collectives than this and still have their arguments compared.
pub const HISTORY: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Slot {
    seq: AtomicU64,
    /// collective, dtype, op, algorithm as indices, one byte each (op 0xff: none).
    kinds: AtomicU64,
    count: AtomicU64,
    /// u64::MAX: none.
    root: AtomicU64,
    bufs: [(AtomicUsize, AtomicUsize); 3],
}

pub struct Board {
    slots: Vec<Slot>,
}

fn index<T: PartialEq>(all: &[T], v: &T) -> u64 {
    all.iter().position(|x| x == v).expect("listed in ALL") as u64
}

impl Board {
    pub fn new(world: usize) -> Board {
        Board { slots: (0..world * HISTORY).map(|_| Slot::default()).collect() }
    }

    fn slot(&self, rank: usize, seq: u64) -> &Slot {
        &self.slots[rank * HISTORY + seq as usize % HISTORY]
    }

    pub fn post(&self, rank: usize, p: &Posting) {
        let s = self.slot(rank, p.seq);
        s.seq.store(0, Relaxed);
        fence(Release);
        let a = &p.args;
        let op = a.op.map_or(0xff, |o| index(&ReduceOp::ALL, &o));
        let kinds = index(&Collective::ALL, &a.collective)
            | index(&DType::ALL, &a.dtype) << 8
            | op << 16
            | index(&Algorithm::ALL, &a.algorithm) << 24;
        s.kinds.store(kinds, Relaxed);
        s.count.store(a.count as u64, Relaxed);
        s.root.store(a.root.map_or(u64::MAX, |r| r as u64), Relaxed);
        for (slot, b) in s.bufs.iter().zip(&p.bufs) {
            // Address 0: not shared.
            slot.0.store(b.map_or(0, |b| b.addr()), Relaxed);
            slot.1.store(b.map_or(0, |b| b.len()), Relaxed);
        }
        s.seq.store(p.seq, Release);
    }

    pub fn get(&self, rank: usize, seq: u64) -> Option<Posting> {
        let s = self.slot(rank, seq);
        if s.seq.load(Acquire) != seq {
            return None;
        }
        let kinds = s.kinds.load(Relaxed);
        let count = s.count.load(Relaxed);
        let root = s.root.load(Relaxed);
        let bufs = s.bufs.each_ref().map(|b| (b.0.load(Relaxed), b.1.load(Relaxed)));
        fence(Acquire);
        if s.seq.load(Relaxed) != seq {
            return None;
        }
        let byte = |i: u32| (kinds >> (8 * i) & 0xff) as usize;
        let args = Args {
            collective: Collective::ALL[byte(0)],
            dtype: DType::ALL[byte(1)],
            op: (byte(2) != 0xff).then(|| ReduceOp::ALL[byte(2)]),
            count: count as usize,
            root: (root != u64::MAX).then_some(root as usize),
            algorithm: Algorithm::ALL[byte(3)],
        };
        let bufs = bufs.map(|(addr, len)| (addr != 0).then(|| Region::from_raw(addr, len)));
        Some(Posting { seq, args, bufs })
    }
}

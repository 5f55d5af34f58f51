//! What every transport whose ranks share no memory (TCP, RDMA) keeps the
//! same way: its rank's own postings, scratch and finished count, which no
//! peer ever reads ([`Own`], here); its abort flag with the cause kept by
//! the rule of [`Transport::abort`] ([`AbortState`], `abort.rs`); the answer
//! to a probe of what a rank is doing ([`Answer`], `probe.rs`); and the two
//! ends of a channel with credits ([`Outbox`], [`Inbox`], `credit.rs`); and
//! whether a peer is gone, and why ([`Gone`], `gone.rs`).
//!
//! [`Transport::abort`]: super::Transport::abort

mod abort;
mod credit;
mod gone;
mod probe;

pub use abort::AbortState;
pub use credit::{Inbox, Outbox};
pub use gone::Gone;
pub use probe::{Answer, WaitState};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::mem::{Lines, Region};
use crate::schedule::Rank;
use crate::transport::board::{self, Slot};
use crate::transport::Posting;

/// Locks `m`, poisoned or not (a panicking holder leaves plain data behind).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A number unlikely to repeat between groups, runs and processes (ids of
/// groups set up in one process, first packet sequence numbers), from `salt`.
pub fn fresh_id(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.write_u64(salt);
    h.finish()
}

/// A rank's postings, scratch and finished count, for its eyes only.
pub struct Own {
    board: Vec<Slot>,
    last: board::Last,
    scratch: Mutex<[Lines; 2]>,
    finished: AtomicU64,
}

impl Default for Own {
    fn default() -> Own {
        Own {
            board: (0..board::HISTORY).map(|_| Slot::default()).collect(),
            last: board::Last::default(),
            scratch: Mutex::new([Lines::new(0), Lines::new(0)]),
            finished: AtomicU64::new(0),
        }
    }
}

impl Own {
    /// Keeps the posting (peers compare arguments through message headers).
    pub fn post(&self, posting: &Posting) {
        let bufs = posting.bufs.map(|b| b.map_or((0, 0), |b| (b.addr() as u64, b.len() as u64)));
        board::post(&self.board, &self.last, posting.seq, &posting.args, bufs);
    }

    pub fn posting(&self, seq: u64) -> Option<Posting> {
        let (args, raw) = board::get(&self.board, seq)?;
        let bufs = raw.map(|(addr, len)| (addr != 0).then(|| Region::from_raw(addr as usize, len as usize)));
        Some(Posting { seq, args, bufs })
    }

    /// Scratch half `half`, grown to at least `bytes`.
    pub fn scratch(&self, half: usize, bytes: usize) -> Region {
        let mut halves = lock(&self.scratch);
        if halves[half].len() < bytes {
            halves[half] = Lines::new(bytes);
        }
        halves[half].region().sub(0..bytes).expect("grown to fit")
    }

    pub fn finish(&self, seq: u64) {
        self.finished.store(seq, Ordering::Release);
    }

    /// `rank`'s last finished collective as rank `me` sees it: its own
    /// count; for a peer `u64::MAX`, since peers never read this rank's
    /// memory and there is nothing to wait for.
    pub fn finished(&self, me: Rank, rank: Rank) -> u64 {
        match rank == me {
            true => self.finished.load(Ordering::Acquire),
            false => u64::MAX,
        }
    }
}

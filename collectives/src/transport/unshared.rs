//! What every transport whose ranks share no memory (TCP, RDMA) keeps the
//! same way: its rank's own postings, scratch and finished count, which no
//! peer ever reads ([`Own`]), and its abort flag with the cause kept by the
//! rule of [`Transport::abort`] ([`AbortState`]).
//!
//! [`Transport::abort`]: super::Transport::abort

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::local::board::{self, Slot};
use super::{deeper_cause, Doorbell, Posting, Signals};
use crate::error::Error;
use crate::mem::{Lines, Region};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A rank's postings, scratch and finished count, for its eyes only.
pub struct Own {
    board: Vec<Slot>,
    scratch: Mutex<[Lines; 2]>,
    finished: AtomicU64,
}

impl Default for Own {
    fn default() -> Own {
        Own {
            board: (0..board::HISTORY).map(|_| Slot::default()).collect(),
            scratch: Mutex::new([Lines::new(0), Lines::new(0)]),
            finished: AtomicU64::new(0),
        }
    }
}

impl Own {
    /// Keeps the posting (peers compare arguments through message headers).
    pub fn post(&self, posting: &Posting) {
        let bufs = posting.bufs.map(|b| b.map_or((0, 0), |b| (b.addr() as u64, b.len() as u64)));
        board::post(&self.board, posting.seq, &posting.args, bufs);
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

    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }
}

/// A rank's doorbell and abort flag (its own, or another transport's
/// [`Signals`] when two serve the rank) and the group's abort cause.
pub struct AbortState {
    bell: Doorbell,
    aborted: AtomicBool,
    signals: Option<Arc<dyn Signals>>,
    cause: Mutex<Option<Error>>,
}

impl AbortState {
    /// `local`: ranks on this host (for the doorbell's spinning).
    pub fn new(local: usize, signals: Option<Arc<dyn Signals>>) -> AbortState {
        AbortState { bell: Doorbell::new(local), aborted: AtomicBool::new(false), signals, cause: Mutex::new(None) }
    }

    pub fn bell(&self) -> &Doorbell {
        self.signals.as_ref().map_or(&self.bell, |s| s.bell())
    }

    pub fn flag(&self) -> &AtomicBool {
        self.signals.as_ref().map_or(&self.aborted, |s| s.flag())
    }

    pub fn aborted(&self) -> bool {
        self.flag().load(Ordering::Acquire)
    }

    /// Keeps `cause` if it is the first, or continues a chain of timeouts
    /// (see `Transport::abort`); true when it was kept.
    pub fn keep_cause(&self, cause: Error) -> bool {
        let mut c = lock(&self.cause);
        let keep = c.as_ref().is_none_or(|old| deeper_cause(old, &cause));
        if keep {
            *c = Some(cause);
        }
        keep
    }

    /// Raises the abort flag and wakes the rank.
    pub fn raise(&self) {
        self.flag().store(true, Ordering::Release);
        self.bell().ring();
    }

    /// The cause, once the flag is up.
    pub fn cause(&self) -> Option<Error> {
        if !self.aborted() {
            return None;
        }
        lock(&self.cause).clone()
    }
}

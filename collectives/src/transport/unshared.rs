//! What every transport whose ranks share no memory (TCP, RDMA) keeps the
//! same way: its rank's own postings, scratch and finished count, which no
//! peer ever reads ([`Own`]); its abort flag with the cause kept by the
//! rule of [`Transport::abort`] ([`AbortState`]); and the two ends of a
//! channel with credits ([`Outbox`], [`Inbox`]).
//!
//! [`Transport::abort`]: super::Transport::abort

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::board::{self, Slot};
use super::tcp::wire::{self, WireError};
use super::{Doorbell, Header, Posting, Signals};
use crate::error::Error;
use crate::mem::{Lines, Region};
use crate::schedule::Rank;

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

    /// Keeps `cause` if it is the first; true when it was kept (and the
    /// peers must be told).
    pub fn keep_cause(&self, cause: Error) -> bool {
        let mut c = lock(&self.cause);
        let keep = c.is_none();
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

/// A rank's wait as a probe's answer reports it ([`Doorbell::state`]).
pub type WaitState = Option<(Rank, std::time::Duration)>;

/// Where the answer to the last probe sent to a peer lands (TCP and RDMA
/// probes: see `Transport::activity`).
#[derive(Default)]
pub struct Answer(Mutex<Option<(u64, WaitState)>>);

impl Answer {
    /// The answer to probe `nonce` arrived.
    pub fn put(&self, nonce: u64, state: WaitState) {
        *lock(&self.0) = Some((nonce, state));
    }

    /// Waits until probe `nonce` is answered, `wait` passes or `gone()`
    /// holds, calling `between()` between looks (whatever brings answers
    /// in, if the caller must); `None` without an answer.
    pub fn wait(
        &self,
        nonce: u64,
        wait: std::time::Duration,
        gone: impl Fn() -> bool,
        mut between: impl FnMut(),
    ) -> Option<WaitState> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some((n, state)) = *lock(&self.0) {
                if n == nonce {
                    return Some(state);
                }
            }
            if std::time::Instant::now() >= deadline || gone() {
                return None;
            }
            between();
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    }
}

/// The receiving end of one channel: `N` slots, message `i` in slot
/// `i % N`, handed out and released in number order. The receiving thread
/// admits and publishes; the rank's executor takes and releases.
pub struct Inbox<const N: usize> {
    /// Per slot: 1 + the number of the message it holds, 0 when free.
    filled: [AtomicU64; N],
    headers: [Mutex<Header>; N],
    /// Messages released so far.
    tail: AtomicU64,
}

impl<const N: usize> Default for Inbox<N> {
    fn default() -> Self {
        Inbox {
            filled: std::array::from_fn(|_| AtomicU64::new(0)),
            headers: std::array::from_fn(|_| Mutex::new(Header::default())),
            tail: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Inbox<N> {
    /// Checks that message `index` may arrive now (the sender kept to its
    /// credits) and that its slot is free; the slot.
    pub fn admit(&self, index: u64) -> Result<usize, WireError> {
        wire::admit(index, self.tail.load(Ordering::Acquire), N)?;
        let i = index as usize % N;
        if self.filled[i].load(Ordering::Acquire) != 0 {
            return Err(WireError::Sequence(format!("message number {index} arrived twice")));
        }
        Ok(i)
    }

    /// Hands message `index`, now in slot `i`, to the executor.
    pub fn publish(&self, i: usize, index: u64, header: Header) {
        *lock(&self.headers[i]) = header;
        self.filled[i].store(index + 1, Ordering::Release);
    }

    /// The oldest unreleased message: its header and slot.
    pub fn try_recv(&self) -> Option<(Header, usize)> {
        let tail = self.tail.load(Ordering::Relaxed);
        let i = tail as usize % N;
        if self.filled[i].load(Ordering::Acquire) != tail + 1 {
            return None;
        }
        Some((*lock(&self.headers[i]), i))
    }

    /// Frees the oldest message; the number released so far.
    pub fn release(&self) -> u64 {
        let tail = self.tail.load(Ordering::Relaxed);
        let i = tail as usize % N;
        assert_eq!(self.filled[i].load(Ordering::Acquire), tail + 1, "release without a message");
        self.filled[i].store(0, Ordering::Release);
        self.tail.store(tail + 1, Ordering::Release);
        tail + 1
    }
}

/// The sending end of one channel: messages sent, and released by the
/// receiver (its credits); at most `N` in flight.
#[derive(Default)]
pub struct Outbox<const N: usize> {
    sent: AtomicU64,
    credited: AtomicU64,
}

impl<const N: usize> Outbox<N> {
    /// True while the receiver has a free slot for the next message.
    pub fn has_room(&self) -> bool {
        self.sent.load(Ordering::Relaxed) - self.credited.load(Ordering::SeqCst) < N as u64
    }

    /// Counts the next message as sent; its number. Counted before the
    /// message leaves, so its credit cannot come first.
    pub fn count_sent(&self) -> u64 {
        let index = self.sent.load(Ordering::Relaxed);
        assert!(index - self.credited.load(Ordering::Acquire) < N as u64, "commit without a free slot");
        self.sent.store(index + 1, Ordering::SeqCst);
        index
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    pub fn credited(&self) -> u64 {
        self.credited.load(Ordering::Acquire)
    }

    /// Takes a credit for `released` messages (checked by the caller
    /// against what was sent); true when the sender may have been waiting
    /// for it (every slot was taken), so the doorbell needs ringing.
    pub fn credit(&self, released: u64) -> bool {
        // With `count_sent`'s store of `sent` and `has_room`'s load of
        // `credited` (all SeqCst): either the sender sees this credit, or
        // this sees its last message and rings.
        let before = self.credited.swap(released, Ordering::SeqCst);
        self.sent.load(Ordering::SeqCst) - before >= N as u64
    }

    /// True when the receiver has released every message sent.
    pub fn drained(&self) -> bool {
        self.credited() == self.sent()
    }
}

//! The two ends of a channel with credits: the receiver's [`Inbox`] of
//! slots filled by arriving messages, and the sender's [`Outbox`] that
//! counts messages sent against credits granted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::lock;
use crate::transport::wire::{self, WireError};
use crate::transport::Header;

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

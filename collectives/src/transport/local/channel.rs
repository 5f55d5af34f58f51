//! A single-producer single-consumer ring of message slots between two
//! threads of one process.
//!
//! `head` counts messages committed by the sender, `tail` messages released
//! by the receiver; slot `i % SLOTS` holds message `i`. Only the sender
//! writes `head` and only the receiver writes `tail`, so each side reads its
//! own counter relaxed and the other's with acquire. Slot memory is allocated
//! on first use, so unused pairs of a large group cost nothing.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::mem::{Lines, Region};
use crate::transport::Header;

/// Messages a channel holds before its sender must wait.
pub const SLOTS: usize = 4;
const _: () = assert!(SLOTS >= crate::checker::MIN_SLOTS);

#[repr(align(128))]
struct Counter(AtomicU64);

pub struct Channel {
    head: Counter,
    tail: Counter,
    headers: [UnsafeCell<Header>; SLOTS],
    slots: OnceLock<Lines>,
    slot_bytes: usize,
}

// SAFETY: `headers[i]` is written by the sender only while slot i is free
// (head - tail < SLOTS) and read by the receiver only after the release-store
// of `head` that published it, until its release-store of `tail`.
unsafe impl Sync for Channel {}

impl Channel {
    pub fn new(slot_bytes: usize) -> Channel {
        Channel {
            head: Counter(AtomicU64::new(0)),
            tail: Counter(AtomicU64::new(0)),
            headers: Default::default(),
            slots: OnceLock::new(),
            slot_bytes,
        }
    }

    fn slot(&self, i: u64) -> Region {
        let lines = self.slots.get_or_init(|| Lines::new(self.slot_bytes * SLOTS));
        let at = (i as usize % SLOTS) * self.slot_bytes;
        lines.region().sub(at..at + self.slot_bytes).expect("slot inside its channel")
    }

    /// Sender: the next free slot, if any.
    pub fn try_send_slot(&self) -> Option<Region> {
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Acquire);
        (head - tail < SLOTS as u64).then(|| self.slot(head))
    }

    /// Sender: publishes the message written into the free slot.
    pub fn commit(&self, header: Header) {
        let head = self.head.0.load(Ordering::Relaxed);
        debug_assert!(head - self.tail.0.load(Ordering::Acquire) < SLOTS as u64);
        // SAFETY: the slot is free (checked by try_send_slot, and only the
        // receiver can make more room), so the receiver does not read this header.
        unsafe { *self.headers[head as usize % SLOTS].get() = header };
        self.head.0.store(head + 1, Ordering::Release);
    }

    /// Receiver: the oldest unreleased message, if any.
    pub fn try_recv(&self) -> Option<(Header, Region)> {
        let tail = self.tail.0.load(Ordering::Relaxed);
        let head = self.head.0.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        // SAFETY: message `tail` was published by the acquire load above and
        // the sender does not touch it until we release it.
        let h = unsafe { *self.headers[tail as usize % SLOTS].get() };
        let data = self.slot(tail).sub(0..h.len.min(self.slot_bytes)).expect("within slot");
        Some((h, data))
    }

    /// Receiver: frees the oldest message.
    pub fn release(&self) {
        let tail = self.tail.0.load(Ordering::Relaxed);
        self.tail.0.store(tail + 1, Ordering::Release);
    }
}

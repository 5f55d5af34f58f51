//! A single-producer single-consumer ring of message slots between two
//! ranks, in memory that may be shared between processes.
//!
//! `head` counts messages committed by the sender, `tail` messages released
//! by the receiver; slot `i % SLOTS` holds message `i`. Only the sender
//! writes `head` and only the receiver writes `tail`, so each side reads its
//! own counter relaxed and the other's with acquire. The [`Channel`] itself is
//! plain atomics (`repr(C)`, valid when zeroed) so it can sit in a
//! shared-memory segment; the slots' bytes are a [`Region`] the owner passes
//! in (a heap allocation in one process, part of a segment across processes).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::mem::Region;
use crate::transport::board::{pack_args, unpack_args};
use crate::transport::{Header, Kind, SLOTS};

#[repr(C, align(128))]
#[derive(Default)]
struct Counter(AtomicU64);

/// A [`Header`] as atomics: kind and presence of arguments, seq, len, total,
/// packed arguments.
#[repr(C)]
#[derive(Default)]
struct PackedHeader([AtomicU64; 7]);

impl PackedHeader {
    fn store(&self, h: &Header) {
        let args = h.args.map_or([0; 3], |a| pack_args(&a));
        let kind = match h.kind {
            Kind::Collective => 0,
            Kind::PointToPoint => 1,
        } | u64::from(h.args.is_some()) << 8;
        let words = [kind, h.seq, h.len as u64, h.total as u64, args[0], args[1], args[2]];
        for (w, v) in self.0.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
    }

    fn load(&self) -> Header {
        let w = self.0.each_ref().map(|w| w.load(Ordering::Relaxed));
        Header {
            kind: if w[0] & 0xff == 0 { Kind::Collective } else { Kind::PointToPoint },
            seq: w[1],
            len: w[2] as usize,
            total: w[3] as usize,
            args: if w[0] >> 8 & 1 == 1 { unpack_args([w[4], w[5], w[6]]) } else { None },
        }
    }
}

#[repr(C)]
#[derive(Default)]
pub struct Channel {
    head: Counter,
    tail: Counter,
    headers: [PackedHeader; SLOTS],
}

impl Channel {
    /// Sender: the next free slot of `slots` (SLOTS × `slot_bytes`), if any.
    pub fn try_send_slot(&self, slots: Region, slot_bytes: usize) -> Option<Region> {
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Acquire);
        (head - tail < SLOTS as u64).then(|| slot(slots, slot_bytes, head))
    }

    /// Sender: publishes the message written into the free slot.
    pub fn commit(&self, header: Header) {
        let head = self.head.0.load(Ordering::Relaxed);
        self.headers[head as usize % SLOTS].store(&header);
        self.head.0.store(head + 1, Ordering::Release);
    }

    /// Receiver: the oldest unreleased message, if any.
    pub fn try_recv(&self, slots: Region, slot_bytes: usize) -> Option<(Header, Region)> {
        let tail = self.tail.0.load(Ordering::Relaxed);
        let head = self.head.0.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let h = self.headers[tail as usize % SLOTS].load();
        let data = slot(slots, slot_bytes, tail).sub(0..h.len.min(slot_bytes)).expect("within slot");
        Some((h, data))
    }

    /// Receiver: frees the oldest message.
    pub fn release(&self) {
        let tail = self.tail.0.load(Ordering::Relaxed);
        self.tail.0.store(tail + 1, Ordering::Release);
    }
}

fn slot(slots: Region, slot_bytes: usize, i: u64) -> Region {
    let at = (i as usize % SLOTS) * slot_bytes;
    slots.sub(at..at + slot_bytes).expect("slot inside its channel")
}

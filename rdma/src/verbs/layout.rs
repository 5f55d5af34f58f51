//! The registered memory of an RDMA transport, byte by byte.
//!
//! One allocation per transport, registered once: per peer a receive ring
//! (`SLOTS` frames of a 64-byte header plus a slot, then [`ABORTS`] abort
//! slots, a heartbeat line and the state line a probe's answer lands in) and
//! a staging area of the same shape. A frame is written with one RDMA write
//! with immediate from the staging slot into the peer's receive slot; the
//! immediate says what it is ([`crate::imm`]). The header is the TCP
//! transport's 64-byte data header, checked on receipt in the same way.

use oxccl::transport::wire::{HEADER_BYTES, MAX_CAUSE_BYTES};
use oxccl::Rank;

use crate::channel::SLOTS;

/// Abort frames a rank may send to one peer before the first is read.
pub const ABORTS: usize = 4;
pub(super) const ABORT_BYTES: usize = HEADER_BYTES + MAX_CAUSE_BYTES;

/// Byte layout of one peer's block of the registered memory.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub frame: usize,
}

impl Layout {
    pub fn new(slot_bytes: usize) -> Layout {
        Layout { frame: HEADER_BYTES + slot_bytes.div_ceil(64) * 64 }
    }
    /// Bytes of a ring (or a staging area).
    pub fn ring(&self) -> usize {
        SLOTS * self.frame + ABORTS * ABORT_BYTES + 128
    }
    pub fn slot(&self, i: usize) -> usize {
        i * self.frame
    }
    pub fn abort(&self, k: usize) -> usize {
        SLOTS * self.frame + k * ABORT_BYTES
    }
    pub fn beat(&self) -> usize {
        SLOTS * self.frame + ABORTS * ABORT_BYTES
    }
    /// The line a probe's answer (a state frame) is written to.
    pub fn state(&self) -> usize {
        self.beat() + 64
    }
    /// Offsets of peer `p`'s receive ring and staging area in the block of a
    /// rank with `world` ranks.
    pub fn ring_of(&self, p: Rank) -> usize {
        2 * p * self.ring()
    }
    pub fn staging_of(&self, p: Rank) -> usize {
        2 * p * self.ring() + self.ring()
    }
    pub fn total(&self, world: usize) -> usize {
        2 * world * self.ring()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_keeps_every_area_apart() {
        let l = Layout::new(1000);
        assert_eq!(l.frame % 64, 0);
        assert!(l.slot(SLOTS) <= l.abort(0) && l.abort(ABORTS) <= l.beat() && l.beat() + 64 <= l.state());
        assert!(l.state() + 64 <= l.ring());
        assert_eq!(l.staging_of(2), l.ring_of(2) + l.ring());
        assert_eq!(l.total(3), l.ring_of(3));
    }
}

//! A rank's communication area in its device's memory: the words peers
//! write to signal it, and the inboxes their messages land in. Every rank
//! of a group knows every area (they are made together, with the group),
//! so a stream signals a peer by writing into the peer's area and waits
//! only on words of its own.
//!
//! Layout, in 8-byte words, for a world of `n`, then the inboxes:
//!
//! | words              | in rank `r`'s area                                         |
//! |--------------------|------------------------------------------------------------|
//! | `EPOCH`            | calls `r`'s streams have finished (written by `r` only)     |
//! | `FAULT`            | a wait of `r` that gave up (a GPU's; see `issue.rs`)        |
//! | 2+`ARRIVED`·n+p    | messages from `p` now in `r`'s inbox in this call           |
//! | 2+`ACKED`·n+p      | messages from `r` that `p` has consumed in this call        |
//! | 2+`BARRIER`·n+p    | barriers `p` has reached in this call                       |
//! | 2+`DONE`·n+p       | `p` has finished the call before this one                   |
//!
//! Every value a peer writes is relative to the writer's epoch, which
//! equals the reader's at the same call: `(epoch << 32) + count` (`DONE`:
//! `(epoch + 1) << 32`). Values only grow, so a wait is "at least"
//! (GEQ), and a call's values are the same function of the epoch every
//! time, which is what lets a captured graph be replayed.
//!
//! Inbox of messages from `p`: [`SLOTS`] slots of the group's slot size;
//! the `m`-th message of a call (from 0) lands in slot `m % SLOTS`.

use std::sync::Arc;

use oxccl::mem::Region;
use oxccl::Rank;

use super::backend::DeviceMemory;
use crate::error::Result;

/// Messages a channel holds: more than the two the checker proves enough,
/// so that a sender runs ahead of its receiver.
pub const SLOTS: usize = 4;

/// The kinds of words peers write in an area.
#[derive(Clone, Copy, Debug)]
pub enum Word {
    Arrived = 0,
    Acked = 1,
    Barrier = 2,
    Done = 3,
}

const KINDS: usize = 4;
/// Words before the peers' words: the epoch and the fault word.
const HEAD: usize = 2;

/// One rank's area (see the module docs).
pub struct Area<D: DeviceMemory> {
    dev: Arc<D>,
    buf: D::Buffer,
    world: usize,
    slot: usize,
}

impl<D: DeviceMemory> Area<D> {
    /// A zeroed area on `dev` for a world of `world`, inbox slots of `slot` bytes.
    pub fn new(dev: &Arc<D>, world: usize, slot: usize) -> Result<Area<D>> {
        let buf = dev.alloc(Self::bytes(world, slot))?;
        Ok(Self::of(dev, buf, world, slot))
    }

    /// Bytes of an area for a world of `world`, inbox slots of `slot` bytes.
    pub fn bytes(world: usize, slot: usize) -> usize {
        Self::words_bytes(world) + world * SLOTS * slot.next_multiple_of(256)
    }

    /// The area held by `buf` (zeroed, at least [`Area::bytes`] long; a
    /// peer's, opened through IPC, or this rank's).
    pub fn of(dev: &Arc<D>, buf: D::Buffer, world: usize, slot: usize) -> Area<D> {
        Area { dev: dev.clone(), buf, world, slot: slot.next_multiple_of(256) }
    }

    fn words_bytes(world: usize) -> usize {
        ((HEAD + KINDS * world) * 8).next_multiple_of(256)
    }

    /// The word of `kind` that rank `peer` writes.
    pub fn word(&self, kind: Word, peer: Rank) -> Region {
        self.at(HEAD + kind as usize * self.world + peer)
    }

    /// The owner's epoch: calls its streams have finished.
    pub fn epoch(&self) -> Region {
        self.at(0)
    }

    /// Where a wait of the owner that gave up says so (a GPU's, which
    /// cannot fail its stream): 0 while none has.
    pub fn fault(&self) -> Region {
        self.at(1)
    }

    fn at(&self, word: usize) -> Region {
        D::region(&self.buf).sub(word * 8..word * 8 + 8).expect("inside the area")
    }

    /// Releases every stream waiting on this area's peer words (abort):
    /// see [`DeviceMemory::release`]. The epoch stays.
    pub fn release(&self) -> Result<()> {
        let words = D::region(&self.buf).sub(HEAD * 8..(HEAD + KINDS * self.world) * 8).expect("inside the area");
        self.dev.release(words)
    }

    /// The first `bytes` of inbox slot `i % SLOTS` for messages from `from`.
    pub fn slot(&self, from: Rank, i: u64, bytes: usize) -> Region {
        debug_assert!(bytes <= self.slot);
        let at = Self::words_bytes(self.world) + (from * SLOTS + (i % SLOTS as u64) as usize) * self.slot;
        D::region(&self.buf).sub(at..at + bytes).expect("inside the area")
    }
}

//! What an RDMA transport writes to its peers for its own rank: messages (a
//! header and its payload, from the staging slot or from registered user
//! memory), credits for released messages, and the cause of an abort.
//!
//! Like the TCP transport, an abort writes its cause (the TCP abort frame)
//! into every peer's abort slots before the flag goes up here. A message to
//! a peer that is gone, or whose write cannot be posted, aborts the group
//! with [`Error::PeerGone`].

use std::sync::atomic::Ordering;

use oxccl::transport::unshared::lock;
use oxccl::transport::wire::{self, HEADER_BYTES};
use oxccl::transport::Header;
use oxccl::{Error, Result};

use super::layout::{ABORTS, ABORT_BYTES};
use super::qp::Sge;
use super::shared::{Peer, Shared};
use super::work::{Work, SEND_DEPTH};
use crate::channel::SLOTS;
use crate::imm::Imm;

impl Shared {
    /// Writes message `header` to `p` from its staging slot: the header, then
    /// `payload` (the rest of the staging slot, or registered user memory).
    pub(super) fn send_message(&self, p: &Peer, header: &Header, payload: Option<Sge>) {
        if let Some(why) = p.chan.gone() {
            self.abort(self.gone_error(p.rank, format!("{why}, before this rank could send to it")));
            return;
        }
        let index = p.chan.count_sent();
        let slot = index as usize % SLOTS;
        let at = self.layout.staging_of(p.rank) + self.layout.slot(slot);
        // SAFETY: the staging slot is this rank's executor's until the write's
        // completion (the channel hands it out again only after that).
        unsafe { self.region(at, HEADER_BYTES).bytes_mut() }.copy_from_slice(&wire::encode_data(
            self.comm_id,
            index,
            header,
        ));
        let sges = match payload {
            None => vec![self.sge(at, HEADER_BYTES + header.len)],
            Some(user) if user.len == 0 => vec![self.sge(at, HEADER_BYTES)],
            Some(user) => vec![self.sge(at, HEADER_BYTES), user],
        };
        let imm = Some(Imm::Data(Imm::low(index)));
        if let Err(e) = self.write(p, Work::Message, &sges, self.layout.slot(slot), imm) {
            self.abort(self.gone_error(p.rank, e.to_string()));
        }
    }

    /// Aborts the group: peers are told (the cause written into their abort
    /// slots) before the flag goes up here.
    pub fn abort(&self, cause: Error) {
        let frame = wire::encode_abort(self.comm_id, &cause);
        if self.signal.keep_cause(cause) {
            for p in self.peers.iter().flatten() {
                if p.chan.gone().is_none() {
                    self.send_abort(p, &frame);
                }
            }
        }
        self.signal.raise();
    }

    fn send_abort(&self, p: &Peer, frame: &[u8]) {
        let k = p.aborts_sent.fetch_add(1, Ordering::AcqRel);
        if k >= ABORTS as u64 {
            return; // the peer has enough causes to choose from
        }
        let k = k as usize;
        let len = frame.len().min(ABORT_BYTES);
        let at = self.layout.staging_of(p.rank) + self.layout.abort(k);
        // SAFETY: abort staging slot `k` is used once, by this call only.
        unsafe { self.region(at, len).bytes_mut() }.copy_from_slice(&frame[..len]);
        let imm = Imm::Abort((k << 12 | len) as u32);
        let _ = self.write(p, Work::Abort, &[self.sge(at, len)], self.layout.abort(k), Some(imm));
    }

    /// Owes `p` a credit for `released` messages and pays what is owed.
    pub(super) fn credit(&self, p: &Peer, released: u64) -> Result<()> {
        p.credit_owed.fetch_max(released, Ordering::SeqCst);
        self.pay_credit(p)
    }

    /// Posts the credit owed to `p` unless its send queue is nearly full; then
    /// the next completion of `p`'s sends pays it. Credits leave one at a
    /// time and only grow (the receiver takes them in order).
    pub(super) fn pay_credit(&self, p: &Peer) -> Result<()> {
        let mut sent = lock(&p.credit_sent);
        // With `credit`'s fetch_max and `complete`'s decrement of `in_flight`
        // (all SeqCst): either this sees the room, or the completion that
        // makes it sees what is owed.
        if p.in_flight.load(Ordering::SeqCst) + 3 >= SEND_DEPTH {
            return Ok(());
        }
        let owed = p.credit_owed.swap(0, Ordering::SeqCst);
        if owed <= *sent {
            return Ok(());
        }
        *sent = owed;
        self.write(p, Work::Credit, &[], 0, Some(Imm::Credit(Imm::low(owed))))
    }
}

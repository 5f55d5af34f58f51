//! The bookkeeping of one peer's two channels, apart from any verbs call:
//! what this rank may send to the peer (credits and staging slots) and what
//! has arrived from it (receive slots, handed out in order).
//!
//! **Sending.** Message `i` is staged in staging slot `i % SLOTS` and
//! written into the peer's receive slot `i % SLOTS`. A slot may be handed
//! out while the peer has released all but `SLOTS - 1` of the messages sent
//! (its receive slot is free) and the write of message `i - SLOTS` has
//! completed here (the staging slot is free).
//!
//! **Receiving.** Writes from one peer arrive in order (a reliable-connected
//! queue pair), each announced by a completion with its message number;
//! [`Channel::arrive`] checks the number and the slot, and publishes the
//! header; [`Channel::try_recv`] and [`Channel::release`] hand messages out
//! and free them in order.

use std::sync::atomic::{AtomicU64, Ordering};

use oxccl::transport::unshared::{Gone, Inbox, Outbox};
use oxccl::transport::wire::{self, WireError};
use oxccl::transport::Header;

/// Receive slots per peer: messages a sender may have in flight.
pub use oxccl::transport::SLOTS;

/// See the module docs.
#[derive(Default)]
pub struct Channel {
    /// Messages committed to the peer and released by it.
    out: Outbox<SLOTS>,
    /// Writes of messages to the peer that have completed here.
    written: AtomicU64,
    /// What has arrived from the peer.
    inbox: Inbox<SLOTS>,
    /// Messages that have arrived.
    arrived: AtomicU64,
    /// Set when the peer can no longer answer, with why.
    gone: Gone,
}

impl Channel {
    /// The staging slot of the next message, when it may be sent now.
    pub fn next_send(&self) -> Option<usize> {
        let sent = self.out.sent();
        let free = self.out.has_room() && sent - self.written.load(Ordering::Acquire) < SLOTS as u64;
        free.then_some(sent as usize % SLOTS)
    }

    /// Counts the next message as sent; its number.
    pub fn count_sent(&self) -> u64 {
        assert!(self.next_send().is_some(), "commit without a free slot");
        self.out.count_sent()
    }

    pub fn sent(&self) -> u64 {
        self.out.sent()
    }

    /// True when the write of every message sent has completed here.
    pub fn all_written(&self) -> bool {
        self.written.load(Ordering::Acquire) == self.out.sent()
    }

    /// The write of one more message completed; true when the sender may be
    /// waiting for its staging slot.
    pub fn written(&self) -> bool {
        let w = self.written.fetch_add(1, Ordering::AcqRel) + 1;
        self.out.sent() - (w - 1) >= SLOTS as u64
    }

    /// Takes a credit given as the low bits `low` of the released count;
    /// true when the sender may have been waiting for it.
    pub fn credit(&self, low: u32) -> Result<bool, WireError> {
        let released = crate::imm::widen(low, self.out.credited());
        let sent = self.out.sent();
        if released > sent {
            return Err(WireError::Sequence(format!("credit for {released} messages, but only {sent} were sent")));
        }
        Ok(self.out.credit(released))
    }

    /// True when the peer has released every message sent to it.
    pub fn drained(&self) -> bool {
        self.out.drained()
    }

    /// Message `low` (low 30 bits of its number) has been written into its
    /// slot with `header_bytes` in front: checks and publishes it.
    pub fn arrive(
        &self,
        low: u32,
        header_bytes: &[u8; wire::HEADER_BYTES],
        payload: usize,
        limits: &wire::Limits,
    ) -> Result<(), WireError> {
        let expect = self.arrived.load(Ordering::Relaxed);
        let index = crate::imm::widen(low, expect);
        if index != expect {
            return Err(WireError::Sequence(format!("message number {index} arrived, expected {expect}")));
        }
        let header = match wire::decode_header(header_bytes, limits)? {
            wire::Frame::Data { index: i, header } if i == index => header,
            wire::Frame::Data { index: i, .. } => {
                return Err(WireError::Sequence(format!("header says message {i}, the write said {index}")))
            }
            other => return Err(WireError::Sequence(format!("a {other:?} frame where a message was expected"))),
        };
        if header.len != payload {
            return Err(WireError::Sequence(format!(
                "header says {} payload bytes, {payload} were written",
                header.len
            )));
        }
        let i = self.inbox.admit(index)?;
        self.inbox.publish(i, index, header);
        self.arrived.store(index + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Messages that have arrived so far: the number of the next.
    pub fn expected(&self) -> u64 {
        self.arrived.load(Ordering::Relaxed)
    }

    /// The oldest unreleased message: its header and receive slot.
    pub fn try_recv(&self) -> Option<(Header, usize)> {
        self.inbox.try_recv()
    }

    /// Frees the oldest message; the number released so far.
    pub fn release(&self) -> u64 {
        self.inbox.release()
    }

    /// Why the peer is gone, if it is.
    pub fn gone(&self) -> Option<String> {
        self.gone.get("it is gone")
    }

    /// Marks the peer gone (the first reason stays); true the first time.
    pub fn set_gone(&self, why: String) -> bool {
        self.gone.set(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl::transport::{Args, Kind};
    use oxccl::{Algorithm, Collective, DType, ReduceOp};

    const LIMITS: wire::Limits = wire::Limits { comm_id: 7, max_payload: 256, world: 4 };

    fn header(seq: u64, len: usize) -> Header {
        let args = Args {
            collective: Collective::AllReduce,
            dtype: DType::F32,
            op: Some(ReduceOp::Sum),
            count: 64,
            root: None,
            algorithm: Algorithm::Ring,
        };
        Header { kind: Kind::Collective, seq, len, total: 0, args: Some(args) }
    }

    #[test]
    fn credits_and_completions_bound_what_is_in_flight() {
        let c = Channel::default();
        for i in 0..SLOTS as u64 {
            assert_eq!(c.next_send(), Some(i as usize));
            assert_eq!(c.count_sent(), i);
        }
        assert_eq!(c.next_send(), None);
        // A credit alone does not free a staging slot whose write is pending.
        assert!(c.credit(1).unwrap());
        assert_eq!(c.next_send(), None);
        assert!(c.written());
        assert_eq!(c.next_send(), Some(0));
        // Credits may not run ahead of what was sent, nor go backwards.
        assert!(c.credit(SLOTS as u32 + 1).is_err());
        assert!(!c.drained());
        for _ in 1..SLOTS {
            c.written();
        }
        c.credit(SLOTS as u32).unwrap();
        assert!(c.drained());
    }

    #[test]
    fn messages_are_checked_and_handed_out_in_order() {
        let c = Channel::default();
        for i in 0..SLOTS as u64 {
            let h = header(3, 10 + i as usize);
            c.arrive(i as u32, &wire::encode_data(7, i, &h), h.len, &LIMITS).unwrap();
        }
        // The next one has no free slot.
        let h = header(3, 1);
        assert!(c.arrive(SLOTS as u32, &wire::encode_data(7, SLOTS as u64, &h), 1, &LIMITS).is_err());
        let (got, slot) = c.try_recv().unwrap();
        assert_eq!((got, slot), (header(3, 10), 0));
        assert_eq!(c.release(), 1);
        assert_eq!(c.try_recv().unwrap().1, 1);
    }

    #[test]
    fn malformed_arrivals_are_refused() {
        let h = header(1, 8);
        let cases: [(u32, [u8; 64], usize, &str); 5] = [
            (1, wire::encode_data(7, 1, &h), 8, "expected 0"),
            (0, wire::encode_data(7, 1, &h), 8, "header says message 1"),
            (0, wire::encode_data(7, 0, &h), 9, "were written"),
            (0, wire::encode_data(8, 0, &h), 8, ""),
            (0, wire::encode_credit(7, 0), 0, "frame where a message"),
        ];
        for (low, bytes, len, want) in cases {
            let e = Channel::default().arrive(low, &bytes, len, &LIMITS).unwrap_err();
            assert!(format!("{e}").contains(want), "{e}");
        }
    }
}

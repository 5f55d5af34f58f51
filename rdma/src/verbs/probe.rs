//! Who waits for whom, over RDMA. A rank that timed out asks the rank it
//! waited for what that one is doing ([`Transport::activity`]): a probe (a
//! write with immediate and no data), which the peer's progress thread
//! answers by writing the TCP transport's state frame into the prober's
//! state line. A process that is stopped answers nothing.
//!
//! [`Transport::activity`]: oxccl::transport::Transport::activity

use std::sync::atomic::Ordering;
use std::time::Duration;

use oxccl::transport::unshared::WaitState;
use oxccl::transport::wire::{self, HEADER_BYTES};
use oxccl::Rank;

use super::shared::{Peer, Shared};
use super::work::Work;
use crate::imm::Imm;

/// Longest a probe waits for its answer.
pub(super) const PROBE_WAIT: Duration = Duration::from_millis(500);

impl Shared {
    /// Answers `p`'s probe number `nonce` with what this rank is doing,
    /// unless an answer to it is still being written (the prober gave up
    /// on that one).
    pub(super) fn answer_probe(&self, p: &Peer, nonce: u64) {
        if p.answering.swap(true, Ordering::AcqRel) {
            return;
        }
        let at = self.layout.staging_of(p.rank) + self.layout.state();
        // SAFETY: the staging state line is rewritten only here, and only
        // once the previous answer's write has completed (`answering`).
        unsafe { self.region(at, HEADER_BYTES).bytes_mut() }.copy_from_slice(&wire::encode_state(
            self.comm_id,
            nonce,
            self.signal.bell().state(),
        ));
        let sges = [self.sge(at, HEADER_BYTES)];
        if self.write(p, Work::State, &sges, self.layout.state(), Some(Imm::State)).is_err() {
            p.answering.store(false, Ordering::Release);
        }
    }

    /// Asks `peer` what its rank is doing; `None` when no answer comes
    /// within `wait` (the process is stopped, or gone).
    pub(super) fn probe(&self, peer: Rank, wait: Duration) -> Option<WaitState> {
        let p = self.peer(peer);
        let nonce = oxccl::transport::unshared::fresh_id(peer as u64) & u64::from(crate::imm::PROBE_BITS);
        if p.chan.gone().is_some() || self.write(p, Work::Probe, &[], 0, Some(Imm::Probe(nonce as u32))).is_err() {
            return None;
        }
        // The progress thread brings the answer in.
        p.answer.wait(nonce, wait, || p.chan.gone().is_some(), || {})
    }
}

//! The answer to a probe: what a rank's wait reported, matched to the
//! probe by its nonce.

use std::sync::Mutex;

use super::lock;
use crate::schedule::Rank;

/// A rank's wait as a probe's answer reports it ([`Doorbell::state`](crate::transport::Doorbell::state)).
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

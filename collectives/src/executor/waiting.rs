//! Waiting with a deadline, and what a failed wait becomes: a timeout
//! names the rank that holds everyone up (following who waits for whom,
//! [`Transport::activity`](crate::transport::Transport::activity)), a vanished peer names that peer, and an abort
//! reports its first cause.

use std::cell::Cell;
use std::time::Duration;

use super::{aborted, Exec};
use crate::error::{Error, Result};
use crate::schedule::Rank;
use crate::transport::wait::{wait_until, WaitError, Watch};
use crate::transport::Activity;

impl Exec<'_> {
    /// Turns a failed wait into the error every rank reports.
    pub(super) fn wait_error(&self, e: WaitError, peer: Rank, what: &'static str) -> Error {
        let (t, me) = (self.t, self.rank);
        match e {
            WaitError::Timeout(waited) => {
                // Ranks wait on each other in chains (a ring: 3 waits for 2,
                // which waits for 1, which stopped), and all time out at about
                // the same moment: name the rank at the end of the chain.
                let (peer, what) = self.culprit(peer).unwrap_or((peer, what));
                let err = Error::Timeout { call: Some(self.label()), rank: me, peer, what, waited };
                t.abort(err.clone());
                err
            }
            WaitError::PeerGone => {
                // A peer that leaves after the group was aborted (or after it
                // saw another rank die) has sent, or is sending, that abort:
                // it may reach this rank just after the peer's link closed,
                // over another link. Give it a moment, and report the abort.
                if self.abort_arrives() {
                    return self.wait_error(WaitError::Aborted, peer, what);
                }
                let err = Error::PeerGone {
                    call: Some(self.label()),
                    rank: me,
                    peer,
                    what: format!("its process exited or its connection closed while this rank waited for a {what}"),
                };
                t.abort(err.clone());
                err
            }
            WaitError::Aborted => {
                match t.abort_cause() {
                    // A transport that lost a peer aborts the group naming it;
                    // say which call was waiting.
                    Some(Error::PeerGone { peer, what, .. }) => {
                        Error::PeerGone { call: Some(self.label()), rank: me, peer, what }
                    }
                    // Raised inside a transport, which does not know the call.
                    Some(Error::Timeout { call: None, rank, peer, what, waited }) => Error::Aborted(
                        Error::Timeout { call: Some(self.label()), rank, peer, what, waited }.to_string(),
                    ),
                    _ => aborted(t),
                }
            }
        }
    }

    /// True once the group is aborted, waiting for that at most a tenth of
    /// the deadline and 200 ms (while this rank sleeps, the transport's own
    /// threads take in what arrives).
    fn abort_arrives(&self) -> bool {
        let flag = self.t.abort_flag();
        let until = std::time::Instant::now() + (self.timeout / 10).min(Duration::from_millis(200));
        loop {
            if flag.load(std::sync::atomic::Ordering::Acquire) {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// How recently a waiting rank must have looked to count as waiting
    /// rather than stopped: half the deadline (ranks that wait look at
    /// least every 50 ms).
    pub(super) fn fresh(&self) -> Duration {
        (self.timeout / 2).max(Duration::from_millis(200))
    }

    /// Follows who waits for whom from `peer`, the rank this one timed out
    /// waiting for, to the rank that holds everyone up: the first that is
    /// not waiting and looking itself — stopped, or busy outside the call.
    /// `None` where the transport cannot tell what ranks do.
    pub(super) fn culprit(&self, peer: Rank) -> Option<(Rank, &'static str)> {
        let (t, me, seq) = (self.t, self.rank, self.seq);
        let fresh = self.fresh();
        let mut seen = vec![me];
        let mut r = peer;
        // A rank that gave up first has named one: every rank names the same.
        let named_elsewhere = || match t.abort_cause() {
            Some(Error::Timeout { rank, peer: named, .. }) if rank != me => {
                Some((named, "another rank that timed out found it holding everyone up"))
            }
            _ => None,
        };
        loop {
            if let Some(verdict) = named_elsewhere() {
                return Some(verdict);
            }
            let verdict = match t.activity(r, fresh)? {
                Activity::Waiting(next) if !seen.contains(&next) => {
                    seen.push(r);
                    r = next;
                    continue;
                }
                Activity::Waiting(_) => (r, "it is in a cycle of ranks waiting for each other"),
                Activity::Busy if t.shares_memory() && self.p2p.is_none() && t.posting(r, seq).is_none() => {
                    (r, "it never entered this call")
                }
                Activity::Busy => (r, "it was not waiting in a call: busy, or stopped outside a wait"),
                Activity::Stopped => (r, "it stopped: its wait no longer looks"),
                Activity::Unanswered => (r, "it does not answer: stopped, or its link is down"),
            };
            // Asking took time (a probe waits for its answer): meanwhile another
            // rank may have named one — and then left without answering.
            return Some(named_elsewhere().unwrap_or(verdict));
        }
    }

    pub(super) fn wait(
        &self,
        what: &'static str,
        mut ready: impl FnMut() -> std::result::Result<(), Rank>,
    ) -> Result<()> {
        // The rank waited for, once a look found it missing (the doorbell
        // shows it, and a timeout follows who waits for whom from it).
        let blocker = Cell::new(self.rank);
        let mut check = || match ready() {
            Ok(()) => true,
            Err(p) => {
                blocker.set(p);
                false
            }
        };
        // The first look before anything else is set up: usually it is all.
        if check() {
            return Ok(());
        }
        let t = self.t;
        let alive = || t.peer_alive(blocker.get());
        let peer = || blocker.get();
        let watch = Watch {
            bell: t.doorbell(self.rank),
            abort: t.abort_flag(),
            timeout: self.timeout,
            peer: &peer,
            alive: &alive,
        };
        wait_until(&watch, &mut check).map_err(|e| self.wait_error(e, blocker.get(), what))
    }
}

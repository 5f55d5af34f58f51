//! A peer's streams over their life: the thread that reads each stream
//! while the rank's own thread does not, and the ends of streams.
//!
//! **Threads.** Every stream of every peer has a thread ([`stream_thread`])
//! that sleeps in `poll(2)` until its socket has something, then pumps the
//! stream's receiver (module `receive`), unless the rank's thread is
//! pumping it itself.
//!
//! **Ends.** A stream that closes between two frames has delivered all it
//! carried; once every stream of a peer has closed, the peer is gone
//! ([`Ends`]) and a rank that waits for it learns so through
//! [`Transport::peer_alive`] — a peer that finished its last collective and
//! closed is no error for ranks that need nothing more from it. A stream
//! that breaks in the middle of a frame, a malformed frame or a broken
//! flow-control promise aborts the group instead.
//!
//! [`Transport::peer_alive`]: crate::transport::Transport::peer_alive

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::receive::{Pumped, Source};
use super::Shared;
use crate::schedule::Rank;
use crate::transport::unshared::{lock, Gone};

/// How long a stream's thread leaves the stream to the rank's thread after
/// seeing it pump (see [`stream_thread`]).
const BUSY_NAP: Duration = Duration::from_micros(50);

/// How many of a peer's streams have ended, and why the first one did.
pub(crate) struct Ends {
    /// Streams the peer sends on.
    streams: usize,
    /// Streams that have ended.
    ended: AtomicUsize,
    gone: Gone,
}

impl Ends {
    /// None of `streams` streams has ended yet.
    pub fn new(streams: usize) -> Ends {
        Ends { streams, ended: AtomicUsize::new(0), gone: Gone::default() }
    }

    /// Why the peer is gone, once every one of its streams has ended.
    #[inline]
    pub fn gone(&self) -> Option<String> {
        self.gone.get("its connection closed")
    }

    /// One stream ended between frames.
    pub fn stream_ended(&self, why: String) {
        if self.ended.fetch_add(1, Ordering::AcqRel) + 1 >= self.streams {
            self.gone.set(why);
        } else {
            self.gone.note(why);
        }
    }
}

/// The thread of stream `stream` of `peer`: waits (holding nothing) until
/// its socket has something, then pumps the stream's receiver, unless the
/// rank's thread holds it and does so itself.
///
/// While the rank's thread is pumping (it waits for this peer in a call, has
/// not gone to sleep and has a core to spin on), the stream's thread stays
/// out of its way for
/// [`BUSY_NAP`] at a time: each frame would otherwise wake it, take the core
/// from the rank's thread (ranks are usually bound to one core) and contend
/// for the receiver. Once the rank's thread stops pumping (it sleeps, or is
/// busy elsewhere), the next look pumps.
pub(crate) fn stream_thread(shared: &Shared, peer: Rank, stream: usize) {
    let pair = shared.pair(peer);
    let socket = &pair.sockets[stream];
    let mut seen = pair.pumps.load(Ordering::Relaxed);
    loop {
        socket.wait(super::POLL);
        let pumps = pair.pumps.load(Ordering::Relaxed);
        if pumps != seen && shared.bell().may_poll() && !shared.closing() {
            seen = pumps;
            std::thread::sleep(BUSY_NAP);
            continue;
        }
        let mut rx = lock(&pair.receivers[stream]);
        match rx.pump(shared, peer) {
            Pumped::Idle => {}
            Pumped::Done => return,
            Pumped::Poisoned => return rx.drain(shared),
        }
    }
}

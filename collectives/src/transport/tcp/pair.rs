//! One peer of a rank: its streams, the channel to it (a staging slot and
//! credits) and the channel from it (receive slots), and the sending side.
//!
//! **Sending.** The sender keeps one staging slot per peer, preceded by room
//! for the frame header. `try_send_slot` hands it out while the
//! peer has a free receive slot (messages sent minus credits received is
//! below [`SLOTS`]); `commit` writes header and payload to the
//! socket with one system call before it returns, so the staging slot is
//! free again at once. Message `i` goes on stream `i % streams`. Control
//! frames (abort, probe, state) go on whichever stream is free first.
//!
//! **Receive slots.** The receiver has [`SLOTS`] slots per peer; message `i`
//! lands in slot `i % SLOTS`, written by the receiver of the stream it came
//! on (module `receive`). Messages are handed out in number order, whatever
//! the order they arrived in over different streams. Releasing a message
//! frees its slot and sends a credit (the count of messages released so far)
//! on stream 0.
//!
//! Each stream's reading end is pumped by the rank's thread while it waits
//! for this peer (`Pair::pump`), otherwise by the stream's own thread;
//! those threads and the ends of streams are in module `stream`.

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use super::receive::Receiver;
use super::stream::Ends;
use super::Shared;
use crate::error::Error;
use crate::mem::{Lines, Region};
use crate::schedule::Rank;
use crate::transport::unshared::{lock, Answer, Inbox, Outbox};
use crate::transport::wire::{self, StreamCheck, WireError, HEADER_BYTES};
use crate::transport::Header;

/// Longest single wait inside a frame write.
const WRITE_SLICE: Duration = Duration::from_millis(100);

pub use crate::transport::SLOTS;

/// How long `abort` tries to get a stream to send its abort frame on before
/// it cuts the peer's streams instead.
const ABORT_LOCK_WAIT: Duration = Duration::from_millis(200);
/// Longest wait to send an abort frame.
const ABORT_SEND: Duration = Duration::from_secs(1);

/// A peer's connections and the channels to and from it.
pub(crate) struct Pair {
    pub peer: Rank,
    slot_bytes: usize,
    /// Writing ends, one frame at a time each.
    writers: Vec<Mutex<TcpStream>>,
    /// The same sockets, for shutting them down whoever writes (and for
    /// the stream threads to wait on).
    pub(super) sockets: Vec<TcpStream>,
    /// Header room and one slot, allocated on first send.
    staging: OnceLock<Lines>,
    /// Messages committed to the peer and released by it.
    out: Outbox<SLOTS>,
    /// SLOTS slots, allocated on the first message.
    slots: OnceLock<Lines>,
    /// What has arrived in them.
    pub(super) inbox: Inbox<SLOTS>,
    /// Each stream's receiving side (see [`Receiver`]).
    pub(super) receivers: Vec<Mutex<Receiver<TcpStream>>>,
    /// Times the rank's own thread pumped the streams (see
    /// [`stream_thread`](super::stream::stream_thread)).
    pub(super) pumps: AtomicU64,
    /// Which streams have ended, and why.
    pub(super) ends: Ends,
    /// The peer's answer to the last probe.
    pub answer: Answer,
}

impl Pair {
    /// `sockets`: the pair's streams in order (none for a pair that is only
    /// fed bytes by a test); `streams`: how many the peer sends on.
    pub fn new(peer: Rank, slot_bytes: usize, streams: usize, sockets: Vec<TcpStream>) -> std::io::Result<Pair> {
        let writers = sockets.iter().map(|s| s.try_clone().map(Mutex::new)).collect::<std::io::Result<_>>()?;
        let receivers = (sockets.iter().enumerate())
            .map(|(i, s)| s.try_clone().map(|s| Mutex::new(Receiver::new(s, i, streams))))
            .collect::<std::io::Result<_>>()?;
        Ok(Pair {
            peer,
            slot_bytes,
            writers,
            sockets,
            staging: OnceLock::new(),
            out: Outbox::default(),
            slots: OnceLock::new(),
            inbox: Inbox::default(),
            receivers,
            pumps: AtomicU64::new(0),
            ends: Ends::new(streams),
            answer: Answer::default(),
        })
    }

    /// Handles what has arrived on the streams no other thread is reading
    /// right now: the rank's own thread calls this while it waits for a
    /// message or a credit from this peer.
    pub fn pump(&self, shared: &Shared) {
        self.pumps.fetch_add(1, Ordering::Relaxed);
        for rx in &self.receivers {
            if let Ok(mut rx) = rx.try_lock() {
                rx.pump(shared, self.peer);
            }
        }
    }

    pub fn shutdown(&self, how: Shutdown) {
        for s in &self.sockets {
            let _ = s.shutdown(how);
        }
    }

    fn staging(&self) -> Region {
        self.staging.get_or_init(|| Lines::new(HEADER_BYTES + self.slot_bytes)).region()
    }

    fn slots(&self) -> Region {
        self.slots.get_or_init(|| Lines::new(SLOTS * self.slot_bytes)).region()
    }

    /// Receive slot `i`, the first `len` bytes of it.
    #[inline]
    pub(super) fn slot(&self, i: usize, len: usize) -> Region {
        let at = i * self.slot_bytes;
        self.slots().sub(at..at + len.min(self.slot_bytes)).expect("slot inside the slots")
    }

    /// Why the peer is gone, once every one of its streams has ended.
    pub fn gone(&self) -> Option<String> {
        self.ends.gone()
    }

    /// True when the peer has released every message sent to it, or is gone.
    pub fn drained(&self) -> bool {
        self.out.drained() || self.gone().is_some()
    }

    pub fn try_send_slot(&self) -> Option<Region> {
        self.out.has_room().then(|| self.staging().sub(HEADER_BYTES..HEADER_BYTES + self.slot_bytes).expect("slot"))
    }

    /// Sends the message in the staging slot; the error is the cause to
    /// abort with.
    /// Sends the staged message. The whole frame must leave within `timeout`
    /// (one deadline per frame, not per `send`), and the write stops early
    /// when the group is aborted (`aborted`).
    pub fn commit(
        &self,
        me: Rank,
        comm_id: u64,
        header: &Header,
        timeout: Duration,
        aborted: &AtomicBool,
    ) -> Result<(), Error> {
        assert!(self.out.has_room(), "commit without a free slot");
        assert!(header.len <= self.slot_bytes, "message of {} bytes in slots of {}", header.len, self.slot_bytes);
        if let Some(why) = self.gone() {
            return Err(self.gone_error(me, format!("{why}, before this rank could send to it")));
        }
        let index = self.out.sent();
        let frame = self.staging().sub(0..HEADER_BYTES + header.len).expect("frame inside the staging slot");
        // SAFETY: the staging slot belongs to this rank's executor, which
        // wrote the payload and does not touch the slot again until this
        // commit returns; nobody else ever reads or writes it.
        let bytes = unsafe { frame.bytes_mut() };
        bytes[..HEADER_BYTES].copy_from_slice(&wire::encode_data(comm_id, index, header));
        self.out.count_sent();
        let stream = index as usize % self.writers.len();
        let mut w = lock(&self.writers[stream]);
        let start = Instant::now();
        let mut sent = 0;
        while sent < bytes.len() {
            let stalled = start.elapsed();
            if stalled >= timeout {
                return Err(Error::Timeout {
                    call: None,
                    rank: me,
                    peer: self.peer,
                    what: "to take a message: its receive buffers stayed full",
                    waited: stalled,
                });
            }
            if aborted.load(Ordering::Acquire) {
                // The abort's cause is what gets reported.
                return Ok(());
            }
            // Short slices of waiting, so the deadline and aborts are noticed.
            let _ = w.set_write_timeout(Some((timeout - stalled).min(WRITE_SLICE)));
            match w.write(&bytes[sent..]) {
                Ok(0) => return Err(self.gone_error(me, "its connection closed while this rank sent to it".into())),
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return Err(self.gone_error(me, format!("sending to it failed: {e}"))),
            }
        }
        Ok(())
    }

    pub fn gone_error(&self, me: Rank, what: String) -> Error {
        Error::PeerGone { call: None, rank: me, peer: self.peer, what }
    }

    pub fn try_recv(&self) -> Option<(Header, Region)> {
        let (h, i) = self.inbox.try_recv()?;
        Some((h, self.slot(i, h.len)))
    }

    /// Frees the oldest message and returns the number released so far.
    pub fn release(&self) -> u64 {
        self.inbox.release()
    }

    /// Sends a credit on stream 0. A peer that closed needs no credit (it
    /// finished, or it is gone and whoever waits for it will say so); one
    /// that takes nothing for the whole timeout is the cause to abort with.
    pub fn send_credit(&self, me: Rank, comm_id: u64, released: u64) -> Result<(), Error> {
        let Some(w) = self.writers.first() else { return Ok(()) };
        let mut w = lock(w);
        match w.write_all(&wire::encode_credit(comm_id, released)) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(Error::Timeout {
                call: None,
                rank: me,
                peer: self.peer,
                what: "to take a credit: its receive buffers stayed full",
                waited: w.write_timeout().ok().flatten().unwrap_or_default(),
            }),
            _ => Ok(()),
        }
    }

    /// Sends an abort frame on whichever stream is free first; when none
    /// frees up (a send is stuck on a peer that does not read), shuts the
    /// streams for writing, which ends that send and tells the peer.
    pub fn send_abort(&self, frame: &[u8], timeout: Duration) {
        if self.gone().is_some() {
            return;
        }
        if !self.send_control(frame, ABORT_LOCK_WAIT, ABORT_SEND, timeout) {
            self.shutdown(Shutdown::Write);
        }
    }

    /// Writes a frame of its own (abort, probe, state) on whichever stream
    /// is free first, waiting at most `lock_wait` for one and `send` for
    /// the write; the stream's write timeout is `timeout` again after.
    /// False when no stream freed up.
    pub fn send_control(&self, frame: &[u8], lock_wait: Duration, send: Duration, timeout: Duration) -> bool {
        let deadline = Instant::now() + lock_wait;
        loop {
            for w in &self.writers {
                let mut s = match w.try_lock() {
                    Ok(g) => g,
                    Err(TryLockError::Poisoned(e)) => e.into_inner(),
                    Err(TryLockError::WouldBlock) => continue,
                };
                let _ = s.set_write_timeout(Some(send));
                let _ = s.write_all(frame);
                let _ = s.set_write_timeout(Some(timeout));
                return true;
            }
            if self.writers.is_empty() || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Takes a credit; true when the sender may have been waiting for it
    /// (every slot was taken), so the doorbell needs ringing.
    pub(super) fn credit(&self, check: &mut StreamCheck, released: u64) -> Result<bool, WireError> {
        check.credit(released, self.out.sent())?;
        Ok(self.out.credit(released))
    }
}

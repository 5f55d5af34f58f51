//! One peer of a rank: its connections, the channel to it (a staging slot
//! and credits) and the channel from it (receive slots), and the receiving
//! side of each connection, pumped by the rank's thread or a thread of its own.
//!
//! **Sending.** The sender keeps one staging slot per peer, preceded by room
//! for the frame header. `try_send_slot` hands it out while the
//! peer has a free receive slot (messages sent minus credits received is
//! below [`SLOTS`]); `commit` writes header and payload to the
//! socket with one system call before it returns, so the staging slot is
//! free again at once. Message `i` goes on stream `i % streams`.
//!
//! **Receiving.** The receiver has [`SLOTS`] slots per peer; message `i`
//! lands in slot `i % SLOTS`, read straight from the socket by whoever holds
//! the receiver of the stream it came on (`Receiver`: the rank's own thread
//! while it waits for the peer, else the stream's thread), which then
//! publishes its header and rings the rank's doorbell. Messages are handed out in number order, whatever the
//! order they arrived in over different streams. Releasing a message frees
//! its slot and sends a credit (the count of messages released so far) on
//! stream 0.
//!
//! **Ends.** A stream that closes between two frames has delivered all it
//! carried; once every stream of a peer has closed, the peer is gone and a
//! rank that waits for it learns so through [`Transport::peer_alive`] — a
//! peer that finished its last collective and closed is no error for ranks
//! that need nothing more from it. A stream that breaks in the middle of a
//! frame, a malformed frame or a broken flow-control promise aborts the
//! group.
//!
//! [`Transport::peer_alive`]: crate::transport::Transport::peer_alive

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use super::wire::{self, Frame, StreamCheck, WireError, HEADER_BYTES, MAX_CAUSE_BYTES};
use super::Shared;
use crate::error::Error;
use crate::mem::{Lines, Region};
use crate::schedule::Rank;

/// Longest single wait inside a frame write.
const WRITE_SLICE: Duration = Duration::from_millis(100);
use crate::transport::unshared::{lock, Answer, Inbox, Outbox};
use crate::transport::Header;

/// Receive slots per peer: messages a sender may have in flight.
pub const SLOTS: usize = 4;
const _: () = assert!(SLOTS >= crate::checker::MIN_SLOTS);

/// How long `abort` tries to get a stream to send its abort frame on before
/// it cuts the peer's streams instead.
const ABORT_LOCK_WAIT: Duration = Duration::from_millis(200);
/// Longest wait to send an abort frame.
const ABORT_SEND: Duration = Duration::from_secs(1);

/// A peer's connections and the channels to and from it.
pub(crate) struct Pair {
    pub peer: Rank,
    slot_bytes: usize,
    streams: usize,
    /// Writing ends, one frame at a time each.
    writers: Vec<Mutex<TcpStream>>,
    /// The same sockets, for shutting them down whoever writes.
    sockets: Vec<TcpStream>,
    /// Header room and one slot, allocated on first send.
    staging: OnceLock<Lines>,
    /// Messages committed to the peer and released by it.
    out: Outbox<SLOTS>,
    /// SLOTS slots, allocated on the first message.
    slots: OnceLock<Lines>,
    /// What has arrived in them.
    inbox: Inbox<SLOTS>,
    /// Each stream's receiving side (see [`Receiver`]).
    receivers: Vec<Mutex<Receiver<TcpStream>>>,
    /// Times the rank's own thread pumped the streams (see [`stream_thread`]).
    pumps: AtomicU64,
    /// Streams that have ended.
    ended: AtomicUsize,
    gone: AtomicBool,
    gone_why: Mutex<Option<String>>,
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
            streams,
            writers,
            sockets,
            staging: OnceLock::new(),
            out: Outbox::default(),
            slots: OnceLock::new(),
            inbox: Inbox::default(),
            receivers,
            pumps: AtomicU64::new(0),
            ended: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            gone_why: Mutex::new(None),
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

    fn slot(&self, i: usize, len: usize) -> Region {
        let at = i * self.slot_bytes;
        self.slots().sub(at..at + len.min(self.slot_bytes)).expect("slot inside the slots")
    }

    /// Why the peer is gone, once every one of its streams has ended.
    pub fn gone(&self) -> Option<String> {
        if !self.gone.load(Ordering::Acquire) {
            return None;
        }
        Some(lock(&self.gone_why).clone().unwrap_or_else(|| "its connection closed".into()))
    }

    fn note_why(&self, why: String) {
        let mut w = lock(&self.gone_why);
        if w.is_none() {
            *w = Some(why);
        }
    }

    /// One stream ended between frames.
    fn stream_ended(&self, why: String) {
        self.note_why(why);
        if self.ended.fetch_add(1, Ordering::AcqRel) + 1 >= self.streams {
            self.gone.store(true, Ordering::Release);
        }
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
                    call: String::new(),
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
        Error::PeerGone { call: String::new(), rank: me, peer: self.peer, what }
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
                call: String::new(),
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
    fn credit(&self, check: &mut StreamCheck, released: u64) -> Result<bool, WireError> {
        check.credit(released, self.out.sent())?;
        Ok(self.out.credit(released))
    }
}

/// Why reading stopped.
enum Stop {
    /// Nothing has arrived at a frame boundary (not an end: look again later).
    Empty,
    /// The stream closed between frames.
    Closed(String),
    /// This rank is shutting its transport down.
    Closing,
    /// The stream broke inside a frame.
    Broken(String),
}

/// How long a stream's thread leaves the stream to the rank's thread after
/// seeing it pump (see [`stream_thread`]).
const BUSY_NAP: Duration = Duration::from_micros(50);

/// Bytes read from a socket at a time when a frame's remainder is small: a
/// header and a small payload (or several small frames) take one system call.
const INPUT_BYTES: usize = 8192;

/// Where a stream's bytes come from: reads that never wait, and a wait.
pub(crate) trait Source {
    /// Reads what has arrived, without waiting (`WouldBlock`: nothing yet;
    /// `Ok(0)`: the stream ended).
    fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Waits until something may be read (or the stream ended), at most `timeout`.
    fn wait(&self, timeout: Duration);
}

impl Source for TcpStream {
    fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: recv writes at most buf.len() bytes into buf, which is
        // valid for writes; the descriptor stays open while `self` lives.
        // MSG_DONTWAIT makes this one call non-blocking without changing the
        // socket, whose writers keep blocking with their timeouts.
        let n = unsafe { libc::recv(self.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => Err(std::io::Error::last_os_error()),
        }
    }

    fn wait(&self, timeout: Duration) {
        let mut fd = libc::pollfd { fd: self.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut fd, 1, ms) };
    }
}

/// A stream's reading end with a small buffer in front; reads of
/// `INPUT_BYTES` or more go straight into their destination.
struct Input<R> {
    r: R,
    buf: Box<[u8]>,
    at: usize,
    end: usize,
}

impl<R: Source> Input<R> {
    /// Fills `dst`. `between`: nothing of the frame has been read yet, so
    /// nothing there yet is [`Stop::Empty`] and an end is no broken frame;
    /// inside a frame it waits for the rest (up to the timeout of a stall).
    fn fill(&mut self, shared: &Shared, dst: &mut [u8], between: bool) -> Result<(), Stop> {
        let mut got = 0;
        let mut stalled: Option<Instant> = None;
        while got < dst.len() {
            if self.at < self.end {
                let n = (self.end - self.at).min(dst.len() - got);
                dst[got..got + n].copy_from_slice(&self.buf[self.at..self.at + n]);
                self.at += n;
                got += n;
                continue;
            }
            let at_start = between && got == 0;
            let direct = dst.len() - got >= self.buf.len();
            let read = if direct { self.r.read_now(&mut dst[got..]) } else { self.r.read_now(&mut self.buf) };
            match read {
                Ok(0) if shared.closing() => return Err(Stop::Closing),
                Ok(0) if at_start => return Err(Stop::Closed("its connection closed".into())),
                Ok(0) => {
                    return Err(Stop::Broken(format!(
                        "its connection closed in the middle of a frame ({got} of {} bytes read)",
                        dst.len()
                    )))
                }
                Ok(n) if direct => {
                    got += n;
                    stalled = None;
                }
                Ok(n) => {
                    (self.at, self.end) = (0, n);
                    stalled = None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if shared.closing() {
                        return Err(Stop::Closing);
                    }
                    if at_start {
                        return Err(Stop::Empty);
                    }
                    let since = *stalled.get_or_insert_with(Instant::now);
                    if since.elapsed() >= shared.timeout {
                        return Err(Stop::Broken(format!(
                            "it sent nothing for {:?} in the middle of a frame",
                            since.elapsed()
                        )));
                    }
                    self.r.wait(super::POLL.min(shared.timeout));
                }
                Err(_) if shared.closing() => return Err(Stop::Closing),
                Err(e) if at_start => return Err(Stop::Closed(format!("its connection failed: {e}"))),
                Err(e) => return Err(Stop::Broken(format!("its connection failed in the middle of a frame: {e}"))),
            }
        }
        Ok(())
    }

    /// Reads and drops `len` bytes.
    fn skip(&mut self, shared: &Shared, mut len: usize) -> Result<(), Stop> {
        let mut buf = [0u8; 4096];
        while len > 0 {
            let n = len.min(buf.len());
            self.fill(shared, &mut buf[..n], false)?;
            len -= n;
        }
        Ok(())
    }

    /// Reads and drops everything until the stream ends, so a peer that
    /// still writes to a stream this rank can no longer parse is never stuck.
    fn drain(&mut self, shared: &Shared) {
        let mut buf = [0u8; 4096];
        loop {
            match self.fill(shared, &mut buf, true) {
                Ok(()) => {}
                Err(Stop::Empty) => self.r.wait(super::POLL),
                Err(_) => return,
            }
        }
    }
}

/// What [`Receiver::pump`] left the stream in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// Every whole frame that had arrived was handled; more may come.
    Idle,
    /// The stream is done (ended, broken, or shut down); nothing more is read.
    Done,
    /// A malformed frame aborted the group; the stream's thread drains it.
    Poisoned,
}

/// A stream's receiving side: its source, what has been read ahead of the
/// frames handled, and the stream's checks. It is pumped by the stream's own
/// thread when data arrives, and by the rank's thread itself while it waits
/// for a message (so a message does not have to wait for a thread to wake
/// up); whoever holds it handles whole frames.
pub(crate) struct Receiver<R> {
    input: Input<R>,
    check: StreamCheck,
    stream: usize,
    state: Pumped,
}

impl<R: Source> Receiver<R> {
    pub fn new(r: R, stream: usize, streams: usize) -> Receiver<R> {
        Receiver {
            input: Input { r, buf: vec![0u8; INPUT_BYTES].into_boxed_slice(), at: 0, end: 0 },
            check: StreamCheck::new(stream, streams),
            stream,
            state: Pumped::Idle,
        }
    }

    /// Handles every whole frame that has arrived from `peer` (waiting only
    /// for the rest of a frame that has begun). Never panics on what it
    /// reads: a malformed frame aborts the group with [`Error::Protocol`]
    /// naming the peer.
    pub fn pump(&mut self, shared: &Shared, peer: Rank) -> Pumped {
        if self.state != Pumped::Idle {
            return self.state;
        }
        let stop = loop {
            match self.frame(shared, peer) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let what = format!("rank {} received a bad frame on stream {}: {e}", shared.rank, self.stream);
                    shared.abort(Error::Protocol { peer, what });
                    self.state = Pumped::Poisoned;
                    shared.bell().ring();
                    return self.state;
                }
                Err(stop) => break stop,
            }
        };
        let pair = shared.pair(peer);
        match stop {
            Stop::Empty => return Pumped::Idle,
            Stop::Closing => {}
            Stop::Closed(why) => pair.stream_ended(why),
            // Aborting (rather than only marking the peer gone) makes waiting
            // ranks report why: the group cannot go on without that frame.
            Stop::Broken(why) => shared.abort(pair.gone_error(shared.rank, why)),
        }
        self.state = Pumped::Done;
        shared.bell().ring();
        self.state
    }

    /// Reads and handles one frame: `Err` when none could be (nothing there,
    /// or the stream stopped), `Ok(Err)` for a malformed one.
    fn frame(&mut self, shared: &Shared, peer: Rank) -> Result<Result<(), WireError>, Stop> {
        let pair = shared.pair(peer);
        let mut head = [0u8; HEADER_BYTES];
        self.input.fill(shared, &mut head, true)?;
        match wire::decode_header(&head, &shared.limits()) {
            Err(e) => Ok(Err(e)),
            Ok(Frame::Data { header, .. }) if shared.aborted() => self.input.skip(shared, header.len).map(Ok),
            Ok(Frame::Data { index, header }) => {
                match self.check.data(index, &header).and_then(|()| pair.inbox.admit(index)) {
                    Ok(i) => {
                        let slot = pair.slot(i, header.len);
                        // SAFETY: slot i is free (admit: not filled, and within
                        // the credits the sender was given), so the executor does
                        // not read it, and only the holder of this stream's
                        // receiver writes message `index`.
                        let into = unsafe { slot.bytes_mut() };
                        self.input.fill(shared, into, false)?;
                        pair.inbox.publish(i, index, header);
                        shared.bell().ring();
                        Ok(Ok(()))
                    }
                    Err(e) => Ok(Err(e)),
                }
            }
            Ok(Frame::Credit { released }) => Ok(pair.credit(&mut self.check, released).map(|unblocked| {
                if unblocked {
                    shared.bell().ring();
                }
            })),
            Ok(Frame::Abort { len }) => {
                let mut buf = [0u8; MAX_CAUSE_BYTES];
                let len = len.min(MAX_CAUSE_BYTES);
                self.input.fill(shared, &mut buf[..len], false)?;
                Ok(wire::decode_cause(&buf[..len]).map(|cause| shared.abort_from_peer(cause)))
            }
            Ok(Frame::Probe { nonce }) => {
                shared.answer_probe(pair, nonce);
                Ok(Ok(()))
            }
            Ok(Frame::State { nonce, state }) => {
                pair.answer.put(nonce, state);
                shared.bell().ring();
                Ok(Ok(()))
            }
            Ok(Frame::Hello(_)) => Ok(Err(WireError::Field { kind: "hello", what: "after the handshake".into() })),
        }
    }

    /// Drops everything the stream still carries, until it ends (after a
    /// malformed frame).
    fn drain(&mut self, shared: &Shared) {
        self.input.drain(shared);
        self.state = Pumped::Done;
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

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use proptest::prelude::*;

    use super::*;
    use crate::transport::tcp::TcpConfig;
    use crate::transport::Kind;

    const COMM: u64 = 0xABCD;

    /// A message as the executor saw it.
    type Message = (Header, Vec<u8>);
    const SLOT: usize = 256;

    /// Rank 0 of 2 whose pair with rank 1 has no sockets: its receive loop
    /// is fed from memory.
    fn shared() -> Shared {
        let config = TcpConfig {
            addr: None,
            ifname: None,
            all_local: true,
            streams: 1,
            slot_bytes: SLOT,
            timeout: Duration::from_secs(5),
        };
        let pairs = vec![None, Some(Pair::new(1, SLOT, 1, Vec::new()).unwrap())];
        Shared::new(0, 2, COMM, &config, pairs, 1, None)
    }

    /// Bytes as a stream, handed out at most `step` at a time, with a
    /// stand-in executor that takes every message that has arrived before
    /// each read (as the real one would, given time). Like a real sender,
    /// the feed hands out frame `k + SLOTS` only once message `k` was
    /// released: `ends[k]` is where frame `k` ends.
    struct Feed<'a> {
        shared: &'a Shared,
        bytes: &'a [u8],
        ends: Vec<usize>,
        at: Cell<usize>,
        step: usize,
        got: RefCell<Vec<Message>>,
    }

    impl Feed<'_> {
        fn deliver(&self) {
            let pair = self.shared.pair(1);
            while let Some((h, data)) = pair.try_recv() {
                // SAFETY: the message is held until the release below, and
                // the receive loop does not write a slot that is filled.
                self.got.borrow_mut().push((h, unsafe { data.bytes() }.to_vec()));
                pair.release();
            }
        }
    }

    impl std::io::Read for &Feed<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            Feed::deliver(self);
            let released = self.got.borrow().len();
            let end = self.ends.get(released + SLOTS - 1).copied().unwrap_or(self.bytes.len());
            let at = self.at.get();
            let n = buf.len().min(self.step).min(end - at);
            assert!(n > 0 || at == self.bytes.len(), "the receive loop wants bytes a sender could not send yet");
            buf[..n].copy_from_slice(&self.bytes[at..at + n]);
            self.at.set(at + n);
            Ok(n)
        }
    }

    /// Receives everything stream `stream` of `peer` carries through `r`, until
    /// it ends: the loop of a stream thread, over bytes from a test.
    fn receive<R: Source>(shared: &Shared, peer: Rank, stream: usize, r: R) {
        let mut rx = Receiver::new(r, stream, shared.streams);
        loop {
            match rx.pump(shared, peer) {
                Pumped::Idle => rx.input.r.wait(crate::transport::tcp::POLL),
                Pumped::Done => return,
                Pumped::Poisoned => return rx.drain(shared),
            }
        }
    }

    impl Source for &[u8] {
        fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::io::Read::read(self, buf)
        }
        fn wait(&self, _timeout: Duration) {}
    }

    impl Source for &Feed<'_> {
        fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::io::Read::read(self, buf)
        }
        fn wait(&self, _timeout: Duration) {}
    }

    /// Runs the receive loop of stream 0 over `bytes` (frames ending at
    /// `ends`, then anything): what the executor got.
    fn run(shared: &Shared, bytes: &[u8], ends: &[usize], step: usize) -> Vec<Message> {
        let feed = Feed {
            shared,
            bytes,
            ends: ends.to_vec(),
            at: Cell::new(0),
            step: step.max(1),
            got: RefCell::new(Vec::new()),
        };
        receive(shared, 1, 0, &feed);
        feed.deliver();
        feed.got.into_inner()
    }

    /// Valid data frames with payloads of the given lengths; sequence
    /// numbers grow by `bumps`.
    fn frames(lens: &[usize], bumps: &[bool]) -> (Vec<u8>, Vec<usize>, Vec<Message>) {
        let (mut bytes, mut ends, mut want, mut seq) = (Vec::new(), Vec::new(), Vec::new(), 1);
        for (i, &len) in lens.iter().enumerate() {
            seq += u64::from(bumps.get(i).copied().unwrap_or(false));
            let h = Header { kind: Kind::PointToPoint, seq, len, total: 4 * SLOT, args: None };
            let payload: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            bytes.extend_from_slice(&wire::encode_data(COMM, i as u64, &h));
            bytes.extend_from_slice(&payload);
            ends.push(bytes.len());
            want.push((h, payload));
        }
        (bytes, ends, want)
    }

    fn cause(s: &Shared) -> Option<Error> {
        s.signal.cause()
    }

    #[test]
    fn a_clean_stream_delivers_everything_in_order() {
        let (bytes, ends, want) = frames(&[0, 1, 256, 17, 64, 200, 3, 9, 250, 1], &[true, false, true]);
        for step in [1, 7, 64, 65, 1000, 100_000] {
            let s = shared();
            assert_eq!(run(&s, &bytes, &ends, step), want, "step {step}");
            assert_eq!(cause(&s), None);
            assert!(s.pair(1).gone().is_some(), "the stream ended, so the peer is gone");
        }
    }

    #[test]
    fn a_sender_that_ignores_flow_control_is_refused() {
        // Five messages with nobody releasing: the fifth overruns the slots.
        let (bytes, _, _) = frames(&[8; 5], &[]);
        let s = shared();
        receive(&s, 1, 0, &bytes[..]);
        match cause(&s) {
            Some(Error::Protocol { peer: 1, what }) => assert!(what.contains("flow control"), "{what}"),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// Any bytes: no panic, and the stream either ends cleanly or aborts
        /// the group with a protocol error or a lost peer naming rank 1.
        #[test]
        fn any_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..600), step in 1usize..100) {
            let s = shared();
            let got = run(&s, &bytes, &[], step);
            prop_assert!(got.iter().all(|(h, d)| h.len == d.len() && d.len() <= SLOT));
            match cause(&s) {
                None => prop_assert!(s.pair(1).gone().is_some()),
                Some(Error::Protocol { peer: 1, .. }) | Some(Error::PeerGone { peer: 1, .. }) => {}
                Some(other) => prop_assert!(false, "{:?}", other),
            }
        }

        /// Valid frames, then damage: everything before the damage arrives
        /// intact and in order, then the group aborts naming rank 1.
        #[test]
        fn damage_after_valid_frames(lens in proptest::collection::vec(0usize..=SLOT, 0..8),
                                     bumps in proptest::collection::vec(any::<bool>(), 8),
                                     damage in 0usize..6, at in any::<usize>(), step in 1usize..300) {
            let (mut bytes, ends, want) = frames(&lens, &bumps);
            let n = lens.len() as u64;
            let next = Header { kind: Kind::PointToPoint, seq: 100, len: 8, total: 0, args: None };
            let mut bad = wire::encode_data(COMM, n, &next).to_vec();
            bad.extend_from_slice(&[7; 8]);
            let expect_protocol = match damage {
                0 => { bad[at % 4] ^= 0x40; true }                               // wrong magic
                1 => { bad[8 + at % 8] ^= 1; true }                               // wrong communicator
                2 => { bad[56..60].copy_from_slice(&(SLOT as u32 + 1 + (at % 1000) as u32).to_le_bytes()); true } // absurd length
                3 => { bad[16..24].copy_from_slice(&(n + 1 + (at % 5) as u64).to_le_bytes()); true } // wrong message number
                4 => { bad[24..32].copy_from_slice(&0u64.to_le_bytes()); true }  // sequence number went back
                _ => { bad.truncate(1 + at % (bad.len() - 1)); false }            // cut short
            };
            bytes.extend_from_slice(&bad);
            let s = shared();
            let got = run(&s, &bytes, &ends, step);
            prop_assert_eq!(&got, &want);
            match cause(&s) {
                Some(Error::Protocol { peer: 1, .. }) => prop_assert!(expect_protocol),
                Some(Error::PeerGone { peer: 1, what, .. }) => {
                    prop_assert!(!expect_protocol);
                    prop_assert!(what.contains("middle of a frame"), "{}", what);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

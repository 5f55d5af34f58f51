//! The receiving side of a stream: reads frames from the socket and
//! handles each as it comes.
//!
//! Message `i` from a peer lands in the peer's receive slot `i % SLOTS`,
//! read straight from the socket by whoever holds the receiver of the stream
//! it came on ([`Receiver`]: the rank's own thread while it waits for the
//! peer, else the stream's thread), which then publishes its header and
//! rings the rank's doorbell. Small reads go through a buffer ([`Input`]),
//! so a header and a small payload (or several small frames) take one
//! system call; the rest of a large payload is read straight into its slot.
//! Credits, abort causes, probes and the answers to probes are handled as
//! they arrive.
//!
//! A stream that closes between two frames has ended (module `stream`). A
//! stream that breaks in the middle of a frame, a malformed frame or a
//! broken flow-control promise aborts the group; a malformed frame poisons
//! the receiver, whose stream is then only drained.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::Shared;
use crate::error::Error;
use crate::schedule::Rank;
use crate::transport::wire::{self, Frame, StreamCheck, WireError, HEADER_BYTES, MAX_CAUSE_BYTES};

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
            Stop::Closed(why) => pair.ends.stream_ended(why),
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
    pub fn drain(&mut self, shared: &Shared) {
        self.input.drain(shared);
        self.state = Pumped::Done;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use proptest::prelude::*;

    use super::*;
    use crate::transport::tcp::pair::{Pair, SLOTS};
    use crate::transport::tcp::TcpConfig;
    use crate::transport::{Header, Kind};

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

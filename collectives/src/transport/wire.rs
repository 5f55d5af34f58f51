//! The wire format: fixed 64-byte frame headers, how they are encoded, and
//! how every one is checked on receipt.
//!
//! Every frame starts with the same 64 bytes (little-endian), then `len`
//! payload bytes:
//!
//! | bytes  | field      | hello          | data                         | credit            | abort        | probe | state |
//! |--------|------------|----------------|------------------------------|-------------------|--------------|-------|-------|
//! | 0..4   | magic      | `OXCL`         | `OXCL`                       | `OXCL`            | `OXCL`       | `OXCL` | `OXCL` |
//! | 4..6   | version    | [`VERSION`]    | [`VERSION`]                  | [`VERSION`]       | [`VERSION`]  | [`VERSION`] | [`VERSION`] |
//! | 6      | kind       | 1              | 2                            | 3                 | 4            | 5     | 6     |
//! | 7      | flags      | 0              | bit 0 point-to-point, bit 1 arguments present | 0 | 0       | 0     | 0     |
//! | 8..16  | comm id    | communicator   | communicator                 | communicator      | communicator | communicator | communicator |
//! | 16..24 | a          | rank           | message number on the channel | messages released | 0           | probe number | probe number |
//! | 24..32 | b          | world          | sequence number              | 0                 | 0            | 0     | rank waited for (`u64::MAX`: none) |
//! | 32..40 | c          | slot bytes     | total (point to point)       | 0                 | 0            | 0     | µs since the wait last looked |
//! | 40..48 | d          | streams        | count                        | 0                 | 0            | 0     | 0     |
//! | 48..56 | e          | stream         | root (`u64::MAX`: none)      | 0                 | 0            | 0     | 0     |
//! | 56..60 | len        | 0              | payload bytes (≤ slot bytes) | 0                 | cause bytes (≤ [`MAX_CAUSE_BYTES`]) | 0 | 0 |
//! | 60..64 | f          | slots          | collective, dtype, op (`0xff`: none), algorithm indices | 0 | 0 | 0 | 0 |
//!
//! Data frames carry the executor's [`Header`]: the arguments of a
//! collective go as indices into [`Collective::ALL`], [`DType::ALL`],
//! [`ReduceOp::ALL`] and [`Algorithm::ALL`] plus count and root. An abort
//! frame's payload is its cause ([`encode_cause`]). A probe asks the peer
//! what its rank is doing; the state frame answers it (who the rank waits
//! for, and how long ago its wait last looked), so that a rank that timed
//! out can follow who waits for whom to the rank that stopped.
//!
//! [`decode_header`] and [`decode`] are pure and total: any bytes give a
//! frame or a [`WireError`], never a panic, and nothing is allocated from a
//! length read off the wire. [`StreamCheck`] adds what one frame cannot say
//! alone: message numbers must follow each other on a stream, sequence
//! numbers may not go backwards, and credits may only grow.

use std::time::Duration;

use crate::algo::Algorithm;
use crate::dtype::{DType, ReduceOp};
use crate::error::Error;
use crate::schedule::{Collective, Rank};
use crate::transport::{Args, Header, Kind};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"OXCL";
/// Bumped whenever the layout changes.
pub const VERSION: u16 = 1;
/// Bytes of every frame header.
pub const HEADER_BYTES: usize = 64;
/// Longest abort cause on the wire; longer causes are cut.
pub const MAX_CAUSE_BYTES: usize = 2048;

const HELLO: u8 = 1;
const DATA: u8 = 2;
const CREDIT: u8 = 3;
const ABORT: u8 = 4;
const PROBE: u8 = 5;
const STATE: u8 = 6;

const FLAG_P2P: u8 = 1;
const FLAG_ARGS: u8 = 2;

/// What a connection says about itself when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub rank: u64,
    pub world: u64,
    pub slot_bytes: u64,
    pub streams: u64,
    /// Which of the pair's streams this connection is.
    pub stream: u64,
    /// Receive slots per pair.
    pub slots: u32,
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    /// Message number `index` on its (sender, receiver) channel; `header.len`
    /// payload bytes follow.
    Data {
        index: u64,
        header: Header,
    },
    /// The receiver has released this many messages of the channel so far.
    Credit {
        released: u64,
    },
    /// The sender's group aborted; `len` bytes of cause follow.
    Abort {
        len: usize,
    },
    /// What is your rank doing? Answered with a [`Frame::State`] of the same number.
    Probe {
        nonce: u64,
    },
    /// The answer to probe `nonce`: the rank waited for and how long ago
    /// the wait last looked (µs on the wire); `None`: it is not waiting.
    State {
        nonce: u64,
        state: Option<(Rank, Duration)>,
    },
}

impl Frame {
    /// Payload bytes that follow the header.
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Data { header, .. } => header.len,
            Frame::Abort { len } => *len,
            Frame::Hello(_) | Frame::Credit { .. } | Frame::Probe { .. } | Frame::State { .. } => 0,
        }
    }
}

/// What the receiver knows before reading a frame.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub comm_id: u64,
    /// Largest data payload: the slot size.
    pub max_payload: usize,
    /// Ranks in the group (roots must be below it).
    pub world: usize,
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated frame: {got} of {need} bytes")]
    Truncated { need: usize, got: usize },
    #[error("bad magic {0:02x?} (not an oxccl frame)")]
    Magic([u8; 4]),
    #[error("wire version {got}, this build speaks {VERSION}")]
    Version { got: u16 },
    #[error("communicator id {got:#x}, expected {want:#x}")]
    Comm { got: u64, want: u64 },
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("{kind} frame of {len} bytes, at most {max} allowed")]
    Length { kind: &'static str, len: u64, max: usize },
    #[error("bad {kind} frame: {what}")]
    Field { kind: &'static str, what: String },
    #[error("out of sequence: {0}")]
    Sequence(String),
}

fn u64_at(b: &[u8; HEADER_BYTES], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8; HEADER_BYTES], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn put64(b: &mut [u8; HEADER_BYTES], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8; HEADER_BYTES], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn common(kind: u8, flags: u8, comm_id: u64) -> [u8; HEADER_BYTES] {
    let mut b = [0u8; HEADER_BYTES];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[6] = kind;
    b[7] = flags;
    put64(&mut b, 8, comm_id);
    b
}

fn index_of<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter().position(|x| x == v).expect("every value is listed in ALL") as u8
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("frame payloads are below 4 GiB")
}

pub fn encode_hello(comm_id: u64, h: &Hello) -> [u8; HEADER_BYTES] {
    let mut b = common(HELLO, 0, comm_id);
    put64(&mut b, 16, h.rank);
    put64(&mut b, 24, h.world);
    put64(&mut b, 32, h.slot_bytes);
    put64(&mut b, 40, h.streams);
    put64(&mut b, 48, h.stream);
    put32(&mut b, 60, h.slots);
    b
}

/// The header of data message number `index`, whose payload is `header.len` bytes.
pub fn encode_data(comm_id: u64, index: u64, header: &Header) -> [u8; HEADER_BYTES] {
    let flags = match header.kind {
        Kind::Collective => 0,
        Kind::PointToPoint => FLAG_P2P,
    } | if header.args.is_some() { FLAG_ARGS } else { 0 };
    let mut b = common(DATA, flags, comm_id);
    put64(&mut b, 16, index);
    put64(&mut b, 24, header.seq);
    put64(&mut b, 32, header.total as u64);
    put32(&mut b, 56, len32(header.len));
    if let Some(a) = &header.args {
        put64(&mut b, 40, a.count as u64);
        put64(&mut b, 48, a.root.map_or(u64::MAX, |r| r as u64));
        b[60] = index_of(&Collective::ALL, &a.collective);
        b[61] = index_of(&DType::ALL, &a.dtype);
        b[62] = a.op.map_or(0xff, |o| index_of(&ReduceOp::ALL, &o));
        b[63] = index_of(&Algorithm::ALL, &a.algorithm);
    }
    b
}

pub fn encode_credit(comm_id: u64, released: u64) -> [u8; HEADER_BYTES] {
    let mut b = common(CREDIT, 0, comm_id);
    put64(&mut b, 16, released);
    b
}

pub fn encode_probe(comm_id: u64, nonce: u64) -> [u8; HEADER_BYTES] {
    let mut b = common(PROBE, 0, comm_id);
    put64(&mut b, 16, nonce);
    b
}

/// The answer to probe `nonce`: `state` as [`Doorbell::state`] gives it.
///
/// [`Doorbell::state`]: crate::transport::Doorbell::state
pub fn encode_state(comm_id: u64, nonce: u64, state: Option<(Rank, Duration)>) -> [u8; HEADER_BYTES] {
    let mut b = common(STATE, 0, comm_id);
    put64(&mut b, 16, nonce);
    let (waits_for, age) = state.map_or((u64::MAX, Duration::ZERO), |(r, age)| (r as u64, age));
    put64(&mut b, 24, waits_for);
    put64(&mut b, 32, age.as_micros().min(u128::from(u64::MAX)) as u64);
    b
}

/// A whole abort frame (header and cause).
pub fn encode_abort(comm_id: u64, cause: &Error) -> Vec<u8> {
    let payload = encode_cause(cause);
    let mut b = common(ABORT, 0, comm_id);
    put32(&mut b, 56, len32(payload.len()));
    let mut frame = b.to_vec();
    frame.extend_from_slice(&payload);
    frame
}

fn field(kind: &'static str, what: impl Into<String>) -> WireError {
    WireError::Field { kind, what: what.into() }
}

/// Fields `ranges` of `b` must be zero in a frame of `kind`.
fn zeros(b: &[u8; HEADER_BYTES], kind: &'static str, ranges: &[(usize, usize, &str)]) -> Result<(), WireError> {
    for &(from, to, name) in ranges {
        if b[from..to].iter().any(|&x| x != 0) {
            return Err(field(kind, format!("{name} must be zero")));
        }
    }
    Ok(())
}

/// Decodes and checks a frame header.
pub fn decode_header(b: &[u8; HEADER_BYTES], limits: &Limits) -> Result<Frame, WireError> {
    if b[0..4] != MAGIC {
        return Err(WireError::Magic([b[0], b[1], b[2], b[3]]));
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if version != VERSION {
        return Err(WireError::Version { got: version });
    }
    let comm = u64_at(b, 8);
    if comm != limits.comm_id {
        return Err(WireError::Comm { got: comm, want: limits.comm_id });
    }
    let (kind, flags) = (b[6], b[7]);
    let len = u32_at(b, 56);
    let name = match kind {
        HELLO => "hello",
        DATA => "data",
        CREDIT => "credit",
        ABORT => "abort",
        PROBE => "probe",
        STATE => "state",
        k => return Err(WireError::Kind(k)),
    };
    if kind != DATA && flags != 0 {
        return Err(field(name, format!("flags {flags:#x}")));
    }
    let max = match kind {
        DATA => limits.max_payload,
        ABORT => MAX_CAUSE_BYTES,
        _ => 0,
    };
    if len as usize > max {
        return Err(WireError::Length { kind: name, len: len.into(), max });
    }
    match kind {
        HELLO => {
            let h = Hello {
                rank: u64_at(b, 16),
                world: u64_at(b, 24),
                slot_bytes: u64_at(b, 32),
                streams: u64_at(b, 40),
                stream: u64_at(b, 48),
                slots: u32_at(b, 60),
            };
            if h.world == 0 || h.rank >= h.world {
                return Err(field(name, format!("rank {} in a world of {}", h.rank, h.world)));
            }
            if h.streams == 0 || h.stream >= h.streams {
                return Err(field(name, format!("stream {} of {}", h.stream, h.streams)));
            }
            if h.slots == 0 || h.slot_bytes == 0 {
                return Err(field(name, "no slots"));
            }
            Ok(Frame::Hello(h))
        }
        DATA => {
            if flags & !(FLAG_P2P | FLAG_ARGS) != 0 {
                return Err(field(name, format!("flags {flags:#x}")));
            }
            let kind = if flags & FLAG_P2P != 0 { Kind::PointToPoint } else { Kind::Collective };
            let total = usize::try_from(u64_at(b, 32)).map_err(|_| field(name, "total does not fit"))?;
            let args = if flags & FLAG_ARGS != 0 {
                Some(decode_args(b, limits)?)
            } else {
                zeros(b, name, &[(40, 48, "count without arguments"), (48, 56, "root without arguments")])?;
                zeros(b, name, &[(60, 64, "argument indices without arguments")])?;
                None
            };
            let header = Header { kind, seq: u64_at(b, 24), len: len as usize, total, args };
            Ok(Frame::Data { index: u64_at(b, 16), header })
        }
        CREDIT => {
            zeros(b, name, &[(24, 56, "fields b..e"), (60, 64, "field f")])?;
            Ok(Frame::Credit { released: u64_at(b, 16) })
        }
        PROBE => {
            zeros(b, name, &[(24, 60, "fields b..e and len"), (60, 64, "field f")])?;
            Ok(Frame::Probe { nonce: u64_at(b, 16) })
        }
        STATE => {
            zeros(b, name, &[(40, 60, "fields d, e and len"), (60, 64, "field f")])?;
            let age = Duration::from_micros(u64_at(b, 32));
            let state = match u64_at(b, 24) {
                u64::MAX => None,
                r if r < limits.world as u64 => Some((r as Rank, age)),
                r => return Err(field(name, format!("rank {r} in a world of {}", limits.world))),
            };
            Ok(Frame::State { nonce: u64_at(b, 16), state })
        }
        _ => {
            zeros(b, name, &[(16, 56, "fields a..e"), (60, 64, "field f")])?;
            Ok(Frame::Abort { len: len as usize })
        }
    }
}

fn decode_args(b: &[u8; HEADER_BYTES], limits: &Limits) -> Result<Args, WireError> {
    let bad = |what: String| field("data", what);
    let collective = *Collective::ALL.get(b[60] as usize).ok_or_else(|| bad(format!("collective index {}", b[60])))?;
    let dtype = *DType::ALL.get(b[61] as usize).ok_or_else(|| bad(format!("dtype index {}", b[61])))?;
    let op = match b[62] {
        0xff => None,
        i => Some(*ReduceOp::ALL.get(i as usize).ok_or_else(|| bad(format!("reduction op index {i}")))?),
    };
    let algorithm = *Algorithm::ALL.get(b[63] as usize).ok_or_else(|| bad(format!("algorithm index {}", b[63])))?;
    let count = usize::try_from(u64_at(b, 40)).map_err(|_| bad("count does not fit".into()))?;
    let root = match u64_at(b, 48) {
        u64::MAX => None,
        r if r < limits.world as u64 => Some(r as Rank),
        r => return Err(bad(format!("root {r} in a world of {}", limits.world))),
    };
    Ok(Args { collective, dtype, op, count, root, algorithm })
}

/// Decodes one whole frame from the front of `bytes`: its header and its
/// payload (bytes after the payload are left alone).
pub fn decode<'a>(bytes: &'a [u8], limits: &Limits) -> Result<(Frame, &'a [u8]), WireError> {
    let Some(head) = bytes.first_chunk::<HEADER_BYTES>() else {
        return Err(WireError::Truncated { need: HEADER_BYTES, got: bytes.len() });
    };
    let frame = decode_header(head, limits)?;
    let need = HEADER_BYTES + frame.payload_len();
    let payload = bytes.get(HEADER_BYTES..need).ok_or(WireError::Truncated { need, got: bytes.len() })?;
    Ok((frame, payload))
}

const CAUSE_ABORTED: u8 = 0;
const CAUSE_PEER_GONE: u8 = 1;
const CAUSE_TIMEOUT: u8 = 2;

/// Longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An abort cause as bytes (at most [`MAX_CAUSE_BYTES`]). A lost peer keeps
/// its structure, so the receiver can name it; any other cause travels as
/// its message and arrives as [`Error::Aborted`], as on other transports.
pub fn encode_cause(cause: &Error) -> Vec<u8> {
    let mut out = Vec::new();
    match cause {
        Error::PeerGone { call, rank, peer, what } => {
            out.push(CAUSE_PEER_GONE);
            out.extend_from_slice(&(*rank as u64).to_le_bytes());
            out.extend_from_slice(&(*peer as u64).to_le_bytes());
            // No call: an empty name.
            let call = cut(call.as_deref().unwrap_or(""), 256);
            out.extend_from_slice(&(call.len() as u16).to_le_bytes());
            out.extend_from_slice(call.as_bytes());
            out.extend_from_slice(cut(what, MAX_CAUSE_BYTES - out.len()).as_bytes());
        }
        // Kept structured: a rank that times out later names the same rank.
        Error::Timeout { call, rank, peer, what: _, waited } => {
            out.push(CAUSE_TIMEOUT);
            out.extend_from_slice(&(*rank as u64).to_le_bytes());
            out.extend_from_slice(&(*peer as u64).to_le_bytes());
            out.extend_from_slice(&(waited.as_nanos().min(u128::from(u64::MAX)) as u64).to_le_bytes());
            out.extend_from_slice(cut(call.as_deref().unwrap_or(""), 256).as_bytes());
        }
        Error::Aborted(why) => {
            out.push(CAUSE_ABORTED);
            out.extend_from_slice(cut(why, MAX_CAUSE_BYTES - 1).as_bytes());
        }
        other => {
            out.push(CAUSE_ABORTED);
            out.extend_from_slice(cut(&other.to_string(), MAX_CAUSE_BYTES - 1).as_bytes());
        }
    }
    out
}

/// The inverse of [`encode_cause`].
pub fn decode_cause(b: &[u8]) -> Result<Error, WireError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let call = |b: &[u8]| (!b.is_empty()).then(|| text(b));
    match b.split_first() {
        Some((&CAUSE_ABORTED, why)) => Ok(Error::Aborted(text(why))),
        Some((&CAUSE_PEER_GONE, rest)) => {
            let bad = || field("abort", "truncated cause");
            let (rank, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            let (peer, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            let (n, rest) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
            let n = u16::from_le_bytes(*n) as usize;
            let (name, what) = (rest.get(..n).ok_or_else(bad)?, rest.get(n..).ok_or_else(bad)?);
            let rank = usize::try_from(u64::from_le_bytes(*rank)).map_err(|_| bad())?;
            let peer = usize::try_from(u64::from_le_bytes(*peer)).map_err(|_| bad())?;
            Ok(Error::PeerGone { call: call(name), rank, peer, what: text(what) })
        }
        Some((&CAUSE_TIMEOUT, rest)) => {
            let bad = || field("abort", "truncated cause");
            let (rank, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            let (peer, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            let (nanos, name) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            let rank = usize::try_from(u64::from_le_bytes(*rank)).map_err(|_| bad())?;
            let peer = usize::try_from(u64::from_le_bytes(*peer)).map_err(|_| bad())?;
            let waited = std::time::Duration::from_nanos(u64::from_le_bytes(*nanos));
            Ok(Error::Timeout { call: call(name), rank, peer, what: "as that rank reported", waited })
        }
        Some((k, _)) => Err(field("abort", format!("unknown cause kind {k}"))),
        None => Err(field("abort", "empty cause")),
    }
}

/// The order one stream of a pair must keep. Messages of a channel are dealt
/// round-robin over its streams (message `i` on stream `i % streams`), so
/// stream `s` carries messages `s, s + streams, s + 2·streams, …` in that
/// order; sequence numbers never go backwards (collectives and
/// point-to-point counted apart); credits travel on stream 0 only and grow.
#[derive(Clone, Debug)]
pub struct StreamCheck {
    stream: u64,
    next: u64,
    step: u64,
    last_seq: [u64; 2],
    released: u64,
}

impl StreamCheck {
    pub fn new(stream: usize, streams: usize) -> StreamCheck {
        StreamCheck { stream: stream as u64, next: stream as u64, step: streams as u64, last_seq: [0; 2], released: 0 }
    }

    /// Data message `index` with `header` arrived on this stream.
    pub fn data(&mut self, index: u64, header: &Header) -> Result<(), WireError> {
        if index != self.next {
            return Err(WireError::Sequence(format!(
                "message number {index} on stream {}, expected {}",
                self.stream, self.next
            )));
        }
        let k = usize::from(header.kind == Kind::PointToPoint);
        if header.seq == 0 || header.seq < self.last_seq[k] {
            return Err(WireError::Sequence(format!(
                "{:?} sequence number {} after {}",
                header.kind, header.seq, self.last_seq[k]
            )));
        }
        self.last_seq[k] = header.seq;
        self.next += self.step;
        Ok(())
    }

    /// A credit saying `released` messages were released arrived on this
    /// stream, when `sent` messages have been sent on the channel.
    pub fn credit(&mut self, released: u64, sent: u64) -> Result<(), WireError> {
        if self.stream != 0 {
            return Err(WireError::Sequence(format!("credit on stream {}", self.stream)));
        }
        if released <= self.released || released > sent {
            return Err(WireError::Sequence(format!(
                "credit for {released} messages after {}, with {sent} sent",
                self.released
            )));
        }
        self.released = released;
        Ok(())
    }
}

/// Whether data message `index` may arrive when `released` messages of the
/// channel have been released: the sender may be at most `slots` ahead.
pub fn admit(index: u64, released: u64, slots: usize) -> Result<(), WireError> {
    if index >= released.saturating_add(slots as u64) {
        return Err(WireError::Sequence(format!(
            "message number {index} with only {released} released and {slots} slots: the sender ignored flow control"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits { comm_id: 0xfeed, max_payload: 256, world: 5 };

    fn header_of(kind: Kind, seq: u64, len: usize, total: usize, args: Option<Args>) -> Header {
        Header { kind, seq, len, total, args }
    }

    fn any_args() -> impl Strategy<Value = Option<Args>> {
        let c = 0..Collective::ALL.len();
        let d = 0..DType::ALL.len();
        let o = proptest::option::of(0..ReduceOp::ALL.len());
        let a = 0..Algorithm::ALL.len();
        let root = proptest::option::of(0..5usize);
        proptest::option::of((c, d, o, a, any::<u32>(), root).prop_map(|(c, d, o, a, count, root)| Args {
            collective: Collective::ALL[c],
            dtype: DType::ALL[d],
            op: o.map(|o| ReduceOp::ALL[o]),
            count: count as usize,
            root,
            algorithm: Algorithm::ALL[a],
        }))
    }

    fn data_frame(index: u64, h: &Header) -> Vec<u8> {
        let mut f = encode_data(LIMITS.comm_id, index, h).to_vec();
        f.extend((0..h.len).map(|i| i as u8));
        f
    }

    #[test]
    fn every_argument_value_round_trips() {
        for c in Collective::ALL {
            for d in DType::ALL {
                for op in ReduceOp::ALL.map(Some).into_iter().chain([None]) {
                    for algorithm in Algorithm::ALL {
                        let args = Args { collective: c, dtype: d, op, count: 77, root: Some(4), algorithm };
                        let h = header_of(Kind::Collective, 9, 3, 0, Some(args));
                        let f = data_frame(12, &h);
                        let (frame, payload) = decode(&f, &LIMITS).unwrap();
                        assert_eq!(frame, Frame::Data { index: 12, header: h });
                        assert_eq!(payload, &[0, 1, 2]);
                    }
                }
            }
        }
    }

    #[test]
    fn control_frames_round_trip() {
        let hello = Hello { rank: 3, world: 5, slot_bytes: 256, streams: 2, stream: 1, slots: 4 };
        let f = encode_hello(LIMITS.comm_id, &hello);
        assert_eq!(decode(&f, &LIMITS).unwrap().0, Frame::Hello(hello));
        let f = encode_credit(LIMITS.comm_id, 17);
        assert_eq!(decode(&f, &LIMITS).unwrap().0, Frame::Credit { released: 17 });
        let f = encode_probe(LIMITS.comm_id, 99);
        assert_eq!(decode(&f, &LIMITS).unwrap().0, Frame::Probe { nonce: 99 });
        let age = Duration::from_micros(1234);
        for state in [None, Some((0, age)), Some((LIMITS.world - 1, age))] {
            let f = encode_state(LIMITS.comm_id, 7, state);
            assert_eq!(decode(&f, &LIMITS).unwrap().0, Frame::State { nonce: 7, state });
        }
        let mut f = encode_state(LIMITS.comm_id, 7, None);
        f[24..32].copy_from_slice(&(LIMITS.world as u64).to_le_bytes());
        assert!(matches!(decode(&f, &LIMITS), Err(WireError::Field { kind: "state", .. })));
        for cause in [
            Error::Aborted("user said so ✓".into()),
            Error::PeerGone { call: Some("all_reduce #4".into()), rank: 1, peer: 3, what: "connection reset".into() },
        ] {
            let f = encode_abort(LIMITS.comm_id, &cause);
            let (frame, payload) = decode(&f, &LIMITS).unwrap();
            assert_eq!(frame, Frame::Abort { len: f.len() - HEADER_BYTES });
            assert_eq!(decode_cause(payload).unwrap(), cause);
        }
        let other = Error::Protocol { peer: 2, what: "x".into() };
        let f = encode_abort(LIMITS.comm_id, &other);
        assert_eq!(decode_cause(decode(&f, &LIMITS).unwrap().1).unwrap(), Error::Aborted(other.to_string()));
        // Long causes are cut on a character boundary, within the limit.
        let long = Error::Aborted("é".repeat(5000));
        let f = encode_abort(LIMITS.comm_id, &long);
        let Error::Aborted(back) = decode_cause(decode(&f, &LIMITS).unwrap().1).unwrap() else { panic!() };
        assert!(back.len() <= MAX_CAUSE_BYTES && back.chars().all(|c| c == 'é') && !back.is_empty());
    }

    #[test]
    fn each_malformation_has_its_error() {
        let h = header_of(Kind::PointToPoint, 1, 8, 8, None);
        let good = data_frame(0, &h);
        let with = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            decode(&f, &LIMITS).err()
        };
        assert!(matches!(with(0, b'X'), Some(WireError::Magic(_))));
        assert!(matches!(with(4, 9), Some(WireError::Version { got: 9 })));
        assert!(matches!(with(8, 0), Some(WireError::Comm { .. })));
        assert!(matches!(with(6, 9), Some(WireError::Kind(9))));
        assert!(matches!(with(7, 0x80), Some(WireError::Field { .. })));
        assert!(matches!(with(57, 1), Some(WireError::Length { len: 264, max: 256, .. })));
        assert!(matches!(with(41, 1), Some(WireError::Field { .. })), "count without arguments");
        assert!(matches!(decode(&good[..70], &LIMITS), Err(WireError::Truncated { need: 72, got: 70 })));
        assert!(matches!(decode(&good[..10], &LIMITS), Err(WireError::Truncated { need: 64, got: 10 })));
        let mut absurd = good.clone();
        absurd[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&absurd, &LIMITS), Err(WireError::Length { .. })));
        let args = Args {
            collective: Collective::Broadcast,
            dtype: DType::F32,
            op: None,
            count: 1,
            root: Some(4),
            algorithm: Algorithm::Ring,
        };
        let f = encode_data(LIMITS.comm_id, 0, &header_of(Kind::Collective, 1, 0, 0, Some(args)));
        let mut bad_root = f;
        bad_root[48] = 5;
        assert!(matches!(decode(&bad_root, &LIMITS), Err(WireError::Field { .. })));
        let mut bad_dtype = f;
        bad_dtype[61] = 10;
        assert!(matches!(decode(&bad_dtype, &LIMITS), Err(WireError::Field { .. })));
        let mut credit = encode_credit(LIMITS.comm_id, 3);
        credit[30] = 1;
        assert!(matches!(decode(&credit, &LIMITS), Err(WireError::Field { .. })));
        let mut abort = encode_abort(LIMITS.comm_id, &Error::Aborted("x".into()));
        abort[56..60].copy_from_slice(&(MAX_CAUSE_BYTES as u32 + 1).to_le_bytes());
        assert!(matches!(decode(&abort, &LIMITS), Err(WireError::Length { .. })));
        assert!(decode_cause(&[]).is_err() && decode_cause(&[7]).is_err() && decode_cause(&[1, 2, 3]).is_err());
    }

    #[test]
    fn streams_keep_their_order() {
        let h = |seq| header_of(Kind::Collective, seq, 0, 0, None);
        let mut s1 = StreamCheck::new(1, 3);
        s1.data(1, &h(1)).unwrap();
        s1.data(4, &h(1)).unwrap();
        s1.data(7, &h(2)).unwrap();
        assert!(matches!(s1.data(11, &h(2)), Err(WireError::Sequence(_))), "skipped a message");
        let mut s0 = StreamCheck::new(0, 1);
        s0.data(0, &h(5)).unwrap();
        assert!(s0.clone().data(0, &h(5)).is_err(), "repeated message number");
        assert!(s0.clone().data(1, &h(4)).is_err(), "sequence number went back");
        assert!(s0.clone().data(1, &h(0)).is_err(), "sequence number zero");
        // Point-to-point numbers run apart from collectives.
        s0.data(1, &header_of(Kind::PointToPoint, 1, 0, 0, None)).unwrap();
        assert!(s0.credit(1, 1).is_ok() && s0.credit(1, 2).is_err() && s0.credit(3, 2).is_err());
        assert!(s1.credit(1, 5).is_err(), "credits only on stream 0");
        assert!(admit(3, 0, 4).is_ok() && admit(4, 0, 4).is_err() && admit(u64::MAX, u64::MAX, 4).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any bytes: a frame or an error, never a panic; a frame found is
        /// within the limits.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((frame, payload)) = decode(&bytes, &LIMITS) {
                prop_assert_eq!(payload.len(), frame.payload_len());
                prop_assert!(frame.payload_len() <= MAX_CAUSE_BYTES.max(LIMITS.max_payload));
            }
            let _ = decode_cause(&bytes);
        }

        /// Random bytes after a valid prefix (magic, version, comm id, kind)
        /// reach the field checks, which must not panic either.
        #[test]
        fn random_fields_never_panic(kind in 0u8..8, rest in proptest::array::uniform32(any::<u8>()),
                                     rest2 in proptest::array::uniform16(any::<u8>()), flags in any::<u8>()) {
            let mut b = common(kind, flags, LIMITS.comm_id);
            b[16..48].copy_from_slice(&rest);
            b[48..64].copy_from_slice(&rest2);
            if let Ok(frame) = decode_header(&b, &LIMITS) {
                prop_assert!(frame.payload_len() <= MAX_CAUSE_BYTES.max(LIMITS.max_payload));
            }
        }

        /// Valid data frames round-trip; every truncation is an error; a
        /// wrong magic or comm id is always caught.
        #[test]
        fn data_round_trip_and_damage(index in any::<u64>(), seq in any::<u64>(), p2p in any::<bool>(),
                                      len in 0usize..=256, total in any::<u32>(), args in any_args(),
                                      cut_at in 0usize..400, flip in 0usize..8, comm in any::<u64>()) {
            let kind = if p2p { Kind::PointToPoint } else { Kind::Collective };
            let h = header_of(kind, seq, len, total as usize, args);
            let f = data_frame(index, &h);
            let (frame, payload) = decode(&f, &LIMITS).unwrap();
            prop_assert_eq!(frame, Frame::Data { index, header: h });
            prop_assert_eq!(payload, &f[HEADER_BYTES..]);
            let cut_at = cut_at % f.len();
            let truncated = decode(&f[..cut_at], &LIMITS);
            let is_truncated = matches!(truncated, Err(WireError::Truncated { .. }));
            prop_assert!(is_truncated, "{:?}", truncated);
            let mut bad = f.clone();
            bad[flip % 4] ^= 0x20;
            let magic = matches!(decode(&bad, &LIMITS), Err(WireError::Magic(_)));
            prop_assert!(magic);
            let mut other = f.clone();
            other[8..16].copy_from_slice(&comm.to_le_bytes());
            if comm != LIMITS.comm_id {
                let comm_caught = matches!(decode(&other, &LIMITS), Err(WireError::Comm { .. }));
                prop_assert!(comm_caught);
            }
        }

        /// Any length above the slot size is refused before anything is read.
        #[test]
        fn absurd_lengths_are_refused(len in 257u32.., index in any::<u64>()) {
            let mut b = encode_data(LIMITS.comm_id, index, &header_of(Kind::Collective, 1, 0, 0, None));
            b[56..60].copy_from_slice(&len.to_le_bytes());
            let refused = matches!(decode_header(&b, &LIMITS), Err(WireError::Length { .. }));
            prop_assert!(refused);
        }

        /// Message numbers other than the next one on the stream are refused.
        #[test]
        fn wrong_message_numbers_are_refused(streams in 1usize..5, stream in 0usize..5, n in 0u64..20, wrong in any::<u64>()) {
            let stream = stream % streams;
            let mut s = StreamCheck::new(stream, streams);
            let h = header_of(Kind::Collective, 1, 0, 0, None);
            for k in 0..n {
                s.data(stream as u64 + k * streams as u64, &h).unwrap();
            }
            let expected = stream as u64 + n * streams as u64;
            prop_assert_eq!(s.clone().data(wrong, &h).is_ok(), wrong == expected);
        }
    }
}

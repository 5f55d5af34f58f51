//! The store's wire format: requests, replies and the payloads the protocol
//! gives a meaning to.
//!
//! All integers are little-endian. A request is a 24-byte header, the key,
//! then the value:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `OXKV` |
//! | 4 | op: 1 hello, 2 set, 3 get, 4 create, 5 goodbye |
//! | 5..8 | zero |
//! | 8..12 | key length (at most [`MAX_KEY`]) |
//! | 12..16 | value length (at most [`MAX_VALUE`]) |
//! | 16..24 | argument: the protocol version (hello), milliseconds to wait (get), the rank (goodbye) |
//!
//! A reply is a 12-byte header (magic, status: 0 ok, 1 found, 2 missing,
//! 3 exists, 4 refused, 5 gave up; three zero bytes; payload length) and the payload: the
//! value (found, exists) or a message (refused). Lengths are checked before
//! anything is allocated; a bad frame gets a refusal and the connection is
//! closed. Hello carries the client's rank and world size (16 bytes) and the
//! server refuses a world size other than its own, so a rank that reaches
//! another job's store on the same port fails instead of mixing the jobs.
//! A goodbye is recorded as the key `_bye/<rank>` ([`bye_key`]).

use std::io::{self, Read, Write};

use crate::schedule::Rank;

/// Longest key in bytes.
pub const MAX_KEY: usize = 1024;
/// Longest value in bytes.
pub const MAX_VALUE: usize = 16 << 20;

const MAGIC: [u8; 4] = *b"OXKV";
/// The protocol version a hello carries.
pub(super) const VERSION: u64 = 1;
const REQUEST_HEADER: usize = 24;
const REPLY_HEADER: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Hello = 1,
    Set = 2,
    Get = 3,
    Create = 4,
    Bye = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Ok = 0,
    Found = 1,
    Missing = 2,
    Exists = 3,
    Refused = 4,
    GaveUp = 5,
}

pub(super) struct Request {
    pub(super) op: Op,
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
    pub(super) arg: u64,
}

/// Reads one request; `Ok(None)` at a clean end of stream.
pub(super) fn read_request(r: &mut impl Read) -> io::Result<Option<Request>> {
    let mut h = [0u8; REQUEST_HEADER];
    match r.read(&mut h[..1]) {
        Ok(0) => return Ok(None),
        Ok(_) => r.read_exact(&mut h[1..])?,
        Err(e) => return Err(e),
    }
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if h[..4] != MAGIC {
        return Err(bad(format!("bad magic {:02x?}", &h[..4])));
    }
    let op = match h[4] {
        1 => Op::Hello,
        2 => Op::Set,
        3 => Op::Get,
        4 => Op::Create,
        5 => Op::Bye,
        other => return Err(bad(format!("unknown op {other}"))),
    };
    let key_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let value_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    let arg = u64::from_le_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]);
    if key_len > MAX_KEY || value_len > MAX_VALUE {
        return Err(bad(format!("key of {key_len} bytes or value of {value_len} bytes is over the limit")));
    }
    let mut key = vec![0u8; key_len];
    r.read_exact(&mut key)?;
    let mut value = vec![0u8; value_len];
    r.read_exact(&mut value)?;
    Ok(Some(Request { op, key, value, arg }))
}

pub(super) fn write_request(w: &mut impl Write, op: Op, key: &[u8], value: &[u8], arg: u64) -> io::Result<()> {
    let mut frame = Vec::with_capacity(REQUEST_HEADER + key.len() + value.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[op as u8, 0, 0, 0]);
    frame.extend_from_slice(&(key.len() as u32).to_le_bytes());
    frame.extend_from_slice(&(value.len() as u32).to_le_bytes());
    frame.extend_from_slice(&arg.to_le_bytes());
    frame.extend_from_slice(key);
    frame.extend_from_slice(value);
    w.write_all(&frame)
}

pub(super) fn write_reply(w: &mut impl Write, status: Status, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(REPLY_HEADER + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[status as u8, 0, 0, 0]);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame)
}

/// Reads one reply; a malformed one is an `InvalidData` error.
pub(super) fn read_reply(r: &mut impl Read) -> io::Result<(Status, Vec<u8>)> {
    let mut h = [0u8; REPLY_HEADER];
    r.read_exact(&mut h)?;
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if h[..4] != MAGIC {
        return Err(bad(format!("bad magic {:02x?} in a reply", &h[..4])));
    }
    let status = match h[4] {
        0 => Status::Ok,
        1 => Status::Found,
        2 => Status::Missing,
        3 => Status::Exists,
        4 => Status::Refused,
        5 => Status::GaveUp,
        other => return Err(bad(format!("unknown reply status {other}"))),
    };
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if len > MAX_VALUE {
        return Err(bad(format!("reply of {len} bytes is over the limit")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok((status, payload))
}

/// A hello's value: the client's rank and world size.
pub(super) fn encode_hello(rank: Rank, world: usize) -> Vec<u8> {
    let mut hello = Vec::with_capacity(16);
    hello.extend_from_slice(&(rank as u64).to_le_bytes());
    hello.extend_from_slice(&(world as u64).to_le_bytes());
    hello
}

/// The rank and world size a hello's value carries; `None` when it is not 16 bytes.
pub(super) fn decode_hello(value: &[u8]) -> Option<(u64, u64)> {
    let v = <[u8; 16]>::try_from(value).ok()?;
    let rank = u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
    let world = u64::from_le_bytes([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]);
    Some((rank, world))
}

/// The key under which the server records `rank`'s goodbye.
pub(super) fn bye_key(rank: Rank) -> String {
    format!("_bye/{rank}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_request(&mut buf, Op::Set, b"k", b"value", 7).unwrap();
        let req = read_request(&mut Cursor::new(&buf)).unwrap().unwrap();
        assert_eq!((req.op, req.key.as_slice(), req.value.as_slice(), req.arg), (Op::Set, &b"k"[..], &b"value"[..], 7));
        assert!(read_request(&mut Cursor::new(&[][..])).unwrap().is_none());
        let mut buf = Vec::new();
        write_reply(&mut buf, Status::Found, b"xyz").unwrap();
        assert_eq!(read_reply(&mut Cursor::new(&buf)).unwrap(), (Status::Found, b"xyz".to_vec()));
        assert_eq!(decode_hello(&encode_hello(3, 8)), Some((3, 8)));
        assert_eq!(decode_hello(&[0; 15]), None);
    }

    #[test]
    fn bad_frames_are_rejected_without_allocating_their_lengths() {
        let mut good = Vec::new();
        write_request(&mut good, Op::Get, b"key", b"", 0).unwrap();
        let kind = |bytes: &[u8]| read_request(&mut Cursor::new(bytes)).err().map(|e| e.kind());
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(kind(&bad), Some(io::ErrorKind::InvalidData));
        let mut bad = good.clone();
        bad[4] = 99;
        assert_eq!(kind(&bad), Some(io::ErrorKind::InvalidData));
        // A 4 GiB value: refused from the header alone (a read would hit end of stream).
        let mut bad = good.clone();
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(kind(&bad), Some(io::ErrorKind::InvalidData));
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&((MAX_KEY + 1) as u32).to_le_bytes());
        assert_eq!(kind(&bad), Some(io::ErrorKind::InvalidData));
        assert_eq!(kind(&good[..good.len() - 1]), Some(io::ErrorKind::UnexpectedEof));
        let mut reply = Vec::new();
        write_reply(&mut reply, Status::Ok, b"").unwrap();
        reply[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_reply(&mut Cursor::new(&reply)).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}

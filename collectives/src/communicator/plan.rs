//! A call checked once: its buffers validated, its algorithm chosen and its
//! schedule found. Training loops and benchmarks repeat one call on the same
//! buffers, so the communicator keeps the last plan and reuses it while the
//! next call has the same arguments and buffer addresses — at small sizes the
//! checking costs more than moving the data.

use crate::communicator::{Bytes, Call, Regions};
use crate::mem::Region;
use crate::transport::Args;

/// What makes two calls the same call: their arguments, and where and how
/// long their buffers are (the communicator's default algorithm, which
/// also counts, clears the plan when it changes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    call: Call,
    /// (address, bytes) of the send and receive buffers; in place: of the
    /// one buffer, and (0, 0).
    bufs: [(usize, usize); 2],
    in_place: bool,
}

impl Key {
    pub fn of(call: &Call, bufs: &Bytes<'_>) -> Key {
        let at = |b: &[u8]| (b.as_ptr() as usize, b.len());
        match bufs {
            Bytes::OutOfPlace { send, recv } => Key { call: *call, bufs: [at(send), at(recv)], in_place: false },
            Bytes::InPlace(buf) => Key { call: *call, bufs: [at(buf), (0, 0)], in_place: true },
        }
    }

    pub fn of_regions(call: &Call, bufs: &Regions) -> Key {
        let at = |r: &Region| (r.addr(), r.len());
        match bufs {
            Regions::OutOfPlace { send, recv } => Key { call: *call, bufs: [at(send), at(recv)], in_place: false },
            Regions::InPlace(buf) => Key { call: *call, bufs: [at(buf), (0, 0)], in_place: true },
        }
    }
}

/// A checked call (see the module docs).
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub key: Key,
    /// This rank's input and output, exactly as long as the call reads and writes.
    pub input: Region,
    pub output: Region,
    /// The arguments every rank posts.
    pub args: Args,
    /// The schedule's place in the communicator's cache.
    pub schedule: usize,
}

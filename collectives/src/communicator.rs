//! The communicator API (being written: signatures fixed, bodies pending).

use std::time::Duration;

use crate::dtype::{DType, Element, ReduceOp};
use crate::error::Result;
use crate::schedule::{Algorithm, Collective, Rank};

/// Settings shared by the ranks of a communicator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Deadline of every wait (default: `OXCCL_TIMEOUT` seconds, else 300 s).
    pub timeout: Duration,
    /// Largest message in bytes (default 128 KiB).
    pub slice_bytes: usize,
    /// Algorithm used when a call does not name one; `None` is the auto rule.
    pub algorithm: Option<Algorithm>,
}

/// One collective call, without its buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub collective: Collective,
    pub dtype: DType,
    pub op: ReduceOp,
    /// Per-rank count in NCCL's convention ([`Collective::input_len`]).
    pub count: usize,
    pub root: Rank,
    /// `None`: the communicator's default.
    pub algorithm: Option<Algorithm>,
}

/// Buffers of a dtype-erased call.
pub enum Bytes<'a> {
    OutOfPlace { send: &'a [u8], recv: &'a mut [u8] },
    InPlace(&'a mut [u8]),
}

/// One rank's handle on a group of ranks.
pub struct Communicator {}

/// Aborts a communicator from any thread.
#[derive(Clone)]
pub struct AbortHandle {}

impl Communicator {
    pub fn local_group(n: usize) -> Result<Vec<Communicator>> {
        Self::local_group_with(n, Config::default())
    }
    pub fn local_group_with(n: usize, config: Config) -> Result<Vec<Communicator>> {
        let _ = (n, config);
        todo!()
    }
    pub fn rank(&self) -> Rank {
        todo!()
    }
    pub fn world(&self) -> usize {
        todo!()
    }
    pub fn set_algorithm(&mut self, algorithm: Option<Algorithm>) {
        let _ = algorithm;
        todo!()
    }
    pub fn abort_handle(&self) -> AbortHandle {
        todo!()
    }
    pub fn abort(&self, reason: &str) {
        let _ = reason;
        todo!()
    }
    /// Runs any collective on raw bytes of `call.dtype`.
    pub fn run(&self, call: &Call, bufs: Bytes<'_>) -> Result<()> {
        let _ = (call, bufs);
        todo!()
    }
    pub fn all_reduce<T: Element>(&self, send: &[T], recv: &mut [T], op: ReduceOp) -> Result<()> {
        let _ = (send, recv, op);
        todo!()
    }
    pub fn all_reduce_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let _ = (buf, op);
        todo!()
    }
    pub fn barrier(&self) -> Result<()> {
        todo!()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config { timeout: Duration::from_secs(300), slice_bytes: 128 << 10, algorithm: None }
    }
}

//! The executor's memory-space interface ([`oxccl::space::MemorySpace`])
//! for device memory: every copy and reduction is enqueued on the rank's
//! stream, and `complete` waits for the stream, so the executor announces a
//! result to its peers only once the device has produced it.
//!
//! [`EmuSpace`] is the emulated device's ([`crate::emudev`]). An operation
//! the device refuses (host memory where device memory is expected, a
//! dtype without a reducer kernel) cannot fail inside the trait's
//! operations, which return nothing: it is kept and reported by the next
//! `complete`, before the executor announces anything.

use std::sync::Mutex;

use oxccl::mem::Region;
use oxccl::space::MemorySpace;
use oxccl::{DType, ReduceOp};

use crate::emudev::{EmuBuffer, EmuStream};
use crate::error::Error;

/// Device memory of one emulated device, worked on through one stream.
pub struct EmuSpace {
    stream: EmuStream,
    /// The first operation refused since the last `complete`.
    refused: Mutex<Option<Error>>,
    /// The executor's scratch (two, alternating by call) and work area, on
    /// the device, allocated when first asked for and grown as needed.
    scratch: Mutex<[Option<EmuBuffer>; 2]>,
    work: Mutex<Option<EmuBuffer>>,
}

impl EmuSpace {
    pub fn new(stream: EmuStream) -> EmuSpace {
        EmuSpace { stream, refused: Mutex::new(None), scratch: Mutex::default(), work: Mutex::default() }
    }

    pub fn stream(&self) -> &EmuStream {
        &self.stream
    }

    /// The buffer in `slot`, replaced by a larger one when shorter than
    /// `bytes` (dropping the old one waits for the device's streams).
    fn at_least(&self, slot: &mut Option<EmuBuffer>, bytes: usize) -> Result<Region, oxccl::Error> {
        if slot.as_ref().is_none_or(|b| b.len() < bytes) {
            *slot = None;
            let buf = self.stream.device().alloc(bytes).map_err(|e| oxccl::Error::System(e.to_string()))?;
            *slot = Some(buf);
        }
        Ok(slot.as_ref().expect("just set").region().sub(0..bytes).expect("long enough"))
    }

    fn refuse(&self, e: Error) {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }
}

impl MemorySpace for EmuSpace {
    fn name(&self) -> &'static str {
        "emu"
    }

    unsafe fn copy(&self, dst: Region, src: Region, _stream: bool) {
        // SAFETY: the trait's contract: sole access to `dst`, no writer of `src`, both live for
        // the call, which completes (waits for the stream) before it returns.
        if let Err(e) = unsafe { self.stream.copy(dst, src) } {
            self.refuse(e);
        }
    }

    unsafe fn reduce(&self, dtype: DType, op: ReduceOp, dst: Region, a: Region, b: Region) {
        // Avg reduces as a sum; its division is `finalize`.
        let op = if op == ReduceOp::Avg { ReduceOp::Sum } else { op };
        // SAFETY: as in `copy`.
        if let Err(e) = unsafe { self.stream.reduce(dtype, op, dst, a, b) } {
            self.refuse(e);
        }
    }

    unsafe fn finalize(&self, dtype: DType, op: ReduceOp, world: usize, dst: Region) {
        if op != ReduceOp::Avg {
            return;
        }
        let world = u32::try_from(world).unwrap_or(u32::MAX);
        // SAFETY: as in `copy`.
        if let Err(e) = unsafe { self.stream.avg_div(dtype, dst, world) } {
            self.refuse(e);
        }
    }

    /// A rank's buffers must be memory of this space's own device.
    fn check(&self, what: &'static str, r: Region) -> Result<(), oxccl::Error> {
        self.stream.device().check_owned(what, r)
    }

    fn scratch(&self, half: usize, bytes: usize) -> Option<Result<Region, oxccl::Error>> {
        let mut spaces = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        Some(self.at_least(&mut spaces[half % 2], bytes))
    }

    fn work_area(&self, bytes: usize) -> Option<Result<Region, oxccl::Error>> {
        Some(self.at_least(&mut self.work.lock().unwrap_or_else(|p| p.into_inner()), bytes))
    }

    /// Waits for the stream, also when an operation was refused: nothing
    /// issued may still run once the executor has returned (it may have
    /// read or written the transport's memory).
    fn complete(&self) -> Result<(), oxccl::Error> {
        let ran = self.stream.synchronize();
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = refused {
            return Err(oxccl::Error::InvalidArgument(format!("{}: {e}", self.stream.device().name())));
        }
        ran.map_err(|e| oxccl::Error::System(format!("{}: {e}", self.stream.device().name())))
    }
}

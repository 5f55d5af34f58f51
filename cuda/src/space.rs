//! The executor's memory-space interface ([`oxccl::space::MemorySpace`])
//! for device memory: every copy and reduction is enqueued on the rank's
//! stream, and `complete` waits for the stream, so the executor announces a
//! result to its peers only once the device has produced it. This is the
//! staged path: ranks whose transport cannot reach each other's device
//! memory (TCP, RDMA, shm between processes) carry device data through the
//! transport's host slots, a copy between the device and the slot on each
//! side ([`oxccl::Communicator::run_in`]).
//!
//! [`DeviceSpace`] works on any device of the stream-ordered calls
//! ([`crate::streamed::backend`]): the emulated one ([`EmuSpace`]) or a
//! GPU. An operation the device refuses (host memory where device memory
//! is expected, a dtype without a reducer kernel) cannot fail inside the
//! trait's operations, which return nothing: it is kept and reported by
//! the next `complete`, before the executor announces anything.

use std::sync::{Arc, Mutex};

use oxccl::mem::Region;
use oxccl::space::MemorySpace;
use oxccl::{DType, ReduceOp};

use crate::emudev::EmuDevice;
use crate::error::Error;
use crate::streamed::backend::{DeviceMemory, DeviceQueue};

/// Device memory of one device, worked on through one stream.
pub struct DeviceSpace<D: DeviceMemory> {
    dev: Arc<D>,
    stream: D::Stream,
    /// For people, and for `MemorySpace::name` (leaked once per space).
    name: &'static str,
    /// The first operation refused since the last `complete`.
    refused: Mutex<Option<Error>>,
    /// The executor's scratch (two, alternating by call) and work area, on
    /// the device, allocated when first asked for and grown as needed.
    scratch: Mutex<[Option<D::Buffer>; 2]>,
    work: Mutex<Option<D::Buffer>>,
}

/// The emulated device's space.
pub type EmuSpace = DeviceSpace<EmuDevice>;

impl DeviceSpace<EmuDevice> {
    /// The space of the emulated device `stream` belongs to.
    pub fn new(stream: crate::emudev::EmuStream) -> EmuSpace {
        let dev = stream.device().clone();
        DeviceSpace::on(dev, stream)
    }
}

impl<D: DeviceMemory> DeviceSpace<D> {
    /// The space of `dev`, worked on through `stream` (one of its streams).
    pub fn on(dev: Arc<D>, stream: D::Stream) -> DeviceSpace<D> {
        let name: &'static str = Box::leak(dev.name().into_boxed_str());
        DeviceSpace {
            dev,
            stream,
            name,
            refused: Mutex::new(None),
            scratch: Mutex::new([None, None]),
            work: Mutex::default(),
        }
    }

    pub fn stream(&self) -> &D::Stream {
        &self.stream
    }

    pub fn device(&self) -> &Arc<D> {
        &self.dev
    }

    /// The buffer in `slot`, replaced by a larger one when shorter than
    /// `bytes` (the old one is dropped once the stream has run its work).
    fn at_least(&self, slot: &mut Option<D::Buffer>, bytes: usize) -> Result<Region, oxccl::Error> {
        if slot.as_ref().is_none_or(|b| D::region(b).len() < bytes) {
            let _ = self.stream.synchronize();
            *slot = None;
            let buf = self.dev.alloc(bytes).map_err(|e| oxccl::Error::System(e.to_string()))?;
            *slot = Some(buf);
        }
        Ok(D::region(slot.as_ref().expect("just set")).sub(0..bytes).expect("long enough"))
    }

    fn refuse(&self, e: Error) {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }
}

impl<D: DeviceMemory> MemorySpace for DeviceSpace<D> {
    fn name(&self) -> &'static str {
        self.name
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
        self.dev.check_owned(what, r)
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
            return Err(oxccl::Error::InvalidArgument(format!("{}: {e}", self.name)));
        }
        ran.map_err(|e| oxccl::Error::System(format!("{}: {e}", self.name)))
    }
}

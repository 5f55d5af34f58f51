//! What the stream-ordered calls need of a device: memory ([`DeviceMemory`])
//! and an in-order stream of copies, kernels, signals and waits on 64-bit
//! words, events and graph capture ([`DeviceQueue`]). The emulated device implements both here; a
//! CUDA device in `gpu.rs`. Regions name device memory by address (a
//! device pointer), whichever the device.

use std::sync::Arc;
use std::time::Duration;

use oxccl::mem::Region;
use oxccl::{DType, ReduceOp};

use crate::emudev::{EmuBuffer, EmuDevice, EmuEvent, EmuGraph, EmuStream, OnError, Watch};
use crate::error::Result;

/// An in-order stream of device work. Every operation is enqueued and
/// returns; an error returned means nothing was enqueued.
pub trait DeviceQueue: Send + Sync {
    /// See [`DeviceQueue::record`].
    type Event: Send + Sync;
    /// See [`DeviceQueue::end_capture`].
    type Graph: Send + Sync;

    /// `dst = src` (device memory this stream's device reaches).
    ///
    /// # Safety
    /// Both stay valid until the stream has run the copy, and nothing else
    /// writes `dst` or `src` meanwhile.
    unsafe fn copy(&self, dst: Region, src: Region) -> Result<()>;

    /// `dst = a ⊕ b` by the reducer kernel (`dst` may be `a`).
    ///
    /// # Safety
    /// As for [`DeviceQueue::copy`].
    unsafe fn reduce(&self, dtype: DType, op: ReduceOp, dst: Region, a: Region, b: Region) -> Result<()>;

    /// The multi-reducer kernel: every `dsts[j]` = the `srcs` combined in
    /// order, divided by `avg` when it is not 0.
    ///
    /// # Safety
    /// As for [`DeviceQueue::copy`].
    unsafe fn reduce_multi(&self, dtype: DType, op: ReduceOp, srcs: &[Region], dsts: &[Region], avg: u32)
        -> Result<()>;

    /// `dst = dst / world` (avg's final step).
    ///
    /// # Safety
    /// As for [`DeviceQueue::copy`].
    unsafe fn avg_div(&self, dtype: DType, dst: Region, world: u32) -> Result<()>;

    /// Stores `(epoch << 32) + offset` into the 8-byte word `word` once the
    /// work before it has run, reading the 8-byte word `epoch` then
    /// (`sig_write` of `ptx/kernels/signal.cu`).
    fn write_signal(&self, word: Region, epoch: Region, offset: u64) -> Result<()>;

    /// Later work waits until `word` holds at least `(epoch << 32) +
    /// offset` (`sig_wait`). Where the device can, the wait gives up when
    /// `wait.watch` says so or after its timeout, failing the stream;
    /// where it cannot watch (a GPU), it gives up after the timeout by
    /// storing `wait.code` into `wait.fault` and letting the stream go on
    /// (the communicator's watchdog then fails the group).
    fn wait_signal(&self, word: Region, epoch: Region, offset: u64, wait: Wait) -> Result<()>;

    /// Adds one to the 8-byte word `epoch` once the work before it has run
    /// (`sig_advance`).
    fn advance(&self, epoch: Region) -> Result<()>;

    /// A point in the stream: complete once the work enqueued before it
    /// has run (`cuEventRecord`).
    fn record(&self) -> Result<Self::Event>;

    /// Later work waits for `event`, recorded on another stream of the
    /// same device (`cuStreamWaitEvent`).
    fn wait_event(&self, event: &Self::Event) -> Result<()>;

    /// Starts capturing the stream's work into a graph instead of running
    /// it (`cuStreamBeginCapture`).
    fn begin_capture(&self) -> Result<()>;

    /// Ends the capture: the graph, ready to launch (`cuStreamEndCapture`,
    /// `cuGraphInstantiate`).
    fn end_capture(&self) -> Result<Self::Graph>;

    /// Whether the stream is being captured.
    fn capturing(&self) -> bool;

    /// Runs a captured graph on this stream (`cuGraphLaunch`).
    fn launch_graph(&self, graph: &Self::Graph) -> Result<()>;

    /// `hook` is told of the stream's first failure, where the device can.
    fn on_error(&self, hook: OnError);

    /// Waits until the stream has run everything enqueued so far.
    fn synchronize(&self) -> Result<()>;
}

/// How a stream waits for a signal ([`DeviceQueue::wait_signal`]).
#[derive(Clone)]
pub struct Wait {
    /// For people: the call, the ranks and what is awaited.
    pub what: String,
    /// Consulted by devices whose waits can watch.
    pub watch: Arc<dyn Watch>,
    /// How long the wait may last.
    pub timeout: Duration,
    /// Where a device that cannot fail its stream says that it gave up,
    /// and with what (never 0).
    pub fault: Region,
    pub code: u64,
}

/// A device's memory as the stream-ordered calls use it.
pub trait DeviceMemory: Send + Sync + 'static {
    /// Memory of this device, freed when dropped.
    type Buffer: Send + Sync;
    /// A stream of this device.
    type Stream: DeviceQueue;

    /// Whether a stream's wait watches the group itself (gives up when it
    /// is aborted or the peer is gone). Where it cannot (a GPU's), a
    /// watchdog thread of the communicator releases the waits instead.
    const WAITS_WATCH: bool = true;

    /// For people: `emu:0`, `cuda:0`.
    fn name(&self) -> String;
    /// `bytes` of zeroed device memory.
    fn alloc(self: &Arc<Self>, bytes: usize) -> Result<Self::Buffer>;
    /// The buffer's bytes, by device address.
    fn region(buf: &Self::Buffer) -> Region;
    /// `Ok` when `r` is memory of this device, else an invalid argument
    /// saying what it is.
    fn check_owned(&self, what: &'static str, r: Region) -> std::result::Result<(), oxccl::Error>;
    /// Whether this device may access `other`'s memory.
    fn can_access(&self, other: &Self) -> bool;
    /// Lets this device access `other`'s memory from now on (peer access
    /// between GPUs); nothing where it always can (the default).
    fn enable_peer_access(&self, other: &Self) -> Result<()> {
        let _ = other;
        Ok(())
    }
    /// Whether `stream` is a stream of this device.
    fn owns_stream(&self, stream: &Self::Stream) -> bool;
    /// The name of the device `stream` belongs to.
    fn stream_device(stream: &Self::Stream) -> String;
    /// A new stream of this device.
    fn new_stream(self: &Arc<Self>) -> Result<Self::Stream>;
    /// Copies `host` into the start of `buf` once the device's work has
    /// run (blocking).
    fn upload(&self, buf: &Self::Buffer, host: &[u8]) -> Result<()>;
    /// The buffer's bytes once the device's work has run (blocking).
    fn download(&self, buf: &Self::Buffer) -> Result<Vec<u8>>;
    /// Sets every 8-byte word of `words` (this device's memory) to
    /// `u64::MAX` at once, bypassing the streams: releases the streams
    /// waiting on them when the group aborts, on devices whose waits
    /// cannot watch the group themselves. Nothing by default.
    fn release(&self, words: Region) -> Result<()> {
        let _ = words;
        Ok(())
    }
    /// `bytes` of zeroed device memory that other processes of the host may
    /// open, and the handle they open it with (`cudaIpcGetMemHandle`).
    /// Not every device can (the default).
    fn alloc_shareable(self: &Arc<Self>, bytes: usize) -> Result<(Self::Buffer, Vec<u8>)> {
        let _ = bytes;
        Err(crate::error::Error::invalid(
            "alloc_shareable",
            format!("{} cannot share memory between processes yet", self.name()),
        ))
    }
    /// Opens memory another process shared (`cudaIpcOpenMemHandle`).
    fn open_shared(self: &Arc<Self>, handle: &[u8]) -> Result<Self::Buffer> {
        let _ = handle;
        Err(crate::error::Error::invalid(
            "open_shared",
            format!("{} cannot open other processes' memory yet", self.name()),
        ))
    }
    /// Once every peer has opened `buf` (shared by this process): removes
    /// what named it, so nothing is left behind if the job dies.
    fn unshare(buf: &mut Self::Buffer) {
        let _ = buf;
    }
    /// The 8-byte word `word` of this device's memory as it is now,
    /// without waiting for any stream (the watchdog's look at a fault word).
    fn peek(&self, word: Region) -> Result<u64>;
}

impl DeviceQueue for EmuStream {
    type Event = EmuEvent;
    type Graph = EmuGraph;

    unsafe fn copy(&self, dst: Region, src: Region) -> Result<()> {
        // SAFETY: the caller's contract is the stream's.
        unsafe { EmuStream::copy(self, dst, src) }
    }

    unsafe fn reduce(&self, dtype: DType, op: ReduceOp, dst: Region, a: Region, b: Region) -> Result<()> {
        // SAFETY: as above.
        unsafe { EmuStream::reduce(self, dtype, op, dst, a, b) }
    }

    unsafe fn reduce_multi(
        &self,
        dtype: DType,
        op: ReduceOp,
        srcs: &[Region],
        dsts: &[Region],
        avg: u32,
    ) -> Result<()> {
        // SAFETY: as above.
        unsafe { EmuStream::reduce_multi(self, dtype, op, srcs, dsts, avg) }
    }

    unsafe fn avg_div(&self, dtype: DType, dst: Region, world: u32) -> Result<()> {
        // SAFETY: as above.
        unsafe { EmuStream::avg_div(self, dtype, dst, world) }
    }

    fn write_signal(&self, word: Region, epoch: Region, offset: u64) -> Result<()> {
        EmuStream::write_signal(self, word, epoch, offset)
    }

    /// The emulated wait watches `wait.watch` and fails the stream itself.
    fn wait_signal(&self, word: Region, epoch: Region, offset: u64, wait: Wait) -> Result<()> {
        EmuStream::wait_signal(self, word, epoch, offset, wait.what, wait.watch)
    }

    fn advance(&self, epoch: Region) -> Result<()> {
        EmuStream::advance(self, epoch)
    }

    fn record(&self) -> Result<EmuEvent> {
        Ok(EmuStream::record(self))
    }

    fn wait_event(&self, event: &EmuEvent) -> Result<()> {
        EmuStream::wait_event(self, event);
        Ok(())
    }

    fn begin_capture(&self) -> Result<()> {
        EmuStream::begin_capture(self)
    }

    fn end_capture(&self) -> Result<EmuGraph> {
        EmuStream::end_capture(self)
    }

    fn capturing(&self) -> bool {
        EmuStream::capturing(self)
    }

    fn launch_graph(&self, graph: &EmuGraph) -> Result<()> {
        graph.launch(self)
    }

    fn on_error(&self, hook: OnError) {
        EmuStream::on_error(self, hook)
    }

    fn synchronize(&self) -> Result<()> {
        EmuStream::synchronize(self)
    }
}

impl DeviceMemory for EmuDevice {
    type Buffer = EmuBuffer;
    type Stream = EmuStream;

    fn name(&self) -> String {
        EmuDevice::name(self)
    }

    fn alloc(self: &Arc<Self>, bytes: usize) -> Result<EmuBuffer> {
        EmuDevice::alloc(self, bytes)
    }

    fn region(buf: &EmuBuffer) -> Region {
        buf.region()
    }

    fn check_owned(&self, what: &'static str, r: Region) -> std::result::Result<(), oxccl::Error> {
        EmuDevice::check_owned(self, what, r)
    }

    fn can_access(&self, other: &EmuDevice) -> bool {
        self.can_access_peer(other.ordinal())
    }

    fn owns_stream(&self, stream: &EmuStream) -> bool {
        std::ptr::eq(&**stream.device(), self)
    }

    fn stream_device(stream: &EmuStream) -> String {
        stream.device().name()
    }

    fn new_stream(self: &Arc<Self>) -> Result<EmuStream> {
        Ok(EmuDevice::new_stream(self))
    }

    fn upload(&self, buf: &EmuBuffer, host: &[u8]) -> Result<()> {
        buf.upload(host)
    }

    fn download(&self, buf: &EmuBuffer) -> Result<Vec<u8>> {
        Ok(buf.download())
    }

    fn alloc_shareable(self: &Arc<Self>, bytes: usize) -> Result<(EmuBuffer, Vec<u8>)> {
        let (buf, handle) = EmuDevice::alloc_shareable(self, bytes)?;
        Ok((buf, handle.to_bytes().to_vec()))
    }

    fn open_shared(self: &Arc<Self>, handle: &[u8]) -> Result<EmuBuffer> {
        self.open_ipc(&crate::emudev::EmuIpcHandle::from_bytes(handle)?)
    }

    fn unshare(buf: &mut EmuBuffer) {
        buf.unlink();
    }

    fn peek(&self, word: Region) -> Result<u64> {
        EmuDevice::peek(self, word)
    }
}

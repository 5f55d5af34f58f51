//! The stream-ordered calls on a CUDA GPU: [`GpuDevice`] (device memory)
//! and [`GpuStream`] (a stream) through the driver API — `cuMemcpyAsync`
//! for copies (device to device, or to and from host memory on the staged
//! path), the reducer kernels of `ptx/kernels/reduce.cu` launched
//! with device addresses, the one-thread signal kernels of
//! `ptx/kernels/signal.cu` for the ranks' signals (values relative to a
//! device-side epoch, so a captured CUDA graph replays correctly: stream
//! memory operations would bake absolute values into the graph), events,
//! and stream capture into graphs. Ranks share one GPU (several streams of
//! one context) or use several GPUs of the process with peer access,
//! which [`super::StreamComm::local_group`] enables for every pair.
//!
//! Unlike the emulated device, a GPU's wait cannot watch the group: a
//! `sig_wait` kernel ends when its word is written or after the
//! communicator's timeout, which it reports in its rank's fault word for
//! the communicator's watchdog thread to turn into the group's error.
//! [`super::StreamComm::abort`] releases every waiting stream by setting
//! every word to `u64::MAX` ([`GpuDevice::release`]), and so does the
//! watchdog when the group is aborted elsewhere, a peer's process dies or
//! a wait timed out. Stream errors are sticky context errors, found by
//! `synchronize`.
//!
//! Not yet run on a GPU: this compiles and is exercised only by
//! `tools/gpu-check` on a GPU machine.

use std::sync::Arc;

use cudarc::driver::{sys, CudaEvent, CudaGraph, CudaSlice, CudaStream, DevicePtr, PushKernelArg};
use oxccl::mem::Region;
use oxccl::{DType, ReduceOp};

use super::backend::{DeviceMemory, DeviceQueue, Wait};
use crate::device::Device;
use crate::emudev::OnError;
use crate::error::{DriverContext, Error, Result};
use crate::kernels::{self, MultiPtrs};

/// One GPU's memory and kernels for the stream-ordered calls.
pub struct GpuDevice {
    dev: Device,
}

/// Device memory of a [`GpuDevice`]. Dropping it first waits for the
/// device's work (a peer's stream may still use it).
pub struct GpuBuffer {
    backing: Backing,
    addr: u64,
    len: usize,
    dev: Arc<GpuDevice>,
}

/// Where a [`GpuBuffer`]'s memory comes from, and how it is given back.
enum Backing {
    /// cudarc's allocation (freed when dropped).
    Slice(Option<CudaSlice<u8>>),
    /// `cuMemAlloc`, shareable through IPC (freed with `cuMemFree`).
    Shareable,
    /// Another process's memory opened through IPC (`cuIpcCloseMemHandle`).
    Opened,
}

/// A stream of a [`GpuDevice`].
pub struct GpuStream {
    stream: Arc<CudaStream>,
    dev: Arc<GpuDevice>,
}

impl GpuDevice {
    /// GPU `ordinal` ([`Error::NoDriver`] without the driver).
    pub fn new(ordinal: usize) -> Result<Arc<GpuDevice>> {
        let dev = Device::new(ordinal)?;
        // SAFETY: the stream-ordered calls order their own work across streams (stream-level
        // waits on device words), and buffers wait for the context before they are freed; the
        // per-slice events cudarc would record are not needed.
        unsafe { dev.context().disable_event_tracking() };
        Ok(Arc::new(GpuDevice { dev }))
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    fn stream_of(&self) -> &Arc<CudaStream> {
        self.dev.stream()
    }

    /// Makes the device's context current on this thread, which raw driver
    /// calls need (rank threads are new threads).
    fn bind(&self) -> Result<()> {
        self.dev.context().bind_to_thread().during("cuCtxSetCurrent")
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        let _ = self.dev.dev.context().synchronize();
        match &mut self.backing {
            Backing::Slice(slice) => drop(slice.take()),
            Backing::Shareable => {
                if self.dev.bind().is_ok() {
                    // SAFETY: allocated by cuMemAlloc in `alloc_shareable`, freed once; the
                    // context's work is done (synchronized above).
                    let _ = unsafe { sys::cuMemFree_v2(self.addr) };
                }
            }
            Backing::Opened => {
                if self.dev.bind().is_ok() {
                    // SAFETY: opened by cuIpcOpenMemHandle in `open_shared`, closed once.
                    let _ = unsafe { sys::cuIpcCloseMemHandle(self.addr) };
                }
            }
        }
    }
}

fn check(op: &'static str, r: sys::CUresult) -> Result<()> {
    r.result().during(op)
}

impl GpuStream {
    /// The driver's handle of the stream (for NCCL).
    pub fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// Later work on `later` waits for the work enqueued on `earlier` so
    /// far (an event recorded on one, waited for by the other): this
    /// stream and a caller's, in either order.
    ///
    /// # Safety
    /// Both are live streams of this stream's context (null: its default
    /// stream).
    pub unsafe fn order(&self, earlier: sys::CUstream, later: sys::CUstream) -> Result<()> {
        self.dev.bind()?;
        let mut ev: sys::CUevent = std::ptr::null_mut();
        let flags = sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32;
        // SAFETY: `ev` receives a new event of the current context.
        check("cuEventCreate", unsafe { sys::cuEventCreate(&mut ev, flags) })?;
        // SAFETY: `ev` was just made; both streams are live streams of this context (the
        // caller's contract). Destroying a recorded event that is still pending is allowed:
        // the driver frees it once it completes.
        let ordered = check("cuEventRecord", unsafe { sys::cuEventRecord(ev, earlier) })
            .and_then(|()| check("cuStreamWaitEvent", unsafe { sys::cuStreamWaitEvent(later, ev, 0) }));
        // SAFETY: made above, destroyed once.
        let _ = unsafe { sys::cuEventDestroy_v2(ev) };
        ordered
    }

    /// Waits until `stream` (a caller's stream of this context; null: the
    /// default stream) has run the work enqueued on it so far.
    ///
    /// # Safety
    /// `stream` is a live stream of this stream's context.
    pub unsafe fn wait_for(&self, stream: sys::CUstream) -> Result<()> {
        self.dev.bind()?;
        // SAFETY: the caller's contract.
        check("cuStreamSynchronize", unsafe { sys::cuStreamSynchronize(stream) })
    }

    fn launch_config(n: usize, per_thread: usize) -> cudarc::driver::LaunchConfig {
        let s = kernels::elementwise_shape(n, per_thread);
        cudarc::driver::LaunchConfig {
            grid_dim: (s.grid.0, s.grid.1, 1),
            block_dim: (s.block, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn addr(r: Region) -> u64 {
        r.addr() as u64
    }

    /// The signal kernels' launch: one block of one thread.
    const ONE_THREAD: cudarc::driver::LaunchConfig =
        cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
}

/// A captured and instantiated CUDA graph ([`DeviceQueue::end_capture`]).
pub struct GpuGraph(std::sync::Mutex<CudaGraph>);

// SAFETY: a graph is a driver handle usable from any thread of the process; its uses are
// serialized by the mutex, as the driver requires.
unsafe impl Send for GpuGraph {}
// SAFETY: every use of the graph goes through the mutex.
unsafe impl Sync for GpuGraph {}

impl DeviceQueue for GpuStream {
    type Event = CudaEvent;
    type Graph = GpuGraph;

    /// `cuMemcpyAsync` with unified addressing: device to device, or
    /// between the device and host memory (the staged path's transport
    /// slots, pageable: the driver stages such a copy itself).
    unsafe fn copy(&self, dst: Region, src: Region) -> Result<()> {
        if dst.len() != src.len() {
            return Err(Error::invalid("cuMemcpyAsync", format!("{} bytes into {}", src.len(), dst.len())));
        }
        if dst.is_empty() {
            return Ok(());
        }
        self.dev.bind()?;
        // SAFETY: both regions are device memory of this context or host memory of this process
        // (checked when the call was entered), valid until the stream has run the copy (the
        // caller's contract).
        check("cuMemcpyAsync", unsafe {
            sys::cuMemcpyAsync(Self::addr(dst), Self::addr(src), dst.len(), self.stream.cu_stream())
        })
    }

    unsafe fn reduce(&self, dtype: DType, op: ReduceOp, dst: Region, a: Region, b: Region) -> Result<()> {
        let kernel = kernels::reduce_kernel(op, dtype)?;
        if a.len() != dst.len() || b.len() != dst.len() || dst.len() % dtype.size() != 0 {
            return Err(Error::invalid(kernel, format!("{} = {} ⊕ {} bytes", dst.len(), a.len(), b.len())));
        }
        let n = dst.len() / dtype.size();
        if n == 0 {
            return Ok(());
        }
        let f = self.dev.dev.function(kernel)?;
        let (d, x, y, n64) = (Self::addr(dst), Self::addr(a), Self::addr(b), n as u64);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&d).arg(&x).arg(&y).arg(&n64);
        // SAFETY: reduce_{op}_{dtype}(T* dst, const T* a, const T* b, size_t n): three device
        // addresses of n elements (lengths checked), valid until the stream has run it.
        unsafe { launch.launch(Self::launch_config(n, 16 / dtype.size())) }.during(kernel)?;
        Ok(())
    }

    unsafe fn reduce_multi(
        &self,
        dtype: DType,
        op: ReduceOp,
        srcs: &[Region],
        dsts: &[Region],
        avg: u32,
    ) -> Result<()> {
        let kernel = kernels::reduce_multi_kernel(op, dtype)?;
        let n = kernels::check_multi_regions(kernel, dtype, srcs, dsts)?;
        if n == 0 || dsts.is_empty() {
            return Ok(());
        }
        let mut p = MultiPtrs::default();
        srcs.iter().enumerate().for_each(|(i, r)| p.src[i] = Self::addr(*r));
        dsts.iter().enumerate().for_each(|(i, r)| p.dst[i] = Self::addr(*r));
        let f = self.dev.dev.function(kernel)?;
        let (ns, nd, n64) = (srcs.len() as i32, dsts.len() as i32, n as u64);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&p).arg(&ns).arg(&nd).arg(&n64).arg(&avg);
        // SAFETY: reduce_multi_{op}_{dtype}(OxkMultiPtrs, int, int, size_t, uint32_t): device
        // addresses of n elements each, valid until the stream has run it.
        unsafe { launch.launch(Self::launch_config(n, 16 / dtype.size())) }.during(kernel)?;
        Ok(())
    }

    unsafe fn avg_div(&self, dtype: DType, dst: Region, world: u32) -> Result<()> {
        let kernel = kernels::avg_kernel(dtype)?;
        let n = dst.len() / dtype.size();
        if n == 0 {
            return Ok(());
        }
        let f = self.dev.dev.function(kernel)?;
        let (d, n64) = (Self::addr(dst), n as u64);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&d).arg(&n64).arg(&world);
        // SAFETY: avg_div_{dtype}(T* d, size_t n, uint32_t world): a device address of n
        // elements, valid until the stream has run it.
        unsafe { launch.launch(Self::launch_config(n, 1)) }.during(kernel)?;
        Ok(())
    }

    fn write_signal(&self, word: Region, epoch: Region, offset: u64) -> Result<()> {
        let (w, e) = (Self::addr(word), Self::addr(epoch));
        let f = self.dev.dev.function(kernels::SIG_WRITE)?;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&w).arg(&e).arg(&offset);
        // SAFETY: sig_write(uint64_t* word, const uint64_t* epoch, uint64_t): two 8-byte words of
        // the group's areas, which outlive the streams.
        unsafe { launch.launch(Self::ONE_THREAD) }.during(kernels::SIG_WRITE)?;
        Ok(())
    }

    /// The wait kernel gives up after `wait.timeout`, storing `wait.code`
    /// into `wait.fault`; `wait.watch` is not consulted (see the module docs).
    fn wait_signal(&self, word: Region, epoch: Region, offset: u64, wait: Wait) -> Result<()> {
        let (w, e, fault) = (Self::addr(word), Self::addr(epoch), Self::addr(wait.fault));
        let timeout = u64::try_from(wait.timeout.as_nanos()).unwrap_or(u64::MAX);
        let f = self.dev.dev.function(kernels::SIG_WAIT)?;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&w).arg(&e).arg(&offset).arg(&timeout).arg(&fault).arg(&wait.code);
        // SAFETY: sig_wait(const uint64_t* word, const uint64_t* epoch, uint64_t offset,
        // uint64_t timeout_ns, uint64_t* fault, uint64_t code): three 8-byte words of the group's
        // areas, which outlive the streams.
        unsafe { launch.launch(Self::ONE_THREAD) }.during(kernels::SIG_WAIT)?;
        Ok(())
    }

    fn advance(&self, epoch: Region) -> Result<()> {
        let e = Self::addr(epoch);
        let f = self.dev.dev.function(kernels::SIG_ADVANCE)?;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&e);
        // SAFETY: sig_advance(uint64_t* epoch): the rank's epoch word, written only by its streams.
        unsafe { launch.launch(Self::ONE_THREAD) }.during(kernels::SIG_ADVANCE)?;
        Ok(())
    }

    fn record(&self) -> Result<CudaEvent> {
        self.stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)).during("cuEventRecord")
    }

    fn wait_event(&self, event: &CudaEvent) -> Result<()> {
        self.stream.wait(event).during("cuStreamWaitEvent")
    }

    /// Thread-local capture: the other ranks' threads go on enqueueing on
    /// their own streams meanwhile.
    fn begin_capture(&self) -> Result<()> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .during("cuStreamBeginCapture")
    }

    fn end_capture(&self) -> Result<GpuGraph> {
        match self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).during("cuStreamEndCapture")? {
            Some(graph) => Ok(GpuGraph(std::sync::Mutex::new(graph))),
            None => Err(Error::invalid("cuStreamEndCapture", "nothing was captured")),
        }
    }

    fn capturing(&self) -> bool {
        matches!(self.stream.capture_status(), Ok(sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE))
    }

    fn launch_graph(&self, graph: &GpuGraph) -> Result<()> {
        let g = graph.0.lock().unwrap_or_else(|p| p.into_inner());
        self.dev.bind()?;
        // SAFETY: an instantiated graph of this context, launched on one of its streams; the
        // lock serializes uses of the graph (graphs are not internally synchronized).
        check("cuGraphLaunch", unsafe { sys::cuGraphLaunch(g.cu_graph_exec(), self.stream.cu_stream()) })
    }

    /// A GPU reports failures through `synchronize` (sticky context errors).
    fn on_error(&self, _hook: OnError) {}

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().during("cuStreamSynchronize")
    }
}

impl DeviceMemory for GpuDevice {
    type Buffer = GpuBuffer;
    type Stream = GpuStream;

    /// A GPU's stream-level wait sees only its word.
    const WAITS_WATCH: bool = false;

    fn name(&self) -> String {
        format!("cuda:{}", self.dev.ordinal())
    }

    fn alloc(self: &Arc<Self>, bytes: usize) -> Result<GpuBuffer> {
        let slice = self.stream_of().alloc_zeros::<u8>(bytes.max(1)).during("cuMemAlloc")?;
        let (addr, _) = slice.device_ptr(self.stream_of());
        Ok(GpuBuffer { backing: Backing::Slice(Some(slice)), addr, len: bytes, dev: self.clone() })
    }

    fn region(buf: &GpuBuffer) -> Region {
        Region::from_raw(buf.addr as usize, buf.len)
    }

    fn check_owned(&self, what: &'static str, r: Region) -> std::result::Result<(), oxccl::Error> {
        let invalid = |why: String| Err(oxccl::Error::InvalidArgument(format!("{what}: {why}")));
        if let Err(e) = self.bind() {
            return Err(oxccl::Error::System(e.to_string()));
        }
        let (mut ordinal, mut start, mut size) = (-1i32, 0u64, 0usize);
        let attr = |a: sys::CUpointer_attribute, out: *mut std::ffi::c_void| {
            // SAFETY: `out` points to a value of the attribute's type (i32, u64, usize).
            unsafe { sys::cuPointerGetAttribute(out, a, r.addr() as u64) }.result()
        };
        let found =
            attr(sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, (&mut ordinal as *mut i32).cast())
                .and_then(|()| {
                    attr(
                        sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                        (&mut start as *mut u64).cast(),
                    )
                })
                .and_then(|()| {
                    attr(sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_SIZE, (&mut size as *mut usize).cast())
                });
        match found {
            Err(_) => invalid(format!("{} bytes at {:#x} are not device memory (host memory?)", r.len(), r.addr())),
            Ok(()) if ordinal != self.dev.ordinal() as i32 => {
                invalid(format!("{} bytes of cuda:{ordinal}'s memory on a rank of {}", r.len(), self.name()))
            }
            Ok(()) if r.addr() as u64 + r.len() as u64 > start + size as u64 => {
                invalid(format!("{} bytes at {:#x} run past their allocation", r.len(), r.addr()))
            }
            Ok(()) => Ok(()),
        }
    }

    /// The same GPU, or another whose memory this one can reach
    /// (`cuDeviceCanAccessPeer`: NVLink or PCIe).
    fn can_access(&self, other: &GpuDevice) -> bool {
        if self.dev.ordinal() == other.dev.ordinal() {
            return true;
        }
        let mut can = 0i32;
        let (a, b) = (self.dev.context().cu_device(), other.dev.context().cu_device());
        // SAFETY: `can` receives the answer for two valid device handles.
        let asked = unsafe { sys::cuDeviceCanAccessPeer(&mut can, a, b) };
        asked == sys::CUresult::CUDA_SUCCESS && can == 1
    }

    /// `cuCtxEnablePeerAccess` from this GPU's context to `other`'s (once:
    /// "already enabled" is no error).
    fn enable_peer_access(&self, other: &GpuDevice) -> Result<()> {
        if self.dev.ordinal() == other.dev.ordinal() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `other`'s context is live (held by `other`); the current context is this one.
        match unsafe { sys::cuCtxEnablePeerAccess(other.dev.context().cu_ctx(), 0) } {
            sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => Ok(()),
            r => check("cuCtxEnablePeerAccess", r),
        }
    }

    fn owns_stream(&self, stream: &GpuStream) -> bool {
        std::ptr::eq(&*stream.dev, self)
    }

    fn stream_device(stream: &GpuStream) -> String {
        stream.dev.name()
    }

    fn new_stream(self: &Arc<Self>) -> Result<GpuStream> {
        let stream = self.dev.context().new_stream().during("cuStreamCreate")?;
        Ok(GpuStream { stream, dev: self.clone() })
    }

    fn upload(&self, buf: &GpuBuffer, host: &[u8]) -> Result<()> {
        if host.len() > buf.len {
            return Err(Error::invalid("upload", format!("{} bytes into a buffer of {}", host.len(), buf.len)));
        }
        self.dev.context().synchronize().during("cuCtxSynchronize")?;
        self.bind()?;
        // SAFETY: the buffer holds at least host.len() bytes; the device is idle.
        check("cuMemcpyHtoD", unsafe { sys::cuMemcpyHtoD_v2(buf.addr, host.as_ptr().cast(), host.len()) })
    }

    fn download(&self, buf: &GpuBuffer) -> Result<Vec<u8>> {
        self.dev.context().synchronize().during("cuCtxSynchronize")?;
        self.bind()?;
        let mut out = vec![0u8; buf.len];
        // SAFETY: the buffer holds buf.len bytes; the device is idle.
        check("cuMemcpyDtoH", unsafe { sys::cuMemcpyDtoH_v2(out.as_mut_ptr().cast(), buf.addr, buf.len) })?;
        Ok(out)
    }

    /// `cuMemAlloc` (IPC needs memory outside the stream-ordered pools),
    /// zeroed, and its handle: `cuIpcGetMemHandle`'s 64 bytes, then the
    /// length (8 bytes, little-endian).
    fn alloc_shareable(self: &Arc<Self>, bytes: usize) -> Result<(GpuBuffer, Vec<u8>)> {
        self.bind()?;
        let mut addr = 0u64;
        // SAFETY: `addr` receives the allocation's address.
        check("cuMemAlloc", unsafe { sys::cuMemAlloc_v2(&mut addr, bytes.max(1)) })?;
        let buf = GpuBuffer { backing: Backing::Shareable, addr, len: bytes, dev: self.clone() };
        // SAFETY: `addr` holds `bytes.max(1)` bytes just allocated.
        check("cuMemsetD8", unsafe { sys::cuMemsetD8_v2(addr, 0, bytes.max(1)) })?;
        let mut handle = std::mem::MaybeUninit::<sys::CUipcMemHandle>::zeroed();
        // SAFETY: `handle` receives the allocation's IPC handle.
        check("cuIpcGetMemHandle", unsafe { sys::cuIpcGetMemHandle(handle.as_mut_ptr(), addr) })?;
        // SAFETY: written by the driver just above (and zeroed before).
        let handle = unsafe { handle.assume_init() };
        let mut record: Vec<u8> = handle.reserved.iter().map(|&c| c as u8).collect();
        record.extend_from_slice(&(bytes as u64).to_le_bytes());
        Ok((buf, record))
    }

    /// `cuIpcOpenMemHandle` of a peer's allocation (peer access enabled
    /// lazily, should it live on another GPU).
    fn open_shared(self: &Arc<Self>, handle: &[u8]) -> Result<GpuBuffer> {
        let raw = std::mem::MaybeUninit::<sys::CUipcMemHandle>::zeroed();
        // SAFETY: zeroed above; every field is plain bytes.
        let mut h = unsafe { raw.assume_init() };
        let n = h.reserved.len();
        if handle.len() != n + 8 {
            return Err(Error::invalid("cuIpcOpenMemHandle", format!("a handle of {} bytes", handle.len())));
        }
        for (d, &s) in h.reserved.iter_mut().zip(&handle[..n]) {
            *d = s as std::ffi::c_char;
        }
        let len = u64::from_le_bytes(handle[n..].try_into().expect("8 bytes")) as usize;
        self.bind()?;
        let mut addr = 0u64;
        let flags = sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32;
        // SAFETY: `addr` receives the mapping's address; the handle came from a peer's
        // cuIpcGetMemHandle.
        check("cuIpcOpenMemHandle", unsafe { sys::cuIpcOpenMemHandle_v2(&mut addr, h, flags) })?;
        Ok(GpuBuffer { backing: Backing::Opened, addr, len, dev: self.clone() })
    }

    /// A synchronous copy of the word: the legacy stream's copy does not
    /// wait for the calls' streams, which are non-blocking.
    fn peek(&self, word: Region) -> Result<u64> {
        self.bind()?;
        let mut v = 0u64;
        // SAFETY: `word` is 8 bytes of an area's device memory, which outlives the streams.
        check("cuMemcpyDtoH", unsafe { sys::cuMemcpyDtoH_v2((&mut v as *mut u64).cast(), Self::addr_of(word), 8) })?;
        Ok(v)
    }

    /// All ones over the words, on a stream of its own (the context's
    /// other streams may be waiting on them).
    fn release(&self, words: Region) -> Result<()> {
        let stream = self.dev.context().new_stream().during("cuStreamCreate")?;
        self.bind()?;
        // SAFETY: `words` is an area's words, device memory of this context.
        check("cuMemsetD32Async", unsafe {
            sys::cuMemsetD32Async(Self::addr_of(words), u32::MAX, words.len() / 4, stream.cu_stream())
        })?;
        stream.synchronize().during("cuStreamSynchronize")
    }
}

impl GpuDevice {
    fn addr_of(r: Region) -> u64 {
        r.addr() as u64
    }
}

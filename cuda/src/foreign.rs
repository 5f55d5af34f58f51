//! Collectives on device memory that a caller outside Rust hands over by
//! address, on a stream of its own (the C ABI, the Python package).
//!
//! * [`locate`] says whose memory an address is: a GPU's (asked of the
//!   driver, and only when the process has loaded it: a program that never
//!   touched CUDA has no device memory, and pays nothing), the emulated
//!   device's ([`emulated`], with `OXCCL_DEVICE=emu`: how CI runs the
//!   device path without a GPU), else the host's.
//! * [`DeviceComm`] is a rank's communicator for that memory, made from its
//!   host communicator at the first call on device memory (every rank
//!   does, as they make the same calls; [`ForeignComm`] holds either):
//!   stream-ordered over shared memory where the processes can open each
//!   other's device memory, else staged through host memory
//!   ([`crate::process::ProcessRank`]).
//! * A call is ordered on the caller's stream ([`CallerStreams`]): it waits
//!   for the work the caller enqueued there before it, and work the caller
//!   enqueues after it waits for it — a GPU's call returns once enqueued
//!   (NCCL's contract). The emulated device has no caller streams: its
//!   calls have completed when they return. Staged calls and sends and
//!   receives (staged through host memory) wait for the caller's stream
//!   first and have completed when they return.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use oxccl::mem::Region;
use oxccl::{Call, Communicator, DType, P2p, Rank, Regions};

use crate::emudev::{EmuBuffer, EmuDevice, EmuPlatform, Reducer};
use crate::process::ProcessRank;
use crate::streamed::backend::{DeviceMemory, DeviceQueue};
use crate::streamed::gpu::{GpuDevice, GpuStream};

fn system(e: crate::Error) -> oxccl::Error {
    oxccl::Error::System(e.to_string())
}

/// Whose memory an address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    Host,
    /// The emulated device of this process ([`emulated`]).
    Emu,
    /// GPU `ordinal`.
    Gpu(usize),
}

/// This process's emulated device, when `OXCCL_DEVICE=emu` (read once):
/// one device whose reductions run on the host's reducers, made at the
/// first use. Its memory is the host's, so a program may read and write it
/// directly — between calls, since calls on it have completed when they
/// return.
pub fn emulated() -> Option<&'static Arc<EmuDevice>> {
    static DEV: OnceLock<Option<Arc<EmuDevice>>> = OnceLock::new();
    DEV.get_or_init(|| {
        if std::env::var("OXCCL_DEVICE").ok()?.trim() != "emu" {
            return None;
        }
        let platform = EmuPlatform::with_reducer(1, Reducer::Host);
        if std::env::var("OXCCL_EMU_IPC").is_ok_and(|v| v == "0") {
            platform.refuse_ipc();
        }
        platform.device(0).ok()
    })
    .as_ref()
}

/// The emulated device's allocations made for callers, by address.
fn emu_allocations() -> &'static Mutex<HashMap<usize, EmuBuffer>> {
    static ALLOCS: OnceLock<Mutex<HashMap<usize, EmuBuffer>>> = OnceLock::new();
    ALLOCS.get_or_init(Mutex::default)
}

/// `bytes` (at least 1) of zeroed memory of the emulated device, kept until
/// [`emu_free`]; its address. `None` without an emulated device.
pub fn emu_alloc(bytes: usize) -> Option<crate::Result<usize>> {
    let dev = emulated()?;
    Some(dev.alloc(bytes.max(1)).map(|buf| {
        let addr = buf.region().addr();
        emu_allocations().lock().unwrap_or_else(|p| p.into_inner()).insert(addr, buf);
        addr
    }))
}

/// Frees an allocation of [`emu_alloc`] (once the device's streams have
/// run); false when `addr` is not one.
pub fn emu_free(addr: usize) -> bool {
    let buf = emu_allocations().lock().unwrap_or_else(|p| p.into_inner()).remove(&addr);
    buf.is_some()
}

/// Whether the process has loaded the CUDA driver (asked without loading
/// it).
fn driver_loaded() -> bool {
    // SAFETY: dlopen with RTLD_NOLOAD only looks the library up; the handle it returns (a new
    // reference) is closed at once.
    unsafe {
        let h = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
        if h.is_null() {
            return false;
        }
        libc::dlclose(h);
    }
    true
}

/// [`Located::Emu`] when `addr` is memory of the emulated device, else
/// [`Located::Host`]: for callers that know from elsewhere that it is no
/// GPU's (a buffer a Python object exports), without asking the driver.
pub fn locate_host(addr: usize) -> Located {
    match emulated() {
        Some(dev) if dev.owns(Region::from_raw(addr, 1)) => Located::Emu,
        _ => Located::Host,
    }
}

/// Whose memory `addr` is (see the module docs).
pub fn locate(addr: usize) -> Located {
    if let Some(dev) = emulated() {
        if dev.owns(Region::from_raw(addr, 1)) {
            return Located::Emu;
        }
    }
    if addr == 0 || !driver_loaded() || crate::Libraries::probe().require_driver().is_err() {
        return Located::Host;
    }
    use cudarc::driver::sys;
    let (mut kind, mut ordinal) = (0u32, -1i32);
    // SAFETY: each call writes a value of its attribute's type (an unsigned int, an int) into
    // the variable passed; an address the driver does not know is an error, not a fault.
    let asked = unsafe {
        sys::cuPointerGetAttribute(
            (&mut kind as *mut u32).cast(),
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            addr as u64,
        )
    }
    .result()
    .and_then(|()| {
        // SAFETY: as above.
        unsafe {
            sys::cuPointerGetAttribute(
                (&mut ordinal as *mut i32).cast(),
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                addr as u64,
            )
        }
        .result()
    });
    match asked {
        Ok(()) if kind == sys::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32 && ordinal >= 0 => {
            Located::Gpu(ordinal as usize)
        }
        _ => Located::Host,
    }
}

/// How a call on a device is ordered on the caller's stream, a raw handle
/// (the caller's `cudaStream_t`; 0: the default stream).
pub trait CallerStreams: DeviceMemory {
    /// Work enqueued on `ours` from now on waits for what the caller
    /// enqueued on `theirs` so far.
    ///
    /// # Safety
    /// `theirs` is a live stream of the device's context, or 0.
    unsafe fn after_caller(ours: &Self::Stream, theirs: usize) -> crate::Result<()>;
    /// Work the caller enqueues on `theirs` from now on waits for what was
    /// enqueued on `ours` so far — or, where the device has no caller
    /// streams, `ours` has run it when this returns.
    ///
    /// # Safety
    /// As for [`CallerStreams::after_caller`].
    unsafe fn before_caller(ours: &Self::Stream, theirs: usize) -> crate::Result<()>;
    /// Waits until `theirs` has run what the caller enqueued on it.
    ///
    /// # Safety
    /// As for [`CallerStreams::after_caller`].
    unsafe fn wait_caller(ours: &Self::Stream, theirs: usize) -> crate::Result<()>;
}

impl CallerStreams for GpuDevice {
    unsafe fn after_caller(ours: &GpuStream, theirs: usize) -> crate::Result<()> {
        // SAFETY: the caller's contract; `ours` is live.
        unsafe { ours.order(theirs as _, ours.cu_stream()) }
    }
    unsafe fn before_caller(ours: &GpuStream, theirs: usize) -> crate::Result<()> {
        // SAFETY: as above.
        unsafe { ours.order(ours.cu_stream(), theirs as _) }
    }
    unsafe fn wait_caller(ours: &GpuStream, theirs: usize) -> crate::Result<()> {
        // SAFETY: as above.
        unsafe { ours.wait_for(theirs as _) }
    }
}

/// The emulated device has no caller streams: a call has completed when it
/// returns.
impl CallerStreams for EmuDevice {
    unsafe fn after_caller(_: &crate::EmuStream, _: usize) -> crate::Result<()> {
        Ok(())
    }
    unsafe fn before_caller(ours: &crate::EmuStream, _: usize) -> crate::Result<()> {
        DeviceQueue::synchronize(ours)
    }
    unsafe fn wait_caller(_: &crate::EmuStream, _: usize) -> crate::Result<()> {
        Ok(())
    }
}

/// A send or a receive on device memory.
#[derive(Clone, Copy, Debug)]
pub struct DeviceP2p {
    pub send: bool,
    pub buf: Region,
    pub dtype: DType,
    pub peer: Rank,
}

/// A rank's communicator for device memory of one device; see the module
/// docs.
pub struct DeviceComm<D: CallerStreams> {
    rank: ProcessRank<D>,
    /// The stream the rank's calls are enqueued on.
    stream: D::Stream,
    /// Device memory for what a caller may leave out (reduce's receive
    /// buffer off the root), grown as needed.
    spare: Option<D::Buffer>,
}

impl<D: CallerStreams> DeviceComm<D> {
    /// This rank's communicator for memory of `dev`, from its host
    /// communicator (collective). The ranks first agree that they all are
    /// making one: a rank whose call differs (host memory where the others
    /// passed device memory) fails that call and keeps its communicator,
    /// and so do the others (theirs comes back with the error).
    pub fn new(comm: Communicator, dev: Arc<D>) -> Result<DeviceComm<D>, (oxccl::Error, Option<Box<Communicator>>)> {
        // Every rank's call here is the same: a mismatch fails it on every rank, nothing lost.
        let tag = [0x6465_7663u32]; // "devc"
        let mut agreed = [0u32];
        if let Err(e) = comm.all_reduce(&tag, &mut agreed, oxccl::ReduceOp::Max) {
            return Err((e, Some(Box::new(comm))));
        }
        let rank = ProcessRank::on(comm, dev.clone()).map_err(|e| (e, None))?;
        let stream = match dev.new_stream() {
            Ok(s) => s,
            Err(e) => return Err((system(e), None)),
        };
        Ok(DeviceComm { rank, stream, spare: None })
    }

    /// The host communicator underneath (host calls work as ever).
    pub fn host(&self) -> &Communicator {
        self.rank.host()
    }

    pub fn device(&self) -> &Arc<D> {
        self.rank.device()
    }

    /// Why calls are staged through host memory, if they are.
    pub fn staged(&self) -> Option<&str> {
        match &self.rank {
            ProcessRank::Streamed(_) => None,
            ProcessRank::Staged(_, why) => Some(why),
        }
    }

    /// `bytes` of device memory no caller owns, for buffers a call needs
    /// but its caller may leave out; valid until the next call.
    pub fn spare(&mut self, bytes: usize) -> oxccl::Result<Region> {
        if self.spare.as_ref().is_none_or(|b| D::region(b).len() < bytes) {
            self.spare = None;
            self.spare = Some(self.device().alloc(bytes.max(8)).map_err(system)?);
        }
        Ok(D::region(self.spare.as_ref().expect("allocated")).sub(0..bytes).expect("long enough"))
    }

    /// Runs `call` on `bufs`, ordered on the caller's stream `theirs` (see
    /// the module docs).
    ///
    /// # Safety
    /// The buffers are memory of this device that stays valid, and that
    /// nothing else touches, until the call has run on `theirs`; `theirs`
    /// is a live stream of the device's context (or 0).
    pub unsafe fn run(&self, call: &Call, bufs: Regions, theirs: usize) -> oxccl::Result<()> {
        reducible(call)?;
        match &self.rank {
            ProcessRank::Streamed(sc) => {
                // SAFETY: the caller's contract.
                unsafe { D::after_caller(&self.stream, theirs) }.map_err(system)?;
                // SAFETY: the caller's contract; the caller's stream waits for ours below.
                unsafe { sc.enqueue(call, bufs, &self.stream) }?;
                // SAFETY: the caller's contract.
                unsafe { D::before_caller(&self.stream, theirs) }
                    .map_err(|e| sc.async_error().unwrap_or_else(|| system(e)))
            }
            ProcessRank::Staged(r, _) => {
                // SAFETY: the caller's contract.
                unsafe { D::wait_caller(&self.stream, theirs) }.map_err(system)?;
                // SAFETY: the caller's contract; the call has completed when run returns.
                unsafe { r.run(call, bufs) }
            }
        }
    }

    /// Runs sends and receives on device memory together (as
    /// [`Communicator::exchange`]), staged through host memory: the sends'
    /// data is copied out once the caller's stream and this rank's earlier
    /// calls have run, and the receives' copied in before this returns.
    ///
    /// # Safety
    /// As for [`DeviceComm::run`], for every buffer.
    pub unsafe fn exchange(&self, ops: &[DeviceP2p], theirs: usize) -> oxccl::Result<()> {
        // SAFETY: the caller's contract.
        unsafe { D::wait_caller(&self.stream, theirs) }.map_err(system)?;
        let mut host: Vec<Vec<u8>> = ops.iter().map(|op| vec![0u8; op.buf.len()]).collect();
        for (op, h) in ops.iter().zip(&mut host) {
            if op.send && !h.is_empty() {
                // SAFETY: `h` is host memory of the same length, kept until the stream has run
                // the copy (synchronized below); the source is the caller's (its contract).
                unsafe { self.stream.copy(Region::of_mut(h), op.buf) }.map_err(system)?;
            }
        }
        self.stream.synchronize().map_err(system)?;
        let mut transfers: Vec<P2p> = ops
            .iter()
            .zip(&mut host)
            .map(|(op, h)| match op.send {
                true => P2p::Send { buf: h, dtype: op.dtype, peer: op.peer },
                false => P2p::Recv { buf: h, dtype: op.dtype, peer: op.peer },
            })
            .collect();
        self.host().exchange(&mut transfers)?;
        drop(transfers);
        for (op, h) in ops.iter().zip(&mut host) {
            if !op.send && !h.is_empty() {
                // SAFETY: as above, the other way.
                unsafe { self.stream.copy(op.buf, Region::of_mut(h)) }.map_err(system)?;
            }
        }
        self.stream.synchronize().map_err(system)
    }
}

/// `Ok` when the device's reducer kernels can run `call` (every rank
/// refuses alike, before anything runs: the staged path would otherwise
/// find out inside the executor, with peers already waiting).
fn reducible(call: &Call) -> oxccl::Result<()> {
    if !call.collective.reduces() {
        return Ok(());
    }
    let found = match call.op {
        oxccl::ReduceOp::Avg => {
            crate::kernels::reduce_kernel(oxccl::ReduceOp::Sum, call.dtype).and(crate::kernels::avg_kernel(call.dtype))
        }
        op => crate::kernels::reduce_kernel(op, call.dtype),
    };
    found.map(|_| ()).map_err(|e| oxccl::Error::InvalidArgument(format!("{} on device memory: {e}", call.collective)))
}

/// A [`DeviceComm`] on whichever device the caller's memory is.
pub enum AnyDeviceComm {
    Gpu(DeviceComm<GpuDevice>),
    Emu(DeviceComm<EmuDevice>),
}

impl AnyDeviceComm {
    /// A rank's communicator for memory at `on` (collective; see
    /// [`DeviceComm::new`]). GPU `n` is this process's CUDA device `n`.
    pub fn new(comm: Communicator, on: Located) -> Result<AnyDeviceComm, (oxccl::Error, Option<Box<Communicator>>)> {
        match on {
            Located::Host => {
                Err((oxccl::Error::InvalidArgument("host memory is not a device's".into()), Some(Box::new(comm))))
            }
            Located::Emu => match emulated() {
                Some(dev) => DeviceComm::new(comm, dev.clone()).map(AnyDeviceComm::Emu),
                None => Err((oxccl::Error::System("no emulated device".into()), Some(Box::new(comm)))),
            },
            Located::Gpu(n) => match GpuDevice::new(n) {
                Ok(dev) => DeviceComm::new(comm, dev).map(AnyDeviceComm::Gpu),
                Err(e) => Err((system(e), Some(Box::new(comm)))),
            },
        }
    }

    /// Where this communicator's memory is.
    pub fn located(&self) -> Located {
        match self {
            AnyDeviceComm::Gpu(c) => Located::Gpu(c.device().device().ordinal()),
            AnyDeviceComm::Emu(_) => Located::Emu,
        }
    }

    pub fn host(&self) -> &Communicator {
        match self {
            AnyDeviceComm::Gpu(c) => c.host(),
            AnyDeviceComm::Emu(c) => c.host(),
        }
    }

    /// See [`DeviceComm::staged`].
    pub fn staged(&self) -> Option<&str> {
        match self {
            AnyDeviceComm::Gpu(c) => c.staged(),
            AnyDeviceComm::Emu(c) => c.staged(),
        }
    }

    /// See [`DeviceComm::spare`].
    pub fn spare(&mut self, bytes: usize) -> oxccl::Result<Region> {
        match self {
            AnyDeviceComm::Gpu(c) => c.spare(bytes),
            AnyDeviceComm::Emu(c) => c.spare(bytes),
        }
    }

    /// See [`DeviceComm::run`].
    ///
    /// # Safety
    /// As there.
    pub unsafe fn run(&self, call: &Call, bufs: Regions, theirs: usize) -> oxccl::Result<()> {
        match self {
            // SAFETY: the caller's contract is the same.
            AnyDeviceComm::Gpu(c) => unsafe { c.run(call, bufs, theirs) },
            // SAFETY: as above.
            AnyDeviceComm::Emu(c) => unsafe { c.run(call, bufs, theirs) },
        }
    }

    /// See [`DeviceComm::exchange`].
    ///
    /// # Safety
    /// As there.
    pub unsafe fn exchange(&self, ops: &[DeviceP2p], theirs: usize) -> oxccl::Result<()> {
        match self {
            // SAFETY: the caller's contract is the same.
            AnyDeviceComm::Gpu(c) => unsafe { c.exchange(ops, theirs) },
            // SAFETY: as above.
            AnyDeviceComm::Emu(c) => unsafe { c.exchange(ops, theirs) },
        }
    }
}

/// For people: "host memory", "memory of CUDA device 0", ...
pub fn describe(on: Located) -> String {
    match on {
        Located::Host => "host memory".into(),
        Located::Emu => "the emulated device's memory".into(),
        Located::Gpu(n) => format!("memory of CUDA device {n}"),
    }
}

/// The one place all of a call's buffers are (`what` names the call; no
/// buffers: the host), or an invalid argument naming two it mixes.
pub fn same_place(what: &str, places: impl IntoIterator<Item = Located>) -> oxccl::Result<Located> {
    let mut found: Option<Located> = None;
    for here in places {
        match found {
            Some(f) if f != here => {
                return Err(oxccl::Error::InvalidArgument(format!(
                    "{what}: buffers in {} and in {}",
                    describe(f),
                    describe(here)
                )));
            }
            _ => found = Some(here),
        }
    }
    Ok(found.unwrap_or(Located::Host))
}

/// Where a call's buffers are (`addrs`: the start of each), as
/// [`same_place`].
pub fn placed(what: &str, addrs: &[usize]) -> oxccl::Result<Located> {
    same_place(what, addrs.iter().map(|&a| locate(a)))
}

/// A rank's communicator as a caller outside Rust holds it: host memory
/// only, until its first call on device memory makes it a device
/// communicator of that device (which runs host calls as well).
pub enum ForeignComm {
    Host(Box<Communicator>),
    Device(Box<AnyDeviceComm>),
    /// Making the device communicator failed after the host one was given
    /// to it: why.
    Lost(String),
}

impl ForeignComm {
    /// The host communicator.
    pub fn host(&self) -> oxccl::Result<&Communicator> {
        match self {
            ForeignComm::Host(c) => Ok(c),
            ForeignComm::Device(d) => Ok(d.host()),
            ForeignComm::Lost(why) => Err(oxccl::Error::Aborted(why.clone())),
        }
    }

    /// The device whose memory the calls use, once one is.
    pub fn located(&self) -> Option<Located> {
        match self {
            ForeignComm::Device(d) => Some(d.located()),
            _ => None,
        }
    }

    /// The device communicator for memory at `on`, made at the first call
    /// on device memory (collective: see [`DeviceComm::new`]); one device
    /// per communicator.
    pub fn device(&mut self, on: Located) -> oxccl::Result<&mut AnyDeviceComm> {
        if let ForeignComm::Host(_) = self {
            let ForeignComm::Host(comm) = std::mem::replace(self, ForeignComm::Lost(String::new())) else {
                unreachable!("matched above")
            };
            match AnyDeviceComm::new(*comm, on) {
                Ok(d) => *self = ForeignComm::Device(Box::new(d)),
                Err((e, Some(comm))) => {
                    *self = ForeignComm::Host(comm);
                    return Err(e);
                }
                Err((e, None)) => {
                    *self =
                        ForeignComm::Lost(format!("the communicator failed while setting up {}: {e}", describe(on)));
                    return Err(e);
                }
            }
        }
        match self {
            ForeignComm::Device(d) if d.located() != on => Err(oxccl::Error::InvalidArgument(format!(
                "buffers in {} on a communicator of {} (one device per communicator)",
                describe(on),
                describe(d.located())
            ))),
            ForeignComm::Device(d) => Ok(d),
            ForeignComm::Lost(why) => Err(oxccl::Error::Aborted(why.clone())),
            ForeignComm::Host(_) => unreachable!("made above"),
        }
    }
}

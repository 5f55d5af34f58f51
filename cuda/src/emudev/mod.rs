//! An emulated device: what the GPU collectives need from a GPU — device
//! memory, in-order streams, events, copies, the reducer kernels and
//! stream-level waits on memory words — over host memory, so that every
//! device code path runs on a machine without a GPU.
//!
//! * [`EmuPlatform`]: several devices and which of them may access each
//!   other's memory (the peer-access matrix a real machine reports).
//! * [`EmuDevice`]: one device's allocations ([`EmuBuffer`], zero-filled,
//!   256-byte aligned as `cudaMalloc`'s). Device memory is host memory
//!   here, so a device pointer is an address and a [`Region`] names device
//!   bytes as it names host bytes; the device knows which regions are its
//!   own, so passing host memory where device memory is expected is an
//!   error, as on a GPU.
//! * [`EmuStream`] (in `stream.rs`): an in-order queue run by a thread of
//!   its own; operations are enqueued and the call returns, as on a GPU.
//!   Errors are sticky: the first one fails every later operation and is
//!   reported by [`EmuStream::synchronize`]. Kernels run through the host
//!   emulation of the same sources ([`crate::emu`]).
//!
//! Freeing a buffer first waits for every stream of the platform (a peer's
//! stream may copy into it), so no queued operation outlives the memory it
//! uses.

mod ipc;
mod stream;

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use oxccl::mem::Region;

use crate::error::{Error, Result};
pub use ipc::{EmuIpcHandle, IPC_DEVICE};
pub use stream::{signal_value, EmuEvent, EmuGraph, EmuStream, OnError, Watch};

/// Alignment of every allocation, as `cudaMalloc` guarantees.
pub const ALLOC_ALIGN: usize = 256;

/// What runs a device's reductions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reducer {
    /// The reducer kernels through the host emulation of their sources
    /// ([`crate::emu`]): what runs on a GPU, at emulation speed (one block
    /// at a time, a host thread per GPU thread: milliseconds a launch).
    #[default]
    Kernels,
    /// The host's reducers ([`oxccl::reduce`]), for measuring the rest of
    /// the device path (schedules, streams, waits) at host speed; the same
    /// operations, not the same code as the GPU's.
    Host,
}

/// Several emulated devices and the peer access between them.
pub struct EmuPlatform {
    devices: Vec<Arc<EmuDevice>>,
    allocs: Arc<Allocs>,
}

/// Every live allocation of a platform's devices: start address →
/// (length in bytes, device); and every stream of the platform.
#[derive(Default)]
pub(crate) struct Allocs {
    map: Mutex<BTreeMap<usize, (usize, usize)>>,
    streams: Mutex<Vec<Weak<stream::Queue>>>,
    /// Rung by every stream write of a memory word, so that streams
    /// waiting on words sleep rather than spin (the host's cores are few).
    words: stream::Bell,
    /// Memory cannot be shared between processes (as on a machine whose
    /// sandbox refuses CUDA IPC): see [`EmuPlatform::refuse_ipc`].
    no_ipc: std::sync::atomic::AtomicBool,
}

impl Allocs {
    /// Waits until every live stream of the platform has run what it was given.
    fn drain_all(&self) {
        let streams: Vec<_> =
            self.streams.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
        for q in streams {
            q.drain();
        }
    }

    /// The device whose allocation holds all of `r` (an empty region at an
    /// allocation's address counts).
    fn device_of(&self, r: Region) -> Option<usize> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (&start, &(len, dev)) = map.range(..=r.addr()).next_back()?;
        (r.addr() + r.len() <= start + len).then_some(dev)
    }
}

impl EmuPlatform {
    /// `count` devices that may all access each other's memory (as GPUs
    /// joined by NVLink).
    pub fn new(count: usize) -> EmuPlatform {
        EmuPlatform::with_peer_access(count, |_, _| true)
    }

    /// `count` devices where device `a` may access device `b`'s memory when
    /// `peer(a, b)` (a device always reaches its own).
    pub fn with_peer_access(count: usize, peer: impl Fn(usize, usize) -> bool) -> EmuPlatform {
        EmuPlatform::build(count, peer, Reducer::Kernels)
    }

    /// `count` devices with peer access whose reductions run on `reducer`.
    pub fn with_reducer(count: usize, reducer: Reducer) -> EmuPlatform {
        EmuPlatform::build(count, |_, _| true, reducer)
    }

    fn build(count: usize, peer: impl Fn(usize, usize) -> bool, reducer: Reducer) -> EmuPlatform {
        let allocs = Arc::new(Allocs::default());
        let devices = (0..count)
            .map(|i| {
                let reaches = (0..count).map(|j| i == j || peer(i, j)).collect();
                let streams = Mutex::default();
                Arc::new(EmuDevice { ordinal: i, reaches, allocs: allocs.clone(), streams, reducer })
            })
            .collect();
        EmuPlatform { devices, allocs }
    }

    /// From now on the platform's devices refuse to share memory with
    /// other processes or open theirs, as a GPU whose sandbox refuses CUDA
    /// IPC does: to test what falls back to staging through the host.
    pub fn refuse_ipc(&self) {
        self.allocs.no_ipc.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn count(&self) -> usize {
        self.devices.len()
    }

    /// Device `ordinal`, or [`Error::NoDevice`].
    pub fn device(&self, ordinal: usize) -> Result<Arc<EmuDevice>> {
        self.devices.get(ordinal).cloned().ok_or(Error::NoDevice { ordinal, count: self.devices.len() })
    }

    /// The device whose allocation holds all of `r`, if any.
    pub fn device_of(&self, r: Region) -> Option<usize> {
        self.allocs.device_of(r)
    }
}

/// One emulated device; see the module docs.
pub struct EmuDevice {
    ordinal: usize,
    /// `reaches[j]`: this device may access device `j`'s memory.
    reaches: Vec<bool>,
    /// The platform's allocations (of every device).
    allocs: Arc<Allocs>,
    /// The device's streams, waited for before memory is freed.
    streams: Mutex<Vec<Weak<stream::Queue>>>,
    reducer: Reducer,
}

impl std::fmt::Debug for EmuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuDevice").field("ordinal", &self.ordinal).finish()
    }
}

impl EmuDevice {
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// `emu:N`.
    pub fn name(&self) -> String {
        format!("emu:{}", self.ordinal)
    }

    /// What runs this device's reductions.
    pub fn reducer(&self) -> Reducer {
        self.reducer
    }

    /// Whether this device may access device `peer`'s memory.
    pub fn can_access_peer(&self, peer: usize) -> bool {
        self.reaches.get(peer).copied().unwrap_or(false)
    }

    /// `bytes` of zero-filled device memory (at least one byte is reserved,
    /// so every buffer has an address of its own).
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<EmuBuffer> {
        let layout = Layout::from_size_align(bytes.max(1), ALLOC_ALIGN)
            .map_err(|e| Error::invalid("emu alloc", format!("{bytes} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::invalid("emu alloc", format!("out of memory for {bytes} bytes")));
        }
        self.allocs.map.lock().unwrap_or_else(|e| e.into_inner()).insert(ptr as usize, (bytes, self.ordinal));
        Ok(EmuBuffer {
            dev: self.clone(),
            region: Region::from_raw(ptr as usize, bytes),
            backing: Backing::Heap(layout),
        })
    }

    /// The device of the platform whose allocation holds all of `r`, if any.
    pub fn device_of(&self, r: Region) -> Option<usize> {
        self.allocs.device_of(r)
    }

    /// Whether `r` lies inside one of this device's allocations.
    pub fn owns(&self, r: Region) -> bool {
        self.allocs.device_of(r) == Some(self.ordinal)
    }

    /// `Ok` when `r` is this device's memory, else an invalid argument
    /// saying what it is instead (host memory, another device's): a
    /// collective's buffers, checked before anything is issued.
    pub fn check_owned(&self, what: &'static str, r: Region) -> std::result::Result<(), oxccl::Error> {
        if self.owns(r) {
            return Ok(());
        }
        Err(oxccl::Error::InvalidArgument(match self.device_of(r) {
            Some(other) => format!("{what}: {} bytes of device {other}'s memory on a rank of {}", r.len(), self.name()),
            None => format!(
                "{what}: {} bytes at {:#x} are not device memory (host memory?) on {}",
                r.len(),
                r.addr(),
                self.name()
            ),
        }))
    }

    /// The 8-byte word `word` of device memory this device reaches, as it
    /// is now (no stream is waited for).
    pub fn peek(&self, word: Region) -> Result<u64> {
        if word.len() != 8 || word.addr() % 8 != 0 {
            return Err(Error::invalid("emu peek", format!("{} bytes at {:#x}", word.len(), word.addr())));
        }
        self.check_reach("emu peek", word)?;
        // SAFETY: 8 aligned bytes inside a live device allocation (checked above).
        Ok(unsafe { &*(word.addr() as *const std::sync::atomic::AtomicU64) }.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Whether a copy on this device may touch `r`: host memory, or device
    /// memory of this device or of a peer it can access.
    pub fn check_copy(&self, what: &'static str, r: Region) -> Result<()> {
        match self.allocs.device_of(r) {
            None => Ok(()),
            Some(_) => self.check_reach(what, r),
        }
    }

    /// Whether a kernel on this device may touch `r`: memory of this device
    /// or of a peer it can access. `Err` names what `r` is otherwise.
    pub fn check_reach(&self, what: &'static str, r: Region) -> Result<()> {
        match self.allocs.device_of(r) {
            Some(d) if d == IPC_DEVICE || self.can_access_peer(d) => Ok(()),
            Some(d) => Err(Error::invalid(what, format!("{} cannot access device {d}'s memory", self.name()))),
            None => Err(Error::invalid(
                what,
                format!("{} bytes at {:#x} are not device memory of this platform", r.len(), r.addr()),
            )),
        }
    }

    /// A new stream of this device.
    pub fn new_stream(self: &Arc<Self>) -> EmuStream {
        let s = EmuStream::new(self.clone());
        for list in [&self.streams, &self.allocs.streams] {
            let mut streams = list.lock().unwrap_or_else(|e| e.into_inner());
            streams.retain(|w| w.strong_count() > 0);
            streams.push(Arc::downgrade(s.queue()));
        }
        s
    }

    /// Waits until every stream of this device has run what it was given
    /// (errors stay with the streams).
    pub fn synchronize(&self) {
        let streams: Vec<_> = {
            let s = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            s.iter().filter_map(Weak::upgrade).collect()
        };
        for q in streams {
            q.drain();
        }
    }
}

/// Device memory of one [`EmuDevice`], freed (after the platform's streams
/// have run) when dropped.
pub struct EmuBuffer {
    dev: Arc<EmuDevice>,
    region: Region,
    backing: Backing,
}

/// Where an [`EmuBuffer`]'s bytes come from.
enum Backing {
    /// This process's heap.
    Heap(Layout),
    /// A file of the host's shared memory, mapped here: memory another
    /// process may open through an IPC handle (see `ipc.rs`).
    Shared(ipc::SharedMap),
}

impl EmuBuffer {
    /// The buffer's bytes, as the executor names memory.
    pub fn region(&self) -> Region {
        self.region
    }

    pub fn len(&self) -> usize {
        self.region.len()
    }

    pub fn is_empty(&self) -> bool {
        self.region.len() == 0
    }

    pub fn device(&self) -> &Arc<EmuDevice> {
        &self.dev
    }

    /// Copies `host` into the start of the buffer, at once (as a blocking
    /// `cudaMemcpy`: the device's streams are waited for first).
    pub fn upload(&self, host: &[u8]) -> Result<()> {
        if host.len() > self.len() {
            return Err(Error::invalid("emu upload", format!("{} bytes into a buffer of {}", host.len(), self.len())));
        }
        self.dev.synchronize();
        // SAFETY: the device's streams have run everything queued, the buffer is live, and
        // `&self` is the only handle to it outside queued operations.
        unsafe { self.region.sub(0..host.len()).expect("fits").bytes_mut() }.copy_from_slice(host);
        Ok(())
    }

    /// The buffer's bytes, once the device's streams have run (as a blocking
    /// `cudaMemcpy` to the host).
    pub fn download(&self) -> Vec<u8> {
        self.dev.synchronize();
        // SAFETY: as in `upload`; only read.
        unsafe { self.region.bytes() }.to_vec()
    }
}

impl Drop for EmuBuffer {
    fn drop(&mut self) {
        self.dev.allocs.drain_all();
        self.dev.allocs.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.region.addr());
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: allocated in `EmuDevice::alloc` with this layout; no queued operation is
            // left that uses it (every stream of the platform was drained above).
            unsafe { dealloc(self.region.addr() as *mut u8, layout) };
        }
        // A shared mapping is unmapped (and its file removed by its owner) when dropped.
    }
}

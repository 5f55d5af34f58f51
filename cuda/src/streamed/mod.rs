//! Stream-ordered collectives on device memory, NCCL-shaped: a call takes
//! a stream, returns once its work is enqueued there, and work enqueued
//! later on that stream sees the result. Nothing enqueued needs the host
//! while it runs: ranks signal each other by writing words of each other's
//! device memory from their streams and wait with stream-level waits on
//! words of their own (`area.rs`), and every step of the schedule becomes
//! copies and reducer kernels (`issue.rs`). The schedules, the algorithms
//! and the checker's proofs are the host's.
//!
//! Ranks are threads of one process ([`StreamComm::local_group`], as
//! `ncclCommInitAll`: one or several devices with peer access, several
//! ranks sharing a device if asked, which NCCL refuses), or processes of
//! one host ([`StreamComm::init`]: each rank's area is shared through IPC
//! handles; peers' user buffers stay out of reach, so direct is refused).
//! Entering a call, a rank posts it on the host and waits until every rank
//! has posted it — their arguments are compared there, so a disagreement
//! is an error before anything is enqueued, and the direct algorithm learns
//! peers' buffer addresses there — but it never waits for device work.
//! A wait on a peer's word also watches whether the peer's process is
//! still there: a dead peer fails the group, naming it.
//!
//! Errors after a call returned (a peer that never arrives, a timeout) fail
//! the stream, abort the group and are reported by
//! [`StreamComm::async_error`] and by the next call; [`StreamComm::abort`]
//! stops every stream waiting on the group (`ncclCommGetAsyncError`,
//! `ncclCommAbort`).
//!
//! Graphs: every signal is relative to an epoch the rank's streams keep on
//! the device (`area.rs`), so a call's stream work is the same every time
//! it runs: capture it ([`DeviceQueue::begin_capture`], once the call has
//! run outside a capture, which sizes the rank's device memory) and replay
//! it ([`DeviceQueue::launch_graph`]) as often as needed, every rank the
//! same calls in the same order. A rank's calls run on the device in the
//! order they were enqueued, whichever of its streams they were enqueued
//! on (an event after each orders the next).

mod area;
pub mod backend;
pub mod gpu;
mod issue;

use std::cell::RefCell;
use std::sync::Arc;

use oxccl::mem::Region;
use oxccl::schedule::Step;
use oxccl::{AbortHandle, Call, Collective, Communicator, Config, DType, Error, Rank, ReduceOp, Regions, Result};

use crate::emudev::EmuDevice;
use area::Area;
use backend::{DeviceMemory, DeviceQueue};
pub use issue::fault_of;
use issue::Issuer;

/// One rank of a group whose collectives run on device streams; see the
/// module docs.
pub struct StreamComm<D: DeviceMemory = EmuDevice> {
    comm: Communicator,
    dev: Arc<D>,
    /// Every rank's area, in rank order (shared by the group).
    areas: Arc<Vec<Area<D>>>,
    memory: RefCell<Memory<D>>,
    /// The stream of this rank's last call and an event after it: a call
    /// on another stream first waits for it (a rank's calls run in order
    /// on the device, whichever streams they are enqueued on).
    last: RefCell<Option<(usize, <D::Stream as DeviceQueue>::Event)>>,
    group: AbortHandle,
    /// The ranks are threads of one process (peers' buffers are reachable).
    threads: bool,
    /// Releases the waits of a device whose waits cannot watch the group.
    _watchdog: Option<Watchdog>,
}

/// A thread that, for a device whose stream-level waits see only their
/// word ([`DeviceMemory::WAITS_WATCH`] false), releases every wait on the
/// group's areas once the group is aborted (by any rank), a peer's process
/// is gone, or one of this rank's waits gave up after the timeout (its
/// fault word says for whom; the last two it reports, naming the peer).
/// Stopped when the communicator is dropped.
struct Watchdog {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// How often the watchdog looks.
    const EVERY: std::time::Duration = std::time::Duration::from_millis(1);

    fn start<D: DeviceMemory>(
        group: AbortHandle,
        dev: Arc<D>,
        areas: Arc<Vec<Area<D>>>,
        me: Rank,
        peers: Vec<Rank>,
        timeout: std::time::Duration,
    ) -> Watchdog {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let release = move |areas: &[Area<D>]| {
            for area in areas {
                let _ = area.release();
            }
        };
        let thread = std::thread::Builder::new()
            .name(format!("oxccl-watchdog-{me}"))
            .spawn(move || {
                while !halt.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::sleep(Self::EVERY);
                    if group.is_aborted() {
                        return release(&areas);
                    }
                    if let Some(&p) = peers.iter().find(|&&p| !group.peer_alive(p)) {
                        let what = "its process ended (device watchdog)".to_string();
                        group.fail(Error::PeerGone { call: None, rank: me, peer: p, what });
                        return release(&areas);
                    }
                    if let Some((what, peer)) = dev.peek(areas[me].fault()).ok().and_then(issue::fault_of) {
                        group.fail(Error::Timeout { call: None, rank: me, peer, what, waited: timeout });
                        return release(&areas);
                    }
                }
            })
            .ok();
        Watchdog { stop, thread }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The rank's own device memory for calls: a scratch space and a work
/// area, grown when a call needs more. A space that grew is kept, not
/// freed: a peer's stream may still read it, a captured graph may name
/// it, and freeing device memory waits for every stream.
struct Memory<D: DeviceMemory> {
    scratch: Option<D::Buffer>,
    work: Option<D::Buffer>,
    retired: Vec<D::Buffer>,
}

impl<D: DeviceMemory> Default for Memory<D> {
    fn default() -> Self {
        Memory { scratch: None, work: None, retired: Vec::new() }
    }
}

impl<D: DeviceMemory> Memory<D> {
    fn at_least(
        slot: &mut Option<D::Buffer>,
        retired: &mut Vec<D::Buffer>,
        dev: &Arc<D>,
        bytes: usize,
    ) -> Result<Region> {
        if bytes == 0 {
            return Ok(Region::EMPTY);
        }
        if slot.as_ref().is_none_or(|b| D::region(b).len() < bytes) {
            let grown = dev.alloc(bytes.next_power_of_two()).map_err(|e| Error::System(e.to_string()))?;
            retired.extend(slot.replace(grown));
        }
        Ok(D::region(slot.as_ref().expect("just set")).sub(0..bytes).expect("long enough"))
    }
}

impl<D: DeviceMemory> StreamComm<D> {
    /// One rank per entry of `devices` (a device may be named several
    /// times: ranks sharing it), threads of this process; move each into
    /// its own thread. Messages of the staged algorithms are cut at
    /// `config.device_slice_bytes`. Every device must reach every other's memory
    /// (peer access).
    pub fn local_group(devices: &[Arc<D>], config: Config) -> Result<Vec<StreamComm<D>>> {
        let n = devices.len();
        for (a, da) in devices.iter().enumerate() {
            for (b, db) in devices.iter().enumerate() {
                if !da.can_access(db) {
                    return Err(Error::InvalidArgument(format!(
                        "rank {a} on {} cannot access rank {b}'s {}: stream-ordered calls need peer access \
                         between every pair of devices",
                        da.name(),
                        db.name()
                    )));
                }
            }
        }
        for da in devices {
            for db in devices {
                da.enable_peer_access(db).map_err(|e| Error::System(e.to_string()))?;
            }
        }
        let slot = config.device_slice_bytes;
        if slot == 0 || slot > 1 << 30 {
            return Err(Error::InvalidArgument(format!("device slice of {slot} bytes (must be 1 B ..= 1 GiB)")));
        }
        let comms = Communicator::local_group_with(n, config)?;
        let areas = devices
            .iter()
            .map(|d| Area::new(d, n, slot))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::System(e.to_string()))?;
        let areas = Arc::new(areas);
        Ok(comms
            .into_iter()
            .zip(devices)
            .map(|(comm, dev)| StreamComm {
                // Threads cannot die alone: only the abort is watched.
                _watchdog: (!D::WAITS_WATCH).then(|| {
                    let timeout = comm.config().timeout;
                    Watchdog::start(comm.abort_handle(), dev.clone(), areas.clone(), comm.rank(), Vec::new(), timeout)
                }),
                group: comm.abort_handle(),
                comm,
                dev: dev.clone(),
                areas: areas.clone(),
                memory: RefCell::default(),
                last: RefCell::new(None),
                threads: true,
            })
            .collect())
    }

    /// This process's rank of a group of processes on one host: `comm` is
    /// its communicator (over shared memory: the calls are entered through
    /// its postings), `dev` its device. Every rank's area is device memory
    /// shared through IPC handles, exchanged over `comm` (collective: every
    /// rank calls this). Peers' user buffers stay out of reach, so the
    /// direct algorithm is refused; ring (the default), tree and
    /// halving-doubling run.
    pub fn init(comm: Communicator, dev: Arc<D>) -> Result<StreamComm<D>> {
        Self::init_or_give_back(comm, dev).map_err(|(e, _)| e)
    }

    /// As [`StreamComm::init`]; when IPC between the processes does not
    /// work (on any rank: the ranks agree, so every rank gives up alike),
    /// the error comes back with the communicator, so that the caller can
    /// stage device data through host memory instead
    /// ([`oxccl::Communicator::run_in`]). Other failures give back no
    /// communicator.
    pub fn init_or_give_back(
        comm: Communicator,
        dev: Arc<D>,
    ) -> std::result::Result<StreamComm<D>, (Error, Option<Box<Communicator>>)> {
        const HANDLE: usize = 128;
        let (n, me) = (comm.world(), comm.rank());
        if !comm.shares_memory() {
            let e = Error::InvalidArgument(format!(
                "stream-ordered calls between processes need a shared-memory transport, not {}",
                comm.transport()
            ));
            return Err((e, Some(Box::new(comm))));
        }
        let slot = comm.config().device_slice_bytes;
        // Each rank's record: a status byte (1: shared), then its handle.
        let mine = dev.alloc_shareable(Area::<D>::bytes(n, slot));
        let mut record = [0u8; HANDLE + 1];
        let mut local: Option<String> = None;
        let mut mine = match mine {
            Ok((buf, handle)) if handle.len() <= HANDLE => {
                record[0] = 1;
                record[1..1 + handle.len()].copy_from_slice(&handle);
                Some((buf, handle.len()))
            }
            Ok((_, handle)) => {
                local = Some(format!("an IPC handle of {} bytes (room for {HANDLE})", handle.len()));
                None
            }
            Err(e) => {
                local = Some(e.to_string());
                None
            }
        };
        let mut all = vec![0u8; n * (HANDLE + 1)];
        if let Err(e) = comm.all_gather(&record, &mut all) {
            return Err((e, None));
        }
        let unavailable = |comm: Communicator, who: String| {
            let e = Error::InvalidArgument(format!("IPC between processes is unavailable: {who}"));
            Err((e, Some(Box::new(comm))))
        };
        if let Some(p) = (0..n).find(|&p| all[p * (HANDLE + 1)] != 1) {
            let why = local.unwrap_or_else(|| "it could not share its device memory".into());
            return unavailable(comm, format!("rank {p}: {why}"));
        }
        let handle_len = mine.as_ref().map_or(0, |m| m.1);
        let mut areas = Vec::with_capacity(n);
        let mut failed: Option<String> = None;
        for p in 0..n {
            if p == me || failed.is_some() {
                areas.push(None);
                continue;
            }
            let at = p * (HANDLE + 1) + 1;
            match dev.open_shared(&all[at..at + handle_len]) {
                Ok(theirs) => areas.push(Some(Area::of(&dev, theirs, n, slot))),
                Err(e) => {
                    failed = Some(format!("rank {me} could not open rank {p}'s device memory: {e}"));
                    areas.push(None);
                }
            }
        }
        // Every rank learns whether every rank opened every peer's area.
        let ok = [i32::from(failed.is_none())];
        let mut agreed = [0i32];
        if let Err(e) = comm.all_reduce(&ok, &mut agreed, ReduceOp::Min) {
            return Err((e, None));
        }
        if agreed[0] == 0 {
            drop(areas);
            let why = failed.unwrap_or_else(|| "a peer could not open the device memory of the others".into());
            return unavailable(comm, why);
        }
        // Every peer has mapped this rank's area: nothing needs its name now.
        if let Err(e) = comm.barrier() {
            return Err((e, None));
        }
        let (mut mine, _) = mine.take().expect("shared (checked by every rank)");
        D::unshare(&mut mine);
        areas[me] = Some(Area::of(&dev, mine, n, slot));
        let areas = Arc::new(areas.into_iter().map(|a| a.expect("every area")).collect());
        let peers = (0..n).filter(|&p| p != me).collect();
        Ok(StreamComm {
            _watchdog: (!D::WAITS_WATCH).then(|| {
                let timeout = comm.config().timeout;
                Watchdog::start(comm.abort_handle(), dev.clone(), Arc::clone(&areas), me, peers, timeout)
            }),
            group: comm.abort_handle(),
            comm,
            dev,
            areas,
            memory: RefCell::default(),
            last: RefCell::new(None),
            threads: false,
        })
    }

    pub fn rank(&self) -> Rank {
        self.comm.rank()
    }

    pub fn world(&self) -> usize {
        self.comm.world()
    }

    pub fn device(&self) -> &Arc<D> {
        &self.dev
    }

    /// Enqueues `call` on `bufs` (this rank's device memory) on `stream`
    /// (a stream of this rank's device) and returns: later work on the
    /// stream sees the result. Errors before anything is enqueued: buffers
    /// that are not this device's memory or too short, a stream of another
    /// device, a dtype and operator without reducer kernels, arguments
    /// other ranks disagree with, a group already aborted. Ranks issue the call's algorithm — the call's, else the
    /// communicator's default, else direct.
    ///
    /// # Safety
    /// The buffers stay valid, and nothing else touches them, until
    /// `stream` has run the call (device memory freed by dropping its
    /// [`crate::EmuBuffer`] waits for every stream, which is enough).
    pub unsafe fn enqueue(&self, call: &Call, bufs: Regions, stream: &D::Stream) -> Result<()> {
        if !self.dev.owns_stream(stream) {
            return Err(Error::InvalidArgument(format!(
                "{}: a stream of {} on a communicator of {} (rank {})",
                call.collective,
                D::stream_device(stream),
                self.dev.name(),
                self.rank()
            )));
        }
        if call.collective.reduces() {
            let op = if call.op == ReduceOp::Avg { ReduceOp::Sum } else { call.op };
            crate::kernels::reduce_kernel(op, call.dtype)
                .and_then(|_| match call.op == ReduceOp::Avg {
                    true => crate::kernels::avg_kernel(call.dtype).map(|_| ()),
                    false => Ok(()),
                })
                .map_err(|e| Error::InvalidArgument(format!("{} on {}: {e}", call.collective, self.dev.name())))?;
        }
        let hook_group = self.group.clone();
        let (rank, name) = (self.rank(), self.dev.name());
        stream.on_error(Arc::new(move |e: &str| {
            hook_group.fail(Error::System(format!("rank {rank}'s stream on {name}: {e}")));
        }));
        let check = |what, r| self.dev.check_owned(what, r);
        let scratch = |_seq: u64, bytes: usize| {
            let m = &mut *self.memory.borrow_mut();
            Memory::at_least(&mut m.scratch, &mut m.retired, &self.dev, bytes)
        };
        self.after_last_call(stream)?;
        let slot = self.comm.config().device_slice_bytes;
        let name = self.dev.name();
        // SAFETY: the caller keeps the buffers valid and untouched until the stream has run
        // the call; they are this device's memory (checked first).
        unsafe {
            self.comm.enter_in(&name, check, call, bufs, slot, scratch, |entered| {
                let work_bytes = entered
                    .schedule
                    .steps
                    .iter()
                    .map(|s| match s {
                        Step::Direct(d) => d.len * entered.args.dtype.size(),
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0);
                let m = &mut *self.memory.borrow_mut();
                let work = Memory::at_least(&mut m.work, &mut m.retired, &self.dev, work_bytes)?;
                Issuer::new(stream, &self.areas, &self.group, self.comm.config().timeout, work).issue(&entered)
            })?;
        }
        if !stream.capturing() {
            let event = stream.record().map_err(|e| Error::System(e.to_string()))?;
            *self.last.borrow_mut() = Some((stream as *const D::Stream as usize, event));
        }
        Ok(())
    }

    /// Orders a call on `stream` after this rank's last call, when that
    /// was enqueued on another stream.
    fn after_last_call(&self, stream: &D::Stream) -> Result<()> {
        match &*self.last.borrow() {
            Some((s, event)) if *s != stream as *const D::Stream as usize => {
                stream.wait_event(event).map_err(|e| Error::System(e.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// One call on several ranks of a group, issued by one thread
    /// (`ncclGroupStart` ... `ncclGroupEnd` over ranks of `ncclCommInitAll`):
    /// every rank's part is entered at once (entering waits for the other
    /// ranks, so one thread could not enter them one after the other), and
    /// the result of each, in order. Ranks not named here must make the
    /// same call from their own threads.
    ///
    /// # Safety
    /// As for [`StreamComm::enqueue`], for every rank's buffers.
    pub unsafe fn enqueue_group(parts: &mut [GroupPart<'_, D>]) -> Vec<Result<()>>
    where
        D::Stream: Sync,
    {
        std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter_mut()
                .map(|p| {
                    // SAFETY: the caller's contract, passed on.
                    s.spawn(move || unsafe { p.comm.enqueue(&p.call, p.bufs, p.stream) })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a group member panicked".into()))))
                .collect()
        })
    }

    /// The blocking form: enqueues `call` on `stream` and waits until the
    /// stream has run it. A failure while it ran is the group's error.
    pub fn run(&self, call: &Call, bufs: Buffers<'_, D>, stream: &D::Stream) -> Result<()> {
        // SAFETY: the buffers are borrowed until the stream has run the call (waited for below,
        // also on failure), and dropping device memory waits for every stream anyway.
        unsafe { self.enqueue(call, bufs.regions(), stream) }?;
        stream.synchronize().map_err(|e| self.comm_error().unwrap_or(Error::System(e.to_string())))?;
        // A wait that gave up without failing the stream (a GPU's) left garbage behind.
        self.comm_error().map_or(Ok(()), Err)
    }

    /// All-reduce of `count` elements of `dtype` from `send` into `recv`
    /// (the same buffer for in place), blocking.
    pub fn all_reduce(
        &self,
        send: &D::Buffer,
        recv: &D::Buffer,
        count: usize,
        dtype: DType,
        op: ReduceOp,
        stream: &D::Stream,
    ) -> Result<()> {
        let call = Call { collective: Collective::AllReduce, dtype, op, count, root: 0, algorithm: None };
        self.run(&call, Buffers::of(send, recv), stream)
    }

    /// The first failure since the group was made that no call has
    /// returned yet — or has: a failed group stays failed
    /// (`ncclCommGetAsyncError`). `None` while all is well.
    pub fn async_error(&self) -> Option<Error> {
        self.comm_error()
    }

    /// The group's failure; on a device whose waits cannot fail their
    /// stream, also a wait of this rank that gave up and that the watchdog
    /// has not reported yet (its fault word is read here).
    fn comm_error(&self) -> Option<Error> {
        if let Some(e) = self.group.cause() {
            return Some(e);
        }
        if D::WAITS_WATCH {
            return None;
        }
        let me = self.rank();
        let (what, peer) = self.dev.peek(self.areas[me].fault()).ok().and_then(issue::fault_of)?;
        let waited = self.comm.config().timeout;
        self.group.fail(Error::Timeout { call: None, rank: me, peer, what, waited });
        for area in self.areas.iter() {
            let _ = area.release();
        }
        self.group.cause()
    }

    /// Aborts the group: every stream waiting on it stops (its stream
    /// fails), and every later call on any rank fails (`ncclCommAbort`).
    pub fn abort(&self, reason: &str) {
        self.group.abort(reason);
        // Devices whose waits cannot watch the group (a GPU's) are released
        // by setting every word any stream may wait on.
        for area in self.areas.iter() {
            let _ = area.release();
        }
    }

    /// What a call naming no algorithm runs: the communicator's default,
    /// else direct between threads and ring between processes (whose user
    /// buffers peers cannot reach).
    pub fn default_algorithm(&self) -> oxccl::Algorithm {
        let auto = if self.threads { oxccl::Algorithm::Direct } else { oxccl::Algorithm::Ring };
        self.comm.config().algorithm.unwrap_or(auto)
    }

    /// The host-memory communicator underneath (host calls work as ever).
    pub fn communicator(&self) -> &Communicator {
        &self.comm
    }
}

/// One rank's part of a call issued by [`StreamComm::enqueue_group`].
pub struct GroupPart<'a, D: DeviceMemory = EmuDevice> {
    pub comm: &'a mut StreamComm<D>,
    pub call: Call,
    pub bufs: Regions,
    pub stream: &'a D::Stream,
}

/// A call's device buffers, borrowed: separate send and receive buffers,
/// or one buffer in place.
pub enum Buffers<'a, D: DeviceMemory = EmuDevice> {
    OutOfPlace { send: &'a D::Buffer, recv: &'a D::Buffer },
    InPlace(&'a D::Buffer),
}

impl<D: DeviceMemory> Clone for Buffers<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D: DeviceMemory> Copy for Buffers<'_, D> {}

impl<'a, D: DeviceMemory> Buffers<'a, D> {
    /// In place when both are the same buffer.
    pub fn of(send: &'a D::Buffer, recv: &'a D::Buffer) -> Buffers<'a, D> {
        match D::region(send) == D::region(recv) {
            true => Buffers::InPlace(send),
            false => Buffers::OutOfPlace { send, recv },
        }
    }

    pub fn regions(&self) -> Regions {
        match self {
            Buffers::OutOfPlace { send, recv } => Regions::OutOfPlace { send: D::region(send), recv: D::region(recv) },
            Buffers::InPlace(b) => Regions::InPlace(D::region(b)),
        }
    }
}

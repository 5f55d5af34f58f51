//! The communicator: one rank's handle on a group, and the collective API.
//!
//! `Communicator::local_group(n)` makes `n` ranks that are threads of this
//! process (like `ncclCommInitAll`); move each into its own thread. Every call
//! is collective over the group except `send`/`recv`, and every rank must make
//! the same calls in the same order with the same arguments (count, dtype,
//! reduction op, root, algorithm). Each call gets a sequence number; a rank
//! posts its arguments when it enters and compares them with those other
//! ranks posted for the same number, so a disagreement is an
//! [`Error::Mismatch`] naming both ranks' values rather than a hang or wrong
//! data.
//!
//! Failures are group-wide: a mismatch, a timeout, a protocol error or
//! [`Communicator::abort`] aborts the whole group, every waiting rank returns
//! an error, and the communicators are unusable from then on (as with NCCL,
//! make a new group).
//!
//! Deadlines: every wait ends after [`Config::timeout`] without progress,
//! with an [`Error::Timeout`] naming the call, its sequence number and the
//! rank waited for. The default is the `OXCCL_TIMEOUT` environment variable,
//! in seconds (fractions allowed), else 300 s.
//!
//! Message size: [`Config::slice_bytes`], default `OXCCL_SLICE_BYTES` or 128 KiB.
//!
//! Algorithms: a call names one, or the communicator's default, or the auto
//! rule ([`auto_algorithm`]).

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::algo::Algorithm;
use crate::bootstrap::connect::{connect, TransportKind};
use crate::bootstrap::env::Launch;
pub use crate::config::Config;
use crate::dtype::{DType, Element, ReduceOp};
use crate::error::{Error, Result};
use crate::executor::{aborted, Exec, RankState};
use crate::mem::Region;
use crate::schedule::{Collective, Rank, Schedule, Spec};
use crate::space::HOST;
use crate::transport::local::LocalGroup;
use crate::transport::{Args, Transport};

// The one unsafe item: a call on memory named by address (a device's).
#[allow(unsafe_code)]
mod device;
mod group;
mod plan;
#[allow(unsafe_code)]
mod shared_buf;

pub use device::Entered;
pub use group::P2p;
use plan::{Key, Plan};
pub use shared_buf::SharedBuf;

/// One collective call, without its buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub collective: Collective,
    pub dtype: DType,
    /// Ignored by collectives that do not reduce.
    pub op: ReduceOp,
    /// Per-rank count in NCCL's convention ([`Collective::input_len`]).
    pub count: usize,
    /// Ignored by collectives without a root.
    pub root: Rank,
    /// `None`: the communicator's default.
    pub algorithm: Option<Algorithm>,
}

/// Buffers of a dtype-erased call; both must be aligned to the element size.
pub enum Bytes<'a> {
    OutOfPlace {
        send: &'a [u8],
        recv: &'a mut [u8],
    },
    /// One array holding input and output at NCCL's offsets
    /// ([`Collective::in_place_offsets`]).
    InPlace(&'a mut [u8]),
}

/// Buffers of a dtype-erased call named by their regions, for memory this
/// process may not read itself (a device's: [`Communicator::run_in`]).
#[derive(Clone, Copy, Debug)]
pub enum Regions {
    OutOfPlace {
        send: Region,
        recv: Region,
    },
    /// As [`Bytes::InPlace`].
    InPlace(Region),
}

/// The auto rule. Ranks that can reach each other's buffers (threads of one
/// process; processes on one host with buffers from
/// [`Communicator::alloc_shared`] — every rank must choose alike) use
/// `direct` at every size: it moves each byte the minimum number of times and
/// needs one or two barriers, so it is also the fastest for small messages. Otherwise,
/// messages up to 64 KiB per rank use recursive halving-doubling (log₂ n
/// steps), larger ones the ring (bandwidth-optimal).
pub fn auto_algorithm(_collective: Collective, bytes_per_rank: usize, _world: usize, shares_memory: bool) -> Algorithm {
    if shares_memory {
        Algorithm::Direct
    } else if bytes_per_rank <= 64 << 10 {
        Algorithm::HalvingDoubling
    } else {
        Algorithm::Ring
    }
}

/// Schedules remembered per communicator (perf loops repeat one call).
const CACHED_SCHEDULES: usize = 8;

/// One rank's handle on a group of ranks.
pub struct Communicator {
    rank: Rank,
    world: usize,
    t: Arc<dyn Transport>,
    config: Config,
    seq: Cell<u64>,
    state: RefCell<RankState>,
    cache: RefCell<Vec<(Spec, Algorithm, Schedule)>>,
    /// The last call's plan, reused while calls repeat it.
    last: Cell<Option<Plan>>,
    sent: RefCell<Vec<u64>>,
    received: RefCell<Vec<u64>>,
}

/// Aborts a communicator's group from any thread.
#[derive(Clone)]
pub struct AbortHandle {
    t: Arc<dyn Transport>,
}

impl AbortHandle {
    /// Aborts the group: every rank waiting in a call returns
    /// [`Error::Aborted`] with `reason`, and later calls fail the same way.
    pub fn abort(&self, reason: &str) {
        self.t.abort(Error::Aborted(reason.to_string()));
    }

    /// Aborts the group with `cause` (a failure found outside a call, on a
    /// device's stream for instance), which later calls report.
    pub fn fail(&self, cause: Error) {
        self.t.abort(cause);
    }

    /// Whether rank `peer` may still be running (false once its process is
    /// known to be gone; ranks that are threads are always alive).
    pub fn peer_alive(&self, peer: Rank) -> bool {
        self.t.peer_alive(peer)
    }

    /// Whether the group has been aborted.
    pub fn is_aborted(&self) -> bool {
        self.t.abort_flag().load(Ordering::Acquire)
    }

    /// Why the group was aborted, once it was.
    pub fn cause(&self) -> Option<Error> {
        match self.is_aborted() {
            true => Some(self.t.abort_cause().unwrap_or_else(|| Error::Aborted("aborted".into()))),
            false => None,
        }
    }
}

impl Communicator {
    /// `n` ranks that are threads of this process, with [`Config::default`].
    pub fn local_group(n: usize) -> Result<Vec<Communicator>> {
        Self::local_group_with(n, Config::default())
    }

    pub fn local_group_with(n: usize, config: Config) -> Result<Vec<Communicator>> {
        if n == 0 {
            return Err(Error::ZeroRanks);
        }
        if config.slice_bytes == 0 || config.slice_bytes > 1 << 30 {
            return Err(Error::InvalidArgument(format!(
                "slice of {} bytes (must be 1 B ..= 1 GiB)",
                config.slice_bytes
            )));
        }
        let slice = config.slice_bytes.div_ceil(64) * 64;
        let t: Arc<dyn Transport> = Arc::new(LocalGroup::new(n, slice));
        (0..n).map(|rank| Communicator::from_transport(rank, t.clone(), config.clone())).collect()
    }

    /// This process's rank of a job started by a launcher (`oxccl run`,
    /// Open MPI, Slurm, torchrun: see [`Launch::from_env`]), over the
    /// transport `OXCCL_TRANSPORT` names (`auto`, the default: shared memory
    /// when every rank is on this host, TCP otherwise).
    pub fn init(config: Config) -> Result<Communicator> {
        Self::init_with(&Launch::from_env()?, TransportKind::from_env()?, config)
    }

    /// [`Communicator::init`] with the launch and transport given.
    pub fn init_with(launch: &Launch, kind: TransportKind, config: Config) -> Result<Communicator> {
        let t = connect(launch, kind, &config)?;
        Communicator::from_transport(launch.rank, t, config)
    }

    /// The communicator of rank `rank` over a transport that serves it
    /// (one per process for process and host transports; `Communicator::init`
    /// builds one from the launcher's environment).
    pub fn from_transport(rank: Rank, t: Arc<dyn Transport>, config: Config) -> Result<Communicator> {
        let world = t.world();
        if world == 0 {
            return Err(Error::ZeroRanks);
        }
        if rank >= world {
            return Err(Error::RankOutOfRange { rank, world });
        }
        Ok(Communicator {
            rank,
            world,
            t,
            config,
            seq: Cell::new(0),
            state: RefCell::new(RankState::new()),
            cache: RefCell::new(Vec::new()),
            last: Cell::new(None),
            sent: RefCell::new(vec![0; world]),
            received: RefCell::new(vec![0; world]),
        })
    }

    pub fn rank(&self) -> Rank {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// What carries this rank's messages: `shm`, `tcp (2 streams per peer)`,
    /// `shm+rdma (2 of 4 ranks on this host)`, …
    pub fn transport(&self) -> String {
        self.t.describe()
    }

    /// True when the ranks share an address space (threads of one process,
    /// or processes on one host over shared memory): what `direct` needs.
    pub fn shares_memory(&self) -> bool {
        self.t.shares_memory()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The algorithm used by calls that do not name one (`None`: auto rule).
    pub fn set_algorithm(&mut self, algorithm: Option<Algorithm>) {
        self.config.algorithm = algorithm;
        self.last.set(None);
    }

    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle { t: self.t.clone() }
    }

    /// Aborts the whole group (see [`AbortHandle::abort`]).
    pub fn abort(&self, reason: &str) {
        self.abort_handle().abort(reason);
    }

    /// `len` elements of memory other ranks can reach directly, like
    /// `ncclMemAlloc`: across processes on one host, buffers from here let
    /// the direct algorithm read and write peers' memory with no copy through
    /// a channel (other buffers still work, through channels). Zeroed.
    pub fn alloc_shared<T: Element>(&self, len: usize) -> Result<SharedBuf<T>> {
        SharedBuf::new(self.t.clone(), len)
    }

    /// The algorithm a call would use, for buffers other ranks can reach
    /// directly (`shared`) or not.
    pub fn algorithm_for(&self, call: &Call, shared: bool) -> Algorithm {
        let bytes = call.collective.input_len(self.world, call.count) * call.dtype.size();
        call.algorithm
            .or(self.config.algorithm)
            .unwrap_or_else(|| auto_algorithm(call.collective, bytes, self.world, shared && self.t.shares_memory()))
    }

    /// An error when the group was aborted, before `what` (the call about
    /// to run, e.g. `all_reduce #5`) starts.
    fn check_alive(&self, what: impl FnOnce() -> String) -> Result<()> {
        if !self.t.abort_flag().load(Ordering::Acquire) {
            return Ok(());
        }
        Err(match self.t.abort_cause() {
            // Raised inside the transport between calls (a message of the
            // last call still on its way timed out): name the call it stops.
            Some(Error::Timeout { call: None, rank, peer, what: why, waited }) => {
                Error::Aborted(Error::Timeout { call: Some(what()), rank, peer, what: why, waited }.to_string())
            }
            _ => aborted(&*self.t),
        })
    }

    /// The place of the schedule of `algo` for `spec` in the cache (newest
    /// last), made if missing.
    fn schedule(&self, spec: Spec, algo: Algorithm) -> usize {
        if let Some(i) = self.cache.borrow().iter().rposition(|(sp, a, _)| *sp == spec && *a == algo) {
            return i;
        }
        let mut cache = self.cache.borrow_mut();
        if cache.len() == CACHED_SCHEDULES {
            cache.remove(0);
            self.last.set(None); // its schedule may have moved
        }
        cache.push((spec, algo, algo.schedule(&spec, self.rank)));
        cache.len() - 1
    }

    /// Runs any collective on raw bytes of `call.dtype`.
    pub fn run(&self, call: &Call, bufs: Bytes<'_>) -> Result<()> {
        self.check_alive(|| format!("{} #{}", call.collective, self.seq.get() + 1))?;
        let key = Key::of(call, &bufs);
        let (plan, again) = match self.last.get() {
            Some(plan) if plan.key == key => (plan, true),
            _ => {
                let plan = self.plan(key, call, bufs)?;
                self.last.set(Some(plan));
                (plan, false)
            }
        };
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let cache = self.cache.borrow();
        let sched = &cache[plan.schedule].2;
        let mut state = self.state.borrow_mut();
        let bufs = [plan.input, plan.output];
        let timeout = self.config.timeout;
        Exec::collective(&*self.t, &HOST, self.rank, seq, plan.args, bufs, timeout, &mut state, again)
            .run(sched)
            .inspect_err(|e| self.fail_call(seq, e))
    }

    /// After this rank's call `seq` failed: aborts the group, then waits
    /// (within the communicator's timeout) until no live peer's direct
    /// steps may still read or write this rank's buffers, so that the
    /// caller may free them as soon as the call returns. Peers notice the
    /// abort between blocks of a step, or before their first step (see
    /// [`crate::transport::Doorbell::touch`]).
    pub(crate) fn fail_call(&self, seq: u64, e: &Error) {
        self.t.abort(e.clone());
        if !self.t.shares_memory() {
            return;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        let deadline = std::time::Instant::now() + self.config.timeout;
        let t = &*self.t;
        let touching = |p: Rank| p != self.rank && t.doorbell(p).touching() == seq && t.peer_alive(p);
        while (0..self.world).any(touching) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
    }

    /// Checks a call's arguments and buffers, and finds its algorithm and schedule.
    fn plan(&self, key: Key, call: &Call, bufs: Bytes<'_>) -> Result<Plan> {
        let regions = match bufs {
            Bytes::OutOfPlace { send, recv } => {
                Regions::OutOfPlace { send: Region::of(send), recv: Region::of_mut(recv) }
            }
            Bytes::InPlace(buf) => Regions::InPlace(Region::of_mut(buf)),
        };
        self.plan_regions(key, call, regions, None, None)
    }

    /// [`Communicator::plan`] on buffers named by their regions.
    /// `space`: the memory space's name for device buffers (`None`: host);
    /// `slot_bytes`: the largest message where the caller's channels are
    /// not the transport's (else the transport's slot).
    pub(crate) fn plan_regions(
        &self,
        key: Key,
        call: &Call,
        bufs: Regions,
        space: Option<&str>,
        slot_bytes: Option<usize>,
    ) -> Result<Plan> {
        let (c, n, es, count) = (call.collective, self.world, call.dtype.size(), call.count);
        if c.rooted() && call.root >= n {
            return Err(Error::RankOutOfRange { rank: call.root, world: n });
        }
        let (in_len, out_len) = (c.input_len(n, count), c.output_len(n, count));
        let aligned = |b: Region| b.is_empty() || b.addr() % es == 0;
        let too_small = |what, need: usize, got: usize| Error::BufferTooSmall { what, need, got: got / es };
        let (input, output, in_place) = match bufs {
            Regions::OutOfPlace { send, recv } => {
                if !aligned(send) || !aligned(recv) {
                    return Err(Error::InvalidArgument(format!(
                        "buffers must be aligned to {es} bytes for {}",
                        call.dtype
                    )));
                }
                if send.len() < in_len * es {
                    return Err(too_small("send buffer", in_len, send.len()));
                }
                if recv.len() < out_len * es {
                    return Err(too_small("receive buffer", out_len, recv.len()));
                }
                let (input, output) = (send.sub(0..in_len * es), recv.sub(0..out_len * es));
                (input.expect("length checked"), output.expect("length checked"), false)
            }
            Regions::InPlace(whole) => {
                if !aligned(whole) {
                    return Err(Error::InvalidArgument(format!(
                        "buffer must be aligned to {es} bytes for {}",
                        call.dtype
                    )));
                }
                let need = c.in_place_len(n, count);
                if whole.len() < need * es {
                    return Err(too_small("buffer", need, whole.len()));
                }
                let (io, oo) = c.in_place_offsets(self.rank, count);
                let sub = |off: usize, len: usize| whole.sub(off * es..(off + len) * es).expect("length checked");
                (sub(io, in_len), sub(oo, out_len), true)
            }
        };
        let shared = self.t.can_share(input) && self.t.can_share(output);
        let algorithm = match space {
            None => self.algorithm_for(call, shared),
            Some(_) => {
                let auto = if shared { Algorithm::Direct } else { Algorithm::Ring };
                call.algorithm.or(self.config.algorithm).unwrap_or(auto)
            }
        };
        if let Some(space) = space {
            // Direct steps reach peers' buffers, which only ranks of one
            // process can do with device memory (their transport shares
            // any memory); the other algorithms stage through the
            // transport's host slots.
            if algorithm == Algorithm::Direct && !shared {
                return Err(Error::InvalidArgument(format!(
                    "{c} on {space} memory: the direct algorithm reaches peers' device buffers only between \
                     ranks of one process; choose ring, tree or halving-doubling"
                )));
            }
        }
        if !self.t.caps().covers(algorithm.needs()) {
            return Err(Error::NeedsSharedMemory { algorithm: algorithm.name() });
        }
        let spec = Spec {
            collective: c,
            world: n,
            count,
            root: if c.rooted() { call.root } else { 0 },
            // On a device the small all-reduce takes no eager path: peers
            // read its staged terms after this rank's call may have returned,
            // from scratch its memory space owns (and may free by then);
            // the direct schedule's closing barrier keeps every read inside
            // the call. (`slice` only bounds that path in direct schedules;
            // the others cut their messages by it.)
            slice: match space.is_some() && algorithm == Algorithm::Direct {
                true => 1,
                false => (slot_bytes.unwrap_or_else(|| self.t.slot_bytes()) / es).max(1),
            },
            in_place,
        };
        let schedule = self.schedule(spec, algorithm);
        let args = Args {
            collective: c,
            dtype: call.dtype,
            op: c.reduces().then_some(call.op),
            count,
            root: c.rooted().then_some(call.root),
            algorithm,
        };
        Ok(Plan { key, input, output, args, schedule })
    }

    fn call<T: Element>(&self, collective: Collective, op: ReduceOp, count: usize, root: Rank) -> Call {
        Call { collective, dtype: T::DTYPE, op, count, root, algorithm: None }
    }

    fn per_rank(&self, what: &str, len: usize) -> Result<usize> {
        if len % self.world != 0 {
            return Err(Error::InvalidArgument(format!(
                "{what}: {len} elements do not split evenly over {} ranks",
                self.world
            )));
        }
        Ok(len / self.world)
    }

    /// Every rank's `recv` gets the reduction of all ranks' `send`.
    pub fn all_reduce<T: Element>(&self, send: &[T], recv: &mut [T], op: ReduceOp) -> Result<()> {
        let call = self.call::<T>(Collective::AllReduce, op, send.len(), 0);
        self.run(&call, out_of_place(send, recv))
    }

    pub fn all_reduce_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let call = self.call::<T>(Collective::AllReduce, op, buf.len(), 0);
        self.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(buf)))
    }

    /// Rank r's `recv` gets the reduction of block r (of `recv.len()`
    /// elements) of every rank's `send`, which holds world × recv.len().
    pub fn reduce_scatter<T: Element>(&self, send: &[T], recv: &mut [T], op: ReduceOp) -> Result<()> {
        let call = self.call::<T>(Collective::ReduceScatter, op, recv.len(), 0);
        self.run(&call, out_of_place(send, recv))
    }

    /// In place: `buf` holds world blocks; rank r's result lands in block r.
    pub fn reduce_scatter_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let count = self.per_rank("reduce_scatter_in_place", buf.len())?;
        let call = self.call::<T>(Collective::ReduceScatter, op, count, 0);
        self.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(buf)))
    }

    /// Every rank's `recv` (world × send.len()) gets every rank's `send`, in rank order.
    pub fn all_gather<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let call = self.call::<T>(Collective::AllGather, ReduceOp::Sum, send.len(), 0);
        self.run(&call, out_of_place(send, recv))
    }

    /// In place: rank r's contribution is already in block r of `buf`.
    pub fn all_gather_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        let count = self.per_rank("all_gather_in_place", buf.len())?;
        let call = self.call::<T>(Collective::AllGather, ReduceOp::Sum, count, 0);
        self.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(buf)))
    }

    /// Every rank's `recv` gets `root`'s `send` (other ranks' `send` is not read).
    pub fn broadcast<T: Element>(&self, send: &[T], recv: &mut [T], root: Rank) -> Result<()> {
        let call = self.call::<T>(Collective::Broadcast, ReduceOp::Sum, recv.len(), root);
        self.run(&call, out_of_place(send, recv))
    }

    pub fn broadcast_in_place<T: Element>(&self, buf: &mut [T], root: Rank) -> Result<()> {
        let call = self.call::<T>(Collective::Broadcast, ReduceOp::Sum, buf.len(), root);
        self.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(buf)))
    }

    /// `root`'s `recv` gets the reduction of every rank's `send`; other
    /// ranks' `recv` is left untouched.
    pub fn reduce<T: Element>(&self, send: &[T], recv: &mut [T], op: ReduceOp, root: Rank) -> Result<()> {
        let call = self.call::<T>(Collective::Reduce, op, send.len(), root);
        self.run(&call, out_of_place(send, recv))
    }

    pub fn reduce_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp, root: Rank) -> Result<()> {
        let call = self.call::<T>(Collective::Reduce, op, buf.len(), root);
        self.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(buf)))
    }

    /// Block p of rank r's `send` lands in block r of rank p's `recv`; both
    /// hold world blocks.
    pub fn all_to_all<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let count = self.per_rank("all_to_all", send.len())?;
        let call = self.call::<T>(Collective::AllToAll, ReduceOp::Sum, count, 0);
        self.run(&call, out_of_place(send, recv))
    }

    pub fn all_to_all_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        let count = self.per_rank("all_to_all_in_place", buf.len())?;
        let call = self.call::<T>(Collective::AllToAll, ReduceOp::Sum, count, 0);
        self.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(buf)))
    }

    /// Returns once every rank has entered the barrier.
    pub fn barrier(&self) -> Result<()> {
        let call = self.call::<u8>(Collective::Barrier, ReduceOp::Sum, 0, 0);
        self.run(&call, Bytes::InPlace(&mut []))
    }

    fn p2p_exec<'s>(&'s self, state: &'s mut RankState, what: &'static str, dtype: DType) -> Exec<'s> {
        Exec::point_to_point(&*self.t, &HOST, self.rank, what, dtype, self.config.timeout, state)
    }

    fn check_peer(&self, peer: Rank) -> Result<()> {
        if peer >= self.world {
            return Err(Error::RankOutOfRange { rank: peer, world: self.world });
        }
        if peer == self.rank {
            return Err(Error::InvalidArgument(format!("rank {peer} cannot send to or receive from itself")));
        }
        Ok(())
    }

    /// Sends `buf` to `peer`, which must call `recv` with the same length.
    /// Returns once the data is in the channel; a transfer larger than the
    /// channel's slots waits for the receiver, so two ranks must not both
    /// send large buffers to each other first.
    pub fn send<T: Element>(&self, buf: &[T], peer: Rank) -> Result<()> {
        self.check_alive(|| format!("send #{}", self.sent.borrow().get(peer).map_or(0, |n| n + 1)))?;
        self.check_peer(peer)?;
        let seq = {
            let mut s = self.sent.borrow_mut();
            s[peer] += 1;
            s[peer]
        };
        let mut state = self.state.borrow_mut();
        let mut ex = self.p2p_exec(&mut state, "send", T::DTYPE);
        ex.send(peer, Region::of(bytemuck::cast_slice(buf)), seq).inspect_err(|e| self.t.abort(e.clone()))
    }

    /// Receives from `peer` into `buf`, which must be as long as what it sends.
    pub fn recv<T: Element>(&self, buf: &mut [T], peer: Rank) -> Result<()> {
        self.check_alive(|| format!("recv #{}", self.received.borrow().get(peer).map_or(0, |n| n + 1)))?;
        self.check_peer(peer)?;
        let seq = {
            let mut r = self.received.borrow_mut();
            r[peer] += 1;
            r[peer]
        };
        let mut state = self.state.borrow_mut();
        let mut ex = self.p2p_exec(&mut state, "recv", T::DTYPE);
        ex.recv(peer, Region::of_mut(bytemuck::cast_slice_mut(buf)), seq).inspect_err(|e| self.t.abort(e.clone()))
    }
}

fn out_of_place<'a, T: Element>(send: &'a [T], recv: &'a mut [T]) -> Bytes<'a> {
    Bytes::OutOfPlace { send: bytemuck::cast_slice(send), recv: bytemuck::cast_slice_mut(recv) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A rank whose call fails returns only once no peer's direct steps
    /// may still touch its buffers: while ranks run large direct
    /// all-reduces, another thread aborts the group at a varying moment;
    /// whenever a rank's call returns an error, no live peer's doorbell
    /// shows it touching that call's buffers.
    #[test]
    fn a_failed_rank_returns_only_when_no_peer_touches_its_buffers() {
        for round in 0..12u64 {
            let comms = local_group_with_timeout(3, Duration::from_secs(20));
            let handle = comms[0].abort_handle();
            std::thread::scope(|s| {
                s.spawn(move || {
                    std::thread::sleep(Duration::from_micros(1500 + 700 * round));
                    handle.abort("test");
                });
                for comm in comms {
                    s.spawn(move || {
                        let r = comm.rank();
                        let count = 1 << 20;
                        let send = vec![1f32; count];
                        let mut recv = vec![0f32; count];
                        let call = Call {
                            collective: Collective::AllReduce,
                            dtype: DType::F32,
                            op: ReduceOp::Sum,
                            count,
                            root: 0,
                            algorithm: Some(Algorithm::Direct),
                        };
                        loop {
                            let before = comm.seq.get();
                            let result = comm.run(&call, out_of_place(&send, &mut recv));
                            // A call refused before it was posted (seq unchanged) has
                            // nothing of this rank's that peers could touch.
                            if result.is_err() && comm.seq.get() > before {
                                let seq = comm.seq.get();
                                for p in (0..3).filter(|&p| p != r) {
                                    let t = comm.t.doorbell(p).touching();
                                    assert_ne!(t, seq, "rank {p} still touches rank {r}'s buffers");
                                }
                            }
                            if result.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        }
    }

    fn local_group_with_timeout(n: usize, timeout: Duration) -> Vec<Communicator> {
        Communicator::local_group_with(n, Config { timeout, ..Config::default() }).unwrap()
    }
}

//! The shared-memory transport: ranks are processes on one host.
//!
//! Each rank creates two segments (see `segment`): a control segment,
//! holding its doorbell, barrier and progress counters, abort flag and cause,
//! its posting board and the channels *into* it with their slots; and a pool
//! from which [`Communicator::alloc_shared`] and scratch space are carved.
//! Every rank maps every other rank's segments, so a message is written by
//! the sender straight into the receiver's slot and read in place, the fast
//! path is loads and stores on atomics with no system call (a futex only when
//! a rank runs out of spinning and yielding), and the direct algorithm reads
//! and writes peers' pool buffers as in one process. Buffers outside the
//! pool cannot be shared: they travel through channels, and the direct
//! algorithm refuses them with a clear error.
//!
//! Once every rank has mapped every segment, names are unlinked, so nothing
//! is left in `/dev/shm` however the processes end. A rank whose process
//! dies is noticed by any rank waiting for it ([`Transport::peer_alive`]).
//!
//! Public: [`connector::ShmConnector`] (its entry in the transport table,
//! which the RDMA crate's `connect_auto` puts first), [`segment::PREFIX`],
//! [`segment::dir`] and [`segment::remove_leftovers`] (launchers and tests
//! look for names ranks left behind), and [`ShmConfig`], [`ShmSetup`] and
//! [`ShmTransport`], only because `collectives/tests/shm.rs` builds ranks
//! that are threads mapping each other's segments as processes would, with a
//! pool size of its own, which no public constructor offers.
//!
//! [`Communicator::alloc_shared`]: crate::Communicator::alloc_shared

pub mod connector;
pub(crate) mod pool;
pub mod segment;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::mem::Region;
use crate::schedule::Rank;
use crate::transport::board::{self, Slot, INLINE};
use crate::transport::channel::Channel;
use crate::transport::wait::ring_all;
use crate::transport::wire;
use crate::transport::SLOTS;
use crate::transport::{Doorbell, Header, Posting, Signals, Transport};
use pool::Pool;
use segment::Segment;

/// Bytes of abort cause kept.
const CAUSE_BYTES: usize = wire::MAX_CAUSE_BYTES;

/// The start of every control segment.
#[repr(C)]
struct Control {
    bell: Doorbell,
    arrivals: AtomicU64,
    done: AtomicU64,
    attached: AtomicU64,
    pid: AtomicU64,
    aborted: AtomicBool,
    /// 0: none, 1: being written, 2: written.
    cause_state: AtomicU32,
    /// The cause as the TCP wire carries it (`wire::encode_cause`): a lost
    /// peer and a timeout keep their structure.
    cause_len: AtomicU64,
    cause: [AtomicU8; CAUSE_BYTES],
}

/// Where things are in a control segment of a group of `world` ranks.
#[derive(Clone, Copy)]
struct Layout {
    board: usize,
    channels: usize,
    slots: usize,
    len: usize,
}

fn align(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

impl Layout {
    fn new(world: usize, slot_bytes: usize) -> Layout {
        let board = align(size_of::<Control>(), 128);
        let channels = align(board + board::HISTORY * size_of::<Slot>(), 128);
        let slots = align(channels + world * size_of::<Channel>(), 4096);
        let len = align(slots + world * SLOTS * slot_bytes, 4096);
        Layout { board, channels, slots, len }
    }
}

/// Settings of the shared-memory transport. Public only for
/// `collectives/tests/shm.rs` (see the module docs).
#[derive(Clone, Debug)]
pub struct ShmConfig {
    pub slot_bytes: usize,
    /// Bytes of each rank's shared pool (default `OXCCL_SHM_POOL_BYTES`, else
    /// 1 GiB; only touched pages use memory).
    pub pool_bytes: usize,
    /// Deadline of set-up waits.
    pub timeout: Duration,
}

impl ShmConfig {
    pub fn new(slot_bytes: usize, timeout: Duration) -> ShmConfig {
        let pool_bytes =
            std::env::var("OXCCL_SHM_POOL_BYTES").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 30);
        ShmConfig { slot_bytes: align(slot_bytes.max(64), 64), pool_bytes, timeout }
    }
}

/// A rank's segments, made before rendezvous; [`ShmSetup::connect`] maps the peers'.
/// Public only for `collectives/tests/shm.rs` (see the module docs).
pub struct ShmSetup {
    rank: Rank,
    world: usize,
    config: ShmConfig,
    name: String,
    control: Segment,
    pool: Segment,
}

impl ShmSetup {
    /// Creates this rank's segments; publish [`ShmSetup::name`] at rendezvous.
    pub fn create(rank: Rank, world: usize, config: ShmConfig) -> Result<ShmSetup, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("{}{}-{unique}-{nanos:x}-r{rank}", segment::PREFIX, std::process::id());
        let layout = Layout::new(world, config.slot_bytes);
        let control = Segment::create(&name, layout.len)?;
        let pool = Segment::create(&format!("{name}-pool"), config.pool_bytes.max(4096))?;
        let setup = ShmSetup { rank, world, config, name, control, pool };
        let c = control_at(&setup.control);
        c.bell.init(world);
        c.pid.store(u64::from(std::process::id()), Ordering::Release);
        Ok(setup)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Maps every peer's segments (`names[r]` is rank r's [`ShmSetup::name`]),
    /// waits until every rank has done so, and unlinks this rank's names.
    pub fn connect(self, names: &[String]) -> Result<ShmTransport, Error> {
        let names: Vec<Option<String>> = names.iter().cloned().map(Some).collect();
        self.connect_some(&names)
    }

    /// [`ShmSetup::connect`] for a group of which only the ranks with a name
    /// are on this host (the others are reached by another transport; this
    /// one must then only be used with peers that have a name).
    pub fn connect_some(self, names: &[Option<String>]) -> Result<ShmTransport, Error> {
        let (me, world) = (self.rank, self.world);
        if names.len() != world {
            return Err(Error::InvalidArgument(format!("{} segment names for {world} ranks", names.len())));
        }
        let layout = Layout::new(world, self.config.slot_bytes);
        let mut controls = Vec::with_capacity(world);
        let mut pools = Vec::with_capacity(world);
        let (mut own_control, mut own_pool) = (Some(self.control), Some(self.pool));
        for (r, name) in names.iter().enumerate() {
            let Some(name) = name else {
                controls.push(None);
                pools.push(None);
                continue;
            };
            if r == me {
                controls.push(own_control.take());
                pools.push(own_pool.take());
            } else {
                controls.push(Some(Segment::open(name, layout.len)?));
                let pool = Segment::open(&format!("{name}-pool"), 4096)?;
                // Map the peer's whole pool, whatever its size.
                let len = std::fs::metadata(segment::dir().join(format!("{name}-pool")))
                    .map_err(|e| Error::io(format!("reading the size of {name}-pool"), e))?
                    .len() as usize;
                drop(pool);
                pools.push(Some(Segment::open(&format!("{name}-pool"), len)?));
            }
        }
        if controls.get(me).is_none_or(Option::is_none) {
            return Err(Error::InvalidArgument(format!("rank {me} has no segment name of its own")));
        }
        let pids = controls
            .iter()
            .map(|c| c.as_ref().map_or(0, |c| control_at(c).pid.load(Ordering::Acquire) as u32))
            .collect();
        let t = ShmTransport {
            rank: me,
            world,
            slot_bytes: self.config.slot_bytes,
            layout,
            pool: Mutex::new(Pool::new(pools[me].as_ref().map_or(0, Segment::len))),
            scratch: Mutex::new([None, None]),
            controls,
            pools,
            pids,
            cause: Mutex::new(None),
            last: board::Last::default(),
        };
        // Everyone has mapped everything before names disappear.
        t.control(me).attached.store(1, Ordering::SeqCst);
        for r in t.here() {
            t.control(r).bell.ring();
        }
        let deadline = Instant::now() + self.config.timeout;
        while let Some(r) = t.here().find(|&r| t.control(r).attached.load(Ordering::Acquire) == 0) {
            if Instant::now() >= deadline {
                return Err(Error::System(format!("rank {r} never mapped the shared memory segments")));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut t = t;
        t.controls[me].as_mut().expect("own").unlink();
        t.pools[me].as_mut().expect("own").unlink();
        Ok(t)
    }
}

fn control_at(seg: &Segment) -> &Control {
    // SAFETY: the mapping is page aligned, at least a `Layout` long (checked
    // when created or opened) and lives as long as the segment; `Control` is
    // made of atomics only, valid when zero-filled, and every process
    // accesses it only through those atomics.
    unsafe { &*seg.ptr().cast::<Control>() }
}

/// See the module docs. Public only for `collectives/tests/shm.rs`, which
/// gets one from [`ShmSetup::connect`].
pub struct ShmTransport {
    rank: Rank,
    world: usize,
    slot_bytes: usize,
    layout: Layout,
    /// Indexed by rank; `None` for ranks on other hosts.
    controls: Vec<Option<Segment>>,
    pools: Vec<Option<Segment>>,
    pids: Vec<u32>,
    pool: Mutex<Pool>,
    /// This rank's two scratch spaces: (offset in the pool, bytes).
    scratch: Mutex<[Option<(usize, usize)>; 2]>,
    /// The abort cause as this process raised it (returned exactly).
    cause: Mutex<Option<Error>>,
    /// What this rank posted last (in this process's own memory).
    last: board::Last,
}

impl ShmTransport {
    fn control(&self, r: Rank) -> &Control {
        control_at(self.seg(r))
    }

    fn seg(&self, r: Rank) -> &Segment {
        self.controls[r].as_ref().unwrap_or_else(|| panic!("rank {r} is not on this host"))
    }

    /// The ranks on this host.
    fn here(&self) -> impl Iterator<Item = Rank> + '_ {
        (0..self.world).filter(|&r| self.controls[r].is_some())
    }

    fn board(&self, r: Rank) -> &[Slot] {
        // SAFETY: the board lies inside rank r's mapped control segment at a
        // 128-byte aligned offset; slots are atomics only, valid when zeroed.
        unsafe { std::slice::from_raw_parts(self.seg(r).ptr().add(self.layout.board).cast::<Slot>(), board::HISTORY) }
    }

    /// The channel from `from` into `to`, and its slots.
    fn chan(&self, from: Rank, to: Rank) -> (&Channel, Region) {
        let seg = self.seg(to);
        // SAFETY: channels lie inside rank `to`'s mapped control segment at
        // 128-byte aligned offsets; a channel is atomics only, valid when zeroed.
        let ch = unsafe { &*seg.ptr().add(self.layout.channels + from * size_of::<Channel>()).cast::<Channel>() };
        let bytes = SLOTS * self.slot_bytes;
        let at = self.layout.slots + from * bytes;
        let whole = Region::from_raw(seg.ptr() as usize, seg.len());
        (ch, whole.sub(at..at + bytes).expect("slots inside the segment"))
    }

    fn ring_others(&self, rank: Rank) {
        let others = self.controls.iter().enumerate().filter(|&(r, _)| r != rank);
        ring_all(others.filter_map(|(_, c)| c.as_ref()).map(|c| &control_at(c).bell));
    }

    fn pool_region(&self, r: Rank) -> Region {
        let pool = self.pools[r].as_ref().unwrap_or_else(|| panic!("rank {r} is not on this host"));
        Region::from_raw(pool.ptr() as usize, pool.len())
    }

    /// Offset of `region` in this rank's pool, if it lies inside it.
    fn pool_offset(&self, region: Region) -> Option<usize> {
        let pool = self.pool_region(self.rank);
        let off = region.addr().checked_sub(pool.addr())?;
        (off + region.len() <= pool.len()).then_some(off)
    }

    fn write_cause(&self, r: Rank, cause: &Error) {
        let c = self.control(r);
        if c.cause_state.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let encoded = wire::encode_cause(cause);
            let bytes = &encoded[..encoded.len().min(CAUSE_BYTES)];
            for (dst, &b) in c.cause.iter().zip(bytes) {
                dst.store(b, Ordering::Relaxed);
            }
            c.cause_len.store(bytes.len() as u64, Ordering::Relaxed);
            c.cause_state.store(2, Ordering::Release);
        }
        c.aborted.store(true, Ordering::Release);
        c.bell.ring();
    }
}

impl Signals for ShmTransport {
    fn bell(&self) -> &Doorbell {
        &self.control(self.rank).bell
    }

    fn flag(&self) -> &AtomicBool {
        &self.control(self.rank).aborted
    }
}

impl Transport for ShmTransport {
    fn describe(&self) -> String {
        "shm".into()
    }

    fn world(&self) -> usize {
        self.world
    }

    fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    fn shares_memory(&self) -> bool {
        true
    }

    fn can_share(&self, region: Region) -> bool {
        region.is_empty() || self.pool_offset(region).is_some()
    }

    fn alloc(&self, bytes: usize) -> Result<Option<Region>, Error> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let off = pool.alloc(bytes).ok_or_else(|| {
            Error::System(format!(
                "shared pool exhausted: {bytes} bytes asked, {} free (raise OXCCL_SHM_POOL_BYTES)",
                pool.available()
            ))
        })?;
        Ok(Some(self.pool_region(self.rank).sub(off..off + bytes).expect("inside the pool")))
    }

    fn free(&self, region: Region) {
        if let Some(off) = self.pool_offset(region) {
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).free(off, region.len());
        }
    }

    fn try_send_slot(&self, from: Rank, to: Rank) -> Option<Region> {
        let (ch, slots) = self.chan(from, to);
        ch.try_send_slot(slots, self.slot_bytes)
    }

    fn commit(&self, from: Rank, to: Rank, header: Header) {
        self.chan(from, to).0.commit(header);
        self.control(to).bell.ring();
    }

    fn try_recv(&self, to: Rank, from: Rank) -> Option<(Header, Region)> {
        let (ch, slots) = self.chan(from, to);
        ch.try_recv(slots, self.slot_bytes)
    }

    fn release(&self, to: Rank, from: Rank) {
        self.chan(from, to).0.release();
        self.control(from).bell.ring();
    }

    fn barrier_arrive(&self, rank: Rank, k: u64) {
        self.control(rank).arrivals.store(k, Ordering::SeqCst);
        self.ring_others(rank);
    }

    fn barrier_missing(&self, k: u64) -> Option<Rank> {
        self.here().find(|&r| self.control(r).arrivals.load(Ordering::Acquire) < k)
    }

    fn post(&self, rank: Rank, posting: Posting) {
        // Across processes buffers travel as pool offsets + 1 (0: not
        // shared), or as INLINE: the posting slot's own scratch space.
        let seq = posting.seq;
        let inline = board::inline(self.board(rank), seq);
        let encode = |b: Option<Region>| match b {
            Some(b) if !b.is_empty() && b.addr() == inline.addr() && b.len() <= inline.len() => {
                (INLINE, b.len() as u64)
            }
            Some(b) => self.pool_offset(b).map_or((0, 0), |off| (off as u64 + 1, b.len() as u64)),
            None => (0, 0),
        };
        let [input, output, scratch] = posting.bufs.map(encode);
        board::post(self.board(rank), &self.last, seq, &posting.args, [input, output, scratch]);
    }

    fn wake_peers(&self, rank: Rank) {
        self.ring_others(rank);
    }

    fn repost(&self, rank: Rank, seq: u64) -> bool {
        rank == self.rank && board::repost(self.board(rank), &self.last, seq)
    }

    fn staged_alike(&self, peer: Rank, rank: Rank, seq: u64, bytes: usize) -> Option<Region> {
        self.controls[peer].as_ref()?;
        (rank == self.rank).then(|| board::staged_alike(&self.last, self.board(peer), seq, bytes)).flatten()
    }

    fn posted(&self, rank: Rank, seq: u64) -> bool {
        board::posted(self.board(rank), seq)
    }

    fn posting(&self, rank: Rank, seq: u64) -> Option<Posting> {
        let (args, raw) = board::get(self.board(rank), seq)?;
        let decode = |(word, len): (u64, u64)| {
            let len = usize::try_from(len).ok()?;
            match word {
                0 => None,
                INLINE => board::inline(self.board(rank), seq).sub(0..len),
                word => {
                    let off = usize::try_from(word - 1).ok()?;
                    self.pool_region(rank).sub(off..off.checked_add(len)?)
                }
            }
        };
        Some(Posting { seq, args, bufs: [decode(raw[0]), decode(raw[1]), decode(raw[2])] })
    }

    fn inline_scratch(&self, rank: Rank, seq: u64, bytes: usize) -> Option<Region> {
        (bytes <= board::INLINE_BYTES).then(|| board::inline(self.board(rank), seq).sub(0..bytes).expect("fits"))
    }

    fn scratch(&self, rank: Rank, half: usize, bytes: usize) -> Result<Region, Error> {
        let mut spaces = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        match spaces[half] {
            Some((_, len)) if len >= bytes => {}
            old => {
                if let Some((off, len)) = old {
                    self.pool.lock().unwrap_or_else(|e| e.into_inner()).free(off, len);
                    spaces[half] = None;
                }
                let region = self.alloc(bytes)?.expect("the pool allocates");
                spaces[half] = Some((self.pool_offset(region).expect("pool memory"), bytes));
            }
        }
        let (off, _) = spaces[half].expect("allocated");
        debug_assert_eq!(rank, self.rank);
        Ok(self.pool_region(self.rank).sub(off..off + bytes).expect("inside the pool"))
    }

    /// Wakes nobody: whoever waits for this learns it from the rank's next
    /// posting too ([`Transport::has_finished`]), which rings.
    fn finish(&self, rank: Rank, seq: u64) {
        self.control(rank).done.store(seq, Ordering::Release);
    }

    fn finished(&self, rank: Rank) -> u64 {
        self.control(rank).done.load(Ordering::Acquire)
    }

    fn has_finished(&self, rank: Rank, seq: u64) -> bool {
        self.finished(rank) >= seq || board::entered(self.board(rank), seq + 1)
    }

    fn peer_alive(&self, peer: Rank) -> bool {
        let pid = self.pids[peer] as libc::pid_t;
        // SAFETY: kill with signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }

    fn doorbell(&self, rank: Rank) -> &Doorbell {
        &self.control(rank).bell
    }

    /// Read off the rank's doorbell in its control segment.
    fn activity(&self, rank: Rank, fresh: Duration) -> Option<crate::transport::Activity> {
        Some(self.control(rank).bell.activity(fresh))
    }

    fn abort_flag(&self) -> &AtomicBool {
        &self.control(self.rank).aborted
    }

    fn abort(&self, cause: Error) {
        {
            let mut own = self.cause.lock().unwrap_or_else(|e| e.into_inner());
            if own.is_none() && !self.control(self.rank).aborted.load(Ordering::Acquire) {
                *own = Some(cause.clone());
            }
        }
        for r in self.here() {
            self.write_cause(r, &cause);
        }
    }

    fn abort_cause(&self) -> Option<Error> {
        let c = self.control(self.rank);
        if !c.aborted.load(Ordering::Acquire) {
            return None;
        }
        if let Some(e) = self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(e);
        }
        if c.cause_state.load(Ordering::Acquire) != 2 {
            return Some(Error::Aborted("aborted by another rank".into()));
        }
        let len = c.cause_len.load(Ordering::Relaxed) as usize;
        let bytes: Vec<u8> = c.cause[..len.min(CAUSE_BYTES)].iter().map(|b| b.load(Ordering::Relaxed)).collect();
        Some(wire::decode_cause(&bytes).unwrap_or_else(|e| Error::Aborted(format!("unreadable abort cause: {e}"))))
    }
}

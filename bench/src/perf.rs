//! The sweep: every (dtype, op, size, algorithm) row, out of place then in
//! place, timed on a local group of ranks (one thread each).
//!
//! Per placement each rank fills its input, runs the warm-up iterations,
//! meets the others at a barrier and times the timed iterations; the row's
//! time is the slowest rank's elapsed time / iterations. With checking on,
//! each rank then refills its input, poisons its output, runs the collective
//! once more and counts the elements that differ from the closed form
//! ([`crate::data`]); the row's `#wrong` is the total over ranks.
//!
//! A rank that fails aborts the communicator so the others stop at once; the
//! sweep returns the error of the rank that failed first (not the "aborted"
//! errors it caused).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Instant;

use oxccl::bootstrap::connect::TransportKind;
use oxccl::bootstrap::env::Launch;
use oxccl::{Algorithm, Bytes, Call, Collective, Communicator, Config, DType, ReduceOp, SharedBuf};

use crate::data::{Case, Value};
use crate::metrics::{Figures, Floor};
use crate::sizing::Shape;
use crate::with_dtype;

/// What to sweep.
#[derive(Clone, Debug)]
pub struct Options {
    pub collective: Collective,
    pub ranks: usize,
    /// Sizes in bytes, nccl-tests' meaning ([`Shape::of`]).
    pub sizes: Vec<usize>,
    pub dtypes: Vec<DType>,
    /// Ignored by collectives that do not reduce.
    pub ops: Vec<ReduceOp>,
    /// Root of broadcast and reduce.
    pub root: usize,
    /// `None` is the communicator's auto rule.
    pub algos: Vec<Option<Algorithm>>,
    /// `algos` is "every algorithm" (`--algo all`, the default) rather than
    /// a list the user named: the ones this group cannot run (`direct`
    /// without shared memory) are skipped, and named on stderr, instead of
    /// failing the sweep ([`Options::runnable`]).
    pub all_algos: bool,
    pub warmup: usize,
    pub iters: usize,
    pub check: bool,
    pub config: Config,
    /// `None`: ranks are threads of this process (`ranks` of them). Otherwise
    /// this process is one rank of a job a launcher started (`ranks` is its
    /// world size), connected over this transport.
    pub transport: Option<TransportKind>,
    /// Where the buffers live.
    pub memory: Memory,
    /// Whose collectives run.
    pub backend: Backend,
    /// Device memory only: each rank's call is captured into a graph once
    /// and its replays are timed and checked.
    pub graph: bool,
}

/// Where a sweep's buffers live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Memory {
    /// Host memory, the collectives of [`Communicator`].
    #[default]
    Host,
    /// The emulated device's memory, through stream-ordered calls
    /// ([`oxccl_cuda::StreamComm`]), ranks as threads.
    Emu,
    /// GPU 0's memory, through the same stream-ordered calls, ranks as
    /// threads sharing the GPU.
    Cuda,
}

impl Options {
    /// Checks the options against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.ranks == 0 {
            return Err("--ranks must be at least 1".into());
        }
        if self.graph && self.memory == Memory::Host {
            return Err("--graph captures device work: use it with --device emu or --device cuda".into());
        }
        if self.iters == 0 {
            return Err("-n/--iters must be at least 1".into());
        }
        if self.collective.rooted() && self.root >= self.ranks {
            return Err(format!(
                "root {} out of range for {} ranks (-r/--root must be below --ranks)",
                self.root, self.ranks
            ));
        }
        if self.sizes.is_empty() && self.collective != Collective::Barrier {
            return Err("no sizes to sweep".into());
        }
        if self.dtypes.is_empty() || self.ops.is_empty() || self.algos.is_empty() {
            return Err("nothing to sweep: no data type, operation or algorithm".into());
        }
        if self.backend == Backend::Nccl && (self.memory != Memory::Cuda || self.transport.is_some()) {
            return Err(
                "the NCCL backend runs on GPU memory with ranks as threads (--device cuda, --transport local)".into()
            );
        }
        Ok(())
    }

    /// The algorithms of the sweep that a group can run (its ranks share an
    /// address space or not; `transport` describes what connects them, for
    /// the reasons) and the ones skipped. Only "every algorithm"
    /// ([`Options::all_algos`]) skips: a named algorithm that cannot run
    /// stays, and fails at its first row. An error when every algorithm is
    /// skipped.
    pub fn runnable(
        &self,
        shares_memory: bool,
        transport: &str,
    ) -> Result<(Vec<Option<Algorithm>>, Vec<Skipped>), String> {
        let mut keep = Vec::with_capacity(self.algos.len());
        let mut skipped = Vec::new();
        for &algo in &self.algos {
            match algo {
                Some(a) if self.all_algos && a.needs_shared_memory() && !shares_memory => skipped.push(Skipped {
                    algorithm: a,
                    reason: format!("it needs ranks that share an address space; {transport} has none"),
                }),
                _ => keep.push(algo),
            }
        }
        if keep.is_empty() {
            let why: Vec<String> = skipped.iter().map(|s| format!("{}: {}", s.algorithm.name(), s.reason)).collect();
            return Err(format!("no algorithm of the list can run on this group ({})", why.join("; ")));
        }
        Ok((keep, skipped))
    }

    /// The rows of the sweep, in order: dtype, op, size, then algorithm.
    /// Collectives that do not reduce get one op (`None`); a barrier one row
    /// per algorithm.
    pub fn plan(&self) -> Vec<RowSpec> {
        let ops: Vec<Option<ReduceOp>> =
            if self.collective.reduces() { self.ops.iter().copied().map(Some).collect() } else { vec![None] };
        let (dtypes, sizes) = if self.collective == Collective::Barrier {
            (&self.dtypes[..1.min(self.dtypes.len())], &[0][..])
        } else {
            (&self.dtypes[..], &self.sizes[..])
        };
        let mut rows = Vec::new();
        for &dtype in dtypes {
            for &op in &ops {
                for &size in sizes {
                    for &algo in &self.algos {
                        rows.push(RowSpec {
                            collective: self.collective,
                            world: self.ranks,
                            dtype,
                            op,
                            root: self.collective.rooted().then_some(self.root),
                            shape: Shape::of(self.collective, dtype, self.ranks, size),
                            algo,
                            backend: self.backend,
                        });
                    }
                }
            }
        }
        rows
    }
}

/// An algorithm left out of a sweep of every algorithm, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub algorithm: Algorithm,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipping {}: {}", self.algorithm.name(), self.reason)
    }
}

/// One row to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowSpec {
    pub collective: Collective,
    pub world: usize,
    pub dtype: DType,
    /// `None` for collectives that do not reduce.
    pub op: Option<ReduceOp>,
    /// `None` for collectives without a root.
    pub root: Option<usize>,
    pub shape: Shape,
    pub algo: Option<Algorithm>,
    /// Whose collectives run the row.
    pub backend: Backend,
}

/// Whose collectives a sweep runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// oxccl's own.
    #[default]
    Oxccl,
    /// NCCL's (device memory on GPUs, one GPU per rank).
    Nccl,
}

impl RowSpec {
    pub(crate) fn call(&self) -> Call {
        Call {
            collective: self.collective,
            dtype: self.dtype,
            op: self.op.unwrap_or(ReduceOp::Sum),
            count: self.shape.count,
            root: self.root.unwrap_or(0),
            algorithm: self.algo,
        }
    }

    pub(crate) fn case(&self) -> Case {
        Case {
            collective: self.collective,
            op: self.op.unwrap_or(ReduceOp::Sum),
            world: self.world,
            count: self.shape.count,
            root: self.root.unwrap_or(0),
        }
    }
}

/// One placement of a measured row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// Slowest rank's seconds per iteration.
    pub seconds: f64,
    pub figures: Figures,
    /// Wrong elements over all ranks; `None` when not checked.
    pub wrong: Option<usize>,
}

/// A measured row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    /// Position in the plan.
    pub index: usize,
    pub spec: RowSpec,
    /// The algorithm the communicator ran (what `auto` chose).
    pub algo_used: Algorithm,
    pub out_of_place: Placement,
    pub in_place: Placement,
}

/// Totals of a sweep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub rows: usize,
    /// Wrong elements over all rows and placements; `None` when not checked.
    pub wrong: Option<usize>,
    /// Mean busbw over all rows and both placements (nccl-tests' figure).
    pub avg_busbw: f64,
}

impl Summary {
    /// Totals of `rows`.
    pub fn of(rows: &[Row]) -> Summary {
        let placements = rows.iter().flat_map(|r| [r.out_of_place, r.in_place]);
        let n = rows.len() * 2;
        let busbw: f64 = placements.clone().map(|p| p.figures.busbw).sum();
        let wrong = placements.map(|p| p.wrong).sum::<Option<usize>>();
        Summary { rows: rows.len(), wrong, avg_busbw: if n > 0 { busbw / n as f64 } else { 0.0 } }
    }
}

/// One rank's result for one row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RankRow {
    pub algo: Algorithm,
    pub oop: (f64, Option<usize>),
    pub ip: (f64, Option<usize>),
}

pub(crate) enum Msg {
    Row { index: usize, result: RankRow },
    Failed { index: usize, error: oxccl::Error },
}

/// Runs the sweep: [`prepare`], then [`Sweep::run`].
pub fn run(opts: &Options, floor: Floor, on_row: impl FnMut(&Row)) -> Result<Vec<Row>, PerfError> {
    prepare(opts)?.run(floor, on_row)
}

/// A sweep ready to run: its ranks connected and its plan fixed.
pub struct Sweep {
    opts: Options,
    plan: Vec<RowSpec>,
    skipped: Vec<Skipped>,
    ranks: Ranks,
}

enum Ranks {
    /// Every rank, each to run on a thread of this process.
    Threads(Vec<Communicator>),
    /// Every rank on device memory, each to run on a thread of this process.
    Device(Vec<oxccl_cuda::StreamComm>),
    /// Every rank on GPU 0, each to run on a thread of this process.
    Gpu(Vec<oxccl_cuda::StreamComm<oxccl_cuda::streamed::gpu::GpuDevice>>),
    /// NCCL ranks, one per GPU, each to run on a thread of this process.
    Nccl(Vec<crate::device::NcclPerfRank>),
    /// This process's rank of a launched job, on its emulated device.
    DeviceProcess(Box<oxccl_cuda::StreamComm>),
    /// This process's rank of a launched job, on GPU 0.
    GpuProcess(Box<oxccl_cuda::StreamComm<oxccl_cuda::streamed::gpu::GpuDevice>>),
    /// This process's rank of a launched job on its emulated device, data
    /// staged through the transport's host slots (TCP, RDMA).
    StagedProcess(Box<oxccl_cuda::process::StagedRank<oxccl_cuda::EmuDevice>>),
    /// As `StagedProcess` on GPU 0.
    GpuStagedProcess(Box<oxccl_cuda::process::StagedRank<oxccl_cuda::streamed::gpu::GpuDevice>>),
    /// This process's rank of a launched job.
    Process(Box<Communicator>),
}

/// Checks the options and connects the ranks: a local group of threads, or
/// this process's rank of a launched job. The plan keeps the algorithms the
/// group can run ([`Options::runnable`]); rank 0 says on stderr which
/// transport it got (a launched job) and which algorithms it skipped.
pub fn prepare(opts: &Options) -> Result<Sweep, PerfError> {
    let setup = |error| PerfError { row: None, error: Box::new(error) };
    opts.validate().map_err(|e| setup(oxccl::Error::InvalidArgument(e)))?;
    // Why device data is staged between processes that share memory.
    let mut fallback: Option<String> = None;
    let ranks = match (opts.transport, opts.memory) {
        (None, Memory::Cuda) if opts.backend == Backend::Nccl => {
            Ranks::Nccl(crate::device::nccl_group(opts).map_err(setup)?)
        }
        (None, Memory::Host) => {
            Ranks::Threads(Communicator::local_group_with(opts.ranks, opts.config.clone()).map_err(setup)?)
        }
        (None, Memory::Emu) => Ranks::Device(crate::device::group(opts).map_err(setup)?),
        (None, Memory::Cuda) => Ranks::Gpu(crate::device::gpu_group(opts).map_err(setup)?),
        (Some(kind), Memory::Host) => Ranks::Process(Box::new(connect(opts, kind).map_err(setup)?)),
        // Ranks that share memory (shm) run stream-ordered calls; the
        // others stage device data through the transport's host slots.
        (Some(kind), memory) => {
            let comm = connect(opts, kind).map_err(setup)?;
            if !comm.shares_memory() && opts.graph {
                return Err(setup(oxccl::Error::InvalidArgument(format!(
                    "--graph needs stream-ordered calls, which run between ranks that share memory; over {} \
                     device data is staged through host memory by blocking calls",
                    comm.transport()
                ))));
            }
            use oxccl_cuda::process::ProcessRank;
            let ranks = match (memory, comm.shares_memory()) {
                (Memory::Emu, true) => match crate::device::process_rank(comm).map_err(setup)? {
                    ProcessRank::Streamed(sc) => Ranks::DeviceProcess(Box::new(sc)),
                    ProcessRank::Staged(r, why) => {
                        fallback = Some(why);
                        Ranks::StagedProcess(Box::new(r))
                    }
                },
                (Memory::Cuda, true) => match crate::device::gpu_process_rank(comm).map_err(setup)? {
                    ProcessRank::Streamed(sc) => Ranks::GpuProcess(Box::new(sc)),
                    ProcessRank::Staged(r, why) => {
                        fallback = Some(why);
                        Ranks::GpuStagedProcess(Box::new(r))
                    }
                },
                (Memory::Emu, false) => {
                    Ranks::StagedProcess(Box::new(crate::device::staged_process_rank(comm).map_err(setup)?))
                }
                (_, false) => {
                    Ranks::GpuStagedProcess(Box::new(crate::device::gpu_staged_process_rank(comm).map_err(setup)?))
                }
                (Memory::Host, _) => unreachable!("matched above"),
            };
            if opts.graph && fallback.is_some() {
                return Err(setup(oxccl::Error::InvalidArgument(format!(
                    "--graph needs stream-ordered calls, and these processes stage device data through host \
                     memory: {}",
                    fallback.unwrap_or_default()
                ))));
            }
            ranks
        }
    };
    let comm = match &ranks {
        Ranks::Threads(comms) => &comms[0],
        Ranks::Device(comms) => comms[0].communicator(),
        Ranks::Gpu(comms) => comms[0].communicator(),
        Ranks::Nccl(ranks) => ranks[0].host(),
        Ranks::DeviceProcess(sc) => sc.communicator(),
        Ranks::GpuProcess(sc) => sc.communicator(),
        Ranks::StagedProcess(r) => crate::device::DeviceRank::host(&**r),
        Ranks::GpuStagedProcess(r) => crate::device::DeviceRank::host(&**r),
        Ranks::Process(comm) => &**comm,
    };
    // Device memory of other processes is out of reach of direct steps.
    let (shares, what) = match &ranks {
        Ranks::DeviceProcess(_) | Ranks::GpuProcess(_) | Ranks::StagedProcess(_) | Ranks::GpuStagedProcess(_) => {
            (false, format!("{} with device memory", comm.transport()))
        }
        _ => (comm.shares_memory(), comm.transport()),
    };
    let (algos, skipped) = opts.runnable(shares, &what).map_err(|e| setup(oxccl::Error::InvalidArgument(e)))?;
    if comm.rank() == 0 {
        // On stderr: the table, CSV and JSON on stdout stay as they are.
        if let Ranks::Process(_) | Ranks::DeviceProcess(_) | Ranks::GpuProcess(_) = ranks {
            eprintln!("# oxccl perf: rank 0's transport: {}", comm.transport());
        }
        if let Ranks::StagedProcess(_) | Ranks::GpuStagedProcess(_) = ranks {
            eprintln!(
                "# oxccl perf: rank 0's transport: {}; device data staged through its host slots (blocking calls){}",
                comm.transport(),
                fallback.as_deref().map(|why| format!(": {why}")).unwrap_or_default()
            );
        }
        for s in &skipped {
            eprintln!("# oxccl perf: {s}");
        }
    }
    // NCCL picks its own algorithm: one row per size.
    let algos = if opts.backend == Backend::Nccl { vec![None] } else { algos };
    let opts = Options { algos, ..opts.clone() };
    let plan = opts.plan();
    Ok(Sweep { opts, plan, skipped, ranks })
}

impl Sweep {
    /// The rows it measures, in order ([`Row::index`] is a position here):
    /// [`Options::plan`] less the skipped algorithms' rows.
    pub fn plan(&self) -> &[RowSpec] {
        &self.plan
    }

    /// The algorithms left out, and why.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Runs the sweep. `floor` (the physical limits measured in this run)
    /// feeds the `%floor` figures; `on_row` sees each row as soon as every
    /// rank has measured it (in a launched job, on rank 0 only). Returns
    /// every row, or the first failure.
    pub fn run(self, floor: Floor, on_row: impl FnMut(&Row)) -> Result<Vec<Row>, PerfError> {
        match self.ranks {
            Ranks::Threads(comms) => run_threads(&self.opts, comms, &self.plan, floor, on_row, rank_main),
            Ranks::Device(comms) => run_threads(&self.opts, comms, &self.plan, floor, on_row, crate::device::rank_main),
            Ranks::Gpu(comms) => run_threads(&self.opts, comms, &self.plan, floor, on_row, crate::device::rank_main),
            Ranks::Nccl(ranks) => run_threads(&self.opts, ranks, &self.plan, floor, on_row, crate::device::rank_main),
            Ranks::Process(comm) => run_as_process(&self.opts, *comm, &self.plan, floor, on_row),
            Ranks::DeviceProcess(sc) => crate::device::run_as_process(&self.opts, *sc, &self.plan, floor, on_row),
            Ranks::GpuProcess(sc) => crate::device::run_as_process(&self.opts, *sc, &self.plan, floor, on_row),
            Ranks::StagedProcess(r) => crate::device::run_as_process(&self.opts, *r, &self.plan, floor, on_row),
            Ranks::GpuStagedProcess(r) => crate::device::run_as_process(&self.opts, *r, &self.plan, floor, on_row),
        }
    }
}

/// The sweep over a local group, one thread per rank.
/// `work` is one rank's part of the sweep (host or device memory).
pub(crate) fn run_threads<R: Send>(
    opts: &Options,
    comms: Vec<R>,
    plan: &[RowSpec],
    floor: Floor,
    mut on_row: impl FnMut(&Row),
    work: fn(usize, R, &Options, &[RowSpec], mpsc::Sender<Msg>),
) -> Result<Vec<Row>, PerfError> {
    let world = comms.len();
    let (tx, rx) = mpsc::channel::<Msg>();

    let mut rows = Vec::with_capacity(plan.len());
    let mut failures: Vec<(usize, oxccl::Error)> = Vec::new(); // (row, error)

    // Rank threads each on a core of their own while the cores last, as
    // `oxccl run` binds rank processes: two ranks that wait for each other
    // on one core take turns, and the kernel does not always spread them.
    let cpus = oxccl::affinity::one_core_each(world);
    std::thread::scope(|s| {
        for (rank, comm) in comms.into_iter().enumerate() {
            let tx = tx.clone();
            let cpu = cpus.as_ref().map(|c| c[rank]);
            std::thread::Builder::new()
                .name(format!("perf-rank-{rank}"))
                .spawn_scoped(s, move || {
                    if let Some(cpu) = cpu {
                        let _ = oxccl::affinity::set(&[cpu]);
                    }
                    work(rank, comm, opts, plan, tx)
                })
                .expect("spawn a rank thread");
        }
        drop(tx);
        // Per row, the results of the ranks that reported it so far.
        let mut pending: Vec<Vec<RankRow>> = vec![Vec::new(); plan.len()];
        let mut next = 0;
        for msg in rx {
            match msg {
                Msg::Row { index, result } => {
                    pending[index].push(result);
                    while next < plan.len() && pending[next].len() == world {
                        let row = combine(next, &plan[next], &pending[next], &floor);
                        on_row(&row);
                        rows.push(row);
                        next += 1;
                    }
                }
                Msg::Failed { index, error } => failures.push((index, error)),
            }
        }
    });
    if failures.is_empty() {
        return Ok(rows);
    }
    // The root cause: the first failure that is not a consequence of another
    // rank's failure.
    let first = failures.iter().position(|(_, e)| e.kind() != oxccl::ErrorKind::RemoteFailure).unwrap_or(0);
    let (index, error) = failures.swap_remove(first);
    Err(PerfError { row: Some(plan[index]), error: Box::new(error) })
}

/// This process's rank of a launched job, over `kind`.
fn connect(opts: &Options, kind: TransportKind) -> oxccl::Result<Communicator> {
    let launch = Launch::from_env()?;
    match kind {
        TransportKind::Rdma => rdma_communicator(&launch, opts.config.clone()),
        TransportKind::Auto => auto_communicator(&launch, opts.config.clone()),
        _ => Communicator::init_with(&launch, kind, opts.config.clone()),
    }
}

/// The sweep as one rank of a launched job: measure each row, then agree on
/// it with an all-reduce (slowest rank's time, total wrong values); only
/// rank 0 reports rows.
fn run_as_process(
    opts: &Options,
    comm: Communicator,
    plan: &[RowSpec],
    floor: Floor,
    on_row: impl FnMut(&Row),
) -> Result<Vec<Row>, PerfError> {
    let rank = comm.rank();
    let mut bufs = Buffers::default();
    let measure = |spec: &RowSpec| with_dtype!(spec.dtype, T => measure_row::<T>(rank, &comm, opts, spec, &mut bufs));
    agree_rows(&comm, plan, floor, on_row, measure)
}

/// The rows of a launched job's rank: each measured by `measure`, then
/// agreed on with the other ranks over `comm`; rank 0 reports them.
pub(crate) fn agree_rows(
    comm: &Communicator,
    plan: &[RowSpec],
    floor: Floor,
    mut on_row: impl FnMut(&Row),
    mut measure: impl FnMut(&RowSpec) -> oxccl::Result<RankRow>,
) -> Result<Vec<Row>, PerfError> {
    let rank = comm.rank();
    let mut rows = Vec::with_capacity(plan.len());
    for (index, spec) in plan.iter().enumerate() {
        let failed = |error| PerfError { row: Some(*spec), error: Box::new(error) };
        let mine = measure(spec).inspect_err(|e| comm.abort(&format!("rank {rank} failed: {e}"))).map_err(failed)?;
        let mut seconds = [mine.oop.0, mine.ip.0];
        comm.all_reduce_in_place(&mut seconds, ReduceOp::Max).map_err(failed)?;
        let mut wrong = [mine.oop.1.unwrap_or(0) as u64, mine.ip.1.unwrap_or(0) as u64];
        comm.all_reduce_in_place(&mut wrong, ReduceOp::Sum).map_err(failed)?;
        let all = RankRow {
            algo: mine.algo,
            oop: (seconds[0], mine.oop.1.map(|_| wrong[0] as usize)),
            ip: (seconds[1], mine.ip.1.map(|_| wrong[1] as usize)),
        };
        let row = combine(index, spec, &[all], &floor);
        if rank == 0 {
            on_row(&row);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// This rank's communicator over RDMA verbs.
#[cfg(feature = "rdma")]
fn rdma_communicator(launch: &Launch, config: Config) -> oxccl::Result<Communicator> {
    oxccl_rdma::verbs::communicator(launch, config)
}

/// The best transport per pair: shared memory on a host; between hosts
/// RDMA where every rank has a usable RDMA device, else TCP (the transport
/// table decides, alike on every rank).
#[cfg(feature = "rdma")]
fn auto_communicator(launch: &Launch, config: Config) -> oxccl::Result<Communicator> {
    oxccl_rdma::verbs::communicator_auto(launch, config)
}

#[cfg(not(feature = "rdma"))]
fn auto_communicator(launch: &Launch, config: Config) -> oxccl::Result<Communicator> {
    Communicator::init_with(launch, TransportKind::Auto, config)
}

#[cfg(not(feature = "rdma"))]
fn rdma_communicator(_launch: &Launch, _config: Config) -> oxccl::Result<Communicator> {
    Err(oxccl::Error::InvalidArgument(
        "this build has no RDMA transport: build with `cargo build --release -p oxccl-tools --features rdma` \
         (needs cmake, libclang, libnl and libibverbs; see rdma/guest/ci.sh)"
            .into(),
    ))
}

/// A failed sweep: the error and the row it happened in (`None`: setup).
#[derive(Debug)]
pub struct PerfError {
    pub row: Option<RowSpec>,
    pub error: Box<oxccl::Error>,
}

impl std::fmt::Display for PerfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.row {
            None => write!(f, "{}", self.error),
            Some(r) => {
                write!(f, "{} of {} B ({} elements) of {}", r.collective, r.shape.bytes(), r.shape.count, r.dtype)?;
                if let Some(op) = r.op {
                    write!(f, ", {op}")?;
                }
                write!(f, ", algorithm {}: {}", r.algo.map_or("auto", |a| a.name()), self.error)
            }
        }
    }
}

impl std::error::Error for PerfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

fn combine(index: usize, spec: &RowSpec, ranks: &[RankRow], floor: &Floor) -> Row {
    let placement = |get: fn(&RankRow) -> (f64, Option<usize>)| {
        let seconds = ranks.iter().map(|r| get(r).0).fold(0.0, f64::max);
        let wrong = ranks.iter().map(|r| get(r).1).sum::<Option<usize>>();
        Placement { seconds, figures: Figures::new(spec.collective, spec.world, &spec.shape, seconds, floor), wrong }
    };
    Row {
        index,
        spec: *spec,
        algo_used: ranks[0].algo,
        out_of_place: placement(|r| r.oop),
        in_place: placement(|r| r.ip),
    }
}

fn rank_main(rank: usize, comm: Communicator, opts: &Options, plan: &[RowSpec], tx: mpsc::Sender<Msg>) {
    let mut bufs = Buffers::default();
    rank_loop(
        rank,
        plan,
        tx,
        |why| comm.abort(why),
        |spec| with_dtype!(spec.dtype, T => measure_row::<T>(rank, &comm, opts, spec, &mut bufs)),
    )
}

/// Measures every row of `plan` on one rank (`measure`), sending each
/// result; a failure (or a panic) aborts the group (`abort`) and ends it.
pub(crate) fn rank_loop(
    rank: usize,
    plan: &[RowSpec],
    tx: mpsc::Sender<Msg>,
    abort: impl Fn(&str),
    mut measure: impl FnMut(&RowSpec) -> oxccl::Result<RankRow>,
) {
    for (index, spec) in plan.iter().enumerate() {
        let result = catch_unwind(AssertUnwindSafe(|| measure(spec))).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(oxccl::Error::Internal(format!("rank {rank} panicked: {what}")))
        });
        match result {
            Ok(result) => {
                let _ = tx.send(Msg::Row { index, result });
            }
            Err(error) => {
                // Stop the other ranks now rather than at their timeout.
                let _ = catch_unwind(AssertUnwindSafe(|| abort(&format!("rank {rank} failed: {error}"))));
                let _ = tx.send(Msg::Failed { index, error });
                return;
            }
        }
    }
}

/// A rank's buffers, kept across rows (grown, never shrunk), from the
/// communicator's shared memory so that the direct algorithm can run across
/// processes (in one process any memory would do). `u64` words keep every
/// dtype aligned.
#[derive(Default)]
struct Buffers {
    send: Option<SharedBuf<u64>>,
    recv: Option<SharedBuf<u64>>,
}

fn words<'a>(comm: &Communicator, buf: &'a mut Option<SharedBuf<u64>>, bytes: usize) -> oxccl::Result<&'a mut [u8]> {
    let n = bytes.div_ceil(8).max(1);
    if buf.as_ref().is_none_or(|b| b.len() < n) {
        *buf = None; // give the old one back first
        *buf = Some(comm.alloc_shared(n)?);
    }
    let words: &mut [u64] = buf.as_mut().expect("allocated");
    Ok(&mut bytemuck::cast_slice_mut(words)[..bytes])
}

fn measure_row<T: Value>(
    rank: usize,
    comm: &Communicator,
    opts: &Options,
    spec: &RowSpec,
    bufs: &mut Buffers,
) -> oxccl::Result<RankRow> {
    let call = spec.call();
    let case = spec.case();
    let (world, count) = (spec.world, spec.shape.count);
    let c = spec.collective;
    let ts = spec.dtype.size();
    let in_len = c.input_len(world, count);
    let out_len = c.output_len(world, count);
    let ip_len = c.in_place_len(world, count);
    let (in_off, out_off) = c.in_place_offsets(rank, count);

    // Out of place.
    let send = words(comm, &mut bufs.send, in_len.max(ip_len) * ts)?;
    let recv = words(comm, &mut bufs.recv, out_len * ts)?;
    let fill_oop = |send: &mut [u8], recv: &mut [u8]| {
        case.fill_input::<T>(rank, bytemuck::cast_slice_mut(&mut send[..in_len * ts]));
        bytemuck::cast_slice_mut::<u8, T>(recv).fill(T::POISON);
    };
    fill_oop(send, recv);
    let oop_seconds =
        time(comm, opts, || comm.run(&call, Bytes::OutOfPlace { send: &send[..in_len * ts], recv: &mut *recv }))?;
    let oop_wrong = if opts.check {
        fill_oop(send, recv);
        comm.run(&call, Bytes::OutOfPlace { send: &send[..in_len * ts], recv: &mut *recv })?;
        Some(case.count_wrong::<T>(rank, bytemuck::cast_slice(recv)))
    } else {
        None
    };

    // In place: one array, input and output at NCCL's offsets.
    let buf = &mut send[..ip_len * ts];
    let fill_ip = |buf: &mut [u8]| {
        let typed: &mut [T] = bytemuck::cast_slice_mut(buf);
        typed.fill(T::POISON);
        case.fill_input::<T>(rank, &mut typed[in_off..in_off + in_len]);
    };
    fill_ip(buf);
    let ip_seconds = time(comm, opts, || comm.run(&call, Bytes::InPlace(&mut *buf)))?;
    let ip_wrong = if opts.check {
        fill_ip(buf);
        comm.run(&call, Bytes::InPlace(&mut *buf))?;
        let typed: &[T] = bytemuck::cast_slice(buf);
        Some(case.count_wrong::<T>(rank, &typed[out_off..out_off + out_len]))
    } else {
        None
    };
    // The buffers come from alloc_shared.
    Ok(RankRow { algo: comm.algorithm_for(&call, true), oop: (oop_seconds, oop_wrong), ip: (ip_seconds, ip_wrong) })
}

/// Warm-up iterations, a barrier, then the timed iterations: seconds each.
pub(crate) fn time(
    comm: &Communicator,
    opts: &Options,
    mut op: impl FnMut() -> oxccl::Result<()>,
) -> oxccl::Result<f64> {
    for _ in 0..opts.warmup {
        op()?;
    }
    comm.barrier()?;
    let t = Instant::now();
    for _ in 0..opts.iters {
        op()?;
    }
    Ok(t.elapsed().as_secs_f64() / opts.iters.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(collective: Collective) -> Options {
        Options {
            collective,
            ranks: 4,
            sizes: vec![8, 1024],
            dtypes: vec![DType::F32, DType::I32],
            ops: vec![ReduceOp::Sum, ReduceOp::Max],
            root: 0,
            algos: vec![Some(Algorithm::Ring), None],
            all_algos: false,
            warmup: 1,
            iters: 2,
            check: true,
            config: Config::default(),
            transport: None,
            memory: Memory::Host,
            backend: Backend::Oxccl,
            graph: false,
        }
    }

    #[test]
    fn plan_order_and_shapes() {
        let p = opts(Collective::AllReduce).plan();
        assert_eq!(p.len(), 2 * 2 * 2 * 2);
        assert_eq!(
            (p[0].dtype, p[0].op, p[0].shape.count, p[0].algo),
            (DType::F32, Some(ReduceOp::Sum), 2, Some(Algorithm::Ring))
        );
        assert_eq!(p[1].algo, None);
        assert_eq!(p[2].shape.count, 256);
        assert_eq!(p[4].op, Some(ReduceOp::Max));
        assert_eq!(p[8].dtype, DType::I32);
        assert!(p.iter().all(|r| r.root.is_none()));
    }

    #[test]
    fn plan_without_reduction_or_sizes() {
        let p = opts(Collective::AllGather).plan();
        assert_eq!(p.len(), 2 * 2 * 2);
        assert!(p.iter().all(|r| r.op.is_none()));
        assert_eq!(p[2].shape.count, 1024 / 4 / 4);
        let p = opts(Collective::Broadcast).plan();
        assert!(p.iter().all(|r| r.root == Some(0)));
        let p = opts(Collective::Barrier).plan();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].shape.count, 0);
    }

    #[test]
    fn validation() {
        assert!(opts(Collective::AllReduce).validate().is_ok());
        let mut o = opts(Collective::Broadcast);
        o.root = 4;
        assert!(o.validate().unwrap_err().contains("root"));
        o.collective = Collective::AllReduce;
        assert!(o.validate().is_ok(), "root is ignored when unrooted");
        let mut o = opts(Collective::AllReduce);
        o.iters = 0;
        assert!(o.validate().is_err());
        let mut o = opts(Collective::AllReduce);
        o.ranks = 0;
        assert!(o.validate().is_err());
    }

    #[test]
    fn all_skips_what_the_group_cannot_run() {
        let mut o = opts(Collective::AllReduce);
        o.algos = Algorithm::ALL.iter().copied().map(Some).chain([None]).collect();
        o.all_algos = true;
        let (algos, skipped) = o.runnable(false, "tcp").unwrap();
        assert_eq!(algos, [Some(Algorithm::Ring), Some(Algorithm::Tree), Some(Algorithm::HalvingDoubling), None]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].to_string(), "skipping direct: it needs ranks that share an address space; tcp has none");
        // Shared memory runs everything.
        let (algos, skipped) = o.runnable(true, "shm").unwrap();
        assert_eq!(algos, o.algos);
        assert!(skipped.is_empty());
        // A named list is kept as it is: direct fails at its row, as asked.
        o.all_algos = false;
        let (algos, skipped) = o.runnable(false, "tcp").unwrap();
        assert_eq!(algos, o.algos);
        assert!(skipped.is_empty());
        // Nothing left is an error naming why.
        o.algos = vec![Some(Algorithm::Direct)];
        o.all_algos = true;
        let e = o.runnable(false, "rdma").unwrap_err();
        assert!(e.contains("no algorithm") && e.contains("direct: it needs ranks that share an address space"), "{e}");
    }

    #[test]
    fn a_local_group_runs_direct() {
        let mut o = opts(Collective::AllReduce);
        o.ranks = 2;
        o.algos = vec![Some(Algorithm::Direct), None];
        o.all_algos = true;
        let sweep = prepare(&o).unwrap();
        assert!(sweep.skipped().is_empty());
        assert_eq!(sweep.plan(), &o.plan()[..]);
    }

    #[test]
    fn summary_averages_both_placements() {
        let spec = opts(Collective::AllReduce).plan()[2];
        let p = |busbw: f64, wrong| Placement {
            seconds: 1.0,
            figures: Figures { time_us: 1e6, algbw: busbw, busbw, floor_pct: None },
            wrong,
        };
        let rows = [
            Row {
                index: 0,
                spec,
                algo_used: Algorithm::Ring,
                out_of_place: p(1.0, Some(0)),
                in_place: p(2.0, Some(1)),
            },
            Row {
                index: 1,
                spec,
                algo_used: Algorithm::Ring,
                out_of_place: p(3.0, Some(2)),
                in_place: p(6.0, Some(0)),
            },
        ];
        let s = Summary::of(&rows);
        assert_eq!(s.rows, 2);
        assert_eq!(s.wrong, Some(3));
        assert!((s.avg_busbw - 3.0).abs() < 1e-12);
        let unchecked = [Row { in_place: p(2.0, None), ..rows[0] }];
        assert_eq!(Summary::of(&unchecked).wrong, None);
        assert_eq!(Summary::of(&[]).avg_busbw, 0.0);
    }

    #[test]
    fn combine_takes_the_slowest_rank_and_sums_wrong() {
        let spec = opts(Collective::AllReduce).plan()[2];
        let ranks = [
            RankRow { algo: Algorithm::Tree, oop: (1e-3, Some(0)), ip: (2e-3, Some(1)) },
            RankRow { algo: Algorithm::Tree, oop: (3e-3, Some(2)), ip: (1e-3, Some(0)) },
        ];
        let row = combine(7, &spec, &ranks, &Floor { membw_gbps: 10.0, handoff_s: 0.0 });
        assert_eq!(row.index, 7);
        assert_eq!(row.algo_used, Algorithm::Tree);
        assert_eq!(row.out_of_place.seconds, 3e-3);
        assert_eq!(row.in_place.seconds, 2e-3);
        assert_eq!(row.out_of_place.wrong, Some(2));
        assert_eq!(row.in_place.wrong, Some(1));
        assert!(row.out_of_place.figures.floor_pct.is_some());
    }
}

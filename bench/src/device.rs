//! The sweep on device memory (`oxccl perf --device emu`): ranks are
//! threads of this process, each a [`StreamComm`] rank with a stream of its
//! own, all on one device (as on the one-GPU machines here). A row is
//! enqueued `iters` times back to back and timed from the first enqueue to
//! the end of the stream, after a warm-up and a barrier; with checking on,
//! each placement then runs once more on fresh inputs and poisoned outputs
//! and every element is compared with the closed form ([`crate::data`]).
//!
//! The floor is the device's copy bandwidth measured in the same run
//! ([`copy_bandwidth`]): every byte a collective must read and write
//! ([`crate::metrics::floor_bytes`]: 2·N·S for an all-reduce of S bytes,
//! what `direct` moves) at the rate a device-to-device copy reads and
//! writes. The staged algorithms move more (their own floors are not
//! reported yet).

use std::sync::{mpsc, Arc};
use std::time::Instant;

use oxccl::Communicator;
use oxccl_cuda::nccl::NcclRank;
use oxccl_cuda::process::{ProcessRank, StagedRank};
use oxccl_cuda::streamed::backend::{DeviceMemory, DeviceQueue};
use oxccl_cuda::streamed::gpu::GpuDevice;
use oxccl_cuda::{EmuDevice, EmuPlatform, Reducer, StreamComm};

use crate::data::Value;
use crate::perf::{rank_loop, time, Msg, Options, RankRow, RowSpec};
use crate::with_dtype;

fn system(e: oxccl_cuda::Error) -> oxccl::Error {
    oxccl::Error::System(e.to_string())
}

/// The ranks of a sweep on the emulated device: `opts.ranks` of them on
/// one emulated device whose reductions run on the host's reducers (the
/// emulated kernels take milliseconds a launch, which would swamp every
/// figure).
pub fn group(opts: &Options) -> oxccl::Result<Vec<StreamComm>> {
    let platform = EmuPlatform::with_reducer(1, Reducer::Host);
    let dev = platform.device(0).map_err(system)?;
    StreamComm::local_group(&vec![dev; opts.ranks], opts.config.clone())
}

/// The ranks of a sweep on GPU 0: `opts.ranks` of them sharing it.
pub fn gpu_group(opts: &Options) -> oxccl::Result<Vec<StreamComm<GpuDevice>>> {
    let dev = GpuDevice::new(0).map_err(system)?;
    StreamComm::local_group(&vec![dev; opts.ranks], opts.config.clone())
}

/// Read+write bytes per second of a device-to-device copy of `bytes` on
/// `dev` (best of `reps`), GB/s.
pub fn copy_bandwidth<D: DeviceMemory>(dev: &Arc<D>, bytes: usize, reps: usize) -> Result<f64, String> {
    let (src, dst) = (dev.alloc(bytes).map_err(|e| e.to_string())?, dev.alloc(bytes).map_err(|e| e.to_string())?);
    dev.upload(&src, &vec![1u8; bytes]).map_err(|e| e.to_string())?;
    let stream = dev.new_stream().map_err(|e| e.to_string())?;
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        // SAFETY: both buffers outlive the copy (waited for just below).
        unsafe { stream.copy(D::region(&dst), D::region(&src)) }.map_err(|e| e.to_string())?;
        stream.synchronize().map_err(|e| e.to_string())?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * bytes as f64 / best / 1e9)
}

/// The copy bandwidth of the emulated device (a fresh one: the emulator's
/// memory is the host's).
pub fn device_copy_bandwidth() -> Result<f64, String> {
    let dev: Arc<EmuDevice> = EmuPlatform::new(1).device(0).map_err(|e| e.to_string())?;
    copy_bandwidth(&dev, 64 << 20, 5)
}

/// The copy bandwidth of GPU 0 (1 GiB buffers, so no cache holds them).
pub fn gpu_copy_bandwidth() -> Result<f64, String> {
    let dev = GpuDevice::new(0).map_err(|e| e.to_string())?;
    copy_bandwidth(&dev, 1 << 30, 5)
}

/// A rank of a device sweep: oxccl's stream-ordered calls, or NCCL's.
pub(crate) trait DeviceRank: Send {
    type D: DeviceMemory;
    fn device(&self) -> &Arc<Self::D>;
    /// Enqueues `call` on `stream`.
    ///
    /// # Safety
    /// The buffers stay valid and untouched until the stream has run it.
    unsafe fn enqueue(
        &self,
        call: &oxccl::Call,
        bufs: oxccl::Regions,
        stream: &<Self::D as DeviceMemory>::Stream,
    ) -> oxccl::Result<()>;
    /// The host communicator the sweep's ranks meet on between rows.
    fn host(&self) -> &Communicator;
    fn abort(&self, why: &str);
    fn async_error(&self) -> Option<oxccl::Error>;
    /// What a call naming no algorithm runs.
    fn default_algorithm(&self) -> oxccl::Algorithm;
}

impl<D: DeviceMemory> DeviceRank for StreamComm<D> {
    type D = D;
    fn device(&self) -> &Arc<D> {
        StreamComm::device(self)
    }
    unsafe fn enqueue(&self, call: &oxccl::Call, bufs: oxccl::Regions, stream: &D::Stream) -> oxccl::Result<()> {
        // SAFETY: the caller's contract is the same.
        unsafe { StreamComm::enqueue(self, call, bufs, stream) }
    }
    fn host(&self) -> &Communicator {
        self.communicator()
    }
    fn abort(&self, why: &str) {
        StreamComm::abort(self, why)
    }
    fn async_error(&self) -> Option<oxccl::Error> {
        StreamComm::async_error(self)
    }
    fn default_algorithm(&self) -> oxccl::Algorithm {
        StreamComm::default_algorithm(self)
    }
}

/// A NCCL rank of a sweep, with a host communicator for meeting between rows.
pub struct NcclPerfRank {
    nccl: NcclRank,
    host: Communicator,
}

impl NcclPerfRank {
    pub fn host(&self) -> &Communicator {
        &self.host
    }
}

/// NCCL ranks for a sweep: one per GPU (`ncclCommInitAll`).
pub fn nccl_group(opts: &Options) -> oxccl::Result<Vec<NcclPerfRank>> {
    let ranks = NcclRank::group(opts.ranks).map_err(system)?;
    let hosts = Communicator::local_group_with(opts.ranks, opts.config.clone())?;
    Ok(ranks.into_iter().zip(hosts).map(|(nccl, host)| NcclPerfRank { nccl, host }).collect())
}

impl DeviceRank for NcclPerfRank {
    type D = GpuDevice;
    fn device(&self) -> &Arc<GpuDevice> {
        self.nccl.device()
    }
    unsafe fn enqueue(
        &self,
        call: &oxccl::Call,
        bufs: oxccl::Regions,
        stream: &oxccl_cuda::streamed::gpu::GpuStream,
    ) -> oxccl::Result<()> {
        // SAFETY: the caller's contract is the same.
        unsafe { self.nccl.enqueue(call, bufs, stream) }.map_err(|e| match e.kind() {
            oxccl_cuda::ErrorKind::InvalidArgument => oxccl::Error::InvalidArgument(e.to_string()),
            _ => oxccl::Error::System(e.to_string()),
        })
    }
    fn host(&self) -> &Communicator {
        &self.host
    }
    /// Aborts the host group (the sweep stops); NCCL's communicator is
    /// destroyed when the rank is dropped.
    fn abort(&self, why: &str) {
        self.host.abort(why)
    }
    fn async_error(&self) -> Option<oxccl::Error> {
        None
    }
    /// NCCL chooses; the row says `nccl`.
    fn default_algorithm(&self) -> oxccl::Algorithm {
        oxccl::Algorithm::Ring
    }
}

impl<D: DeviceMemory> DeviceRank for StagedRank<D> {
    type D = D;
    fn device(&self) -> &Arc<D> {
        StagedRank::device(self)
    }
    unsafe fn enqueue(&self, call: &oxccl::Call, bufs: oxccl::Regions, _stream: &D::Stream) -> oxccl::Result<()> {
        // SAFETY: the caller keeps the buffers valid and untouched until the call has run, which
        // is before this returns.
        unsafe { self.run(call, bufs) }
    }
    fn host(&self) -> &Communicator {
        self.comm()
    }
    fn abort(&self, why: &str) {
        self.comm().abort(why)
    }
    fn async_error(&self) -> Option<oxccl::Error> {
        self.comm().abort_handle().cause()
    }
    fn default_algorithm(&self) -> oxccl::Algorithm {
        self.comm().config().algorithm.unwrap_or(oxccl::Algorithm::Ring)
    }
}

/// This process's rank of a launched job whose transport cannot reach
/// peers' device memory, on its own emulated device, data staged.
pub fn staged_process_rank(comm: Communicator) -> oxccl::Result<StagedRank<EmuDevice>> {
    let platform = EmuPlatform::with_reducer(1, Reducer::Host);
    StagedRank::new(comm, platform.device(0).map_err(system)?)
}

/// As [`staged_process_rank`] on GPU 0.
pub fn gpu_staged_process_rank(comm: Communicator) -> oxccl::Result<StagedRank<GpuDevice>> {
    StagedRank::new(comm, GpuDevice::new(0).map_err(system)?)
}

/// This process's rank of a launched job on an emulated device of its own
/// (the host's reducers: see [`group`]), areas shared through the emulated
/// IPC handles; `OXCCL_EMU_IPC=0` makes the device refuse IPC, as a
/// sandbox that refuses CUDA IPC does, to try the fallback.
pub fn process_rank(comm: Communicator) -> oxccl::Result<ProcessRank<EmuDevice>> {
    let platform = EmuPlatform::with_reducer(1, Reducer::Host);
    if std::env::var("OXCCL_EMU_IPC").is_ok_and(|v| v == "0") {
        platform.refuse_ipc();
    }
    ProcessRank::on(comm, platform.device(0).map_err(system)?)
}

/// This process's rank of a launched job on GPU 0 (the processes share
/// it), the ranks' areas shared through CUDA IPC where it works.
pub fn gpu_process_rank(comm: Communicator) -> oxccl::Result<ProcessRank<GpuDevice>> {
    ProcessRank::on(comm, GpuDevice::new(0).map_err(system)?)
}

/// The sweep as one rank of a launched job on device memory; rows are
/// agreed on as the host's are ([`crate::perf::agree_rows`]).
pub(crate) fn run_as_process<R: DeviceRank>(
    opts: &Options,
    r: R,
    plan: &[RowSpec],
    floor: crate::Floor,
    on_row: impl FnMut(&crate::Row),
) -> Result<Vec<crate::Row>, crate::PerfError> {
    let rank = r.host().rank();
    let stream =
        DeviceMemory::new_stream(r.device()).map_err(|e| crate::PerfError { row: None, error: Box::new(system(e)) })?;
    let mut bufs = Buffers::<R::D> { send: None, recv: None };
    let measure =
        |spec: &RowSpec| with_dtype!(spec.dtype, T => measure_row::<T, R>(rank, &r, &stream, opts, spec, &mut bufs));
    crate::perf::agree_rows(r.host(), plan, floor, on_row, measure)
}

/// One rank's part of the sweep (see [`crate::perf::run_threads`]).
pub(crate) fn rank_main<R: DeviceRank>(rank: usize, comm: R, opts: &Options, plan: &[RowSpec], tx: mpsc::Sender<Msg>) {
    let stream = match comm.device().new_stream() {
        Ok(s) => s,
        Err(e) => {
            let error = oxccl::Error::System(format!("rank {rank}: no stream: {e}"));
            comm.abort(&error.to_string());
            let _ = tx.send(Msg::Failed { index: 0, error });
            return;
        }
    };
    let mut bufs = Buffers::<R::D> { send: None, recv: None };
    rank_loop(
        rank,
        plan,
        tx,
        |why| comm.abort(why),
        |spec| with_dtype!(spec.dtype, T => measure_row::<T, R>(rank, &comm, &stream, opts, spec, &mut bufs)),
    )
}

/// A rank's device buffers, kept across rows (grown, never shrunk).
struct Buffers<D: DeviceMemory> {
    send: Option<D::Buffer>,
    recv: Option<D::Buffer>,
}

fn grown<'a, D: DeviceMemory>(
    dev: &Arc<D>,
    buf: &'a mut Option<D::Buffer>,
    bytes: usize,
) -> oxccl::Result<&'a D::Buffer> {
    if buf.as_ref().is_none_or(|b| D::region(b).len() < bytes) {
        *buf = None;
        *buf = Some(dev.alloc(bytes.max(8)).map_err(system)?);
    }
    Ok(buf.as_ref().expect("allocated"))
}

/// A captured graph of device `D`'s streams.
type GraphOf<D> = <<D as DeviceMemory>::Stream as DeviceQueue>::Graph;

fn upload<T: Value, D: DeviceMemory>(dev: &D, buf: &D::Buffer, data: &[T]) -> oxccl::Result<()> {
    dev.upload(buf, bytemuck::cast_slice(data)).map_err(system)
}

fn measure_row<T: Value, R: DeviceRank>(
    rank: usize,
    comm: &R,
    stream: &<R::D as DeviceMemory>::Stream,
    opts: &Options,
    spec: &RowSpec,
    bufs: &mut Buffers<R::D>,
) -> oxccl::Result<RankRow> {
    let (call, case) = (spec.call(), spec.case());
    let (world, count, c) = (spec.world, spec.shape.count, spec.collective);
    let ts = spec.dtype.size();
    let (in_len, out_len, ip_len) =
        (c.input_len(world, count), c.output_len(world, count), c.in_place_len(world, count));
    let (in_off, out_off) = c.in_place_offsets(rank, count);
    let dev = comm.device().clone();
    let host: &Communicator = comm.host();
    let send = grown(&dev, &mut bufs.send, in_len.max(ip_len) * ts)?;
    let recv = grown(&dev, &mut bufs.recv, out_len * ts)?;
    let (send_r, recv_r) = (R::D::region(send), R::D::region(recv));
    let run = |regions: oxccl::Regions| -> oxccl::Result<()> {
        // SAFETY: the buffers live in `bufs` until the stream has run the call: every timed or
        // checked run ends by waiting for the stream.
        unsafe { comm.enqueue(&call, regions, stream) }
    };
    let sync = || stream.synchronize().map_err(|e| comm.async_error().unwrap_or(oxccl::Error::System(e.to_string())));
    let oop = || oxccl::Regions::OutOfPlace {
        send: send_r.sub(0..in_len * ts).expect("grown"),
        recv: recv_r.sub(0..out_len * ts).expect("grown"),
    };
    let ip = || oxccl::Regions::InPlace(send_r.sub(0..ip_len * ts).expect("grown"));
    // With --graph: the call run once directly (which sizes the ranks' device
    // memory, as a warm-up before a capture must), then captured, and its
    // replays timed and checked.
    let capture = |regions: oxccl::Regions| -> oxccl::Result<Option<GraphOf<R::D>>> {
        if !opts.graph {
            return Ok(None);
        }
        run(regions)?;
        sync()?;
        stream.begin_capture().map_err(system)?;
        let ran = run(regions);
        let graph = stream.end_capture().map_err(system);
        ran?;
        Ok(Some(graph?))
    };
    // A replay meets no other rank on the host, as an enqueued call does
    // when it is entered: so before a replay every rank must be done
    // uploading (an upload waits for the device's streams, which may be
    // waiting for this rank's replay, and direct reads peers' inputs).
    let once = |regions: oxccl::Regions, graph: &Option<GraphOf<R::D>>| match graph {
        Some(g) => {
            host.barrier()?;
            stream.launch_graph(g).map_err(system)
        }
        None => run(regions),
    };

    // Timed replays follow each other with nothing uploaded in between.
    let launch = |regions: oxccl::Regions, graph: &Option<GraphOf<R::D>>| match graph {
        Some(g) => stream.launch_graph(g).map_err(system),
        None => run(regions),
    };

    // Out of place.
    let fill_oop = || -> oxccl::Result<()> {
        let mut input = vec![T::POISON; in_len];
        case.fill_input::<T>(rank, &mut input);
        upload(&*dev, send, &input)?;
        upload(&*dev, recv, &vec![T::POISON; out_len])
    };
    fill_oop()?;
    let graph = capture(oop())?;
    let oop_seconds = timed(host, opts, || launch(oop(), &graph), sync)?;
    let oop_wrong = match opts.check {
        true => {
            fill_oop()?;
            once(oop(), &graph)?;
            sync()?;
            let got = dev.download(recv).map_err(system)?;
            Some(case.count_wrong::<T>(rank, bytemuck::cast_slice(&got[..out_len * ts])))
        }
        false => None,
    };

    // In place: one array, input and output at NCCL's offsets.
    let fill_ip = || -> oxccl::Result<()> {
        let mut whole = vec![T::POISON; ip_len];
        case.fill_input::<T>(rank, &mut whole[in_off..in_off + in_len]);
        upload(&*dev, send, &whole)
    };
    fill_ip()?;
    let graph = capture(ip())?;
    let ip_seconds = timed(host, opts, || launch(ip(), &graph), sync)?;
    let ip_wrong = match opts.check {
        true => {
            fill_ip()?;
            once(ip(), &graph)?;
            sync()?;
            let got = dev.download(send).map_err(system)?;
            let typed: &[T] = bytemuck::cast_slice(&got[..ip_len * ts]);
            Some(case.count_wrong::<T>(rank, &typed[out_off..out_off + out_len]))
        }
        false => None,
    };
    let algo = call.algorithm.or(opts.config.algorithm).unwrap_or(comm.default_algorithm());
    Ok(RankRow { algo, oop: (oop_seconds, oop_wrong), ip: (ip_seconds, ip_wrong) })
}

/// [`time`] with every iteration enqueued and the stream waited for at the
/// end of the warm-up and of the timed iterations.
fn timed(
    host: &Communicator,
    opts: &Options,
    mut enqueue: impl FnMut() -> oxccl::Result<()>,
    sync: impl Fn() -> oxccl::Result<()>,
) -> oxccl::Result<f64> {
    let warm = Options { iters: opts.warmup.max(1), warmup: 0, ..opts.clone() };
    time(host, &warm, &mut enqueue)?;
    sync()?;
    let mut n = 0;
    let seconds = time(host, &Options { warmup: 0, ..opts.clone() }, || {
        enqueue()?;
        n += 1;
        if n == opts.iters {
            sync()?;
        }
        Ok(())
    })?;
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use oxccl::{Algorithm, Collective, Config, DType, ReduceOp};

    use crate::perf::{prepare, Memory, Options};
    use crate::{Floor, Summary};

    /// Every collective and algorithm swept on device memory with checking
    /// on: every element right, in and out of place, at sizes that are not
    /// multiples of the rank count or of the slot.
    #[test]
    fn a_device_sweep_checks_every_element() {
        for collective in Collective::ALL {
            let opts = Options {
                collective,
                ranks: 3,
                sizes: vec![12, 4100, 70_000],
                dtypes: vec![DType::F32, DType::I32],
                ops: vec![ReduceOp::Sum, ReduceOp::Max, ReduceOp::Avg],
                root: 1,
                algos: Algorithm::ALL.iter().copied().map(Some).chain([None]).collect(),
                all_algos: true,
                warmup: 1,
                iters: 2,
                check: true,
                config: Config { device_slice_bytes: 4096, ..Config::default() },
                transport: None,
                memory: Memory::Emu,
                backend: crate::perf::Backend::Oxccl,
                graph: false,
            };
            let sweep = prepare(&opts).unwrap();
            let floor = Floor { membw_gbps: super::device_copy_bandwidth().unwrap(), handoff_s: 0.0 };
            let rows = sweep.run(floor, |_| {}).unwrap_or_else(|e| panic!("{collective}: {e}"));
            assert_eq!(rows.len(), opts.plan().len());
            assert_eq!(Summary::of(&rows).wrong, Some(0), "{collective}");
            let floors = rows.iter().all(|r| r.out_of_place.figures.floor_pct.is_some());
            assert!(floors || collective == Collective::Barrier, "{collective}: a row without %floor");
        }
    }
}

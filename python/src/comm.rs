//! `oxccl.Communicator`: one rank of a group, from an explicit rank, world
//! size and rendezvous address, from a launcher's environment, or as a
//! group of ranks in this process; collectives on any buffer `buffer.rs`
//! takes, with the GIL released while they run.
//!
//! In place (`recv` omitted) follows NCCL: the one buffer holds the whole
//! in-place array — all-gather's output with this rank's input in its own
//! block, reduce-scatter's input with this rank's output in its own block.
//!
//! Device memory (a CUDA tensor through DLPack, or the emulated device's
//! with `OXCCL_DEVICE=emu`) goes through the GPU collectives, as in the C
//! API (`oxccl_cuda::foreign`): the first call on device memory makes the
//! communicator a device one (collective), and each call is ordered on the
//! caller's `stream` (a `cudaStream_t` as an int; 0: the default stream).

use std::sync::Mutex;
use std::time::Duration;

use oxccl_core::bootstrap::connect::TransportKind;
use oxccl_core::bootstrap::env::{Launch, Master};
use oxccl_core::mem::Region;
use oxccl_core::{AbortHandle, Algorithm, Bytes, Call, Collective, Config, DType, P2p, ReduceOp, Regions};
use oxccl_cuda::foreign::{same_place, AnyDeviceComm, DeviceP2p, ForeignComm, Located};
use pyo3::prelude::*;

use crate::buffer::{take, Buf};
use crate::errors::{invalid, to_py, InvalidUsage};

/// One rank of a group (see the module docs).
#[pyclass(module = "oxccl._oxccl", frozen)]
pub struct Communicator {
    /// `None` once closed.
    comm: Mutex<Option<ForeignComm>>,
    abort: AbortHandle,
    rank: usize,
    world: usize,
    transport: String,
}

fn config(timeout: Option<f64>, slice_bytes: Option<usize>, algorithm: Option<&str>) -> PyResult<Config> {
    let mut c = Config::default();
    if let Some(t) = timeout {
        if !(t.is_finite() && t > 0.0) {
            return Err(invalid(format!("timeout {t} (seconds, > 0)")));
        }
        c.timeout = Duration::from_secs_f64(t);
    }
    if let Some(b) = slice_bytes {
        c.slice_bytes = b;
    }
    c.algorithm = match algorithm {
        None | Some("auto") => None,
        Some("ring") => Some(Algorithm::Ring),
        Some("tree") => Some(Algorithm::Tree),
        Some("rhd" | "halving-doubling") => Some(Algorithm::HalvingDoubling),
        Some("direct") => Some(Algorithm::Direct),
        Some(a) => return Err(invalid(format!("algorithm {a:?} (auto, ring, tree, rhd, direct)"))),
    };
    Ok(c)
}

fn op_of(op: &str) -> PyResult<ReduceOp> {
    Ok(match op {
        "sum" => ReduceOp::Sum,
        "prod" | "product" => ReduceOp::Prod,
        "min" => ReduceOp::Min,
        "max" => ReduceOp::Max,
        "avg" | "mean" => ReduceOp::Avg,
        other => return Err(invalid(format!("reduction {other:?} (sum, prod, min, max, avg)"))),
    })
}

impl Communicator {
    fn wrap(comm: oxccl_core::Communicator) -> Communicator {
        Communicator {
            abort: comm.abort_handle(),
            rank: comm.rank(),
            world: comm.world(),
            transport: comm.transport(),
            comm: Mutex::new(Some(ForeignComm::Host(Box::new(comm)))),
        }
    }

    /// Runs `f` on the host communicator with the GIL released.
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&oxccl_core::Communicator) -> oxccl_core::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let guard = self.comm.lock().unwrap_or_else(|p| p.into_inner());
            match &*guard {
                Some(c) => c.host().and_then(f).map_err(Some),
                None => Err(None),
            }
        })
        .map_err(|e| self.error(e))
    }

    /// Runs `f` on the device communicator for memory at `on` (made at the
    /// first call on device memory) with the GIL released.
    fn with_device<R: Send>(
        &self,
        py: Python<'_>,
        on: Located,
        f: impl FnOnce(&AnyDeviceComm) -> oxccl_core::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let mut guard = self.comm.lock().unwrap_or_else(|p| p.into_inner());
            match &mut *guard {
                Some(c) => c.device(on).and_then(|d| f(d)).map_err(Some),
                None => Err(None),
            }
        })
        .map_err(|e| self.error(e))
    }

    fn error(&self, e: Option<oxccl_core::Error>) -> PyErr {
        match e {
            Some(e) => to_py(e),
            None => InvalidUsage::new_err(format!("rank {}'s communicator is closed", self.rank)),
        }
    }

    /// Checks and runs one collective (see the module docs for in place).
    #[allow(clippy::too_many_arguments)]
    fn collective(
        &self,
        py: Python<'_>,
        collective: Collective,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        op: &str,
        root: usize,
        stream: usize,
    ) -> PyResult<()> {
        let op = if collective.reduces() { op_of(op)? } else { ReduceOp::Sum };
        let n = self.world;
        if collective.rooted() && root >= n {
            return Err(invalid(format!("{collective}: root {root} of {n} ranks")));
        }
        let per_rank = |elems: usize, what: &str| {
            if elems % n != 0 {
                return Err(invalid(format!("{collective}: {what} of {elems} elements is not {n} equal blocks")));
            }
            Ok(elems / n)
        };
        let blocks = matches!(collective, Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll);
        match recv {
            None => {
                let buf = take(send, true, "buf")?;
                let elems = buf.len / buf.dtype.size();
                let count = if blocks { per_rank(elems, "the buffer")? } else { elems };
                let call = Call { collective, dtype: buf.dtype, op, count, root, algorithm: None };
                if buf.on != Located::Host && buf.len > 0 {
                    let bufs = Regions::InPlace(Region::from_raw(buf.addr, buf.len));
                    // SAFETY: device memory of `buf.on` (the caller's tensor, kept alive by `buf`
                    // until the call has run on `stream`: the caller's contract, as with NCCL, for
                    // calls that return once enqueued), and `stream` is the caller's stream of it.
                    return self.with_device(py, buf.on, move |d| unsafe { d.run(&call, bufs, stream) });
                }
                // SAFETY: the buffer is the caller's, kept alive by `buf`; nothing else in this
                // process touches it while the call runs (the GIL is released, but Python code
                // that writes it concurrently is the caller's race, as with any C extension).
                let bytes = unsafe { buf.bytes_mut() };
                self.with(py, move |c| c.run(&call, Bytes::InPlace(bytes)))
            }
            Some(recv) => {
                let (s, r): (Buf, Buf) = (take(send, false, "send")?, take(recv, true, "recv")?);
                if s.dtype != r.dtype {
                    return Err(invalid(format!("{collective}: send holds {} but recv holds {}", s.dtype, r.dtype)));
                }
                if s.addr < r.addr + r.len && r.addr < s.addr + s.len && s.len > 0 && r.len > 0 {
                    return Err(invalid(format!("{collective}: send and recv overlap (omit recv for in place)")));
                }
                let es = s.dtype.size();
                let elems = s.len / es;
                let count = match collective {
                    Collective::ReduceScatter | Collective::AllToAll => per_rank(elems, "send")?,
                    _ => elems,
                };
                let out = collective.output_len(n, count);
                if r.len / es != out {
                    return Err(invalid(format!(
                        "{collective}: recv holds {} elements; {count} per rank over {n} ranks needs {out}",
                        r.len / es
                    )));
                }
                let call = Call { collective, dtype: s.dtype, op, count, root, algorithm: None };
                let on = same_place(&collective.to_string(), [s.on, r.on]).map_err(to_py)?;
                if on != Located::Host && (s.len > 0 || r.len > 0) {
                    let bufs = Regions::OutOfPlace {
                        send: Region::from_raw(s.addr, s.len),
                        recv: Region::from_raw(r.addr, r.len),
                    };
                    // SAFETY: as for in place; send and recv do not overlap (checked).
                    return self.with_device(py, on, move |d| unsafe { d.run(&call, bufs, stream) });
                }
                // SAFETY: as above; send and recv do not overlap (checked).
                let (sb, rb) = unsafe { (s.bytes(), r.bytes_mut()) };
                self.with(py, move |c| c.run(&call, Bytes::OutOfPlace { send: sb, recv: rb }))
            }
        }
    }
}

#[pymethods]
impl Communicator {
    /// Rank `rank` of `world`, meeting the others at `master` ("host:port",
    /// served by rank 0). `timeout` (seconds) bounds every wait.
    #[new]
    #[pyo3(signature = (rank, world, master, *, timeout=None, slice_bytes=None, algorithm=None))]
    fn new(
        py: Python<'_>,
        rank: usize,
        world: usize,
        master: &str,
        timeout: Option<f64>,
        slice_bytes: Option<usize>,
        algorithm: Option<&str>,
    ) -> PyResult<Communicator> {
        let config = config(timeout, slice_bytes, algorithm)?;
        let (host, port) = master
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| invalid(format!("master {master:?} (want host:port)")))?;
        if rank >= world {
            return Err(invalid(format!("rank {rank} of {world} ranks")));
        }
        let launch = Launch {
            rank,
            world,
            local_rank: None,
            local_world: None,
            master: Master { host, port },
            launcher: "python",
        };
        let comm = py
            .detach(|| {
                let kind = TransportKind::from_env()?;
                oxccl_core::Communicator::init_with(&launch, kind, config)
            })
            .map_err(to_py)?;
        Ok(Communicator::wrap(comm))
    }

    /// This process's rank of a job a launcher started (oxccl run, mpirun,
    /// srun, torchrun), from its environment.
    #[staticmethod]
    #[pyo3(signature = (*, timeout=None, slice_bytes=None, algorithm=None))]
    fn from_env(
        py: Python<'_>,
        timeout: Option<f64>,
        slice_bytes: Option<usize>,
        algorithm: Option<&str>,
    ) -> PyResult<Communicator> {
        let config = config(timeout, slice_bytes, algorithm)?;
        let comm = py.detach(|| oxccl_core::Communicator::init(config)).map_err(to_py)?;
        Ok(Communicator::wrap(comm))
    }

    /// `world` ranks in this process (use each from a thread of its own).
    #[staticmethod]
    #[pyo3(signature = (world, *, timeout=None, slice_bytes=None, algorithm=None))]
    fn local_group(
        world: usize,
        timeout: Option<f64>,
        slice_bytes: Option<usize>,
        algorithm: Option<&str>,
    ) -> PyResult<Vec<Communicator>> {
        let config = config(timeout, slice_bytes, algorithm)?;
        let comms = oxccl_core::Communicator::local_group_with(world, config).map_err(to_py)?;
        Ok(comms.into_iter().map(Communicator::wrap).collect())
    }

    #[getter]
    fn rank(&self) -> usize {
        self.rank
    }

    #[getter]
    fn world(&self) -> usize {
        self.world
    }

    /// The transport, for people ("shm", "tcp (2 streams per peer)", ...).
    #[getter]
    fn transport(&self) -> String {
        self.transport.clone()
    }

    /// `recv` = every rank's `send` combined under `op`; in place without `recv`.
    #[pyo3(signature = (send, recv=None, op="sum", *, stream=0))]
    fn all_reduce(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        op: &str,
        stream: usize,
    ) -> PyResult<()> {
        self.collective(py, Collective::AllReduce, send, recv, op, 0, stream)
    }

    /// Rank r's `recv` = block r of every rank's `send` combined under `op`.
    #[pyo3(signature = (send, recv=None, op="sum", *, stream=0))]
    fn reduce_scatter(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        op: &str,
        stream: usize,
    ) -> PyResult<()> {
        self.collective(py, Collective::ReduceScatter, send, recv, op, 0, stream)
    }

    /// `recv` = every rank's `send`, in rank order.
    #[pyo3(signature = (send, recv=None, *, stream=0))]
    fn all_gather(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        stream: usize,
    ) -> PyResult<()> {
        self.collective(py, Collective::AllGather, send, recv, "sum", 0, stream)
    }

    /// Every rank's `recv` = `root`'s `send`.
    #[pyo3(signature = (send, recv=None, root=0, *, stream=0))]
    fn broadcast(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        root: usize,
        stream: usize,
    ) -> PyResult<()> {
        self.collective(py, Collective::Broadcast, send, recv, "sum", root, stream)
    }

    /// `root`'s `recv` = every rank's `send` combined under `op`.
    #[pyo3(signature = (send, recv=None, op="sum", root=0, *, stream=0))]
    fn reduce(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        op: &str,
        root: usize,
        stream: usize,
    ) -> PyResult<()> {
        self.collective(py, Collective::Reduce, send, recv, op, root, stream)
    }

    /// Block p of this rank's `send` lands in block (this rank) of rank p's `recv`.
    #[pyo3(signature = (send, recv=None, *, stream=0))]
    fn all_to_all(
        &self,
        py: Python<'_>,
        send: &Bound<'_, PyAny>,
        recv: Option<&Bound<'_, PyAny>>,
        stream: usize,
    ) -> PyResult<()> {
        self.collective(py, Collective::AllToAll, send, recv, "sum", 0, stream)
    }

    /// `nbytes` of zeroed memory of this communicator's shared memory (page-
    /// aligned host memory where its transport has none, as over TCP):
    /// peers on the host read and write it directly, so collectives on it
    /// copy nothing through the transport when every rank passes such
    /// buffers. Wrap it with `numpy.frombuffer`.
    fn alloc_shared(&self, py: Python<'_>, nbytes: usize) -> PyResult<crate::device::SharedBuffer> {
        let buf = self.with(py, |c| c.alloc_shared::<u8>(nbytes.max(1)))?;
        Ok(crate::device::SharedBuffer::new(buf, nbytes))
    }

    /// Returns once every rank has entered it.
    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.barrier())
    }

    /// Sends `buf` to `peer` (which receives it with `recv` of the same size).
    #[pyo3(signature = (buf, peer, *, stream=0))]
    fn send(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, peer: usize, stream: usize) -> PyResult<()> {
        self.exchange(py, vec![(buf.clone(), peer)], Vec::new(), stream)
    }

    /// Receives from `peer` into `buf`.
    #[pyo3(signature = (buf, peer, *, stream=0))]
    fn recv(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, peer: usize, stream: usize) -> PyResult<()> {
        self.exchange(py, Vec::new(), vec![(buf.clone(), peer)], stream)
    }

    /// Sends and receives issued together (`[(buf, peer)]` each): every
    /// transfer progresses at once, so ranks sending to each other first
    /// never wait on each other. On device memory they are staged through
    /// host memory, after `stream`'s work, and complete when this returns.
    #[pyo3(signature = (sends, recvs, *, stream=0))]
    fn exchange(
        &self,
        py: Python<'_>,
        sends: Vec<(Bound<'_, PyAny>, usize)>,
        recvs: Vec<(Bound<'_, PyAny>, usize)>,
        stream: usize,
    ) -> PyResult<()> {
        let mut bufs: Vec<(bool, Buf, usize)> = Vec::new();
        for (b, p) in &sends {
            bufs.push((true, take(b, false, "send")?, *p));
        }
        for (b, p) in &recvs {
            bufs.push((false, take(b, true, "recv")?, *p));
        }
        let places = bufs.iter().filter(|(_, b, _)| b.len > 0).map(|(_, b, _)| b.on);
        let on = same_place("exchange", places).map_err(to_py)?;
        if on != Located::Host {
            let ops: Vec<DeviceP2p> = bufs
                .iter()
                .map(|(send, b, peer)| DeviceP2p {
                    send: *send,
                    buf: Region::from_raw(b.addr, b.len),
                    dtype: b.dtype,
                    peer: *peer,
                })
                .collect();
            // SAFETY: the caller's device buffers, kept alive by `bufs` until the exchange
            // returns (it completes before returning); `stream` is the caller's stream of them.
            return self.with_device(py, on, move |d| unsafe { d.exchange(&ops, stream) });
        }
        let mut ops: Vec<P2p<'_>> = bufs
            .iter()
            .map(|(send, b, peer)| {
                let dtype: DType = b.dtype;
                match send {
                    // SAFETY: the caller's buffers, kept alive by `bufs` until the exchange
                    // returns; a receive buffer is written by this exchange only.
                    true => P2p::Send { buf: unsafe { b.bytes() }, dtype, peer: *peer },
                    // SAFETY: as above.
                    false => P2p::Recv { buf: unsafe { b.bytes_mut() }, dtype, peer: *peer },
                }
            })
            .collect();
        self.with(py, move |c| c.exchange(&mut ops))
    }

    /// Aborts the group: every rank's waits end with an error, now and later.
    #[pyo3(signature = (reason="aborted from Python"))]
    fn abort(&self, reason: &str) {
        self.abort.abort(reason);
    }

    /// Whether the group has failed or was aborted.
    #[getter]
    fn is_aborted(&self) -> bool {
        self.abort.is_aborted()
    }

    /// The group's failure, if any (as text), without raising.
    fn async_error(&self) -> Option<String> {
        self.abort.cause().map(|e| e.to_string())
    }

    /// Frees the communicator; later calls raise InvalidUsage.
    fn close(&self, py: Python<'_>) {
        py.detach(|| drop(self.comm.lock().unwrap_or_else(|p| p.into_inner()).take()));
    }

    fn __repr__(&self) -> String {
        format!("<oxccl.Communicator rank {} of {} over {}>", self.rank, self.world, self.transport)
    }
}

//! NCCL as a backend to compare against: one rank per GPU (NCCL refuses two
//! ranks on one GPU), made together by `ncclCommInitAll` ([`NcclRank::group`]),
//! each call of oxccl's API ([`oxccl::Call`] on device buffers named by
//! address) mapped onto NCCL's and enqueued on a stream of the rank's GPU:
//! all-reduce, reduce-scatter, all-gather, broadcast and reduce directly,
//! all-to-all as grouped sends and receives, a barrier as a one-element
//! all-reduce. libnccl is loaded at run time (e.g. from the
//! `nvidia-nccl-cu13` wheel, on `LD_LIBRARY_PATH`): without it every entry
//! is a clear error, never a panic.
//!
//! Not yet run on a GPU: `tools/gpu-check` exercises it through
//! `oxccl perf --device cuda --backend nccl`.

use std::sync::Arc;

use cudarc::nccl::{result, sys};
use oxccl::mem::Region;
use oxccl::{Call, Collective, DType, ReduceOp, Regions};

use crate::device::Libraries;
use crate::error::{Error, Result};
use crate::streamed::backend::DeviceMemory;
use crate::streamed::gpu::{GpuDevice, GpuStream};

/// One rank of a NCCL group, on its own GPU.
pub struct NcclRank {
    comm: sys::ncclComm_t,
    rank: usize,
    world: usize,
    dev: Arc<GpuDevice>,
}

// SAFETY: a NCCL communicator may be used from any thread, one at a time;
// `NcclRank` is moved into its rank's thread and used only there.
unsafe impl Send for NcclRank {}

fn nccl(op: &'static str, r: std::result::Result<result::NcclStatus, result::NcclError>) -> Result<()> {
    r.map(|_| ()).map_err(|e| Error::Library { op, message: format!("{:?}", e.0) })
}

fn dtype(d: DType) -> sys::ncclDataType_t {
    use sys::ncclDataType_t::*;
    match d {
        DType::I8 => ncclInt8,
        DType::U8 => ncclUint8,
        DType::I32 => ncclInt32,
        DType::U32 => ncclUint32,
        DType::I64 => ncclInt64,
        DType::U64 => ncclUint64,
        DType::F16 => ncclFloat16,
        DType::BF16 => ncclBfloat16,
        DType::F32 => ncclFloat32,
        DType::F64 => ncclFloat64,
    }
}

fn op(o: ReduceOp) -> sys::ncclRedOp_t {
    match o {
        ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
        ReduceOp::Prod => sys::ncclRedOp_t::ncclProd,
        ReduceOp::Max => sys::ncclRedOp_t::ncclMax,
        ReduceOp::Min => sys::ncclRedOp_t::ncclMin,
        ReduceOp::Avg => sys::ncclRedOp_t::ncclAvg,
    }
}

impl NcclRank {
    /// `ranks` ranks on GPUs 0, 1, ... (`ncclCommInitAll`). Errors: no
    /// driver, no NCCL library, fewer GPUs than ranks.
    pub fn group(ranks: usize) -> Result<Vec<NcclRank>> {
        let count = crate::device::device_count()?;
        Libraries::probe().require_nccl()?;
        if ranks == 0 || ranks > count {
            return Err(Error::invalid(
                "ncclCommInitAll",
                format!("{ranks} ranks on {count} GPUs: NCCL needs one GPU per rank"),
            ));
        }
        let devs = (0..ranks).map(GpuDevice::new).collect::<Result<Vec<_>>>()?;
        let mut comms = vec![std::ptr::null_mut(); ranks];
        let list: Vec<i32> = (0..ranks as i32).collect();
        // SAFETY: `comms` has room for `ranks` communicators and `list` names `ranks` GPUs.
        nccl("ncclCommInitAll", unsafe { result::comm_init_all(comms.as_mut_ptr(), ranks as i32, list.as_ptr()) })?;
        Ok(comms
            .into_iter()
            .zip(devs)
            .enumerate()
            .map(|(rank, (comm, dev))| NcclRank { comm, rank, world: ranks, dev })
            .collect())
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }

    /// Enqueues `call` on `bufs` (this rank's GPU memory) on `stream`, as
    /// NCCL does (the call returns once enqueued). Buffers are checked
    /// first, as oxccl's own calls check them.
    ///
    /// # Safety
    /// The buffers stay valid, and nothing else touches them, until the
    /// stream has run the call.
    pub unsafe fn enqueue(&self, call: &Call, bufs: Regions, stream: &GpuStream) -> Result<()> {
        let (n, r, c, count, es) = (self.world, self.rank, call.collective, call.count, call.dtype.size());
        let (in_len, out_len) = (c.input_len(n, count) * es, c.output_len(n, count) * es);
        let (send, recv) = match bufs {
            Regions::OutOfPlace { send, recv } => (send, recv),
            Regions::InPlace(buf) => {
                let (io, oo) = c.in_place_offsets(r, count);
                let at = |off: usize, len: usize| buf.sub(off * es..off * es + len);
                match (at(io, in_len), at(oo, out_len)) {
                    (Some(i), Some(o)) => (i, o),
                    _ => return Err(Error::invalid("nccl", format!("{c}: buffer too small"))),
                }
            }
        };
        if send.len() < in_len || recv.len() < out_len {
            return Err(Error::invalid("nccl", format!("{c}: buffer too small")));
        }
        for (what, b) in [("send buffer", send), ("receive buffer", recv)] {
            self.dev.check_owned(what, b).map_err(|e| Error::invalid("nccl", e.to_string()))?;
        }
        let (s, d) = (send.addr() as *const std::ffi::c_void, recv.addr() as *mut std::ffi::c_void);
        let (dt, o, root, st) =
            (dtype(call.dtype), op(call.op), call.root as i32, stream.cu_stream() as sys::cudaStream_t);
        let comm = self.comm;
        // SAFETY: every call below names this GPU's memory holding the counts checked above,
        // valid until the stream has run the call (the caller's contract), and a live comm.
        unsafe {
            match c {
                Collective::AllReduce => nccl("ncclAllReduce", result::all_reduce(s, d, count, dt, o, comm, st)),
                Collective::ReduceScatter => {
                    nccl("ncclReduceScatter", result::reduce_scatter(s, d, count, dt, o, comm, st))
                }
                Collective::AllGather => nccl("ncclAllGather", result::all_gather(s, d, count, dt, comm, st)),
                Collective::Broadcast => nccl("ncclBroadcast", result::broadcast(s, d, count, dt, root, comm, st)),
                Collective::Reduce => nccl("ncclReduce", result::reduce(s, d, count, dt, o, root, comm, st)),
                Collective::AllToAll => {
                    nccl("ncclGroupStart", result::group_start())?;
                    for p in 0..n {
                        let block = |base: Region| base.addr() + p * count * es;
                        let sent = result::send(block(send) as *const _, count, dt, p as i32, comm, st);
                        let got = result::recv(block(recv) as *mut _, count, dt, p as i32, comm, st);
                        nccl("ncclSend", sent).and(nccl("ncclRecv", got))?;
                    }
                    nccl("ncclGroupEnd", result::group_end())
                }
                Collective::Barrier => Err(Error::invalid("nccl", "NCCL has no barrier".to_string())),
            }
        }
    }

    /// Aborts the communicator (`ncclCommAbort`): kernels waiting in it
    /// stop; the rank is unusable afterwards.
    pub fn abort(&mut self) {
        if !self.comm.is_null() {
            // SAFETY: a live communicator, destroyed once (set to null after).
            let _ = unsafe { result::comm_abort(self.comm) };
            self.comm = std::ptr::null_mut();
        }
    }
}

impl Drop for NcclRank {
    fn drop(&mut self) {
        if !self.comm.is_null() {
            // SAFETY: a live communicator, destroyed once.
            let _ = unsafe { result::comm_destroy(self.comm) };
        }
    }
}

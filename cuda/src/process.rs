//! One process's rank of a job on device memory: stream-ordered calls
//! ([`StreamComm`]) where the processes can open each other's device
//! memory (CUDA IPC, or its emulation), else each call staged through the
//! transport's host slots ([`StagedRank`]: TCP, RDMA, or shared memory
//! where IPC is refused).

use std::sync::Arc;

use oxccl::{Call, Communicator, Regions};

use crate::space::DeviceSpace;
use crate::streamed::backend::DeviceMemory;
use crate::streamed::StreamComm;

fn system(e: crate::Error) -> oxccl::Error {
    oxccl::Error::System(e.to_string())
}

/// A rank whose device data is staged through its transport's host slots
/// (ranks that cannot reach each other's device memory): each call runs
/// through the executor with the device as its memory space
/// ([`Communicator::run_in`]) on a stream of its own, and is complete when
/// it returns.
pub struct StagedRank<D: DeviceMemory> {
    comm: Communicator,
    space: DeviceSpace<D>,
}

impl<D: DeviceMemory> StagedRank<D> {
    pub fn new(comm: Communicator, dev: Arc<D>) -> oxccl::Result<StagedRank<D>> {
        let stream = dev.new_stream().map_err(system)?;
        Ok(StagedRank { comm, space: DeviceSpace::on(dev, stream) })
    }

    /// The host communicator the data is staged through.
    pub fn comm(&self) -> &Communicator {
        &self.comm
    }

    pub fn device(&self) -> &Arc<D> {
        self.space.device()
    }

    /// Runs `call` on `bufs` (this device's memory), blocking.
    ///
    /// # Safety
    /// The buffers stay valid and untouched by anything else until this
    /// returns.
    pub unsafe fn run(&self, call: &Call, bufs: Regions) -> oxccl::Result<()> {
        // SAFETY: the caller's contract; the call is complete when run_in returns.
        unsafe { self.comm.run_in(&self.space, call, bufs) }
    }
}

/// A process's rank of a job on device memory: stream-ordered, or staged
/// through host memory when the processes cannot open each other's device
/// memory (and why).
pub enum ProcessRank<D: DeviceMemory> {
    Streamed(StreamComm<D>),
    Staged(StagedRank<D>, String),
}

impl<D: DeviceMemory> ProcessRank<D> {
    /// This process's rank on `dev`, made from its host communicator
    /// (collective: every rank calls it). Stream-ordered over shared memory
    /// when IPC works on every rank (they agree), else staged.
    pub fn on(comm: Communicator, dev: Arc<D>) -> oxccl::Result<ProcessRank<D>> {
        match StreamComm::init_or_give_back(comm, dev.clone()) {
            Ok(sc) => Ok(ProcessRank::Streamed(sc)),
            Err((e, Some(comm))) => Ok(ProcessRank::Staged(StagedRank::new(*comm, dev)?, e.to_string())),
            Err((e, None)) => Err(e),
        }
    }

    /// The host communicator underneath.
    pub fn host(&self) -> &Communicator {
        match self {
            ProcessRank::Streamed(sc) => sc.communicator(),
            ProcessRank::Staged(r, _) => r.comm(),
        }
    }

    pub fn device(&self) -> &Arc<D> {
        match self {
            ProcessRank::Streamed(sc) => sc.device(),
            ProcessRank::Staged(r, _) => r.device(),
        }
    }
}

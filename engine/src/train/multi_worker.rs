//! The multi-worker strategy: one replica per process (or host), started by
//! `oxccl run` (or mpirun, srun, torchrun), each process running the same
//! [`super::replica::run`] as a mirrored replica, over the communicator that
//! `Communicator::init` builds from the launcher's environment (shared
//! memory when every rank is on this host, TCP otherwise).
//!
//! Every process loads the same data and takes its own shard of each global
//! batch; rank 0 is the chief (it reports and writes checkpoints). Unless
//! `threads` is set, each process uses cores ÷ world size compute threads,
//! assuming the processes share one host.

use oxccl::{Communicator, Config};

use super::{epoch_means, replica, ProgressFn, TrainConfig, TrainOutcome, TrainState};
use crate::backend::{cpu::available_cores, Backend, CpuBackend};
use crate::data::Dataset;
use crate::error::{Error, Result};

/// This process's communicator in the job described by the environment.
pub fn communicator() -> Result<Communicator> {
    Communicator::init(Config::default()).map_err(Error::comm("joining the multi-worker job"))
}

/// Trains this process's replica; every process of the job calls this with
/// the same configuration and data.
pub fn train(
    config: &TrainConfig,
    data: &Dataset,
    start: TrainState,
    progress: Option<ProgressFn<'_>>,
) -> Result<TrainOutcome> {
    let comm = communicator()?;
    let backend = CpuBackend::new(config.threads.unwrap_or_else(|| (available_cores() / comm.world()).max(1)));
    let out = replica::run(&comm, &backend, config, data, &start, progress)?;
    let mut report = config.report(backend.name());
    report.replicas = comm.world();
    report.epochs = out.state.epochs_done - start.epochs_done;
    report.steps = out.times.steps;
    report.samples = out.samples;
    report.epoch_loss = epoch_means(&out.step_losses, out.steps_per_epoch);
    report.finish(out.wall, &out.times);
    Ok(TrainOutcome { state: out.state, report, step_losses: out.step_losses, chief: comm.rank() == 0 })
}

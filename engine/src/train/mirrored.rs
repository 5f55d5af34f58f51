//! The mirrored strategy: N replicas as threads of this process, one
//! communicator each from `Communicator::local_group`, every replica running
//! [`super::replica::run`].

use oxccl::Communicator;

use super::{epoch_means, first_cause, replica, ProgressFn, TrainConfig, TrainOutcome, TrainState};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};

/// Trains `replicas` thread replicas from `start`.
pub fn train(
    config: &TrainConfig,
    replicas: usize,
    data: &Dataset,
    start: TrainState,
    progress: Option<ProgressFn<'_>>,
) -> Result<TrainOutcome> {
    let comms = Communicator::local_group(replicas).map_err(Error::comm("local group"))?;
    let backend = config.backend();
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let (backend, start) = (&backend, &start);
                s.spawn(move || replica::run(&comm, backend, config, data, start, progress))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut outs = first_cause(results)?;
    let wall = outs.iter().map(|o| o.wall).max().unwrap_or_default();
    let first = outs.swap_remove(0);
    let mut report = config.report(backend.name());
    report.epochs = first.state.epochs_done - start.epochs_done;
    report.steps = first.times.steps;
    report.samples = first.samples;
    report.epoch_loss = epoch_means(&first.step_losses, first.steps_per_epoch);
    report.finish(wall, &first.times);
    Ok(TrainOutcome { state: first.state, report, step_losses: first.step_losses, chief: true })
}

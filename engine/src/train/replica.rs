//! The data-parallel replica loop, shared by the mirrored and multi-worker
//! strategies: it needs only a `Communicator`, whatever its transport.
//!
//! Each step, on every replica:
//! 1. load this replica's shard of the global batch (see [`crate::data::batches`]);
//! 2. forward, loss and backward into the flat gradient buffer, scaled by
//!    1/(global batch rows × outputs) so that the sum over replicas is the
//!    gradient of the global batch's mean loss; the buffer's last element is
//!    this replica's share of the loss;
//! 3. one in-place sum all-reduce of that whole buffer (gradients and loss);
//! 4. Adam on the parameters, identically on every replica.
//!
//! Replicas start from the same state and apply the same updates, so their
//! parameters stay identical; rank 0's parameters are broadcast once at the
//! start so that a process that loaded different values still agrees.
//! A replica whose shard of a short last batch is empty contributes zeros.
//! Any error aborts the communicator so the other replicas stop too.

use std::time::Instant;

use oxccl::{Communicator, ReduceOp};

use super::{Progress, ProgressFn, TrainConfig, TrainState};
use crate::backend::Backend;
use crate::data::{Dataset, EpochPlan};
use crate::error::{Error, Result};
use crate::metrics::{Lap, PhaseTimes};
use crate::model::{Adam, Sequential};

/// What one replica brings back.
#[derive(Clone, Debug)]
pub struct ReplicaOutput {
    /// The final state (identical on every replica).
    pub state: TrainState,
    pub times: PhaseTimes,
    /// Wall time of the training loop on this replica.
    pub wall: std::time::Duration,
    /// Every step's global loss.
    pub step_losses: Vec<f32>,
    /// Rows trained on by all replicas together.
    pub samples: u64,
    pub steps_per_epoch: usize,
}

/// Sum all-reduce of a whole backend buffer, in place (staged through host
/// memory when the backend's buffers are not host memory).
pub(crate) fn all_reduce_buf<B: Backend>(comm: &Communicator, backend: &B, buf: &mut B::Buf) -> Result<()> {
    if let Some(h) = backend.host_mut(buf) {
        return comm.all_reduce_in_place(h, ReduceOp::Sum).map_err(Error::comm("gradient all-reduce"));
    }
    let mut h = vec![0.0; backend.len(buf)];
    backend.download(buf, 0, &mut h)?;
    comm.all_reduce_in_place(&mut h, ReduceOp::Sum).map_err(Error::comm("gradient all-reduce"))?;
    backend.upload(buf, 0, &h)
}

/// Runs one replica of data-parallel training to the end; see the module docs.
pub fn run<B: Backend>(
    comm: &Communicator,
    backend: &B,
    config: &TrainConfig,
    data: &Dataset,
    start: &TrainState,
    progress: Option<ProgressFn<'_>>,
) -> Result<ReplicaOutput> {
    let result = run_inner(comm, backend, config, data, start, progress);
    if let Err(e) = &result {
        comm.abort(&format!("replica {} failed: {e}", comm.rank()));
    }
    result
}

fn run_inner<B: Backend>(
    comm: &Communicator,
    backend: &B,
    config: &TrainConfig,
    data: &Dataset,
    start: &TrainState,
    progress: Option<ProgressFn<'_>>,
) -> Result<ReplicaOutput> {
    let (rank, replicas) = (comm.rank(), comm.world());
    let n = config.spec.num_params();
    let mut params = start.params.clone();
    comm.broadcast_in_place(&mut params, 0).map_err(Error::comm("initial parameter broadcast"))?;
    let mut model = Sequential::new(backend, config.spec.clone(), &params, config.batch.div_ceil(replicas))?;
    let mut adam = Adam::new(backend, config.adam, n)?;
    adam.restore(backend, &start.m, &start.v, start.t)?;

    let outputs = config.spec.outputs();
    let mut times = PhaseTimes::default();
    let mut step_losses = Vec::new();
    let mut loss = [0f32];
    let (mut samples, mut steps_done, mut epochs_done) = (0u64, start.steps_done, start.epochs_done);
    let mut steps_per_epoch = 0;
    let began = Instant::now();
    'epochs: for epoch in start.epochs_done..config.epochs {
        let plan = EpochPlan::new(data.rows, config.batch, config.shuffle, config.seed, epoch)?;
        steps_per_epoch = plan.steps();
        for step in 0..plan.steps() {
            if config.max_steps.is_some_and(|m| steps_done >= m) {
                break 'epochs;
            }
            let mut lap = Lap::start();
            let global = plan.global(step).len();
            let rows = model.load_rows(backend, data, plan.shard(step, rank, replicas))?;
            let scale = 1.0 / (global * outputs) as f32;
            model.forward(backend, rows)?;
            model.backward(backend, rows, scale)?;
            times.compute += lap.lap();
            all_reduce_buf(comm, backend, &mut model.grads)?;
            times.comm += lap.lap();
            adam.update(backend, &mut model.params, &model.grads)?;
            backend.download(&model.grads, n, &mut loss)?;
            times.optimizer += lap.lap();
            times.steps += 1;
            steps_done += 1;
            samples += global as u64;
            step_losses.push(loss[0]);
            if rank == 0 {
                if let Some(p) = progress {
                    p(&Progress { epoch, step, steps_per_epoch: plan.steps(), loss: loss[0] });
                }
            }
        }
        epochs_done = epoch + 1;
    }
    let wall = began.elapsed();
    let (m, v) = adam.moments(backend)?;
    let state = TrainState {
        spec: config.spec.clone(),
        params: model.params_host(backend)?,
        m,
        v,
        t: adam.t,
        epochs_done,
        steps_done,
    };
    Ok(ReplicaOutput { state, times, wall, step_losses, samples, steps_per_epoch })
}

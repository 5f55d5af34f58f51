//! The parameter-server strategy, with ranks as threads of this process.
//!
//! Ranks 0..K are servers, K..K+W workers, all in one local group. The
//! gradient buffer (parameters plus the loss slot, see
//! [`crate::model::Sequential`]) is cut into K contiguous shards
//! ([`shard_range`]); server k owns the parameters of shard k and Adam's
//! moments for them, and the last server's shard ends with the loss slot.
//! Messages are point-to-point `send`/`recv`:
//!
//! * start: each server sends its parameter shard to every worker (the
//!   workers' first pull).
//! * **synchronous** step: every worker computes the gradient of its shard
//!   of the global batch (scaled as in mirrored training), pushes gradient
//!   shard k to server k, then pulls every parameter shard. Server k sums
//!   the W pushes in worker order, runs Adam on its shard, and sends the new
//!   shard to every worker. This is mirrored training's maths, with the sum
//!   done by the servers instead of an all-reduce.
//! * **asynchronous**: every worker pushes the gradient of its own batch
//!   shard (scaled to that shard's mean) as soon as it has it, and pulls
//!   fresh parameters right after. Servers apply each push on its own, as
//!   one Adam update, and answer the pusher. The transport has no
//!   receive-from-any, so servers take pushes in a fixed round-robin order
//!   (step by step, worker by worker); a worker never waits for the other
//!   workers' gradients, only for its turn, and its gradient may be up to
//!   W−1 updates stale — the usual asynchronous trade. The order makes runs
//!   reproducible. Empty shards (a short last batch) push nothing.
//!
//! Messages are ordered so no cycle of blocking sends can form: workers send
//! to servers 0..K in order and receive from them in order; servers receive
//! from workers in order and send to them in order.

use std::ops::Range;
use std::time::Instant;

use oxccl::Communicator;

use super::{epoch_means, first_cause, Progress, ProgressFn, TrainConfig, TrainOutcome, TrainState};
use crate::backend::Backend;
use crate::data::{shard_range, Dataset, EpochPlan};
use crate::error::{Error, Result};
use crate::metrics::{Lap, PhaseTimes};
use crate::model::{Adam, Sequential};

/// The layout shared by all ranks.
#[derive(Clone, Copy)]
struct Layout {
    servers: usize,
    workers: usize,
    /// Number of parameters; the gradient buffer has one more element.
    params: usize,
    synchronous: bool,
}

impl Layout {
    /// Server k's range of the gradient buffer.
    fn shard(&self, k: usize) -> Range<usize> {
        shard_range(self.params + 1, self.servers, k)
    }

    /// Server k's range of the parameters (its shard without the loss slot).
    fn param_shard(&self, k: usize) -> Range<usize> {
        let s = self.shard(k);
        s.start.min(self.params)..s.end.min(self.params)
    }

    fn worker_rank(&self, w: usize) -> usize {
        self.servers + w
    }
}

enum Output {
    Server { k: usize, params: Vec<f32>, m: Vec<f32>, v: Vec<f32>, t: u64, times: PhaseTimes, losses: Vec<f32> },
    Worker { w: usize, times: PhaseTimes, wall: std::time::Duration, samples: u64, epochs_done: u64, steps_done: u64 },
}

/// Trains with `workers` workers and `servers` parameter servers from `start`.
pub fn train(
    config: &TrainConfig,
    workers: usize,
    servers: usize,
    synchronous: bool,
    data: &Dataset,
    start: TrainState,
    progress: Option<ProgressFn<'_>>,
) -> Result<TrainOutcome> {
    let lay = Layout { servers, workers, params: config.spec.num_params(), synchronous };
    let comms = Communicator::local_group(servers + workers).map_err(Error::comm("local group"))?;
    let backend = config.backend();
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let (backend, start) = (&backend, &start);
                s.spawn(move || {
                    let r = if comm.rank() < servers {
                        server(&comm, backend, config, lay, data, start, progress)
                    } else {
                        worker(&comm, backend, config, lay, data, start)
                    };
                    if let Err(e) = &r {
                        comm.abort(&format!("rank {} failed: {e}", comm.rank()));
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let outs = first_cause(results)?;

    let n = lay.params;
    let mut state =
        TrainState { spec: config.spec.clone(), params: vec![0.0; n], m: vec![0.0; n], v: vec![0.0; n], ..start };
    let (mut server_times, mut worker_times, mut losses) = (PhaseTimes::default(), PhaseTimes::default(), Vec::new());
    let (mut wall, mut samples) = (std::time::Duration::ZERO, 0);
    for out in outs {
        match out {
            Output::Server { k, params, m, v, t, times, losses: l } => {
                let r = lay.param_shard(k);
                state.params[r.clone()].copy_from_slice(&params);
                state.m[r.clone()].copy_from_slice(&m);
                state.v[r].copy_from_slice(&v);
                state.t = t;
                if k == 0 {
                    server_times = times;
                }
                if k == servers - 1 {
                    losses = l;
                }
            }
            Output::Worker { w, times, wall: wl, samples: s, epochs_done, steps_done } => {
                wall = wall.max(wl);
                samples += s;
                if w == 0 {
                    worker_times = times;
                    state.epochs_done = epochs_done;
                    state.steps_done = steps_done;
                }
            }
        }
    }
    let mut report = config.report(backend.name());
    report.epochs = state.epochs_done - start.epochs_done;
    report.steps = worker_times.steps;
    report.samples = samples;
    let per_epoch = if report.epochs > 0 { losses.len() / report.epochs as usize } else { losses.len() };
    report.epoch_loss = epoch_means(&losses, per_epoch);
    // Compute and communication as a worker sees them; the optimiser's time
    // as server 0 spends it, per global step.
    let times = PhaseTimes {
        compute: worker_times.compute,
        comm: worker_times.comm,
        optimizer: server_times.optimizer.mul_f64(worker_times.steps as f64 / server_times.steps.max(1) as f64),
        steps: worker_times.steps,
    };
    report.finish(wall, &times);
    Ok(TrainOutcome { state, report, step_losses: losses, chief: true })
}

/// Whether worker `w` pushes at `step` (it has rows), and its rows.
fn shard_of<'p>(plan: &'p EpochPlan, lay: &Layout, step: usize, w: usize) -> &'p [usize] {
    plan.shard(step, w, lay.workers)
}

fn server<B: Backend>(
    comm: &Communicator,
    backend: &B,
    config: &TrainConfig,
    lay: Layout,
    data: &Dataset,
    start: &TrainState,
    progress: Option<ProgressFn<'_>>,
) -> Result<Output> {
    let k = comm.rank();
    let (shard, pshard) = (lay.shard(k), lay.param_shard(k));
    let (len, plen) = (shard.len(), pshard.len());
    let last = k == lay.servers - 1;
    let mut params = backend.alloc(plen)?;
    backend.upload(&mut params, 0, &start.params[pshard.clone()])?;
    let mut adam = Adam::new(backend, config.adam, plen)?;
    adam.restore(backend, &start.m[pshard.clone()], &start.v[pshard.clone()], start.t)?;
    let mut grads = backend.alloc(len)?;
    let (mut sum, mut incoming, mut host_params) = (vec![0f32; len], vec![0f32; len], start.params[pshard].to_vec());
    let mut times = PhaseTimes::default();
    let mut losses = Vec::new();
    let send_params = |host: &[f32], w: usize| -> Result<()> {
        if plen > 0 {
            comm.send(host, lay.worker_rank(w)).map_err(Error::comm("parameter pull"))?;
        }
        Ok(())
    };
    for w in 0..lay.workers {
        send_params(&host_params, w)?;
    }
    let mut steps_done = start.steps_done;
    'epochs: for epoch in start.epochs_done..config.epochs {
        let plan = EpochPlan::new(data.rows, config.batch, config.shuffle, config.seed, epoch)?;
        for step in 0..plan.steps() {
            if config.max_steps.is_some_and(|m| steps_done >= m) {
                break 'epochs;
            }
            steps_done += 1;
            // In synchronous mode one update per step from the sum of all
            // pushes; in asynchronous mode one update per push.
            let pushers: Vec<usize> =
                (0..lay.workers).filter(|&w| lay.synchronous || !shard_of(&plan, &lay, step, w).is_empty()).collect();
            let groups: Vec<Vec<usize>> =
                if lay.synchronous { vec![pushers] } else { pushers.into_iter().map(|w| vec![w]).collect() };
            let (mut step_loss, mut updates) = (0f64, 0usize);
            for group in groups {
                let mut lap = Lap::start();
                sum.fill(0.0);
                for &w in &group {
                    comm.recv(&mut incoming, lay.worker_rank(w)).map_err(Error::comm("gradient push"))?;
                    sum.iter_mut().zip(&incoming).for_each(|(s, g)| *s += g);
                }
                times.comm += lap.lap();
                backend.upload(&mut grads, 0, &sum)?;
                adam.update(backend, &mut params, &grads)?;
                backend.download(&params, 0, &mut host_params)?;
                times.optimizer += lap.lap();
                times.steps += 1;
                if last {
                    losses.push(sum[len - 1]);
                    step_loss += f64::from(sum[len - 1]);
                    updates += 1;
                }
                for &w in &group {
                    send_params(&host_params, w)?;
                }
                times.comm += lap.lap();
            }
            // Progress once per step: the mean loss of the step's updates.
            if let (true, Some(p)) = (last && updates > 0, progress) {
                let loss = (step_loss / updates as f64) as f32;
                p(&Progress { epoch, step, steps_per_epoch: plan.steps(), loss });
            }
        }
    }
    let (m, v) = adam.moments(backend)?;
    Ok(Output::Server { k, params: host_params, m, v, t: adam.t, times, losses })
}

fn worker<B: Backend>(
    comm: &Communicator,
    backend: &B,
    config: &TrainConfig,
    lay: Layout,
    data: &Dataset,
    start: &TrainState,
) -> Result<Output> {
    let w = comm.rank() - lay.servers;
    let outputs = config.spec.outputs();
    let mut model = Sequential::new(backend, config.spec.clone(), &start.params, config.batch.div_ceil(lay.workers))?;
    let mut params = start.params.clone();
    let mut grads = vec![0f32; lay.params + 1];
    let pull = |params: &mut [f32]| -> Result<()> {
        for k in 0..lay.servers {
            let r = lay.param_shard(k);
            if !r.is_empty() {
                comm.recv(&mut params[r], k).map_err(Error::comm("parameter pull"))?;
            }
        }
        Ok(())
    };
    pull(&mut params)?;
    model.set_params(backend, &params)?;
    let mut times = PhaseTimes::default();
    let (mut samples, mut steps_done, mut epochs_done) = (0u64, start.steps_done, start.epochs_done);
    let began = Instant::now();
    'epochs: for epoch in start.epochs_done..config.epochs {
        let plan = EpochPlan::new(data.rows, config.batch, config.shuffle, config.seed, epoch)?;
        for step in 0..plan.steps() {
            if config.max_steps.is_some_and(|m| steps_done >= m) {
                break 'epochs;
            }
            steps_done += 1;
            times.steps += 1;
            let rows_idx = shard_of(&plan, &lay, step, w);
            if !lay.synchronous && rows_idx.is_empty() {
                continue;
            }
            let mut lap = Lap::start();
            let rows = model.load_rows(backend, data, rows_idx)?;
            let scaled_rows = if lay.synchronous { plan.global(step).len() } else { rows };
            model.forward(backend, rows)?;
            model.backward(backend, rows, 1.0 / (scaled_rows * outputs) as f32)?;
            backend.download(&model.grads, 0, &mut grads)?;
            samples += rows as u64;
            times.compute += lap.lap();
            for k in 0..lay.servers {
                comm.send(&grads[lay.shard(k)], k).map_err(Error::comm("gradient push"))?;
            }
            pull(&mut params)?;
            times.comm += lap.lap();
            model.set_params(backend, &params)?;
            times.compute += lap.lap();
        }
        epochs_done = epoch + 1;
    }
    Ok(Output::Worker { w, times, wall: began.elapsed(), samples, epochs_done, steps_done })
}

//! Distributed inference: the rows to predict are split into contiguous,
//! balanced shards over R replicas (threads of this process, each with its
//! own communicator of a local group), each replica runs the forward pass
//! over its shard in batches, and an all-gather brings every shard back, in
//! order. All-gather needs equal counts, so each replica pads its shard's
//! outputs to ⌈rows/R⌉ rows; the padding is dropped when the result is
//! assembled. A row's prediction does not depend on which replica or batch
//! computed it, so the result equals a one-replica prediction.

use oxccl::Communicator;

use crate::backend::{Backend, CpuBackend};
use crate::data::{shard_range, Dataset};
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Sequential};
use crate::train::first_cause;

/// How to run a prediction.
#[derive(Clone, Copy, Debug)]
pub struct PredictConfig {
    pub replicas: usize,
    /// Rows per forward pass on a replica.
    pub batch: usize,
    /// Compute threads per replica; `None`: cores ÷ replicas.
    pub threads: Option<usize>,
}

impl Default for PredictConfig {
    fn default() -> Self {
        PredictConfig { replicas: 1, batch: 1024, threads: None }
    }
}

/// One replica's part: forward passes over its shard, then the all-gather.
fn replica<B: Backend>(
    comm: &Communicator,
    backend: &B,
    spec: &ModelSpec,
    params: &[f32],
    x: &[f32],
    rows: usize,
    batch: usize,
) -> Result<Vec<f32>> {
    let (r, world) = (comm.rank(), comm.world());
    let (inputs, outputs) = (spec.inputs(), spec.outputs());
    let mine = shard_range(rows, world, r);
    let per = rows.div_ceil(world) * outputs;
    let mut local = vec![0f32; per];
    let mut model = Sequential::new(backend, spec.clone(), params, batch.min(mine.len()).max(1))?;
    let mut done = 0;
    for chunk in x[mine.start * inputs..mine.end * inputs].chunks(batch * inputs) {
        let n = model.load_batch(backend, chunk, None)?;
        model.forward(backend, n)?;
        model.read_output(backend, &mut local[done * outputs..(done + n) * outputs])?;
        done += n;
    }
    let mut all = vec![0f32; per * world];
    comm.all_gather(&local, &mut all).map_err(Error::comm("prediction all-gather"))?;
    let mut out = Vec::with_capacity(rows * outputs);
    for p in 0..world {
        let len = shard_range(rows, world, p).len() * outputs;
        out.extend_from_slice(&all[p * per..p * per + len]);
    }
    Ok(out)
}

/// Predictions (rows × outputs, row-major) for `x` (rows × inputs).
pub fn predict(spec: &ModelSpec, params: &[f32], x: &[f32], config: &PredictConfig) -> Result<Vec<f32>> {
    let inputs = spec.inputs();
    if x.len() % inputs != 0 {
        return Err(Error::Data(format!("{} input values do not make rows of {inputs}", x.len())));
    }
    if config.replicas == 0 || config.batch == 0 {
        return Err(Error::Config("predict needs at least one replica and a positive batch".into()));
    }
    let rows = x.len() / inputs;
    if rows == 0 {
        return Ok(Vec::new());
    }
    let threads = config.threads.unwrap_or_else(|| (crate::backend::cpu::available_cores() / config.replicas).max(1));
    let backend = CpuBackend::new(threads);
    let comms = Communicator::local_group(config.replicas).map_err(Error::comm("local group"))?;
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let backend = &backend;
                s.spawn(move || {
                    let r = replica(&comm, backend, spec, params, x, rows, config.batch);
                    if let Err(e) = &r {
                        comm.abort(&format!("replica {} failed: {e}", comm.rank()));
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    Ok(first_cause(results)?.swap_remove(0))
}

/// Mean squared error of the model's predictions on `data`.
pub fn evaluate(spec: &ModelSpec, params: &[f32], data: &Dataset, config: &PredictConfig) -> Result<f32> {
    let p = predict(spec, params, &data.x, config)?;
    if p.len() != data.y.len() {
        return Err(Error::Data(format!("{} predictions for {} targets", p.len(), data.y.len())));
    }
    let sse: f64 = p.iter().zip(&data.y).map(|(&p, &y)| (f64::from(p) - f64::from(y)).powi(2)).sum();
    Ok((sse / p.len().max(1) as f64) as f32)
}

//! Training: one configuration, several strategies.
//!
//! * [`replica`]: the data-parallel replica loop, written against a
//!   `Communicator` only, so that threads of one process (mirrored) and
//!   processes or hosts (multi-worker) run the same code.
//! * [`mirrored`]: N replicas as threads of this process.
//! * [`multi_worker`]: one replica per process, started by a launcher.
//! * [`ps`]: parameter servers (synchronous and asynchronous).
//!
//! Every strategy starts from a [`TrainState`] (fresh from the seed, or a
//! checkpoint) and returns the final state and a [`Report`]. Epoch e's order
//! depends only on (seed, e), so training E₁ epochs, saving, and resuming to
//! E₂ gives the same parameters as training E₂ epochs straight.

use crate::backend::{cpu::available_cores, CpuBackend};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::metrics::Report;
use crate::model::{AdamConfig, ModelSpec};

pub mod mirrored;
pub mod multi_worker;
pub mod ps;
pub mod replica;

/// How the replicas are arranged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// `replicas` threads of this process, gradients all-reduced.
    Mirrored { replicas: usize },
    /// One replica per process (or host), started by `oxccl run`.
    MultiWorker,
    /// `servers` ranks own contiguous shards of the parameters and run Adam
    /// on them; `workers` ranks compute gradients, push them and pull
    /// parameters. Synchronous: each step's update uses every worker's
    /// gradient (same maths as mirrored). Asynchronous: each worker's push
    /// is applied on its own as soon as the servers take it.
    ParameterServer { workers: usize, servers: usize, synchronous: bool },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Mirrored { .. } => "mirrored",
            Strategy::MultiWorker => "multi-worker",
            Strategy::ParameterServer { synchronous: true, .. } => "ps-sync",
            Strategy::ParameterServer { synchronous: false, .. } => "ps-async",
        }
    }

    /// Ranks that compute gradients.
    pub fn replicas(&self) -> usize {
        match *self {
            Strategy::Mirrored { replicas } => replicas,
            Strategy::MultiWorker => 1,
            Strategy::ParameterServer { workers, .. } => workers,
        }
    }
}

/// Everything a training run needs besides the data.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub spec: ModelSpec,
    pub adam: AdamConfig,
    pub strategy: Strategy,
    /// Rows per step over all replicas.
    pub batch: usize,
    /// Train until this many epochs are done (a resumed run continues).
    pub epochs: u64,
    /// Seed of the initialisation and of the epoch orders.
    pub seed: u64,
    pub shuffle: bool,
    /// Compute threads per replica; `None`: the cores divided by the replicas.
    pub threads: Option<usize>,
    /// Stop after this many steps in total (for short measurements).
    pub max_steps: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            spec: ModelSpec::default(),
            adam: AdamConfig::default(),
            strategy: Strategy::Mirrored { replicas: 1 },
            batch: 64,
            epochs: 2,
            seed: 0,
            shuffle: true,
            threads: None,
            max_steps: None,
        }
    }
}

impl TrainConfig {
    /// Rejects configurations that cannot run, before any thread starts.
    pub fn validate(&self, data: &Dataset) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::Config("--batch must be positive".into()));
        }
        if data.rows == 0 {
            return Err(Error::Data("the training set is empty".into()));
        }
        if data.x_width != self.spec.inputs() || data.y_width != self.spec.outputs() {
            return Err(Error::Data(format!(
                "data has {} inputs and {} targets, model {} needs {} and {}",
                data.x_width,
                data.y_width,
                self.spec.layers_string(),
                self.spec.inputs(),
                self.spec.outputs()
            )));
        }
        match self.strategy {
            Strategy::Mirrored { replicas: 0 } => Err(Error::Config("need at least one replica".into())),
            Strategy::ParameterServer { workers, servers, .. } if workers == 0 || servers == 0 => {
                Err(Error::Config("a parameter server needs at least one worker and one server".into()))
            }
            Strategy::ParameterServer { servers, .. } if servers > self.spec.num_params() + 1 => {
                Err(Error::Config(format!("{servers} servers for {} parameters", self.spec.num_params())))
            }
            _ => Ok(()),
        }
    }

    /// The CPU backend of one replica.
    pub fn backend(&self) -> CpuBackend {
        let threads = self.threads.unwrap_or_else(|| (available_cores() / self.strategy.replicas().max(1)).max(1));
        CpuBackend::new(threads)
    }

    /// A report with the run's fixed fields filled in.
    pub(crate) fn report(&self, backend: String) -> Report {
        let (replicas, servers) = match self.strategy {
            Strategy::ParameterServer { workers, servers, .. } => (workers, servers),
            s => (s.replicas(), 0),
        };
        Report {
            strategy: self.strategy.name().to_string(),
            replicas,
            servers,
            backend,
            layers: self.spec.layers_string(),
            activation: self.spec.hidden.name().to_string(),
            params: self.spec.num_params(),
            global_batch: self.batch,
            flops_per_sample: self.spec.train_flops_per_sample(),
            ..Report::default()
        }
    }
}

/// Parameters and optimiser state on the host: what a checkpoint holds.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub spec: ModelSpec,
    pub params: Vec<f32>,
    /// Adam's first and second moments (same layout as `params`).
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Adam updates done.
    pub t: u64,
    /// Epochs completed.
    pub epochs_done: u64,
    /// Steps completed in total.
    pub steps_done: u64,
}

impl TrainState {
    /// A fresh model: Glorot-uniform kernels from `seed`, zero biases and moments.
    pub fn fresh(spec: &ModelSpec, seed: u64) -> Self {
        let n = spec.num_params();
        TrainState {
            spec: spec.clone(),
            params: spec.init_params(seed),
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            epochs_done: 0,
            steps_done: 0,
        }
    }
}

/// What a progress callback is told after each step.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub epoch: u64,
    pub step: usize,
    pub steps_per_epoch: usize,
    /// The step's global loss.
    pub loss: f32,
}

/// A callback for progress (called by one rank only).
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Sync);

/// A finished run: the final state, the report, and every step's global loss.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub state: TrainState,
    pub report: Report,
    pub step_losses: Vec<f32>,
    /// Whether this process should print the report and write checkpoints
    /// (always for in-process strategies; rank 0 of a multi-worker job).
    pub chief: bool,
}

/// Trains with `config.strategy` from `start` (or a fresh model).
pub fn train(
    config: &TrainConfig,
    data: &Dataset,
    start: Option<TrainState>,
    progress: Option<ProgressFn<'_>>,
) -> Result<TrainOutcome> {
    config.validate(data)?;
    let start = match start {
        Some(s) if s.spec != config.spec => {
            return Err(Error::Config(format!(
                "the checkpoint's model is {} [{}], the configuration's {} [{}]",
                s.spec.layers_string(),
                s.spec.hidden.name(),
                config.spec.layers_string(),
                config.spec.hidden.name()
            )))
        }
        Some(s) => s,
        None => TrainState::fresh(&config.spec, config.seed),
    };
    match config.strategy {
        Strategy::Mirrored { replicas } => mirrored::train(config, replicas, data, start, progress),
        Strategy::MultiWorker => multi_worker::train(config, data, start, progress),
        Strategy::ParameterServer { workers, servers, synchronous } => {
            ps::train(config, workers, servers, synchronous, data, start, progress)
        }
    }
}

/// Per-epoch means of the step losses, `steps_per_epoch` steps per epoch
/// (the last chunk is partial when `max_steps` stopped the run mid-epoch).
pub(crate) fn epoch_means(step_losses: &[f32], steps_per_epoch: usize) -> Vec<f32> {
    step_losses
        .chunks(steps_per_epoch.max(1))
        .map(|c| (c.iter().map(|&l| f64::from(l)).sum::<f64>() / c.len() as f64) as f32)
        .collect()
}

/// Joins scoped replica threads' results, preferring the error that caused
/// an abort over the "aborted" errors it caused elsewhere.
pub(crate) fn first_cause<T>(results: Vec<std::thread::Result<Result<T>>>) -> Result<Vec<T>> {
    let mut oks = Vec::new();
    let mut errs = Vec::new();
    for r in results {
        match r {
            Ok(Ok(v)) => oks.push(v),
            Ok(Err(e)) => errs.push(e),
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                errs.push(Error::Panicked(msg));
            }
        }
    }
    if errs.is_empty() {
        return Ok(oks);
    }
    let is_echo = |e: &Error| matches!(e, Error::Comm { source: oxccl::Error::Aborted(_), .. });
    let pos = errs.iter().position(|e| !is_echo(e)).unwrap_or(0);
    Err(errs.swap_remove(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_cause_prefers_the_root_error_and_reports_panics() {
        let echo = || Error::Comm { op: "all-reduce", source: oxccl::Error::Aborted("replica 1 failed".into()) };
        let results: Vec<std::thread::Result<Result<u32>>> =
            vec![Ok(Err(echo())), Ok(Err(Error::Data("bad row".into()))), Ok(Ok(3))];
        assert!(matches!(first_cause(results), Err(Error::Data(_))));
        let results: Vec<std::thread::Result<Result<u32>>> = vec![Ok(Ok(1)), Err(Box::new("boom"))];
        assert!(matches!(first_cause(results), Err(Error::Panicked(m)) if m == "boom"));
        assert_eq!(first_cause::<u32>(vec![Ok(Ok(1)), Ok(Ok(2))]).unwrap(), vec![1, 2]);
    }

    #[test]
    fn epoch_means_of_whole_and_partial_epochs() {
        assert_eq!(epoch_means(&[1.0, 3.0, 5.0, 7.0, 9.0], 2), vec![2.0, 6.0, 9.0]);
    }
}

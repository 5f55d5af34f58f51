//! `oxccl train`: trains a `Sequential` MLP with a strategy and reports
//! throughput.
//!
//! Data: the seeded synthetic regression set by default (x ~ N(0, 1) of
//! width 32, y = x·w + 0.1·noise; `--samples` training rows and
//! `--test-samples` held-out rows), or `--data x.npy --targets y.npy`, or
//! `--data file.csv` (last `--csv-targets` columns are targets; `--holdout`
//! rows at the end are kept for the test MSE).
//!
//! Output: a summary on stdout, or with `--json` one JSON object per line —
//! `{"event":"epoch",...}` after each epoch and `{"event":"report",...}` at
//! the end (the fields of `oxccl_engine::metrics::Report`). A progress bar
//! is drawn on stderr only when it is a terminal and `--json` is off.
//!
//! Scaling efficiency: with more than one replica, the same job is first
//! run with one replica (capped at `--baseline-steps` steps) and the report
//! gives samples/s ÷ (replicas × one replica's samples/s); `--no-baseline`
//! skips it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use oxccl_engine::checkpoint;
use oxccl_engine::data::{files, Dataset, Synthetic};
use oxccl_engine::model::{AdamConfig, ModelSpec};
use oxccl_engine::predict::{evaluate, PredictConfig};
use oxccl_engine::train::{train, Progress, Strategy, TrainConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    Mirrored,
    MultiWorker,
    Ps,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PsMode {
    Sync,
    Async,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// cpu, or cuda (not built yet: says why it cannot run, see `device.rs`).
    #[arg(long, default_value = "cpu", value_parser = crate::device::DEVICES)]
    pub device: String,

    /// How replicas are arranged.
    #[arg(long, value_enum, default_value = "mirrored")]
    pub strategy: StrategyArg,
    /// Replicas (mirrored) or workers (ps).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Parameter-server ranks (ps only).
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// Parameter-server mode.
    #[arg(long, value_enum, default_value = "sync")]
    pub ps_mode: PsMode,
    /// Global batch size (rows per step over all replicas).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Epochs to train (a resumed run continues up to this many).
    #[arg(long, default_value_t = 2)]
    pub epochs: u64,
    /// Layer widths, input first (the seed's model by default).
    #[arg(long, default_value = "32,10,1")]
    pub layers: String,
    /// Hidden activation: relu, gelu or linear.
    #[arg(long, default_value = "relu")]
    pub act: String,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Decoupled weight decay (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Seed of the initialisation, the epoch orders and the synthetic data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Synthetic training rows.
    #[arg(long, default_value_t = 65_536)]
    pub samples: usize,
    /// Synthetic held-out rows for the test MSE (0: none).
    #[arg(long, default_value_t = 8_192)]
    pub test_samples: usize,
    /// Noise σ of the synthetic targets.
    #[arg(long, default_value_t = 0.1)]
    pub noise: f64,
    /// Training data file (.npy inputs or .csv) instead of synthetic data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Targets .npy for an .npy --data.
    #[arg(long)]
    pub targets: Option<PathBuf>,
    /// Trailing target columns of a CSV --data.
    #[arg(long, default_value_t = 1)]
    pub csv_targets: usize,
    /// Rows at the end of a --data file held out for the test MSE.
    #[arg(long, default_value_t = 0)]
    pub holdout: usize,
    /// Visit rows in file order instead of a fresh shuffle each epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Compute threads per replica (default: cores ÷ replicas).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Stop after this many steps in total.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Write a checkpoint (safetensors) here at the end.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Resume from a checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Skip the one-replica baseline run used for the scaling efficiency.
    #[arg(long)]
    pub no_baseline: bool,
    /// Most steps of the one-replica baseline run.
    #[arg(long, default_value_t = 2000)]
    pub baseline_steps: u64,
    /// The device's peak GFLOP/s, to report the fraction achieved.
    #[arg(long)]
    pub peak_gflops: Option<f64>,
    /// JSON lines on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
}

fn strategy(a: &TrainArgs) -> Strategy {
    match a.strategy {
        StrategyArg::Mirrored => Strategy::Mirrored { replicas: a.replicas },
        StrategyArg::MultiWorker => Strategy::MultiWorker,
        StrategyArg::Ps => Strategy::ParameterServer {
            workers: a.replicas,
            servers: a.servers,
            synchronous: a.ps_mode == PsMode::Sync,
        },
    }
}

/// The training set and the held-out set (if any).
fn data(a: &TrainArgs, inputs: usize) -> oxccl_engine::Result<(Dataset, Option<Dataset>)> {
    match &a.data {
        None => {
            let synth = Synthetic { width: inputs, noise: a.noise, seed: a.seed };
            let test = (a.test_samples > 0).then(|| synth.generate(a.test_samples, "test")).transpose()?;
            Ok((synth.generate(a.samples, "train")?, test))
        }
        Some(path) => {
            let all = files::load(path, a.targets.as_deref(), a.csv_targets)?;
            if a.holdout == 0 {
                Ok((all, None))
            } else {
                let (train, test) = all.split_last(a.holdout)?;
                Ok((train, Some(test)))
            }
        }
    }
}

pub fn main(a: TrainArgs) -> ExitCode {
    if let Err(code) = crate::device::check("train", &a.device, false) {
        return code;
    }
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxccl train: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &TrainArgs) -> oxccl_engine::Result<()> {
    let spec = ModelSpec::parse(&a.layers, &a.act)?;
    let config = TrainConfig {
        spec,
        adam: AdamConfig { lr: a.lr, weight_decay: a.weight_decay, ..AdamConfig::default() },
        strategy: strategy(a),
        batch: a.batch,
        epochs: a.epochs,
        seed: a.seed,
        shuffle: !a.no_shuffle,
        threads: a.threads,
        max_steps: a.max_steps,
    };
    let (train_set, test_set) = data(a, config.spec.inputs())?;
    let start = a.resume.as_deref().map(checkpoint::load).transpose()?;
    let first_epoch = start.as_ref().map_or(0, |s| s.epochs_done);

    // The one-replica baseline: the same job and starting state, at most --baseline-steps steps.
    let replicas = config.strategy.replicas();
    let baseline = if replicas > 1 && !a.no_baseline && config.strategy != Strategy::MultiWorker {
        let steps_left = (config.epochs.saturating_sub(first_epoch)) * train_set.rows.div_ceil(config.batch) as u64;
        let steps = config.max_steps.unwrap_or(u64::MAX).min(steps_left).min(a.baseline_steps);
        let one = TrainConfig {
            strategy: Strategy::Mirrored { replicas: 1 },
            max_steps: Some(start.as_ref().map_or(0, |s| s.steps_done) + steps),
            ..config.clone()
        };
        Some(train(&one, &train_set, start.clone(), None)?.report.samples_per_s)
    } else {
        None
    };

    let bar = (!a.json && std::io::stderr().is_terminal()).then(|| {
        let steps = config.epochs.saturating_sub(first_epoch) * train_set.rows.div_ceil(config.batch) as u64;
        let bar = ProgressBar::new(config.max_steps.map_or(steps, |m| m.min(steps)));
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} steps {per_sec} eta {eta} {msg}")
                .expect("valid template"),
        );
        bar
    });
    // Per-epoch JSON lines, written as each epoch ends.
    let epoch_sum = Mutex::new((0f64, 0usize));
    let on_step = |p: &Progress| {
        if let Some(bar) = &bar {
            bar.inc(1);
            if p.step % 64 == 0 {
                bar.set_message(format!("epoch {} loss {:.4}", p.epoch + 1, p.loss));
            }
        }
        if a.json {
            let mut s = epoch_sum.lock().expect("not poisoned");
            s.0 += f64::from(p.loss);
            s.1 += 1;
            if p.step + 1 == p.steps_per_epoch {
                let line = serde_json::json!({"event": "epoch", "epoch": p.epoch + 1, "loss": s.0 / s.1 as f64});
                println!("{line}");
                *s = (0.0, 0);
            }
        }
    };
    let out = train(&config, &train_set, start, Some(&on_step))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if !out.chief {
        return Ok(()); // rank 0 of a multi-worker job reports and saves
    }
    let mut report = out.report;
    if let Some(b) = baseline {
        report.set_baseline(b);
    }
    if let Some(p) = a.peak_gflops.filter(|p| *p > 0.0) {
        report.set_peak(p);
    }
    if let Some(test) = &test_set {
        let pc = PredictConfig { replicas: replicas.max(1), batch: 4096, threads: a.threads };
        report.test_mse = Some(evaluate(&config.spec, &out.state.params, test, &pc)?);
    }
    if let Some(path) = &a.save {
        checkpoint::save(path, &out.state, &config.adam)?;
    }
    if a.json {
        let mut v = serde_json::to_value(&report).expect("serialisable");
        v["event"] = "report".into();
        println!("{v}");
    } else {
        println!("{}", report.summary());
        if let Some(path) = &a.save {
            println!("  saved {} ({})", path.display(), checkpoint::describe(&out.state));
        }
    }
    Ok(())
}

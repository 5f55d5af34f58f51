//! Throughput measurement: where a step's time goes and what a run achieved.
//!
//! Each rank times its own steps in three phases:
//! * **compute**: gathering the batch, forward, loss and backward;
//! * **communication**: the gradient all-reduce (mirrored), or pushing
//!   gradients and pulling parameters (parameter server, as seen by a worker,
//!   so it includes waiting for the servers);
//! * **optimizer**: the Adam update (on the servers, for a parameter server).
//!
//! A run's [`Report`] gives samples/s over the wall time of the training loop,
//! the mean per-step time of each phase, achieved FLOP/s (matmul FLOPs of
//! training, [`crate::model::ModelSpec::train_flops_per_sample`], per second
//! of wall time), and, when a one-replica baseline was measured, the scaling
//! efficiency: samples/s with N replicas ÷ (N × samples/s with one). The
//! fraction of the device's peak FLOP/s is reported when the peak is given
//! (`--peak-gflops`); the CPU backend does not guess it.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Accumulated time per phase over a number of steps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    pub compute: Duration,
    pub comm: Duration,
    pub optimizer: Duration,
    pub steps: u64,
}

impl PhaseTimes {
    /// Mean milliseconds per step of (compute, communication, optimizer).
    pub fn per_step_ms(&self) -> (f64, f64, f64) {
        let n = self.steps.max(1) as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / n;
        (ms(self.compute), ms(self.comm), ms(self.optimizer))
    }
}

/// A stopwatch that charges the time since its last lap to a phase.
pub struct Lap(Instant);

impl Lap {
    pub fn start() -> Self {
        Lap(Instant::now())
    }

    /// Time since the last lap (or the start); restarts the watch.
    pub fn lap(&mut self) -> Duration {
        let now = Instant::now();
        let d = now - self.0;
        self.0 = now;
        d
    }
}

/// What one training run achieved; serialised as one JSON line by `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub strategy: String,
    /// Replicas (mirrored) or workers (parameter server).
    pub replicas: usize,
    /// Parameter-server ranks (0 otherwise).
    pub servers: usize,
    pub backend: String,
    pub layers: String,
    pub activation: String,
    pub params: usize,
    pub global_batch: usize,
    pub epochs: u64,
    pub steps: u64,
    pub samples: u64,
    pub wall_s: f64,
    pub samples_per_s: f64,
    pub step_ms: f64,
    pub compute_ms: f64,
    pub comm_ms: f64,
    pub optimizer_ms: f64,
    pub flops_per_sample: u64,
    pub gflops: f64,
    /// Mean training loss of each epoch (mean of its steps' global losses).
    pub epoch_loss: Vec<f32>,
    /// Mean loss of the last epoch.
    pub final_loss: f32,
    /// Mean squared error on the held-out set, when there is one.
    pub test_mse: Option<f32>,
    /// samples/s ÷ (replicas × one replica's samples/s), when measured.
    pub scaling_efficiency: Option<f64>,
    /// One replica's samples/s on the same job, when measured.
    pub baseline_samples_per_s: Option<f64>,
    /// The device's peak GFLOP/s, when given (the CPU's is not detected).
    pub peak_gflops: Option<f64>,
    /// `gflops / peak_gflops`.
    pub peak_fraction: Option<f64>,
}

impl Report {
    /// Fills in the derived rates from the counts and times.
    pub fn finish(&mut self, wall: Duration, times: &PhaseTimes) {
        self.wall_s = wall.as_secs_f64();
        let secs = self.wall_s.max(1e-12);
        self.samples_per_s = self.samples as f64 / secs;
        self.gflops = self.samples as f64 * self.flops_per_sample as f64 / secs / 1e9;
        let (c, m, o) = times.per_step_ms();
        (self.compute_ms, self.comm_ms, self.optimizer_ms) = (c, m, o);
        self.step_ms = self.wall_s * 1e3 / self.steps.max(1) as f64;
        self.final_loss = self.epoch_loss.last().copied().unwrap_or(f32::NAN);
    }

    /// Records a one-replica baseline and the scaling efficiency against it.
    pub fn set_baseline(&mut self, one_replica_samples_per_s: f64) {
        self.baseline_samples_per_s = Some(one_replica_samples_per_s);
        self.scaling_efficiency = Some(self.samples_per_s / (self.replicas.max(1) as f64 * one_replica_samples_per_s));
    }

    /// Records the device's peak and the fraction of it achieved.
    pub fn set_peak(&mut self, peak_gflops: f64) {
        self.peak_gflops = Some(peak_gflops);
        self.peak_fraction = Some(self.gflops / peak_gflops);
    }

    /// A human-readable summary, a few lines.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} ({} replica{}{}), {} [{}], {} params, backend {}\n",
            self.strategy,
            self.replicas,
            if self.replicas == 1 { "" } else { "s" },
            if self.servers > 0 { format!(", {} server(s)", self.servers) } else { String::new() },
            self.layers,
            self.activation,
            self.params,
            self.backend
        );
        s += &format!(
            "  {} epochs, {} steps of global batch {}: {:.3} s, {:.0} samples/s, {:.2} GFLOP/s\n",
            self.epochs, self.steps, self.global_batch, self.wall_s, self.samples_per_s, self.gflops
        );
        if let (Some(p), Some(f)) = (self.peak_gflops, self.peak_fraction) {
            s += &format!("  {:.1}% of the given peak of {p:.0} GFLOP/s\n", f * 100.0);
        }
        s += &format!(
            "  step {:.4} ms = compute {:.4} + communication {:.4} + optimizer {:.4} ms (rank means)\n",
            self.step_ms, self.compute_ms, self.comm_ms, self.optimizer_ms
        );
        s += &format!("  final loss {:.5}", self.final_loss);
        if let Some(t) = self.test_mse {
            s += &format!(", test MSE {t:.5}");
        }
        if let (Some(e), Some(b)) = (self.scaling_efficiency, self.baseline_samples_per_s) {
            s += &format!("\n  scaling efficiency {:.1}% (1 replica: {b:.0} samples/s)", e * 100.0);
        }
        s
    }
}

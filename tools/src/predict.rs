//! `oxccl predict`: loads a checkpoint and predicts, with the batch sharded
//! over replicas and the results gathered in order.
//!
//! Inputs: `--data FILE` (.npy, or .csv with `--csv-targets` trailing target
//! columns to score against), or by default the synthetic held-out split
//! (`--samples` rows, `--seed`) with its targets. Predictions go to
//! `--output` (.npy, or CSV for any other extension). The summary (or one
//! JSON line with `--json`) gives rows, time, samples/s and the MSE when
//! targets are known.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use oxccl_engine::checkpoint;
use oxccl_engine::data::{files, Synthetic};
use oxccl_engine::predict::{predict, PredictConfig};
use oxccl_engine::Error;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// cpu, or cuda (not built yet: says why it cannot run, see `device.rs`).
    #[arg(long, default_value = "cpu", value_parser = crate::device::DEVICES)]
    pub device: String,

    /// The checkpoint (safetensors) to load.
    #[arg(long)]
    pub model: PathBuf,
    /// Inputs (.npy or .csv); default: the synthetic held-out split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Trailing target columns of a CSV --data (0: every column is an input).
    #[arg(long, default_value_t = 0)]
    pub csv_targets: usize,
    /// Synthetic rows when no --data is given.
    #[arg(long, default_value_t = 8_192)]
    pub samples: usize,
    /// Seed of the synthetic data (the training run's --seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replicas the rows are sharded over.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Rows per forward pass on a replica.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Compute threads per replica (default: cores ÷ replicas).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write predictions here (.npy, else CSV).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// One JSON line on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: PredictArgs) -> ExitCode {
    if let Err(code) = crate::device::check("predict", &a.device, false) {
        return code;
    }
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxccl predict: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &PredictArgs) -> oxccl_engine::Result<()> {
    let state = checkpoint::load(&a.model)?;
    let spec = &state.spec;
    let (x, width, targets) = match &a.data {
        Some(path) => files::load_inputs(path, a.csv_targets)?,
        None => {
            let d = Synthetic { width: spec.inputs(), noise: 0.1, seed: a.seed }.generate(a.samples, "test")?;
            (d.x, d.x_width, Some((d.y, d.y_width)))
        }
    };
    if width != spec.inputs() {
        return Err(Error::Data(format!(
            "inputs have {width} columns, the model {} needs {}",
            spec.layers_string(),
            spec.inputs()
        )));
    }
    let config = PredictConfig { replicas: a.replicas, batch: a.batch, threads: a.threads };
    let began = Instant::now();
    let p = predict(spec, &state.params, &x, &config)?;
    let secs = began.elapsed().as_secs_f64();
    let rows = x.len() / width;
    let mse = match &targets {
        Some((y, w)) if *w == spec.outputs() => Some(
            p.iter().zip(y).map(|(&p, &y)| (f64::from(p) - f64::from(y)).powi(2)).sum::<f64>() / p.len().max(1) as f64,
        ),
        _ => None,
    };
    if let Some(out) = &a.output {
        files::save_predictions(out, &p, spec.outputs())?;
    }
    if a.json {
        let line = serde_json::json!({
            "event": "predict", "model": a.model.display().to_string(), "layers": spec.layers_string(),
            "rows": rows, "replicas": a.replicas, "seconds": secs, "samples_per_s": rows as f64 / secs.max(1e-12),
            "mse": mse,
        });
        println!("{line}");
    } else {
        println!(
            "predicted {rows} rows with {} ({}) on {} replica(s) in {:.4} s ({:.0} rows/s)",
            a.model.display(),
            checkpoint::describe(&state),
            a.replicas,
            secs,
            rows as f64 / secs.max(1e-12)
        );
        if let Some(m) = mse {
            println!("  MSE against the targets: {m:.5}");
        }
        if let Some(out) = &a.output {
            println!("  wrote {}", out.display());
        }
    }
    Ok(())
}

//! The `oxccl` command.
//!
//! * `oxccl perf <collective>`: nccl-tests style sweeps (see `perf.rs`).
//! * `oxccl train`: train an MLP with a strategy, report throughput (`train.rs`).
//! * `oxccl predict --model FILE`: distributed inference (`predict.rs`).
//! * `oxccl run -n N -- CMD`: start N ranks on this host (`run.rs`).
//!
//! Later: `sim`, `plot`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bind;
mod device;
mod perf;
mod predict;
mod run;
mod train;

#[derive(Parser, Debug)]
#[command(name = "oxccl", version, about = "oxccl: collective communication tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure a collective over local ranks, nccl-tests style.
    Perf(perf::PerfArgs),
    /// Train an MLP (mirrored, multi-worker or parameter server) and report throughput.
    Train(train::TrainArgs),
    /// Predict with a saved model, the rows sharded over replicas.
    Predict(predict::PredictArgs),
    /// Start N ranks of a command on this host (OXCCL_RANK, ... set); see run.rs.
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Perf(args) => perf::main(args),
        Command::Train(args) => train::main(args),
        Command::Predict(args) => predict::main(args),
        Command::Run(args) => run::main(args),
    }
}

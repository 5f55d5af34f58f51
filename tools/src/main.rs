//! The `oxccl` command.
//!
//! * `oxccl perf <collective>`: nccl-tests style sweeps (see `perf.rs`).
//!
//! Later: `run` (launcher), `train`, `predict`, `sim`, `plot`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod perf;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Perf(args) => perf::main(args),
    }
}

//! `--device cpu|cuda`, shared by the commands.
//!
//! Only the CPU runs collectives and training today. Given `cuda`, a command
//! says why it cannot: no CUDA driver on this machine (the error
//! `oxccl-cuda` gives, never a panic), or, with a GPU, that the CUDA mode is
//! not built yet.

use std::process::ExitCode;

/// The `--device` values.
pub const DEVICES: [&str; 2] = ["cpu", "cuda"];

/// `Ok` for the CPU; for CUDA, prints why `command` cannot run and gives the exit code.
pub fn check(command: &str, device: &str) -> Result<(), ExitCode> {
    if device != "cuda" {
        return Ok(());
    }
    let why = match oxccl_cuda::Device::new(0) {
        Err(e) => e.to_string(),
        Ok(_) => format!("{command} on CUDA devices is not implemented yet (only --device cpu)"),
    };
    eprintln!("oxccl {command}: error: {why}");
    Err(ExitCode::FAILURE)
}

//! `--device cpu|cuda|emu`, shared by the commands.
//!
//! The CPU runs everything. `perf` runs its collectives on device memory
//! too: `emu`, the emulated device (`oxccl-cuda`'s, over host memory), or
//! `cuda`, GPU 0 (without a driver it reports the error `oxccl-cuda`
//! gives, never a panic). Other commands say why they cannot run on a
//! device: no CUDA driver, or that their device mode is not built yet.

use std::process::ExitCode;

/// The `--device` values.
pub const DEVICES: [&str; 3] = ["cpu", "cuda", "emu"];

/// `Ok` when `command` runs on `device` (`emu`, `cuda`: when the command
/// has a device mode); otherwise prints why not and gives the exit code.
pub fn check(command: &str, device: &str, has_device: bool) -> Result<(), ExitCode> {
    let why = match device {
        "cpu" => return Ok(()),
        "emu" | "cuda" if has_device => return Ok(()),
        "emu" => format!("{command} on the emulated device is not built yet (only --device cpu)"),
        _ => match oxccl_cuda::Device::new(0) {
            Err(e) => e.to_string(),
            Ok(_) => format!("{command} on CUDA devices is not implemented yet (--device cpu, or emu for perf)"),
        },
    };
    eprintln!("oxccl {command}: error: {why}");
    Err(ExitCode::FAILURE)
}

//! `--device cpu|cuda|emu`, shared by the commands.
//!
//! The CPU runs everything. `emu`, the emulated device (`oxccl-cuda`'s,
//! over host memory), runs `perf`'s collectives on device memory. Given
//! `cuda`, a command says why it cannot run: no CUDA driver on this machine
//! (the error `oxccl-cuda` gives, never a panic), or, with a GPU, that the
//! CUDA mode is not built yet; so does a command without an `emu` mode.

use std::process::ExitCode;

/// The `--device` values.
pub const DEVICES: [&str; 3] = ["cpu", "cuda", "emu"];

/// `Ok` when `command` runs on `device` (`emu`: when the command has an
/// emulated-device mode); otherwise prints why not and gives the exit code.
pub fn check(command: &str, device: &str, has_emu: bool) -> Result<(), ExitCode> {
    let why = match device {
        "cpu" => return Ok(()),
        "emu" if has_emu => return Ok(()),
        "emu" => format!("{command} on the emulated device is not built yet (only --device cpu)"),
        _ => match oxccl_cuda::Device::new(0) {
            Err(e) => e.to_string(),
            Ok(_) => format!("{command} on CUDA devices is not implemented yet (--device cpu, or emu for perf)"),
        },
    };
    eprintln!("oxccl {command}: error: {why}");
    Err(ExitCode::FAILURE)
}

//! [`Config`]: the settings every rank of a communicator shares (deadline,
//! message size, default algorithm). In a module of its own so that the
//! transports and the bootstrap read it without depending on the
//! communicator, which depends on them.

use std::time::Duration;

use crate::algo::Algorithm;

/// Settings shared by the ranks of a communicator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Deadline of every wait (default: `OXCCL_TIMEOUT` seconds, else 300 s).
    pub timeout: Duration,
    /// Largest message in bytes, rounded up to a multiple of 64 (default:
    /// `OXCCL_SLICE_BYTES`, else 128 KiB).
    pub slice_bytes: usize,
    /// Algorithm used when a call does not name one; `None` is the auto rule.
    pub algorithm: Option<Algorithm>,
    /// Largest message of the stream-ordered calls on device memory
    /// (default: `OXCCL_DEVICE_SLICE_BYTES`, else 4 MiB). A device pays a
    /// few microseconds per message (a kernel or copy and two stream memory
    /// operations), so its messages are larger than the host's.
    pub device_slice_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        let timeout = std::env::var("OXCCL_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(300), Duration::from_secs_f64);
        let bytes = |var: &str, default: usize| {
            std::env::var(var).ok().and_then(|s| s.trim().parse::<usize>().ok()).filter(|&b| b > 0).unwrap_or(default)
        };
        let slice_bytes = bytes("OXCCL_SLICE_BYTES", 128 << 10);
        let device_slice_bytes = bytes("OXCCL_DEVICE_SLICE_BYTES", 4 << 20);
        Config { timeout, slice_bytes, algorithm: None, device_slice_bytes }
    }
}

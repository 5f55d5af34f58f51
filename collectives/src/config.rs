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
}

impl Default for Config {
    fn default() -> Self {
        let timeout = std::env::var("OXCCL_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(300), Duration::from_secs_f64);
        let slice_bytes = std::env::var("OXCCL_SLICE_BYTES")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&b| b > 0)
            .unwrap_or(128 << 10);
        Config { timeout, slice_bytes, algorithm: None }
    }
}

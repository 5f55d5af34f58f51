//! A non-shared transport's abort flag and doorbell (or another
//! transport's, through [`Signals`]), and the first abort cause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::error::Error;
use crate::transport::{Doorbell, Signals};

/// A rank's doorbell and abort flag (its own, or another transport's
/// [`Signals`] when two serve the rank) and the group's abort cause.
pub struct AbortState {
    bell: Doorbell,
    aborted: AtomicBool,
    signals: Option<Arc<dyn Signals>>,
    cause: Mutex<Option<Error>>,
}

impl AbortState {
    /// `local`: ranks on this host (for the doorbell's spinning).
    pub fn new(local: usize, signals: Option<Arc<dyn Signals>>) -> AbortState {
        AbortState { bell: Doorbell::new(local), aborted: AtomicBool::new(false), signals, cause: Mutex::new(None) }
    }

    pub fn bell(&self) -> &Doorbell {
        self.signals.as_ref().map_or(&self.bell, |s| s.bell())
    }

    pub fn flag(&self) -> &AtomicBool {
        self.signals.as_ref().map_or(&self.aborted, |s| s.flag())
    }

    pub fn aborted(&self) -> bool {
        self.flag().load(Ordering::Acquire)
    }

    /// Keeps `cause` if it is the first; true when it was kept (and the
    /// peers must be told).
    pub fn keep_cause(&self, cause: Error) -> bool {
        let mut c = lock(&self.cause);
        let keep = c.is_none();
        if keep {
            *c = Some(cause);
        }
        keep
    }

    /// Raises the abort flag and wakes the rank.
    pub fn raise(&self) {
        self.flag().store(true, Ordering::Release);
        self.bell().ring();
    }

    /// The cause, once the flag is up.
    pub fn cause(&self) -> Option<Error> {
        if !self.aborted() {
            return None;
        }
        lock(&self.cause).clone()
    }
}

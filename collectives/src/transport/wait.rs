//! Waiting without burning a core: spin briefly, then yield, then sleep.
//!
//! Each rank owns a [`Doorbell`]. Whoever changes something a rank may be
//! waiting for (a message committed to it, a slot it sent freed, a barrier
//! arrival, an abort) rings that rank's doorbell. A waiting rank reads the
//! doorbell's epoch, checks its condition, and sleeps only if the epoch has
//! not moved since — so a ring between the check and the sleep is never lost.
//! Ranks may outnumber cores (four ranks on two cores), so the spin phase is
//! short and yielding comes early.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Rounds of `spin_loop` before yielding, when every rank has a core.
const SPINS: u32 = 200;
/// Rounds of `yield_now` before sleeping.
const YIELDS: u32 = 64;

/// A rank's wake-up signal.
#[repr(align(128))]
pub struct Doorbell {
    epoch: AtomicU32,
    sleepers: AtomicU32,
    spins: u32,
}

impl Doorbell {
    /// A doorbell for one of `ranks` threads that run at once in this
    /// process. When they outnumber the cores, a waiting rank yields at once:
    /// the rank it waits for may need its core.
    pub fn new(ranks: usize) -> Doorbell {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spins = if ranks <= cores { SPINS } else { 0 };
        Doorbell { epoch: AtomicU32::new(0), sleepers: AtomicU32::new(0), spins }
    }

    fn key(&self) -> usize {
        self as *const Doorbell as usize
    }

    /// Wakes the owner if it sleeps (and makes it re-check if it is about to).
    pub fn ring(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            // SAFETY: parking_lot_core's key is any address; this one is only
            // used by this doorbell.
            unsafe {
                parking_lot_core::unpark_all(self.key(), parking_lot_core::DEFAULT_UNPARK_TOKEN);
            }
        }
    }

    fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Sleeps until rung after `epoch` was read, or until `deadline`.
    fn sleep(&self, epoch: u32, deadline: Instant) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the key is this doorbell's address; the callbacks do not
        // panic and do not call into parking_lot_core.
        unsafe {
            parking_lot_core::park(
                self.key(),
                || self.epoch.load(Ordering::SeqCst) == epoch,
                || {},
                |_, _| {},
                parking_lot_core::DEFAULT_PARK_TOKEN,
                Some(deadline),
            );
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a wait ended without its condition.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    Timeout(Duration),
    Aborted,
}

/// Waits until `ready()` holds, `abort` is set, or `timeout` passes.
pub fn wait_until(
    bell: &Doorbell,
    abort: &AtomicBool,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), WaitError> {
    if ready() {
        return Ok(());
    }
    for _ in 0..bell.spins {
        std::hint::spin_loop();
        if ready() {
            return Ok(());
        }
    }
    let start = Instant::now();
    let deadline = start + timeout;
    let mut yields = 0;
    loop {
        let epoch = bell.epoch();
        if ready() {
            return Ok(());
        }
        if abort.load(Ordering::Acquire) {
            return Err(WaitError::Aborted);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout(now - start));
        }
        if yields < YIELDS {
            yields += 1;
            std::thread::yield_now();
        } else {
            bell.sleep(epoch, deadline);
        }
    }
}

//! Waiting without burning a core: spin briefly, then yield, then sleep.
//!
//! Each rank owns a [`Doorbell`]. Whoever changes something a rank may be
//! waiting for (a message committed to it, a slot it sent freed, a barrier
//! arrival, an abort) rings that rank's doorbell. Ringing costs a load when
//! nobody sleeps: a rank about to sleep first counts itself as a sleeper,
//! then reads the epoch and checks its condition once more; a ringer changes
//! its state first and looks for sleepers after (both sequentially
//! consistent), so either the sleeper sees the change or the ringer sees the
//! sleeper and bumps the epoch, which the futex wait compares — a ring is
//! never lost, and the common path writes nothing to the owner's cache line.
//! Sleeping is a Linux futex on the epoch word, shared (not process-private),
//! so a doorbell works the same in a process's heap and in a shared-memory
//! segment mapped by several processes; it is plain atomics, `repr(C)`.
//! Ranks may outnumber cores (four ranks on two cores), so the spin phase is
//! short, or skipped, and yielding comes early.

use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Most rounds of spinning before yielding, when every rank has a core.
const SPINS: u32 = 200;
/// Fewest, so spinning keeps being tried when it stopped paying.
const MIN_SPINS: u32 = 16;
/// Rounds of `yield_now` before sleeping.
const YIELDS: u32 = 64;
/// Longest single sleep, so a waiting rank regularly checks on its peer.
const NAP: Duration = Duration::from_millis(50);

/// A rank's wake-up signal.
#[repr(C, align(128))]
pub struct Doorbell {
    epoch: AtomicU32,
    sleepers: AtomicU32,
    /// The owner's current spin budget: grows while spinning pays (the peer
    /// runs on another core), shrinks while it does not (the peer shares
    /// this core, at least for now); 0 when ranks outnumber cores. In a
    /// cache line of its own: ringers read the line above on every ring.
    spins: Budget,
}

#[repr(C, align(64))]
struct Budget(AtomicU32);

impl std::ops::Deref for Budget {
    type Target = AtomicU32;
    fn deref(&self) -> &AtomicU32 {
        &self.0
    }
}

impl Doorbell {
    /// A doorbell for one of `ranks` threads that run at once on this
    /// machine. When they outnumber the cores, a waiting rank yields at once:
    /// the rank it waits for may need its core.
    pub fn new(ranks: usize) -> Doorbell {
        let d = Doorbell { epoch: AtomicU32::new(0), sleepers: AtomicU32::new(0), spins: Budget(AtomicU32::new(0)) };
        d.init(ranks);
        d
    }

    /// Sets the spin policy of a doorbell that lives in shared memory.
    pub fn init(&self, ranks: usize) {
        // The machine's cores, not this thread's mask: a rank bound to one
        // core (as launchers bind) still has a peer on each other core.
        self.spins.store(if ranks <= crate::affinity::online() { SPINS } else { 0 }, Ordering::Relaxed);
    }

    /// Wakes the owner if it sleeps or is about to (call after the change).
    pub fn ring(&self) {
        ring_all([self]);
    }

    /// True while the owner may be polling in a spin or yield loop: it is
    /// not asleep on this doorbell, and it spins at all (ranks do not
    /// outnumber cores, so it has a core to poll on).
    pub fn may_poll(&self) -> bool {
        self.sleepers.load(Ordering::SeqCst) == 0 && self.spins.load(Ordering::Relaxed) > 0
    }

    fn wake_sleepers(&self) {
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            futex_wake(&self.epoch);
        }
    }

    /// Sleeps for at most `limit` unless `ready()` holds once this rank is
    /// counted as a sleeper, or until rung.
    fn sleep(&self, limit: Duration, ready: &mut impl FnMut() -> bool) -> bool {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let epoch = self.epoch.load(Ordering::SeqCst);
        let done = ready();
        if !done {
            futex_wait(&self.epoch, epoch, limit);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        done
    }
}

/// Rings every doorbell of `bells` (after the change), with one fence.
pub fn ring_all<'a>(bells: impl IntoIterator<Item = &'a Doorbell>) {
    fence(Ordering::SeqCst);
    for bell in bells {
        bell.wake_sleepers();
    }
}

#[cfg(target_os = "linux")]
fn futex_wait(word: &AtomicU32, expected: u32, limit: Duration) {
    let ts = libc::timespec { tv_sec: limit.as_secs() as libc::time_t, tv_nsec: limit.subsec_nanos() as libc::c_long };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which outlives
    // the call, and sleeps only while it still equals `expected`; `ts` is a
    // valid relative timeout. Errors (EAGAIN, EINTR, ETIMEDOUT) just return.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(target_os = "linux")]
fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, std::ptr::null::<u32>(), 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
fn futex_wait(_word: &AtomicU32, _expected: u32, limit: Duration) {
    std::thread::sleep(limit.min(Duration::from_micros(50)));
}

#[cfg(not(target_os = "linux"))]
fn futex_wake(_word: &AtomicU32) {}

/// Why a wait ended without its condition.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    Timeout(Duration),
    Aborted,
    /// The peer being waited for is gone (its process died).
    PeerGone,
}

/// What a wait polls besides its condition.
pub struct Watch<'a> {
    pub bell: &'a Doorbell,
    pub abort: &'a AtomicBool,
    pub timeout: Duration,
    /// Checked whenever the wait wakes from a sleep: false when the peer
    /// waited for can no longer answer.
    pub alive: &'a dyn Fn() -> bool,
}

/// Waits until `ready()` holds, the group aborts, the peer dies or the
/// timeout passes without `ready()`: spins, yields, sleeps. The caller has
/// looked once already and found `ready()` false.
#[inline(never)]
pub fn wait_until(w: &Watch<'_>, mut ready: impl FnMut() -> bool) -> Result<(), WaitError> {
    let budget = w.bell.spins.load(Ordering::Relaxed);
    for _ in 0..budget {
        std::hint::spin_loop();
        if ready() {
            // Only the owner waits on its doorbell, so plain stores will do
            // (and only changes: ringers read this cache line).
            if budget < SPINS {
                w.bell.spins.store((budget * 2).min(SPINS), Ordering::Relaxed);
            }
            return Ok(());
        }
    }
    if budget > MIN_SPINS {
        w.bell.spins.store((budget / 2).max(MIN_SPINS), Ordering::Relaxed);
    }
    let start = Instant::now();
    let deadline = start + w.timeout;
    let mut yields = 0;
    loop {
        if ready() {
            return Ok(());
        }
        if w.abort.load(Ordering::Acquire) {
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
            if w.bell.sleep((deadline - now).min(NAP), &mut ready) {
                return Ok(());
            }
            if !(w.alive)() && !ready() {
                return Err(WaitError::PeerGone);
            }
        }
    }
}

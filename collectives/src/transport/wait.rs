//! Waiting without burning a core for long: spin, then yield, then sleep.
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
//!
//! The policy is measured in time, not in rounds: spin for [`SPIN`] (only
//! when every rank has a core of its own), then poll with `sched_yield`
//! until [`POLL`] has passed since the wait began, then sleep. A rank that
//! sleeps costs the rank that wakes it a futex wake, and itself the time the
//! kernel takes to run it again — in a virtual machine, where an idle vCPU
//! halts, tens to hundreds of microseconds. Polling longer than that wake-up
//! takes is what keeps small-message latency steady: if a short hiccup (the
//! peer's core taken for a moment) sends one rank to sleep, the other is
//! still polling when it comes back, instead of both ranks settling into
//! waking each other every call (a mode 50–200× slower than polling, which
//! an earlier budget that shrank after failed spins fell into and stayed
//! in). Yielding costs others nothing: a rank that shares its core (ranks
//! outnumber cores, or another program runs there) hands it over at every
//! look.
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How long a wait spins before it starts yielding, when every rank has a
/// core of its own (it yields at once when ranks outnumber cores).
pub const SPIN: Duration = Duration::from_micros(50);
/// How long a wait polls (spins, then yields) before it first sleeps: well
/// above the time a sleeping rank takes to run again (see the module docs).
pub const POLL: Duration = Duration::from_millis(2);
/// Spins between two looks at the clock.
const SPINS_PER_LOOK: u32 = 32;
/// Longest single sleep, so a waiting rank regularly checks on its peer.
const NAP: Duration = Duration::from_millis(50);

/// A rank's wake-up signal.
#[repr(C, align(128))]
pub struct Doorbell {
    epoch: AtomicU32,
    sleepers: AtomicU32,
    /// What only the owner writes, in a cache line of its own: ringers read
    /// the line above on every ring.
    own: Own,
}

#[repr(C, align(64))]
struct Own {
    /// 1 when the owner spins before yielding (ranks do not outnumber
    /// cores), else 0.
    spins: AtomicU32,
    /// 1 + the rank the owner waits for, once its wait has spun in vain; 0
    /// when it is not waiting (left as it was when a wait fails).
    waits_for: AtomicU32,
    /// When the owner last looked in that wait ([`now_us`]).
    pulse: AtomicU64,
    /// The call whose direct steps may be reading or writing other ranks'
    /// buffers right now; 0 when none ([`Doorbell::touch`]).
    touching: AtomicU64,
}

/// What a rank is doing, as its doorbell (or its transport) shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Waiting for this rank, and looking (it looked recently).
    Waiting(usize),
    /// Not waiting in a call: running (computing, or in the caller's code
    /// between calls), or stopped while it was not waiting.
    Busy,
    /// Its wait stopped looking: the process is stopped (or so starved of
    /// time that it is as good as stopped).
    Stopped,
    /// It does not answer a probe: stopped, or cut off (its link is down).
    Unanswered,
}

impl Activity {
    /// What a rank whose wait shows `state` ([`Doorbell::state`]) is doing.
    pub fn of(state: Option<(usize, Duration)>, fresh: Duration) -> Activity {
        match state {
            None => Activity::Busy,
            Some((peer, age)) if age <= fresh => Activity::Waiting(peer),
            Some(_) => Activity::Stopped,
        }
    }

    /// A probe's answer: `None` (no answer) is [`Activity::Unanswered`]. A
    /// rank that answers is running, so a wait of its that no longer looks
    /// is not a stopped rank but one held inside its transport (a send to a
    /// peer that takes nothing): it still waits for that peer.
    pub fn answered(answer: Option<Option<(usize, Duration)>>) -> Activity {
        match answer {
            None => Activity::Unanswered,
            Some(None) => Activity::Busy,
            Some(Some((peer, _))) => Activity::Waiting(peer),
        }
    }
}

/// Microseconds of `CLOCK_MONOTONIC`, comparable between the processes of a host.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the current time into `ts`, a valid
    // timespec that lives across the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

impl Doorbell {
    /// A doorbell for one of `ranks` threads that run at once on this
    /// machine. When they outnumber the cores, a waiting rank yields at once:
    /// the rank it waits for may need its core.
    pub fn new(ranks: usize) -> Doorbell {
        let own = Own {
            spins: AtomicU32::new(0),
            waits_for: AtomicU32::new(0),
            pulse: AtomicU64::new(0),
            touching: AtomicU64::new(0),
        };
        let d = Doorbell { epoch: AtomicU32::new(0), sleepers: AtomicU32::new(0), own };
        d.init(ranks);
        d
    }

    /// Sets the spin policy of a doorbell that lives in shared memory.
    pub fn init(&self, ranks: usize) {
        // The machine's cores, not this thread's mask: a rank bound to one
        // core (as launchers bind) still has a peer on each other core.
        self.own.spins.store(u32::from(ranks <= crate::affinity::online()), Ordering::Relaxed);
    }

    /// Shows that the owner's direct steps may touch other ranks' buffers
    /// in call `seq` from now on, then looks at `abort`: true when the
    /// group was aborted (the owner must not touch them then). The store
    /// and the look are ordered (a full fence) against a failing rank's
    /// abort and its look at this word ([`Doorbell::touching`], after a
    /// fence too), so at least one of the two sees the other's store: a
    /// rank that fails either sees this one touching and waits for it, or
    /// this one sees the abort and touches nothing.
    pub fn touch(&self, seq: u64, abort: &AtomicBool) -> bool {
        self.own.touching.store(seq, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        abort.load(Ordering::Relaxed)
    }

    /// The owner touches no other rank's buffers any more.
    pub fn untouch(&self) {
        self.own.touching.store(0, Ordering::Release);
    }

    /// The call whose direct steps the owner may be running on other
    /// ranks' buffers; 0 for none. Call after a fence that follows the
    /// abort (see [`Doorbell::touch`]).
    pub fn touching(&self) -> u64 {
        self.own.touching.load(Ordering::Acquire)
    }

    /// Wakes the owner if it sleeps or is about to (call after the change).
    pub fn ring(&self) {
        ring_all([self]);
    }

    /// True while the owner may be polling in a spin or yield loop: it is
    /// not asleep on this doorbell, and it spins at all (ranks do not
    /// outnumber cores, so it has a core to poll on).
    pub fn may_poll(&self) -> bool {
        self.sleepers.load(Ordering::SeqCst) == 0 && self.own.spins.load(Ordering::Relaxed) > 0
    }

    /// What the owner is doing: waiting for a rank and looking within
    /// `fresh`, waiting but silent for longer (stopped), or not waiting.
    pub fn activity(&self, fresh: Duration) -> Activity {
        Activity::of(self.state(), fresh)
    }

    /// The rank the owner waits for and how long ago its wait last looked;
    /// `None` when it is not waiting.
    pub fn state(&self) -> Option<(usize, Duration)> {
        match self.own.waits_for.load(Ordering::Acquire) {
            0 => None,
            w => {
                let age = now_us().saturating_sub(self.own.pulse.load(Ordering::Acquire));
                Some((w as usize - 1, Duration::from_micros(age)))
            }
        }
    }

    /// Shows that the owner waits for `peer` and looks now (`now`: [`now_us`]).
    fn look(&self, peer: usize, now: u64) {
        self.own.pulse.store(now, Ordering::Relaxed);
        self.own.waits_for.store(peer as u32 + 1, Ordering::Release);
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
    /// The rank waited for (for [`Doorbell::activity`]).
    pub peer: &'a dyn Fn() -> usize,
    /// Checked whenever the wait wakes from a sleep: false when the peer
    /// waited for can no longer answer.
    pub alive: &'a dyn Fn() -> bool,
}

/// Waits until `ready()` holds, the group aborts, the peer dies or the
/// timeout passes without `ready()`: spins, yields, sleeps (see the module
/// docs). The caller has looked once already and found `ready()` false.
#[inline(never)]
pub fn wait_until(w: &Watch<'_>, mut ready: impl FnMut() -> bool) -> Result<(), WaitError> {
    // One clock for the deadlines and the pulse: microseconds of CLOCK_MONOTONIC.
    let start = now_us();
    if w.bell.own.spins.load(Ordering::Relaxed) > 0 {
        let until = start + SPIN.as_micros() as u64;
        loop {
            for _ in 0..SPINS_PER_LOOK {
                std::hint::spin_loop();
                if ready() {
                    return Ok(());
                }
            }
            if now_us() >= until {
                break;
            }
        }
    }
    let poll_until = start + POLL.as_micros() as u64;
    let deadline = start.saturating_add(w.timeout.as_micros().min(u128::from(u64::MAX)) as u64);
    let result = loop {
        let now = now_us();
        w.bell.look((w.peer)(), now);
        if ready() {
            break Ok(());
        }
        if w.abort.load(Ordering::Acquire) {
            return Err(WaitError::Aborted);
        }
        if now >= deadline {
            return Err(WaitError::Timeout(Duration::from_micros(now - start)));
        }
        if now < poll_until {
            std::thread::yield_now();
        } else {
            if w.bell.sleep(Duration::from_micros(deadline - now).min(NAP), &mut ready) {
                break Ok(());
            }
            if !(w.alive)() && !ready() {
                return Err(WaitError::PeerGone);
            }
        }
    };
    w.bell.own.waits_for.store(0, Ordering::Release);
    result
}

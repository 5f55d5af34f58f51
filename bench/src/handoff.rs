//! The core-to-core handoff: how long one cache line written on one core
//! takes to be seen on another — the least any exchange between two ranks
//! on different cores costs, so the floor of a small collective the way
//! memory bandwidth is the floor of a large one.
//!
//! Two threads ping-pong a counter through two cache lines: each waits
//! (spinning, with the CPU's pause hint, as the transports' waits do) until
//! the other's line shows the next value, then writes its own. A round trip
//! is two handoffs. Batches of round trips repeat for a time budget and the
//! best batch counts, so a burst of other load spoils a batch, not the
//! figure. Needs two cores; on machines that move their cores' placement
//! (virtual machines), the figure holds for this moment only, which is why
//! the perf tool measures it in the same run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Round trips per batch.
const BATCH: u64 = 2000;

#[repr(align(128))]
struct Line(AtomicU64);

/// The one-way handoff time in seconds (best batch within `budget`), or
/// `None` with fewer than two cores (the two threads would take turns on
/// one core and measure the scheduler).
pub fn measure(budget: Duration) -> Option<f64> {
    // On the whole machine, also from a rank a launcher bound to one core.
    oxccl::affinity::unbound(|| {
        let cores = oxccl::affinity::allowed().map_or(1, |cpus| cpus.len());
        (cores >= 2).then(|| ping_pong(budget))
    })
}

fn ping_pong(budget: Duration) -> f64 {
    let (ping, pong) = (Line(AtomicU64::new(0)), Line(AtomicU64::new(0)));
    let wait = |line: &Line, value: u64| {
        while line.0.load(Ordering::Acquire) < value {
            std::hint::spin_loop();
        }
    };
    let batches = (budget.as_secs_f64() / 1e-3).max(3.0) as u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            for v in 1..=batches * BATCH {
                wait(&ping, v);
                pong.0.store(v, Ordering::Release);
            }
        });
        let mut best = f64::INFINITY;
        let deadline = Instant::now() + budget;
        let mut v = 0;
        for _ in 0..batches {
            let t = Instant::now();
            for _ in 0..BATCH {
                v += 1;
                ping.0.store(v, Ordering::Release);
                wait(&pong, v);
            }
            best = best.min(t.elapsed().as_secs_f64() / BATCH as f64 / 2.0);
            if Instant::now() >= deadline {
                // The other thread still expects the remaining values.
                ping.0.store(batches * BATCH, Ordering::Release);
                break;
            }
        }
        best
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_something_plausible() {
        match measure(Duration::from_millis(20)) {
            // From a few nanoseconds (one core complex) to far less than a
            // millisecond, whatever the machine.
            Some(s) => assert!(s > 1e-9 && s < 1e-3, "{s} s"),
            None => assert_eq!(oxccl::affinity::online(), 1, "cores to measure on, but no figure"),
        }
    }
}

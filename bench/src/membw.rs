//! The machine's streaming memory bandwidth: the physical floor of a
//! collective whose ranks share one memory.
//!
//! Four kernels run over buffers far larger than the caches, split in one
//! contiguous part per core:
//!
//! * **read**: a read-only pass (a sum of `u64`s);
//! * **copy**: `c[i] = a[i]`;
//! * **add**: `c[i] = a[i] + b[i]`;
//! * **update**: `c[i] += a[i]`, in place, the pattern of a reduction into
//!   its output. A store to a line just read needs no extra read for
//!   ownership, so this kernel moves the most counted bytes per second on
//!   most machines. It is reported but not part of the floor, which is
//!   defined as the best of the first three: in-place collectives, whose
//!   writes land on lines they have just read, can therefore exceed 100%.
//!
//! Each counts the bytes it reads plus the bytes it writes (not the hidden
//! write-allocate reads of copy and add). The kernels run round-robin until
//! every one has run a few times and a time budget is spent, keeping each
//! kernel's best time, so a burst of load from other processes spoils one
//! repetition rather than one kernel. The buffers are allocated once and
//! written before timing, so page faults stay out of the measurement.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Bandwidths in GB/s (1e9 bytes per second, reads plus writes).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MemBw {
    /// Read-only pass.
    pub read: f64,
    /// Copy: one read and one write per byte copied.
    pub copy: f64,
    /// Two-input add: two reads and one write per element.
    pub add: f64,
    /// In-place accumulate: two reads and one write per element.
    pub update: f64,
    /// Threads used.
    pub threads: usize,
    /// Bytes of each buffer.
    pub buffer_bytes: usize,
}

impl MemBw {
    /// The floor's bandwidth: the best of read, copy and add (not update,
    /// see the module docs).
    pub fn best(&self) -> f64 {
        self.read.max(self.copy).max(self.add)
    }
}

/// Buffer size of [`measure`]: far beyond any cache here.
pub const DEFAULT_BUFFER_BYTES: usize = 256 << 20;
/// Minimum repetitions of each kernel in [`measure`].
pub const DEFAULT_REPS: usize = 3;
/// Time [`measure`] keeps repeating the kernels for (besides the set-up).
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(600);

/// Measures with [`DEFAULT_BUFFER_BYTES`] buffers on every core of the
/// machine, also from a rank a launcher bound to one core (about a second,
/// a third of it writing the buffers once).
pub fn measure() -> MemBw {
    oxccl::affinity::unbound(|| {
        let threads = oxccl::affinity::allowed().map_or(1, |cpus| cpus.len().max(1));
        measure_with(DEFAULT_BUFFER_BYTES, threads, DEFAULT_REPS, DEFAULT_BUDGET)
    })
}

/// Measures with three buffers of `buffer_bytes` each and `threads` threads,
/// running every kernel at least `reps` times and until `budget` is spent.
pub fn measure_with(buffer_bytes: usize, threads: usize, reps: usize, budget: Duration) -> MemBw {
    let threads = threads.max(1);
    let n = (buffer_bytes / 8).max(threads);
    let bytes = (n * 8) as f64;
    // Zeroed allocations are mapped lazily; writing non-zero values from every
    // thread faults the pages in, in parallel, before anything is timed.
    let mut a: Vec<u64> = vec![0; n];
    let mut b: Vec<u64> = vec![0; n];
    let mut c: Vec<u64> = vec![0; n];
    for (buf, seed) in [(&mut a, 1), (&mut b, 3), (&mut c, 7)] {
        let part = n.div_ceil(threads);
        std::thread::scope(|s| {
            for (i, chunk) in buf.chunks_mut(part).enumerate() {
                s.spawn(move || {
                    let base = (i * part) as u64;
                    for (j, x) in chunk.iter_mut().enumerate() {
                        *x = (base + j as u64).wrapping_mul(seed) | 1;
                    }
                });
            }
        });
    }
    let (a, b) = (&a[..], &b[..]);

    // Best seconds of read, copy, add, update.
    let mut best = [f64::INFINITY; 4];
    let start = Instant::now();
    let mut round = 0;
    while round < reps.max(1) || start.elapsed() < budget {
        round += 1;
        best[0] = best[0].min(timed(|| {
            let sums = parallel_map(threads, a, |part| part.iter().fold(0u64, |s, &x| s.wrapping_add(x)));
            black_box(sums);
        }));
        best[1] = best[1].min(timed(|| {
            parallel_zip(threads, &mut c, a, a, |dst, src, _| dst.copy_from_slice(src));
            black_box(&mut c);
        }));
        best[2] = best[2].min(timed(|| {
            parallel_zip(threads, &mut c, a, b, |dst, x, y| {
                for ((d, &x), &y) in dst.iter_mut().zip(x).zip(y) {
                    *d = x.wrapping_add(y);
                }
            });
            black_box(&mut c);
        }));
        best[3] = best[3].min(timed(|| {
            parallel_zip(threads, &mut c, a, a, |dst, x, _| {
                for (d, &x) in dst.iter_mut().zip(x) {
                    *d = d.wrapping_add(x);
                }
            });
            black_box(&mut c);
        }));
    }
    MemBw {
        read: bytes / best[0] / 1e9,
        copy: 2.0 * bytes / best[1] / 1e9,
        add: 3.0 * bytes / best[2] / 1e9,
        update: 3.0 * bytes / best[3] / 1e9,
        threads,
        buffer_bytes: n * 8,
    }
}

/// Seconds `f` takes (at least a nanosecond).
fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64().max(1e-9)
}

/// Runs `f` on `threads` contiguous parts of `data` in parallel.
fn parallel_map<R: Send>(threads: usize, data: &[u64], f: impl Fn(&[u64]) -> R + Sync) -> Vec<R> {
    let part = data.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = data.chunks(part).map(|p| s.spawn(|| f(p))).collect();
        handles.into_iter().map(|h| h.join().expect("membw thread")).collect()
    })
}

/// Runs `f(dst part, x part, y part)` on `threads` contiguous parts.
fn parallel_zip(threads: usize, dst: &mut [u64], x: &[u64], y: &[u64], f: impl Fn(&mut [u64], &[u64], &[u64]) + Sync) {
    let part = dst.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for ((d, x), y) in dst.chunks_mut(part).zip(x.chunks(part)).zip(y.chunks(part)) {
            s.spawn(move || f(d, x, y));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_something_plausible() {
        let bw = measure_with(8 << 20, 2, 2, Duration::ZERO);
        for v in [bw.read, bw.copy, bw.add, bw.update] {
            assert!(v.is_finite() && v > 0.1 && v < 10_000.0, "{bw:?}");
        }
        assert_eq!(bw.best(), bw.read.max(bw.copy).max(bw.add));
        assert_eq!(bw.threads, 2);
        assert_eq!(bw.buffer_bytes, 8 << 20);
    }

    #[test]
    fn tiny_buffers_and_many_threads() {
        let bw = measure_with(8, 4, 1, Duration::ZERO);
        assert!(bw.best() > 0.0);
        assert_eq!(bw.buffer_bytes, 32);
    }

    #[test]
    fn keeps_going_for_the_budget() {
        let t = Instant::now();
        let bw = measure_with(1 << 20, 1, 1, Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(bw.best() > 0.0);
    }
}

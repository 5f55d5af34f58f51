//! Latency and bandwidth of the TCP transport over loopback, ranks as
//! threads of this process, each with its own `TcpTransport` (2 streams per
//! peer, 128 KiB slices, the auto rule):
//!
//! - latency: an 8-byte f32 all-reduce on 2 ranks, called in a loop: mean,
//!   median and 99th percentile per call;
//! - bandwidth: a 64 MiB f32 all-reduce in place on 2 and 4 ranks: time per
//!   call (the slowest rank's), algbw and busbw (nccl-tests' definitions).
//!
//! It prints what it measures and asserts nothing about speed; results are
//! checked, so a wrong answer fails the run. Correctness of the same calls
//! is tested by `repeated_small_and_large_all_reduces` in
//! `collectives/tests/tcp.rs`.
//!
//! Run: `cargo bench -p oxccl-bench --bench tcp_loopback` (smoke, a few
//! calls of each: `-- --test`).

use std::time::{Duration, Instant};

use oxccl::transport::tcp::{TcpConfig, TcpTransport};
use oxccl::{Communicator, Config, ReduceOp};
use oxccl_testkit::{communicators, on_ranks};

/// `n` communicators over a fresh loopback TCP group.
fn group(n: usize) -> Vec<Communicator> {
    let config =
        Config { timeout: Duration::from_secs(60), slice_bytes: 128 << 10, algorithm: None, ..Config::default() };
    let tcp = TcpConfig { streams: 2, ..TcpConfig::new(&config) };
    let ts = TcpTransport::loopback_group(n, &tcp).expect("tcp group");
    communicators(&ts, &config)
}

/// Per-call times of `iters` 8-byte all-reduces on each rank, after `warm` unmeasured ones.
fn latency(comms: &mut Vec<Communicator>, warm: usize, iters: usize) -> Vec<(Duration, Vec<Duration>)> {
    let n = comms.len() as f32;
    on_ranks(comms, |c| {
        let mut v = [c.rank() as f32 + 1.0, 1.0];
        for _ in 0..warm {
            c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        }
        c.barrier().unwrap();
        let mut times = Vec::with_capacity(iters);
        let start = Instant::now();
        for _ in 0..iters {
            let t = Instant::now();
            let mut w = [c.rank() as f32 + 1.0, 1.0];
            c.all_reduce_in_place(&mut w, ReduceOp::Sum).unwrap();
            times.push(t.elapsed());
            assert_eq!(w, [n * (n + 1.0) / 2.0, n]);
        }
        (start.elapsed(), times)
    })
}

/// Seconds per in-place all-reduce of `count` f32 (the slowest rank's mean
/// over `reps`, after one unmeasured call).
fn bandwidth(comms: &mut Vec<Communicator>, count: usize, reps: u32) -> f64 {
    let n = comms.len();
    let times = on_ranks(comms, |c| {
        let mut v = vec![1f32; count];
        c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        c.barrier().unwrap();
        let start = Instant::now();
        for _ in 0..reps {
            c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        }
        let t = start.elapsed() / reps;
        assert!(v.iter().all(|&x| x == (n as f32).powi(reps as i32 + 1)));
        t
    });
    times.iter().max().expect("ranks").as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `-- --test` asks for a smoke run.
    let smoke = std::env::args().any(|a| a == "--test");
    let (warm, iters, bytes, reps) = if smoke { (10, 50, 1usize << 20, 1) } else { (200, 2000, 64usize << 20, 3) };

    let mut comms = group(2);
    let lat = latency(&mut comms, warm, iters);
    let (total, mut times) = lat.into_iter().next().expect("rank 0");
    times.sort();
    let mean = total / iters as u32;
    let (median, p99) = (times[iters / 2], times[iters * 99 / 100]);
    println!("tcp loopback 8-byte f32 all_reduce, 2 ranks, {iters} calls: mean {mean:?}, median {median:?}, p99 {p99:?} per call");

    for n in [2, 4] {
        let mut comms = if n == 2 { std::mem::take(&mut comms) } else { group(n) };
        let t = bandwidth(&mut comms, bytes / 4, reps);
        let algbw = bytes as f64 / t / 1e9;
        let busbw = algbw * 2.0 * (n - 1) as f64 / n as f64;
        println!(
            "tcp loopback {} MiB f32 all_reduce, {n} ranks, 2 streams: {:.1} ms, algbw {algbw:.2} GB/s, busbw {busbw:.2} GB/s",
            bytes >> 20,
            t * 1e3
        );
    }
}

//! All-reduce on in-process ranks: the smallest complete use of oxccl.
//!
//! `cargo run --release -p oxccl --example allreduce -- [ranks] [elements] [algo] [iters]`

use std::time::Instant;

use oxccl::{Algorithm, Communicator, ReduceOp};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ranks: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let count: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let algo: Option<Algorithm> = args.get(3).and_then(|s| s.parse().ok());
    let iters: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut comms = Communicator::local_group(ranks).expect("group");
    for c in &mut comms {
        c.set_algorithm(algo);
    }
    let times: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let send = vec![c.rank() as f32 + 1.0; count];
                    let mut recv = vec![0f32; count];
                    c.all_reduce(&send, &mut recv, ReduceOp::Sum).expect("warm-up");
                    c.barrier().expect("barrier");
                    let t = Instant::now();
                    for _ in 0..iters {
                        c.all_reduce(&send, &mut recv, ReduceOp::Sum).expect("all_reduce");
                    }
                    let dt = t.elapsed().as_secs_f64() / iters as f64;
                    let want = (ranks * (ranks + 1) / 2) as f32;
                    assert!(recv.iter().all(|&v| v == want), "wrong result");
                    dt
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("rank")).collect()
    });
    let t = times.iter().cloned().fold(0.0, f64::max);
    let bytes = (count * 4) as f64;
    let busbw = bytes / t * 2.0 * (ranks - 1) as f64 / ranks as f64 / 1e9;
    println!(
        "ranks {ranks} count {count} algo {} : {:.2} us  busbw {busbw:.2} GB/s  floor-bytes/s {:.2} GB/s",
        algo.map_or("auto", |a| a.name()),
        t * 1e6,
        2.0 * ranks as f64 * bytes / t / 1e9
    );
}

//! All-reduce across processes started by a launcher (`oxccl run -n 4 --
//! target/release/examples/processes`, or mpirun, or torchrun-style
//! variables): shared memory on one host, TCP across hosts.
//!
//! `processes [elements] [iters]`; `OXCCL_TRANSPORT=shm|tcp` forces a transport.

use std::time::Instant;

use oxccl::{Communicator, Config, ReduceOp};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let comm = match Communicator::init(Config::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("init failed: {e}");
            std::process::exit(1);
        }
    };
    let (rank, world) = (comm.rank(), comm.world());
    let mut buf = comm.alloc_shared::<f32>(count).expect("buffer");
    let run = |buf: &mut [f32]| {
        buf.fill(rank as f32 + 1.0);
        comm.all_reduce_in_place(buf, ReduceOp::Sum).expect("all_reduce");
    };
    run(&mut buf);
    comm.barrier().expect("barrier");
    let t = Instant::now();
    for _ in 0..iters {
        run(&mut buf);
    }
    let dt = t.elapsed().as_secs_f64() / iters as f64;
    let want = (world * (world + 1) / 2) as f32;
    assert!(buf.iter().all(|&v| v == want), "rank {rank}: wrong result");
    if rank == 0 {
        let busbw = (count * 4) as f64 / dt * 2.0 * (world - 1) as f64 / world as f64 / 1e9;
        println!("{world} processes, {count} floats: {:.2} us, busbw {busbw:.2} GB/s", dt * 1e6);
    }
}

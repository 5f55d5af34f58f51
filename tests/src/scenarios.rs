//! What a rank process does once its communicator is up.
//!
//! [`collectives`] runs the test kit's grid ([`grid`]: every collective ×
//! every algorithm the transport allows × counts [`COUNTS`] × in and out of
//! place, as f32 sum and i32 max), the same body the in-process suites run
//! on every rank: each call's inputs come from a seed derived from the
//! call, so every rank computes every rank's input, and checks its own
//! output against the sequential reference without seeing the others'
//! data. On shared memory the buffers come both from the heap and from the
//! communicator's shared pool (`alloc_shared`), and the direct algorithm
//! runs on pool buffers only; over TCP the direct algorithm must be refused
//! without harming the communicator.
//!
//! The loops ([`Loop`]) all-reduce 1 MiB of f32 over and over, checking the
//! result, with the algorithm and buffers [`LoopOptions`] ask for, and print
//! `rank R ready` after the first call; a failing call
//! ends the process with `rank R error: <error>` and exit status
//! [`EXIT_LOOP_ERROR`](crate::EXIT_LOOP_ERROR).

use std::io::Write;
use std::time::{Duration, Instant};

use oxccl::{Algorithm, Bytes, Call, Collective, Communicator, DType, ReduceOp};
use oxccl_testkit::call::Mem;
use oxccl_testkit::checks::direct_is_refused;
use oxccl_testkit::grid::{Buffers, Grid};

/// Per-rank counts of the collectives matrix.
pub const COUNTS: [usize; 5] = [0, 1, 7, 1001, 100_003];

/// Elements all-reduced by each loop iteration (1 MiB of f32).
pub const LOOP_ELEMENTS: usize = (1 << 20) / 4;

/// Prints one line of the protocol and flushes it at once (the tests read
/// the lines as they come, and a rank may be killed right after).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the test is gone) leaves nothing to report to.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// True when the communicator's transport shares memory between the ranks
/// (shm), judged by the auto rule: it picks the direct algorithm for
/// shareable buffers exactly when the transport shares memory.
pub fn shares_memory(comm: &Communicator) -> bool {
    let call = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: 1,
        root: 0,
        algorithm: None,
    };
    comm.algorithm_for(&call, true) == Algorithm::Direct
}

/// The collectives matrix, in the order every rank runs it: ring, tree,
/// halving-doubling and the auto rule (and direct over shared memory, on
/// pool buffers), each on heap buffers (and pool buffers over shared
/// memory), f32 sum and i32 max, every collective × [`COUNTS`] × placement.
pub fn grid(shm: bool) -> Grid {
    let mut algos: Vec<Option<Algorithm>> =
        vec![Some(Algorithm::Ring), Some(Algorithm::Tree), Some(Algorithm::HalvingDoubling), None];
    if shm {
        algos.push(Some(Algorithm::Direct));
    }
    let mut grid = Grid::new();
    for algo in algos {
        let buffers: &[Buffers] = match (shm, algo) {
            (true, Some(Algorithm::Direct)) => &[Buffers::Shared],
            (true, _) => &[Buffers::Heap, Buffers::Shared],
            (false, _) => &[Buffers::Heap],
        };
        for &b in buffers {
            grid = grid.every_collective(algo, DType::F32, ReduceOp::Sum, &COUNTS, b).every_collective(
                algo,
                DType::I32,
                ReduceOp::Max,
                &COUNTS,
                b,
            );
        }
    }
    grid
}

/// The collectives scenario; returns the process's exit status.
pub fn collectives(comm: &Communicator) -> i32 {
    let r = comm.rank();
    let shm = shares_memory(comm);
    let began = Instant::now();
    let mut wrong = Vec::new();
    if !shm {
        wrong.extend(direct_is_refused(comm).err());
    }
    end(r, grid(shm).run_rank(comm), wrong, began, "calls")
}

/// How a grid scenario ends on rank `r`: every wrong result of `report`
/// and of the checks before it (`wrong`) on a line of its own, then
/// `rank R error: ...` or `rank R ok (N <what> in T s)`; the exit status.
pub fn end(r: usize, report: oxccl_testkit::RankReport, mut wrong: Vec<String>, began: Instant, what: &str) -> i32 {
    wrong.extend(report.wrong);
    for w in &wrong {
        say(&format!("rank {r} wrong: {w}"));
    }
    if let Some(e) = report.error {
        say(&format!("rank {r} error: {e}"));
        return crate::EXIT_WRONG;
    }
    if !wrong.is_empty() {
        return crate::EXIT_WRONG;
    }
    say(&format!("rank {r} ok ({} {what} in {:.1} s)", report.calls, began.elapsed().as_secs_f64()));
    0
}

/// The barrier scenario: one barrier; returns the process's exit status.
pub fn barrier(comm: &Communicator) -> i32 {
    let r = comm.rank();
    match comm.barrier() {
        Ok(()) => {
            say(&format!("rank {r} ok (barrier)"));
            0
        }
        Err(e) => {
            say(&format!("rank {r} error: {e}"));
            crate::EXIT_WRONG
        }
    }
}

/// The failure-provoking loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loop {
    /// Every rank loops.
    Plain,
    /// Rank 1 stops answering after the first all-reduce (sleeps an hour).
    Wedge,
    /// Rank 0 aborts the group after the first all-reduce.
    Abort,
}

/// How a loop's all-reduce is run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopOptions {
    /// Buffers from `alloc_shared` (the direct algorithm needs them across
    /// processes), else from the heap.
    pub shared: bool,
    /// The algorithm every call names; `None`: the auto rule.
    pub algorithm: Option<Algorithm>,
}

/// The reason rank 0 gives in the abort scenario.
pub const ABORT_REASON: &str = "rank 0 aborts on purpose (abort scenario)";

/// Runs a loop scenario; returns only when this rank's part ends without
/// error (the aborting rank); errors end the process.
pub fn looping(comm: &Communicator, kind: Loop, opts: LoopOptions) -> i32 {
    let (r, n) = (comm.rank(), comm.world());
    let die = |what: String, code: i32| -> ! {
        say(&format!("rank {r} error: {what}"));
        std::process::exit(code)
    };
    let shared = opts.shared;
    let send = Mem::new(comm, LOOP_ELEMENTS, shared, (r + 1) as f32).unwrap_or_else(|e| die(e.to_string(), 1));
    let mut recv = Mem::new(comm, LOOP_ELEMENTS, shared, 0f32).unwrap_or_else(|e| die(e.to_string(), 1));
    let want = (n * (n + 1) / 2) as f32;
    let call = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: LOOP_ELEMENTS,
        root: 0,
        algorithm: opts.algorithm,
    };
    for i in 0u64.. {
        recv.fill(0.0);
        let bytes =
            Bytes::OutOfPlace { send: bytemuck::cast_slice(&send[..]), recv: bytemuck::cast_slice_mut(&mut recv[..]) };
        if let Err(e) = comm.run(&call, bytes) {
            die(e.to_string(), crate::EXIT_LOOP_ERROR);
        }
        let last = LOOP_ELEMENTS - 1;
        if recv[0] != want || recv[last] != want || recv[last / 2] != want {
            die(format!("iteration {i}: wrong sum {} / {} (want {want})", recv[0], recv[last]), crate::EXIT_WRONG);
        }
        // The input must survive.
        if send[0] != (r + 1) as f32 {
            die(format!("iteration {i}: input changed"), crate::EXIT_WRONG);
        }
        if i == 0 {
            say(&format!("rank {r} ready"));
            match (kind, r) {
                (Loop::Wedge, 1) => {
                    say(&format!("rank {r} wedging"));
                    std::thread::sleep(Duration::from_secs(3600));
                }
                (Loop::Abort, 0) => {
                    say(&format!("rank {r} aborting"));
                    comm.abort(ABORT_REASON);
                    say(&format!("rank {r} aborted"));
                    return 0;
                }
                _ => {}
            }
        }
    }
    unreachable!("the loop ends only by exiting")
}

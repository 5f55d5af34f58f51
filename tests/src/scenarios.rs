//! What a rank process does once its communicator is up.
//!
//! [`collectives`] runs every collective × every algorithm the transport
//! allows × counts [`COUNTS`] × in and out of place, as f32 sum and i32 max,
//! and compares every output element with a value computed in closed form
//! from the ranks' inputs (each input element is a formula of its rank and
//! index, so no rank needs another's data to know the answer). On shared
//! memory the buffers come both from the heap and from the communicator's
//! shared pool (`alloc_shared`), and the direct algorithm runs on pool
//! buffers only; over TCP the direct algorithm must be refused without
//! harming the communicator.
//!
//! The loops ([`Loop`]) all-reduce 1 MiB of f32 over and over, checking the
//! result, with the algorithm and buffers [`LoopOptions`] ask for, and print
//! `rank R ready` after the first call; a failing call
//! ends the process with `rank R error: <error>` and exit status
//! [`EXIT_LOOP_ERROR`](crate::EXIT_LOOP_ERROR).

use std::fmt::Debug;
use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use oxccl::{Algorithm, Bytes, Call, Collective, Communicator, DType, Element, Error, ReduceOp, SharedBuf};

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

/// An element type and the reduction it is checked with.
pub trait Case: Element + Copy + PartialEq + Debug {
    const OP: ReduceOp;
    /// What output buffers hold before a call; no result can equal it.
    const POISON: Self;
    /// Element `i` of rank `rank`'s input.
    fn input(rank: usize, i: usize) -> Self;
    fn combine(a: Self, b: Self) -> Self;

    /// The reduction of element `i` over ranks `0..world`.
    fn reduced(world: usize, i: usize) -> Self {
        (1..world).fold(Self::input(0, i), |acc, p| Self::combine(acc, Self::input(p, i)))
    }
}

impl Case for f32 {
    const OP: ReduceOp = ReduceOp::Sum;
    const POISON: f32 = -12345.5;
    /// Multiples of 1/4 in [-11, 12): sums of a few are exact in any order.
    fn input(rank: usize, i: usize) -> f32 {
        ((rank * 7 + i * 3) % 23) as f32 - 11.0 + 0.25 * ((i + 2 * rank) % 4) as f32
    }
    fn combine(a: f32, b: f32) -> f32 {
        a + b
    }
}

impl Case for i32 {
    const OP: ReduceOp = ReduceOp::Max;
    const POISON: i32 = i32::MIN + 7;
    /// In [-1001, 1001], mostly negative for some ranks and positive for
    /// others, so the maximum comes from different ranks at different indices.
    fn input(rank: usize, i: usize) -> i32 {
        ((i * 7919 + rank * 104_729) % 2003) as i32 - 1001
    }
    fn combine(a: i32, b: i32) -> i32 {
        a.max(b)
    }
}

/// A buffer from the heap or from the communicator's shared pool.
pub enum Mem<T: Element> {
    Heap(Vec<T>),
    Shared(SharedBuf<T>),
}

impl<T: Element> Mem<T> {
    /// `len` elements, all `fill`.
    pub fn new(comm: &Communicator, len: usize, shared: bool, fill: T) -> Result<Mem<T>, Error> {
        if shared {
            let mut b = comm.alloc_shared::<T>(len)?;
            b.fill(fill);
            Ok(Mem::Shared(b))
        } else {
            Ok(Mem::Heap(vec![fill; len]))
        }
    }
}

impl<T: Element> Deref for Mem<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Mem::Heap(v) => v,
            Mem::Shared(b) => b,
        }
    }
}

impl<T: Element> DerefMut for Mem<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Mem::Heap(v) => v,
            Mem::Shared(b) => b,
        }
    }
}

/// The output rank `rank` must hold after `coll` (count per rank `count`,
/// root `root`) on `world` ranks whose inputs are [`Case::input`].
pub fn expected<T: Case>(
    coll: Collective,
    world: usize,
    rank: usize,
    count: usize,
    root: usize,
    in_place: bool,
) -> Vec<T> {
    let len = coll.output_len(world, count);
    (0..len)
        .map(|j| match coll {
            Collective::AllReduce => T::reduced(world, j),
            Collective::ReduceScatter => T::reduced(world, rank * count + j),
            Collective::AllGather => T::input(j / count, j % count),
            Collective::Broadcast => T::input(root, j),
            Collective::Reduce if rank == root => T::reduced(world, j),
            // Other ranks' output is left alone: in place it is their input.
            Collective::Reduce if in_place => T::input(rank, j),
            Collective::Reduce => T::POISON,
            Collective::AllToAll => T::input(j / count, rank * count + j % count),
            Collective::Barrier => unreachable!("a barrier has no output"),
        })
        .collect()
}

/// How one cell of the matrix is run.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub coll: Collective,
    /// `None`: the auto rule.
    pub algo: Option<Algorithm>,
    pub count: usize,
    pub in_place: bool,
    /// Buffers from `alloc_shared`.
    pub shared: bool,
}

impl Cell {
    fn label<T: Case>(&self, world: usize) -> String {
        format!(
            "{} algo={} {} {} world={world} count={} {} {}",
            self.coll,
            self.algo.map_or("auto", |a| a.name()),
            T::DTYPE,
            T::OP,
            self.count,
            if self.in_place { "in-place" } else { "out-of-place" },
            if self.shared { "alloc_shared" } else { "heap" },
        )
    }
}

/// Describes how `got` differs from `want` (None when equal).
pub fn difference<T: Case>(got: &[T], want: &[T]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} elements, expected {}", got.len(), want.len()));
    }
    let bad: Vec<usize> = (0..got.len()).filter(|&j| got[j] != want[j]).collect();
    let &first = bad.first()?;
    Some(format!(
        "{} of {} elements wrong; first at [{first}]: got {:?}, want {:?}",
        bad.len(),
        got.len(),
        got[first],
        want[first]
    ))
}

/// Runs one cell on this rank and checks its output (and, out of place,
/// that the input is unchanged). `Err` is a failed call (the group is then
/// aborted); wrong data is pushed to `wrong`.
pub fn run_cell<T: Case>(comm: &Communicator, cell: Cell, wrong: &mut Vec<String>) -> Result<(), String> {
    let (n, r, count, coll) = (comm.world(), comm.rank(), cell.count, cell.coll);
    let label = cell.label::<T>(n);
    let fail = |e: Error| format!("{label}: {e}");
    let root = if coll.rooted() { (count + 1) % n } else { 0 };
    let call = Call { collective: coll, dtype: T::DTYPE, op: T::OP, count, root, algorithm: cell.algo };
    if coll == Collective::Barrier {
        // No data, but an empty buffer of the element type (an empty byte
        // slice is not aligned for it).
        let mut none: [T; 0] = [];
        return comm.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(&mut none))).map_err(fail);
    }
    let (il, ol) = (coll.input_len(n, count), coll.output_len(n, count));
    let input: Vec<T> = (0..il).map(|i| T::input(r, i)).collect();
    let got: Vec<T> = if cell.in_place {
        let mut buf = Mem::new(comm, coll.in_place_len(n, count), cell.shared, T::POISON).map_err(fail)?;
        let (io, oo) = coll.in_place_offsets(r, count);
        buf[io..io + il].copy_from_slice(&input);
        comm.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(&mut buf[..]))).map_err(fail)?;
        buf[oo..oo + ol].to_vec()
    } else {
        let mut send = Mem::new(comm, il, cell.shared, T::POISON).map_err(fail)?;
        send.copy_from_slice(&input);
        let mut recv = Mem::new(comm, ol, cell.shared, T::POISON).map_err(fail)?;
        comm.run(
            &call,
            Bytes::OutOfPlace { send: bytemuck::cast_slice(&send[..]), recv: bytemuck::cast_slice_mut(&mut recv[..]) },
        )
        .map_err(fail)?;
        if let Some(d) = difference(&send, &input) {
            wrong.push(format!("{label}: input changed: {d}"));
        }
        recv.to_vec()
    };
    let want = expected::<T>(coll, n, r, count, root, cell.in_place);
    if let Some(d) = difference(&got, &want) {
        wrong.push(format!("{label}: {d}"));
    }
    Ok(())
}

/// The cells of the matrix for one element type, in the order every rank runs them.
pub fn cells(shm: bool) -> Vec<Cell> {
    let mut algos: Vec<Option<Algorithm>> =
        vec![Some(Algorithm::Ring), Some(Algorithm::Tree), Some(Algorithm::HalvingDoubling), None];
    if shm {
        algos.push(Some(Algorithm::Direct));
    }
    let mut out = Vec::new();
    for algo in algos {
        let mems: &[bool] = match (shm, algo) {
            (true, Some(Algorithm::Direct)) => &[true],
            (true, _) => &[false, true],
            (false, _) => &[false],
        };
        for &shared in mems {
            out.push(Cell { coll: Collective::Barrier, algo, count: 0, in_place: true, shared });
            for coll in Collective::ALL.into_iter().filter(|&c| c != Collective::Barrier) {
                for count in COUNTS {
                    for in_place in [false, true] {
                        out.push(Cell { coll, algo, count, in_place, shared });
                    }
                }
            }
        }
    }
    out
}

/// Over a transport without shared memory, a call naming the direct
/// algorithm must fail with [`Error::NeedsSharedMemory`] and leave the
/// communicator usable (it is checked before anything moves).
fn direct_is_refused(comm: &Communicator, wrong: &mut Vec<String>) {
    let mut buf = vec![1f32; 16];
    let call = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: 16,
        root: 0,
        algorithm: Some(Algorithm::Direct),
    };
    match comm.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(&mut buf))) {
        Err(Error::NeedsSharedMemory { .. }) => {}
        other => wrong.push(format!("direct without shared memory: expected NeedsSharedMemory, got {other:?}")),
    }
}

/// The collectives scenario; returns the process's exit status.
pub fn collectives(comm: &Communicator) -> i32 {
    let r = comm.rank();
    let shm = shares_memory(comm);
    let began = Instant::now();
    let mut wrong = Vec::new();
    if !shm {
        direct_is_refused(comm, &mut wrong);
    }
    let mut calls = 0usize;
    let mut failed = None;
    'all: for pass in 0..2 {
        for cell in cells(shm) {
            // The barrier has no data: once is enough.
            if pass == 1 && cell.coll == Collective::Barrier {
                continue;
            }
            let result = if pass == 0 {
                run_cell::<f32>(comm, cell, &mut wrong)
            } else {
                run_cell::<i32>(comm, cell, &mut wrong)
            };
            calls += 1;
            if let Err(e) = result {
                failed = Some(e);
                break 'all;
            }
        }
    }
    for w in &wrong {
        say(&format!("rank {r} wrong: {w}"));
    }
    if let Some(e) = failed {
        say(&format!("rank {r} error: {e}"));
        return crate::EXIT_WRONG;
    }
    if !wrong.is_empty() {
        return crate::EXIT_WRONG;
    }
    say(&format!("rank {r} ok ({calls} calls in {:.1} s)", began.elapsed().as_secs_f64()));
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

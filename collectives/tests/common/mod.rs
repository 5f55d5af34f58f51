//! Shared by the collective test suites: seeded inputs per rank and the
//! expected output of every collective, computed sequentially in f64.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use half::{bf16, f16};
use oxccl::transport::Transport;
use oxccl::{Algorithm, Bytes, Call, Collective, Communicator, DType, Element, Error, ReduceOp};

/// splitmix64
pub struct Rng(u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub trait Num: Element + Copy {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Relative tolerance of a reduction over `n` values.
    fn tol(n: usize) -> f64;
}
macro_rules! num_int {
    ($($t:ty),*) => {$(impl Num for $t {
        fn from_f64(v: f64) -> Self { v as $t }
        fn to_f64(self) -> f64 { self as f64 }
        fn tol(_: usize) -> f64 { 0.0 }
    })*};
}
num_int!(i8, u8, i32, u32, i64, u64);
impl Num for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn tol(n: usize) -> f64 {
        2e-7 * n as f64
    }
}
impl Num for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn tol(n: usize) -> f64 {
        1e-15 * n as f64
    }
}
impl Num for f16 {
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn tol(n: usize) -> f64 {
        1e-3 * n as f64
    }
}
impl Num for bf16 {
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn tol(n: usize) -> f64 {
        8e-3 * n as f64
    }
}

/// Input of `rank`: small values so integer sums stay exact and products stay finite.
pub fn input<T: Num>(rank: usize, len: usize, seed: u64, op: ReduceOp) -> Vec<T> {
    let mut rng = Rng(seed ^ (rank as u64 + 1).wrapping_mul(0x1234_5678_9ABC));
    (0..len)
        .map(|_| {
            let r = rng.next();
            let v = match op {
                ReduceOp::Prod => [1.0, 2.0, 1.0, 0.5, 1.0, -1.0][(r % 6) as usize],
                _ => (r % 41) as f64 - 20.0,
            };
            let v = if T::DTYPE.is_float() { v + ((r >> 20) % 8) as f64 * 0.125 } else { v };
            let unsigned = matches!(T::DTYPE, DType::U8 | DType::U32 | DType::U64);
            T::from_f64(if unsigned { v.abs().round() } else { v })
        })
        .collect()
}

pub fn combine(op: ReduceOp, a: f64, b: f64) -> f64 {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => a + b,
        ReduceOp::Prod => a * b,
        ReduceOp::Min => a.min(b),
        ReduceOp::Max => a.max(b),
    }
}

/// The expected output of `rank`, from all ranks' inputs, in f64.
pub fn expected<T: Num>(
    c: Collective,
    op: ReduceOp,
    ins: &[Vec<T>],
    rank: usize,
    count: usize,
    root: usize,
) -> Vec<f64> {
    let n = ins.len();
    let red = |i: usize| {
        let mut acc = ins[0][i].to_f64();
        for x in &ins[1..] {
            acc = combine(op, acc, x[i].to_f64());
        }
        if op == ReduceOp::Avg {
            acc /= n as f64;
            if !T::DTYPE.is_float() {
                acc = acc.trunc();
            }
        }
        // Integers wrap like the type does.
        T::from_f64(acc).to_f64()
    };
    match c {
        Collective::AllReduce => (0..count).map(red).collect(),
        Collective::ReduceScatter => (0..count).map(|j| red(rank * count + j)).collect(),
        Collective::AllGather => (0..n * count).map(|j| ins[j / count][j % count].to_f64()).collect(),
        Collective::Broadcast => ins[root].iter().map(|v| v.to_f64()).collect(),
        Collective::Reduce => (0..count).map(red).collect(),
        Collective::AllToAll => (0..n * count).map(|j| ins[j / count][rank * count + j % count].to_f64()).collect(),
        Collective::Barrier => vec![],
    }
}

/// What outputs hold before a collective writes them.
pub const POISON: f64 = 77.0;

/// Runs `call` on this rank with `input`, in place (NCCL's layout) or not,
/// over poisoned outputs; returns the output. Out of place, the input must
/// come back unchanged.
pub fn run_rank<T: Num>(comm: &Communicator, call: &Call, input: &[T], in_place: bool) -> oxccl::Result<Vec<T>> {
    let (n, r, c, count) = (comm.world(), comm.rank(), call.collective, call.count);
    let (in_len, out_len) = (c.input_len(n, count), c.output_len(n, count));
    let poison = T::from_f64(POISON);
    if in_place {
        let mut buf = vec![poison; c.in_place_len(n, count)];
        let (io, oo) = c.in_place_offsets(r, count);
        buf[io..io + in_len].copy_from_slice(input);
        comm.run(call, Bytes::InPlace(bytemuck::cast_slice_mut(&mut buf)))?;
        Ok(buf[oo..oo + out_len].to_vec())
    } else {
        let send = input.to_vec();
        let mut recv = vec![poison; out_len];
        comm.run(
            call,
            Bytes::OutOfPlace { send: bytemuck::cast_slice(&send), recv: bytemuck::cast_slice_mut(&mut recv) },
        )?;
        assert_eq!(send, input, "rank {r}: input changed");
        Ok(recv)
    }
}

/// Checks every rank's output against the sequential reduction in f64
/// (non-root reduce outputs must be untouched).
pub fn verify<T: Num>(call: &Call, in_place: bool, ins: &[Vec<T>], outs: &[Vec<T>]) {
    let (n, c, count, root) = (ins.len(), call.collective, call.count, call.root);
    let what = format!("{:?} {c} {} {:?} n={n} count={count} in_place={in_place}", call.algorithm, call.op, T::DTYPE);
    for (r, out) in outs.iter().enumerate() {
        let want: Vec<f64> = if c == Collective::Reduce && r != root {
            if in_place {
                ins[r].iter().map(|v| v.to_f64()).collect()
            } else {
                vec![POISON; count]
            }
        } else {
            expected(c, call.op, ins, r, count, root)
        };
        assert_eq!(out.len(), want.len(), "{what}");
        for (j, (g, w)) in out.iter().zip(&want).enumerate() {
            let g = g.to_f64();
            assert!((g - w).abs() <= T::tol(n) * w.abs().max(1.0), "{what}: rank {r} [{j}] = {g}, want {w}");
        }
    }
}

/// Runs `f` on every rank, one thread each, and hands the communicators back.
pub fn on_ranks<R: Send>(comms: &mut Vec<Communicator>, f: impl Fn(&Communicator) -> R + Sync) -> Vec<R> {
    let taken = std::mem::take(comms);
    let (back, outs): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = taken
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let r = f(&c);
                    (c, r)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("rank panicked")).unzip()
    });
    *comms = back;
    outs
}

/// One collective on the group, checked on every rank (out of place: inputs
/// unchanged, non-root reduce outputs untouched).
#[allow(clippy::too_many_arguments)]
pub fn check<T: Num>(
    comms: &mut Vec<Communicator>,
    algo: Algorithm,
    c: Collective,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) {
    let n = comms.len();
    let seed = (count as u64) << 20 ^ (n as u64) << 8 ^ c as u64 ^ (in_place as u64) << 40;
    let root = if c.rooted() { (count + 1) % n } else { 0 };
    let ins: Vec<Vec<T>> = (0..n).map(|r| input::<T>(r, c.input_len(n, count), seed, op)).collect();
    let call = Call { collective: c, dtype: T::DTYPE, op, count, root, algorithm: Some(algo) };
    let outs = on_ranks(comms, |comm| run_rank(comm, &call, &ins[comm.rank()], in_place));
    let outs: Vec<Vec<T>> = outs
        .into_iter()
        .enumerate()
        .map(|(r, o)| o.unwrap_or_else(|e| panic!("{algo} {c} n={n} count={count} in_place={in_place}: rank {r}: {e}")))
        .collect();
    verify(&call, in_place, &ins, &outs);
}

/// Every collective, count and placement for `algo` (f32 sum) on worlds
/// 1..=`max_world`, one group per world from `group` (so each group runs
/// many collectives in a row).
pub fn grid(algo: Algorithm, max_world: usize, counts: &[usize], group: impl Fn(usize) -> Vec<Communicator>) {
    for n in 1..=max_world {
        let mut comms = group(n);
        for c in Collective::ALL {
            for &count in counts {
                for in_place in [false, true] {
                    check::<f32>(&mut comms, algo, c, ReduceOp::Sum, count, in_place);
                }
            }
        }
    }
}

/// Ranks 0 and 1 of a group of three (`comms`) enter an all-reduce, and an
/// abort handle of rank 0 aborts the group `pause` later: both return the
/// abort, within `limit`; rank 2, which never joined, learns the cause over
/// the wire (`cause`: its transport's, looked at for up to `told_within`)
/// and its calls fail at once from then on.
pub fn abort_reaches_the_rank_that_never_joined(
    mut comms: Vec<Communicator>,
    cause: impl Fn() -> Option<Error>,
    pause: Duration,
    limit: Duration,
    told_within: Duration,
) {
    let last = comms.pop().expect("three ranks");
    let handle = comms[0].abort_handle();
    let start = Instant::now();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> =
            comms.into_iter().map(|c| s.spawn(move || c.all_reduce_in_place(&mut [1f32; 8], ReduceOp::Sum))).collect();
        std::thread::sleep(pause);
        handle.abort("test abort");
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(start.elapsed() < limit);
    for r in outs {
        assert_eq!(r, Err(Error::Aborted("test abort".into())));
    }
    let deadline = Instant::now() + told_within;
    while cause().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(cause(), Some(Error::Aborted("test abort".into())));
    assert_eq!(last.barrier(), Err(Error::Aborted("test abort".into())));
}

/// A communicator over each transport of a group: rank `r`'s over `ts[r]`.
pub fn communicators<T: Transport + 'static>(ts: &[Arc<T>], config: &oxccl::Config) -> Vec<Communicator> {
    (ts.iter().enumerate())
        .map(|(r, t)| Communicator::from_transport(r, t.clone() as Arc<dyn Transport>, config.clone()).unwrap())
        .collect()
}

//! Bandwidth figures of one row: algbw, busbw and the memory-bandwidth floor.
//!
//! * algbw = size / time (GB/s, 1 GB = 1e9 bytes), size being the row's
//!   `size` column ([`Shape::bytes`]).
//! * busbw = algbw × a per-collective factor (nccl-tests' `PERFORMANCE.md`):
//!   all_reduce 2(n−1)/n, reduce_scatter, all_gather and alltoall (n−1)/n,
//!   broadcast and reduce 1.
//! * floor: ranks share one memory, so no schedule can beat reading every
//!   input byte once and writing every output byte once at the machine's
//!   streaming bandwidth; nor, with two ranks or more, one core-to-core
//!   handoff of a cache line (what small messages cost: [`crate::handoff`]).
//!   The floor time is the larger of the two; `%floor` = floor time /
//!   measured time × 100.

use oxccl::Collective;

use crate::sizing::Shape;

/// busbw / algbw for a collective over `world` ranks.
pub fn busbw_factor(collective: Collective, world: usize) -> f64 {
    let n = world.max(1) as f64;
    match collective {
        Collective::AllReduce => 2.0 * (n - 1.0) / n,
        Collective::ReduceScatter | Collective::AllGather | Collective::AllToAll => (n - 1.0) / n,
        Collective::Broadcast | Collective::Reduce => 1.0,
        Collective::Barrier => 0.0,
    }
}

/// GB/s for `bytes` in `seconds` (0 when the time is not positive).
pub fn gbps(bytes: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / seconds / 1e9
    } else {
        0.0
    }
}

/// Bytes every rank together must at least read and write from memory.
///
/// all_reduce 2·N·S; reduce_scatter, all_gather and alltoall N·(in + out);
/// broadcast S (the root's input) + N·S; reduce N·S + S (only the root's
/// output); barrier 0.
pub fn floor_bytes(collective: Collective, world: usize, shape: &Shape) -> usize {
    let n = world;
    match collective {
        Collective::AllReduce | Collective::ReduceScatter | Collective::AllGather | Collective::AllToAll => {
            n * (shape.in_bytes + shape.out_bytes)
        }
        Collective::Broadcast => shape.in_bytes + n * shape.out_bytes,
        Collective::Reduce => n * shape.in_bytes + shape.out_bytes,
        Collective::Barrier => 0,
    }
}

/// The physical limits rows are compared with, measured in the same run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Floor {
    /// Streaming memory bandwidth, GB/s (0: not measured).
    pub membw_gbps: f64,
    /// One-way core-to-core handoff, seconds (0: not measured).
    pub handoff_s: f64,
}

impl Floor {
    /// The least time a row can take, in seconds (0: no floor).
    pub fn seconds(&self, collective: Collective, world: usize, shape: &Shape) -> f64 {
        let bytes = floor_bytes(collective, world, shape);
        let streaming = if self.membw_gbps > 0.0 { bytes as f64 / (self.membw_gbps * 1e9) } else { 0.0 };
        let handoff = if world > 1 { self.handoff_s } else { 0.0 };
        streaming.max(handoff)
    }
}

/// Timing of one placement of one row, and what it implies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    pub time_us: f64,
    pub algbw: f64,
    pub busbw: f64,
    /// floor time / measured time × 100; `None` when there is no floor
    /// (nothing measured, or one rank with nothing to move).
    pub floor_pct: Option<f64>,
}

impl Figures {
    /// Derives the figures of a row that took `seconds` per iteration.
    pub fn new(collective: Collective, world: usize, shape: &Shape, seconds: f64, floor: &Floor) -> Figures {
        let algbw = gbps(shape.bytes(), seconds);
        let least = floor.seconds(collective, world, shape);
        let floor_pct = (least > 0.0 && seconds > 0.0).then(|| least / seconds * 100.0);
        Figures { time_us: seconds * 1e6, algbw, busbw: algbw * busbw_factor(collective, world), floor_pct }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl::DType;
    use Collective::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn busbw_factors() {
        assert!(close(busbw_factor(AllReduce, 4), 1.5));
        assert!(close(busbw_factor(AllReduce, 2), 1.0));
        assert!(close(busbw_factor(AllReduce, 1), 0.0));
        assert!(close(busbw_factor(ReduceScatter, 4), 0.75));
        assert!(close(busbw_factor(AllGather, 8), 0.875));
        assert!(close(busbw_factor(AllToAll, 4), 0.75));
        assert!(close(busbw_factor(Broadcast, 4), 1.0));
        assert!(close(busbw_factor(Reduce, 16), 1.0));
        assert!(close(busbw_factor(Barrier, 4), 0.0));
    }

    #[test]
    fn floor_bytes_per_collective() {
        let f = DType::F32;
        let s = 1 << 20;
        let n = 4;
        assert_eq!(floor_bytes(AllReduce, n, &Shape::of(AllReduce, f, n, s)), 2 * n * s);
        // Size is the whole input: in = S, out = S/n per rank.
        assert_eq!(floor_bytes(ReduceScatter, n, &Shape::of(ReduceScatter, f, n, s)), n * (s + s / n));
        // Size is the whole output: in = S/n, out = S per rank.
        assert_eq!(floor_bytes(AllGather, n, &Shape::of(AllGather, f, n, s)), n * (s / n + s));
        assert_eq!(floor_bytes(AllToAll, n, &Shape::of(AllToAll, f, n, s)), 2 * n * s);
        assert_eq!(floor_bytes(Broadcast, n, &Shape::of(Broadcast, f, n, s)), s + n * s);
        assert_eq!(floor_bytes(Reduce, n, &Shape::of(Reduce, f, n, s)), n * s + s);
        assert_eq!(floor_bytes(Barrier, n, &Shape::of(Barrier, f, n, s)), 0);
    }

    #[test]
    fn figures() {
        let shape = Shape::of(AllReduce, DType::F32, 4, 1 << 30);
        // 1 GiB in 0.5 s.
        let bw = Floor { membw_gbps: 40.0, handoff_s: 0.0 };
        let fig = Figures::new(AllReduce, 4, &shape, 0.5, &bw);
        assert!(close(fig.time_us, 500_000.0));
        assert!(close(fig.algbw, (1u64 << 30) as f64 / 0.5 / 1e9));
        assert!(close(fig.busbw, fig.algbw * 1.5));
        // floor: 8 GiB at 40 GB/s = 0.2147 s; measured 0.5 s.
        let floor_s = (8u64 << 30) as f64 / 40e9;
        assert!(close(fig.floor_pct.unwrap(), floor_s / 0.5 * 100.0));
        // No floor with nothing measured, for a barrier without a handoff, or for zero time.
        assert_eq!(Figures::new(AllReduce, 4, &shape, 0.5, &Floor::default()).floor_pct, None);
        let b = Shape::of(Barrier, DType::F32, 4, 0);
        let fig = Figures::new(Barrier, 4, &b, 1e-5, &bw);
        assert_eq!((fig.algbw, fig.busbw, fig.floor_pct), (0.0, 0.0, None));
        assert_eq!(Figures::new(AllReduce, 4, &shape, 0.0, &bw).floor_pct, None);
        // A handoff of 0.1 us is the floor of small messages (and of a
        // barrier), the bandwidth that of large ones; one rank hands off nothing.
        let both = Floor { membw_gbps: 40.0, handoff_s: 1e-7 };
        let small = Shape::of(AllReduce, DType::F32, 4, 8);
        assert!(close(Figures::new(AllReduce, 4, &small, 4e-7, &both).floor_pct.unwrap(), 25.0));
        assert!(close(Figures::new(Barrier, 4, &b, 1e-6, &both).floor_pct.unwrap(), 10.0));
        assert!(close(Figures::new(AllReduce, 4, &shape, 0.5, &both).floor_pct.unwrap(), floor_s / 0.5 * 100.0));
        assert_eq!(Figures::new(Barrier, 1, &Shape::of(Barrier, DType::F32, 1, 0), 1e-6, &both).floor_pct, None);
        assert_eq!(gbps(100, 0.0), 0.0);
    }
}

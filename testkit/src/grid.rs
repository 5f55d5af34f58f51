//! The grid: collectives × counts × algorithms × dtypes × ops × placements
//! × buffers. [`Grid::run_rank`] is the one body every rank runs, whatever
//! the transport and whether ranks are threads or processes: each call's
//! inputs come from a seed every rank derives from the call, so each rank
//! checks its own output against the sequential reference. [`Grid::run`]
//! runs it on groups of threads made by a suite's factory, one per world
//! size (so each group runs many calls in a row).

use half::{bf16, f16};
use oxccl::{Algorithm, Call, Collective, Communicator, DType, ReduceOp};

use crate::call::{HostMemory, Memory};
use crate::data::input;
use crate::group::on_ranks;
use crate::num::{tolerance, Num};
use crate::reference::{compare, expected};

/// Where a call's buffers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffers {
    /// Vectors of this process.
    Heap,
    /// The communicator's shared pool (`alloc_shared`): registered memory
    /// for RDMA, and what the direct algorithm needs across processes.
    Shared,
}

/// One call of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub collective: Collective,
    /// `None`: the auto rule.
    pub algorithm: Option<Algorithm>,
    pub dtype: DType,
    pub op: ReduceOp,
    /// Per-rank count (NCCL's convention, see `Collective::input_len`).
    pub count: usize,
    pub in_place: bool,
    pub buffers: Buffers,
}

fn index<T: PartialEq>(all: &[T], x: &T) -> u64 {
    all.iter().position(|a| a == x).expect("a listed value") as u64
}

impl Cell {
    /// A call naming `algorithm`, on heap buffers.
    pub fn new(
        collective: Collective,
        algorithm: Algorithm,
        dtype: DType,
        op: ReduceOp,
        count: usize,
        in_place: bool,
    ) -> Cell {
        Cell { collective, algorithm: Some(algorithm), dtype, op, count, in_place, buffers: Buffers::Heap }
    }

    /// The root of a rooted collective on `world` ranks (it varies with the count).
    pub fn root(&self, world: usize) -> usize {
        if self.collective.rooted() {
            (self.count + 1) % world
        } else {
            0
        }
    }

    /// The seed of the inputs on `world` ranks: the same on every rank.
    pub fn seed(&self, world: usize) -> u64 {
        let algo = self.algorithm.map_or(0, |a| 1 + index(&Algorithm::ALL, &a));
        let words = [
            world as u64,
            index(&Collective::ALL, &self.collective),
            algo,
            index(&DType::ALL, &self.dtype),
            index(&ReduceOp::ALL, &self.op),
            self.count as u64,
            self.in_place as u64,
            (self.buffers == Buffers::Shared) as u64,
        ];
        words.iter().fold(0x0CC1_5EED, |h, &w| (h ^ w).wrapping_mul(0x1000_0000_01B3).rotate_left(17))
    }

    /// What a failure message says of the call.
    pub fn label(&self, world: usize) -> String {
        format!(
            "{} algo={} {} {} world={world} count={} {} {}",
            self.collective,
            self.algorithm.map_or("auto", |a| a.name()),
            self.dtype,
            self.op,
            self.count,
            if self.in_place { "in-place" } else { "out-of-place" },
            if self.buffers == Buffers::Shared { "alloc_shared" } else { "heap" },
        )
    }

    /// Runs the call on this rank and checks its output (and, out of place,
    /// that the input is unchanged). `Err`: the call failed (the group is
    /// then aborted); `Ok`: what was wrong with the data, if anything.
    pub fn run_rank(&self, comm: &Communicator) -> Result<Vec<String>, String> {
        self.run_rank_in(comm, &HostMemory)
    }

    /// [`Cell::run_rank`] with the buffers in `mem`.
    pub fn run_rank_in(&self, comm: &Communicator, mem: &impl Memory) -> Result<Vec<String>, String> {
        match self.dtype {
            DType::I8 => self.run_typed::<i8>(comm, mem),
            DType::U8 => self.run_typed::<u8>(comm, mem),
            DType::I32 => self.run_typed::<i32>(comm, mem),
            DType::U32 => self.run_typed::<u32>(comm, mem),
            DType::I64 => self.run_typed::<i64>(comm, mem),
            DType::U64 => self.run_typed::<u64>(comm, mem),
            DType::F16 => self.run_typed::<f16>(comm, mem),
            DType::BF16 => self.run_typed::<bf16>(comm, mem),
            DType::F32 => self.run_typed::<f32>(comm, mem),
            DType::F64 => self.run_typed::<f64>(comm, mem),
        }
    }

    fn run_typed<T: Num>(&self, comm: &Communicator, mem: &impl Memory) -> Result<Vec<String>, String> {
        assert_eq!(T::DTYPE, self.dtype);
        let (n, r, c, count, op) = (comm.world(), comm.rank(), self.collective, self.count, self.op);
        let label = self.label(n);
        let (seed, root) = (self.seed(n), self.root(n));
        let ins: Vec<Vec<T>> = (0..n).map(|p| input::<T>(p, c.input_len(n, count), seed, op)).collect();
        let call = Call { collective: c, dtype: self.dtype, op, count, root, algorithm: self.algorithm };
        let shared = self.buffers == Buffers::Shared;
        let got =
            mem.run(comm, &call, &ins[r], self.in_place, shared).map_err(|e| format!("{label}: rank {r}: {e}"))?;
        let mut wrong = Vec::new();
        if !got.input_kept {
            wrong.push(format!("{label}: rank {r}: input changed"));
        }
        let want = expected(c, op, &ins, r, count, root, self.in_place);
        if let Some(d) = compare(&got.out, &want, tolerance(self.dtype, op, n)) {
            wrong.push(format!("{label}: rank {r}: {d}"));
        }
        Ok(wrong)
    }
}

/// How the grid went on one rank.
#[derive(Debug, Default)]
pub struct RankReport {
    pub rank: usize,
    /// Calls made (the last one failed if there is an error).
    pub calls: usize,
    /// One line per wrong output or changed input.
    pub wrong: Vec<String>,
    /// The failed call that ended the grid on this rank.
    pub error: Option<String>,
}

impl RankReport {
    /// Every call succeeded with the right data.
    pub fn is_clean(&self) -> bool {
        self.wrong.is_empty() && self.error.is_none()
    }
}

/// A list of calls every rank of a group runs in the same order.
#[derive(Clone, Debug, Default)]
pub struct Grid {
    cells: Vec<Cell>,
}

impl Grid {
    pub fn new() -> Grid {
        Grid::default()
    }

    /// Adds one call.
    pub fn cell(mut self, cell: Cell) -> Grid {
        self.cells.push(cell);
        self
    }

    /// Adds every collective (barrier included) × `counts` × out of place
    /// and in place, for `algorithm` (`None`: the auto rule), `dtype`, `op`
    /// and `buffers`.
    pub fn every_collective(
        mut self,
        algorithm: Option<Algorithm>,
        dtype: DType,
        op: ReduceOp,
        counts: &[usize],
        buffers: Buffers,
    ) -> Grid {
        for collective in Collective::ALL {
            for &count in counts {
                for in_place in [false, true] {
                    self.cells.push(Cell { collective, algorithm, dtype, op, count, in_place, buffers });
                }
            }
        }
        self
    }

    /// Every reduction op and dtype, spread over the collectives and the
    /// three algorithms every transport runs (ring, tree, halving-doubling),
    /// for groups of any size; `large` is the count of two large calls (an
    /// all-gather of i64 and an in-place all-reduce of u32).
    pub fn ops_and_dtypes(large: usize) -> Grid {
        use Algorithm::{HalvingDoubling as Rhd, Ring, Tree};
        use Collective::{AllGather, AllReduce, AllToAll, Reduce, ReduceScatter};
        let mut g = Grid::new();
        for op in ReduceOp::ALL {
            g = g
                .cell(Cell::new(AllReduce, Ring, DType::I32, op, 997, false))
                .cell(Cell::new(AllReduce, Rhd, DType::U8, op, 31, true))
                .cell(Cell::new(ReduceScatter, Tree, DType::F64, op, 13, false));
        }
        g.cell(Cell::new(AllReduce, Ring, DType::F16, ReduceOp::Sum, 1003, false))
            .cell(Cell::new(AllReduce, Tree, DType::BF16, ReduceOp::Avg, 1003, true))
            .cell(Cell::new(Reduce, Tree, DType::I8, ReduceOp::Min, 100, false))
            .cell(Cell::new(AllToAll, Ring, DType::U64, ReduceOp::Sum, 5, true))
            .cell(Cell::new(AllGather, Ring, DType::I64, ReduceOp::Sum, large, false))
            .cell(Cell::new(AllReduce, Rhd, DType::U32, ReduceOp::Sum, large, true))
    }

    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// The one body: runs every call on this rank, in order, checking each
    /// output; stops at the first call that fails (the group is aborted
    /// then, so every later call would fail too).
    pub fn run_rank(&self, comm: &Communicator) -> RankReport {
        self.run_rank_in(comm, &HostMemory)
    }

    /// [`Grid::run_rank`] with the buffers in `mem`.
    pub fn run_rank_in(&self, comm: &Communicator, mem: &impl Memory) -> RankReport {
        let mut report = RankReport { rank: comm.rank(), ..RankReport::default() };
        for cell in &self.cells {
            report.calls += 1;
            match cell.run_rank_in(comm, mem) {
                Ok(wrong) => report.wrong.extend(wrong),
                Err(e) => {
                    report.error = Some(e);
                    break;
                }
            }
        }
        report
    }

    /// Runs the grid on every rank of `comms`, one thread each, and panics
    /// listing every wrong result and failed call of every rank.
    pub fn run_group(&self, comms: &mut Vec<Communicator>) {
        let n = comms.len();
        let reports = on_ranks(comms, |c| self.run_rank(c));
        let mut problems: Vec<String> = Vec::new();
        for r in &reports {
            problems.extend(r.wrong.iter().cloned());
            problems.extend(r.error.iter().map(|e| format!("failed: {e}")));
        }
        const SHOWN: usize = 40;
        assert!(
            problems.is_empty(),
            "{} problems in a grid of {} calls on {n} ranks (first {SHOWN}):\n{}",
            problems.len(),
            self.cells.len(),
            problems.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("\n")
        );
    }

    /// Runs the grid on a group of each size in `worlds`, made by `group`.
    pub fn run(&self, worlds: impl IntoIterator<Item = usize>, mut group: impl FnMut(usize) -> Vec<Communicator>) {
        for n in worlds {
            let mut comms = group(n);
            assert_eq!(comms.len(), n, "the factory made a group of {} ranks, not {n}", comms.len());
            self.run_group(&mut comms);
        }
    }
}

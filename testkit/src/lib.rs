//! What the test suites of oxccl share, one copy for all of them: the
//! collectives suites (`collectives/tests/`, ranks as threads over the
//! local, shm and TCP transports), the RDMA suite (`rdma/tests/`) and the
//! ranks as processes (`tests/`, whose `oxccl-rank` binary runs the grid).
//!
//! - [`data`]: seeded inputs per rank, the same on every rank and process.
//! - [`num`]: the element types as numbers (to and from f64), what output
//!   buffers hold before a call, and the tolerance of each comparison.
//! - [`reference`](mod@reference): the expected output of every collective, computed
//!   sequentially in f64 from all ranks' inputs, and the comparison.
//! - [`call`]: one call on one rank, in or out of place, over heap or
//!   `alloc_shared` buffers.
//! - [`grid`]: the grid of collectives × counts × algorithms × dtypes × ops
//!   × placements × buffers: the one body every rank runs, and the driver
//!   that runs it on groups of threads from a group factory.
//! - [`group`]: ranks as threads of this process: run a closure on every
//!   rank of a group, a communicator over each transport of a group.
//! - [`checks`]: behaviours every transport must show (point to point
//!   around a ring, mismatches named from both sides, an abort reaching a
//!   rank that never joined, the direct algorithm refused without shared
//!   memory).
//!
//! A suite calls the grid once per transport with a factory of groups:
//!
//! ```no_run
//! use oxccl::{Algorithm, Communicator, Config, DType, ReduceOp};
//! use oxccl_testkit::grid::{Buffers, Grid};
//!
//! let config = Config { slice_bytes: 256, ..Config::default() };
//! Grid::new()
//!     .every_collective(Some(Algorithm::Ring), DType::F32, ReduceOp::Sum, &[0, 1, 7, 1000], Buffers::Heap)
//!     .run(1..=4, |n| Communicator::local_group_with(n, config.clone()).unwrap());
//! ```

pub mod call;
pub mod checks;
pub mod data;
pub mod grid;
pub mod group;
pub mod num;
pub mod reference;

pub use grid::{Buffers, Cell, Grid, RankReport};
pub use group::{communicators, on_ranks};
pub use num::Num;

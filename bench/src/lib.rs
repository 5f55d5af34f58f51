//! The oxccl perf harness: nccl-tests style sweeps of a collective over a
//! local group of ranks, checked against closed-form results, and the
//! machine's memory bandwidth as the floor every row is compared with.
//!
//! * [`sizing`]: size flags, the sweep's sizes, per-collective counts.
//! * [`metrics`]: algbw, busbw and the memory-bandwidth floor of a row.
//! * [`membw`]: the streaming memory bandwidth of this machine.
//! * [`handoff`]: the core-to-core handoff, the floor of small messages.
//! * [`data`]: input patterns, expected outputs, the wrong-element count.
//! * [`perf`]: the sweep itself; [`device`]: on device memory.
//! * [`report`]: the table, JSON lines and CSV.

pub mod data;
pub mod device;
pub mod handoff;
pub mod membw;
pub mod metrics;
pub mod perf;
pub mod report;
pub mod sizing;

pub use membw::MemBw;
pub use metrics::Floor;
pub use perf::{Backend, Memory, Options, PerfError, Row, RowSpec, Skipped, Summary, Sweep};
pub use sizing::{parse_size, Shape, SizeRange};

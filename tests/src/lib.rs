//! Ranks as processes and hosts, tested from the outside.
//!
//! - [`scenarios`]: what the `oxccl-rank` binary does once its communicator
//!   is up: the test kit's grid of collectives (`oxccl-testkit`, the body the
//!   in-process suites run on every rank too), and the loops used to provoke
//!   failures (a killed, wedged or aborting rank, a cut link).
//! - [`procs`]: launching rank processes from a test, reading their output
//!   with deadlines, and killing and reaping them whatever happens.
//! - [`harness`]: starting a job of rank processes and checking how its
//!   ranks ended, shared by the process and namespace tests.
//! - [`device`]: device memory in rank processes (an emulated device per
//!   process, data staged through the transport's host slots).
//! - [`netns`]: network namespaces as hosts, joined by veth pairs to a bridge,
//!   created and removed by the test itself.
//!
//! The protocol between the binary and the tests is its standard output, one
//! line per event, each starting with `rank R`:
//!
//! ```text
//! rank 2 pid 4242 transport tcp world 4      after init
//! rank 2 ready                               loops: after the first all-reduce
//! rank 2 ok (1130 calls in 2.1 s)            collectives: every result right
//! rank 2 wrong: <what>                       collectives: one line per wrong result
//! rank 2 error: <error>                      a call failed (exit 1 in collectives, 3 in loops)
//! ```

pub mod device;
pub mod harness;
pub mod netns;
pub mod procs;
pub mod scenarios;

/// Exit status of a rank whose communicator could not be set up.
pub const EXIT_INIT: i32 = 2;
/// Exit status of a rank whose collectives found wrong results or failed.
pub const EXIT_WRONG: i32 = 1;
/// Exit status of a rank whose loop ended with an error (the expected end of
/// the failure scenarios for surviving ranks).
pub const EXIT_LOOP_ERROR: i32 = 3;
/// Exit status of a rank whose watchdog fired (parent gone, or lifetime over).
pub const EXIT_WATCHDOG: i32 = 4;

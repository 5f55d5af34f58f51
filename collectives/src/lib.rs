//! oxccl: collective communication for ranks that are threads, processes or hosts.
//!
//! The central idea: an algorithm is a pure [`Schedule`] (see [`schedule`]),
//! consumed by the executor (real data), the [`checker`] (symbolic data) and,
//! later, a cost model.
//!
//! # What is public
//!
//! - What users call: [`Communicator`] with [`Config`], [`Call`], [`Bytes`],
//!   [`SharedBuf`] and [`AbortHandle`]; [`Error`], [`ErrorKind`],
//!   [`OsError`] and [`Result`]; [`DType`], [`Element`] and [`ReduceOp`]; [`Algorithm`]
//!   (and [`auto_algorithm`]) and [`Collective`].
//! - For those who study schedules: [`schedule`] ([`Spec`], [`Schedule`],
//!   its steps), [`algo`] (one schedule function per algorithm) and
//!   [`checker`] ([`Checker`]).
//! - For launchers and tools: [`bootstrap`] ([`bootstrap::Launch`],
//!   [`bootstrap::connect::TransportKind`]), [`affinity`] (binding ranks to
//!   cores), [`reduce::reduce`] (the CPU reducers, for benchmarks).
//! - For transports outside this crate (the RDMA crate): the interface
//!   gathered and documented in [`transport`], with [`mem::Region`] and
//!   [`mem::Lines`]; for device memory (the CUDA crate next): [`space`]
//!   ([`space::MemorySpace`], which the host implements today).
//!
//! Everything else (the executor, the transports' insides)
//! is internal to the crate, except the set-up of the shared-memory and TCP
//! transports, public only for this crate's integration tests (see
//! [`transport::shm`] and [`transport::tcp`]).

// Unsafe code lives only where memory is shared: raw regions (mem), the
// memory spaces that copy and reduce them (space), buffers handed out from
// a shared pool (communicator's SharedBuf), the transports and their
// waiting (transport) and the executor that hands regions to the spaces;
// and in the system calls that read and set the cores a thread may run on
// (affinity).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod affinity;
pub mod algo;
pub mod bootstrap;
pub mod checker;
pub(crate) mod config;
pub(crate) mod dtype;
pub(crate) mod error;
pub mod reduce;
pub mod schedule;

pub use algo::Algorithm;
pub use checker::Checker;
pub use dtype::{DType, Element, ReduceOp};
pub use error::{Error, ErrorKind, OsError, Result};
pub use schedule::{Collective, Rank, Schedule, Spec};
pub(crate) mod communicator;
pub use communicator::{AbortHandle, Bytes, Call, Communicator, Config, Entered, P2p, Regions};
#[allow(unsafe_code)]
pub(crate) mod executor;
#[allow(unsafe_code)]
pub mod mem;
#[allow(unsafe_code)]
pub mod space;
#[allow(unsafe_code)]
pub mod transport;
pub use communicator::auto_algorithm;
pub use communicator::SharedBuf;

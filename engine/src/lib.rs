//! oxccl-engine: the training engine — a thin, measurable training loop on
//! top of the oxccl collectives, for the seed's job: a Keras-style
//! `Sequential` MLP (`Dense(10, relu, input 32) -> Dense(1)` by default)
//! trained with Adam on mean squared error, data-parallel or with parameter
//! servers, then used for distributed prediction.
//!
//! Modules, bottom up:
//!
//! * [`backend`]: the `Backend` trait (matmul with transposes, bias add and
//!   its reduction, ReLU/GELU and their backward, MSE and its gradient, fused
//!   Adam) and the CPU backend. Its matmul is `matrixmultiply`'s packed sgemm
//!   reached through `ndarray`'s safe `general_mat_mul` (this crate forbids
//!   `unsafe`, and `matrixmultiply`/`gemm` only offer raw-pointer entry
//!   points); see [`backend::cpu`] for the reasoning. A CUDA backend (a later
//!   issue) implements the same trait on device buffers.
//! * [`mod@reference`]: the same maths in f64, written plainly: the oracle of
//!   the tests.
//! * [`model`]: the architecture and its flat parameter layout, Glorot
//!   initialisation, the `Sequential` forward/backward, Adam's state.
//! * [`data`]: the synthetic regression set, `.npy`/CSV loaders, batching and
//!   sharding over replicas.
//! * [`train`]: strategies — mirrored (threads), multi-worker (processes
//!   or hosts, one replica each), parameter server (synchronous and
//!   asynchronous).
//! * [`predict`]: inference sharded over replicas, gathered in order.
//! * [`checkpoint`]: safetensors checkpoints with optimiser state, atomic writes.
//! * [`metrics`]: step-time breakdown, samples/s, FLOP/s, scaling efficiency.
//! * [`rng`]: the seeded generator behind every random choice.
//!
//! Errors: one enum, [`Error`], with [`Error::kind`] for callers.
#![forbid(unsafe_code)]

pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod metrics;
pub mod model;
pub mod predict;
pub mod reference;
pub mod rng;
pub mod train;

pub use error::{Error, ErrorKind, Result};

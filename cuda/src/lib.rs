//! oxccl's GPU layer.
//!
//! * [`ptx`]: the hand-written kernels of `ptx/kernels`, compiled to PTX for
//!   sm_80 and sm_90 (committed in `ptx/gen`, embedded here).
//! * [`kernels`]: every kernel's name, module and launch shape.
//! * [`device`], [`buffer`], [`launch`]: a cudarc device layer — device and
//!   stream, device buffers, a per-device module cache, and typed launchers
//!   that check lengths before the one `unsafe` launch each. Libraries are
//!   loaded at run time: a machine without the driver gets
//!   [`Error::NoDriver`], never a panic.
//! * [`emu`]: the same kernel sources compiled for the host through
//!   `ptx/emu`, so every kernel runs in tests on machines without a GPU.
//! * [`emudev`]: an emulated device over host memory — allocations, in-order
//!   streams, events, copies, the reducer and stream-level waits on memory
//!   words — and [`space`]: the executor's memory-space interface on it
//!   ([`EmuSpace`]), the first steps of the GPU collectives.
//! * [`streamed`]: stream-ordered collectives (`StreamComm`) on the
//!   emulated device or a GPU; [`process`]: a process's rank of a job on
//!   device memory (stream-ordered, or staged through host memory);
//!   [`foreign`]: calls on device memory a caller outside Rust hands over
//!   (the C ABI, the Python package); [`nccl`]: NCCL as a backend to
//!   compare with.
//! * [`runner`], [`mod@reference`], [`verify`]: one verification suite against
//!   CPU references, run on the emulator by the tests and on a GPU by
//!   `oxccl-gpu-check` (with [`mod@bench`] for the benchmarks).

pub mod bench;
pub mod buffer;
pub mod device;
pub mod emu;
pub mod emudev;
pub mod error;
pub mod foreign;
pub mod gpu_runner;
pub mod kernels;
pub mod launch;
pub mod nccl;
pub mod process;
pub mod ptx;
pub mod reference;
pub mod rng;
pub mod runner;
pub mod space;
pub mod streamed;
pub mod verify;

pub use buffer::DeviceBuffer;
pub use device::{Device, Libraries};
pub use emu::Emu;
pub use emudev::{EmuBuffer, EmuDevice, EmuEvent, EmuPlatform, EmuStream, Reducer};
pub use error::{Error, ErrorKind, Result};
pub use gpu_runner::GpuRunner;
pub use kernels::{Activation, AdamParams, MatDims};
pub use runner::Runner;
pub use space::{DeviceSpace, EmuSpace};
pub use streamed::{Buffers, GroupPart, StreamComm};

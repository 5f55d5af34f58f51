//! `oxccl._oxccl`, the native half of the Python package `oxccl`: the
//! `Communicator` class (`comm.rs`), buffers taken from anything exposing
//! the buffer protocol or DLPack without copies (`buffer.rs`, `dlpack.rs`),
//! memory of the emulated device for tests of the device path
//! (`device.rs`), and oxccl's errors as Python exceptions (`errors.rs`). The pure-Python
//! half (`python/oxccl/`) adds the torch.distributed backend and the stubs.
//!
//! Unsafe code here reads memory Python objects own (buffers, DLPack
//! tensors), each block with the contract it relies on.

use pyo3::prelude::*;

mod buffer;
mod comm;
mod device;
mod dlpack;
mod errors;

#[pymodule]
fn _oxccl(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<comm::Communicator>()?;
    m.add_class::<device::DeviceBuffer>()?;
    m.add_class::<device::SharedBuffer>()?;
    m.add_function(wrap_pyfunction!(device::device_buffer, m)?)?;
    errors::register(m)?;
    Ok(())
}

//! `oxccl.device_buffer(nbytes)`: memory of the emulated device
//! (`OXCCL_DEVICE=emu`), exported through the buffer protocol, so tests run
//! the device path (the GPU collectives) from Python without a GPU — wrap
//! it with `numpy.frombuffer`. Its memory is the host's underneath, and
//! calls on it have completed when they return, so Python may read and
//! write it between calls.

use std::ffi::c_int;

use pyo3::prelude::*;

use crate::errors::{invalid, InvalidUsage};

/// Zeroed memory of the emulated device, freed when the object (and every
/// view of it) is gone.
#[pyclass(module = "oxccl._oxccl", frozen)]
pub struct DeviceBuffer {
    addr: usize,
    len: usize,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        oxccl_cuda::foreign::emu_free(self.addr);
    }
}

#[pymethods]
impl DeviceBuffer {
    fn __len__(&self) -> usize {
        self.len
    }

    /// A one-dimensional, writable buffer of bytes.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut pyo3::ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let (addr, len) = (slf.get().addr, slf.get().len);
        // SAFETY: `view` is the exporter's view to fill (the protocol's contract); the memory
        // holds `len` bytes and lives as long as `slf`, which the view keeps a reference to
        // (PyBuffer_FillInfo takes one).
        let filled =
            unsafe { pyo3::ffi::PyBuffer_FillInfo(view, slf.as_ptr(), addr as *mut _, len as isize, 0, flags) };
        if filled != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}

    fn __repr__(&self) -> String {
        format!("<oxccl.DeviceBuffer {} bytes of the emulated device at {:#x}>", self.len, self.addr)
    }
}

/// `nbytes` of zeroed memory of the emulated device (with
/// `OXCCL_DEVICE=emu` set before the first call; InvalidUsage otherwise).
#[pyfunction]
pub fn device_buffer(nbytes: usize) -> PyResult<DeviceBuffer> {
    match oxccl_cuda::foreign::emu_alloc(nbytes) {
        None => Err(InvalidUsage::new_err("no emulated device: set OXCCL_DEVICE=emu before the first call")),
        Some(Err(e)) => Err(invalid(format!("device_buffer of {nbytes} bytes: {e}"))),
        Some(Ok(addr)) => Ok(DeviceBuffer { addr, len: nbytes }),
    }
}

//! Memory oxccl hands out, exported through the buffer protocol (wrap it
//! with `numpy.frombuffer`): `oxccl.device_buffer(nbytes)`, memory of the
//! emulated device (`OXCCL_DEVICE=emu`), so tests run the device path (the
//! GPU collectives) from Python without a GPU — host memory underneath,
//! and calls on it have completed when they return, so Python may read and
//! write it between calls; and `Communicator.alloc_shared(nbytes)`
//! ([`SharedBuffer`]), the communicator's shared memory, which peers on the
//! host read and write directly (zero copy).

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
        // SAFETY: the protocol's contract; the memory lives as long as `slf`.
        unsafe { export(slf.as_any(), view, flags, addr, len) }
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

/// Fills `view` with `len` writable bytes at `addr`, owned by `owner`.
///
/// # Safety
/// `view` is the view an exporter fills (the buffer protocol's contract);
/// the memory holds `len` bytes and lives as long as `owner`, which the view
/// keeps a reference to (PyBuffer_FillInfo takes one).
unsafe fn export(
    owner: &Bound<'_, PyAny>,
    view: *mut pyo3::ffi::Py_buffer,
    flags: c_int,
    addr: usize,
    len: usize,
) -> PyResult<()> {
    // SAFETY: the caller's contract.
    let filled = unsafe { pyo3::ffi::PyBuffer_FillInfo(view, owner.as_ptr(), addr as *mut _, len as isize, 0, flags) };
    if filled != 0 {
        return Err(PyErr::fetch(owner.py()));
    }
    Ok(())
}

/// Memory of a communicator's shared memory (`Communicator.alloc_shared`):
/// peers on the host read and write it directly, so collectives on it copy
/// nothing through the transport (the automatic choice is the direct
/// algorithm when every rank passes such buffers). Freed when the object
/// and every view of it are gone.
#[pyclass(module = "oxccl._oxccl", frozen)]
pub struct SharedBuffer {
    buf: std::sync::Mutex<oxccl_core::SharedBuf<u8>>,
    addr: usize,
    len: usize,
}

impl SharedBuffer {
    pub fn new(buf: oxccl_core::SharedBuf<u8>, len: usize) -> SharedBuffer {
        let addr = buf.as_ptr() as usize;
        SharedBuffer { buf: std::sync::Mutex::new(buf), addr, len }
    }
}

#[pymethods]
impl SharedBuffer {
    fn __len__(&self) -> usize {
        self.len
    }

    /// A one-dimensional, writable buffer of bytes.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut pyo3::ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let (addr, len) = (slf.get().addr, slf.get().len);
        // SAFETY: the protocol's contract; the memory is `buf`'s, which lives as long as `slf`.
        unsafe { export(slf.as_any(), view, flags, addr, len) }
    }

    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}

    fn __repr__(&self) -> String {
        let _held = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        format!("<oxccl.SharedBuffer {} bytes of a communicator's shared memory>", self.len)
    }
}

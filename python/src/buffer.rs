//! A collective's buffers from Python objects, without copies: anything
//! exposing the buffer protocol (NumPy arrays, bytearray, memoryview,
//! array.array), else anything exposing DLPack (`__dlpack__`: torch
//! tensors), C-contiguous: host memory, a CUDA device's (DLPack), or the
//! emulated device's (`OXCCL_DEVICE=emu`: `oxccl.device_buffer`).

use oxccl_core::DType;
use oxccl_cuda::foreign::{locate_host, Located};
use pyo3::prelude::*;

use crate::dlpack;
use crate::errors::invalid;

/// What keeps a buffer's memory alive while a collective uses it.
enum Keep {
    /// An exported buffer, released when dropped.
    Buffer(Box<pyo3::ffi::Py_buffer>),
    /// A DLPack capsule.
    Dlpack(#[allow(dead_code)] Py<PyAny>),
}

/// A buffer's bytes: address, length, element type.
pub struct Buf {
    pub addr: usize,
    pub len: usize,
    pub dtype: DType,
    /// Whose memory it is.
    pub on: Located,
    keep: Keep,
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Keep::Buffer(view) = &mut self.keep {
            // SAFETY: a view filled by PyObject_GetBuffer, released once, with the GIL held.
            Python::attach(|_| unsafe { pyo3::ffi::PyBuffer_Release(&mut **view) });
        }
    }
}

/// The element type a buffer-protocol format string names.
fn dtype_of_format(format: &str, itemsize: usize) -> Option<DType> {
    let f = format.trim_start_matches(['@', '=', '<']);
    if f.starts_with(['>', '!']) && itemsize > 1 {
        return None;
    }
    let f = f.trim_start_matches(['>', '!']);
    Some(match (f, itemsize) {
        ("f", 4) => DType::F32,
        ("d", 8) => DType::F64,
        ("e", 2) => DType::F16,
        ("b", 1) => DType::I8,
        ("B" | "c" | "?", 1) => DType::U8,
        ("i" | "l" | "q" | "n", 4) => DType::I32,
        ("i" | "l" | "q" | "n", 8) => DType::I64,
        ("I" | "L" | "Q" | "N", 4) => DType::U32,
        ("I" | "L" | "Q" | "N", 8) => DType::U64,
        _ => return None,
    })
}

/// The memory of `obj`, to be written when `writable`; `what` names it in
/// errors ("send", "recv").
pub fn take(obj: &Bound<'_, PyAny>, writable: bool, what: &str) -> PyResult<Buf> {
    use pyo3::ffi;
    let mut view: Box<ffi::Py_buffer> = Box::new(ffi::Py_buffer::new());
    let flags =
        ffi::PyBUF_FORMAT | ffi::PyBUF_ND | ffi::PyBUF_C_CONTIGUOUS | if writable { ffi::PyBUF_WRITABLE } else { 0 };
    // SAFETY: `view` is a Py_buffer to fill; on success it is released by `Buf`'s drop.
    let got = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
    if got == 0 {
        let itemsize = view.itemsize.max(1) as usize;
        let format = match view.format.is_null() {
            true => "B".to_string(),
            // SAFETY: a non-NULL format is a NUL-terminated string owned by the view.
            false => unsafe { std::ffi::CStr::from_ptr(view.format) }.to_string_lossy().into_owned(),
        };
        let (addr, len) = (view.buf as usize, view.len.max(0) as usize);
        let mut buf = Buf { addr, len, dtype: DType::U8, on: locate_host(addr), keep: Keep::Buffer(view) };
        buf.dtype = dtype_of_format(&format, itemsize).ok_or_else(|| {
            invalid(format!("{what}: buffer of format {format:?} ({itemsize}-byte items) has no oxccl type"))
        })?;
        return Ok(buf);
    }
    let buffer_error = PyErr::take(obj.py());
    if obj.hasattr("__dlpack__")? {
        let t = dlpack::take(obj).map_err(|e| invalid(format!("{what}: {}", e.value(obj.py()))))?;
        let on = t.cuda.map_or_else(|| locate_host(t.addr), Located::Gpu);
        return Ok(Buf { addr: t.addr, len: t.len, dtype: t.dtype, on, keep: Keep::Dlpack(t.capsule) });
    }
    let why = buffer_error.map(|e| e.value(obj.py()).to_string()).unwrap_or_default();
    Err(invalid(format!(
        "{what}: a {} is neither a contiguous buffer{} nor a DLPack tensor ({why})",
        obj.get_type().name().map(|n| n.to_string()).unwrap_or_default(),
        if writable { " (writable)" } else { "" }
    )))
}

impl Buf {
    /// The bytes, for a collective that reads them.
    ///
    /// # Safety
    /// Nothing writes the memory while the slice is used.
    pub unsafe fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `addr` holds `len` bytes kept alive by `keep` (the caller's contract covers writers).
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// The bytes, for a collective that writes them.
    ///
    /// # Safety
    /// Nothing else reads or writes the memory while the slice is used.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`, writable (asked for when taken).
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

//! DLPack (`__dlpack__`): a tensor's memory, described by the C structs of
//! the DLPack header (v0.8, the "dltensor" capsule every producer offers),
//! read without copying: host memory (CPU, or CUDA host memory) or a CUDA
//! device's.

use std::ffi::{c_void, CStr};

use oxccl_core::DType;
use pyo3::prelude::*;

use crate::errors::invalid;

#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

const CPU: i32 = 1;
const CUDA: i32 = 2;
const CUDA_HOST: i32 = 3;
const NAME: &CStr = c"dltensor";

/// A tensor's bytes: address, length, dtype, and the capsule that keeps
/// them alive (its destructor gives the tensor back to its producer).
pub struct Tensor {
    pub addr: usize,
    pub len: usize,
    pub dtype: DType,
    /// The CUDA device whose memory it is; `None`: host memory.
    pub cuda: Option<usize>,
    pub capsule: Py<PyAny>,
}

fn dtype_of(t: &DLDataType) -> PyResult<DType> {
    if t.lanes != 1 {
        return Err(invalid(format!("a DLPack tensor of {} lanes (vectors are not supported)", t.lanes)));
    }
    Ok(match (t.code, t.bits) {
        (0, 8) => DType::I8,
        (0, 32) => DType::I32,
        (0, 64) => DType::I64,
        (1, 8) => DType::U8,
        (1, 32) => DType::U32,
        (1, 64) => DType::U64,
        (2, 16) => DType::F16,
        (2, 32) => DType::F32,
        (2, 64) => DType::F64,
        (4, 16) => DType::BF16,
        (6, 8) => DType::U8,
        (code, bits) => return Err(invalid(format!("a DLPack tensor of type code {code}, {bits} bits (unsupported)"))),
    })
}

/// The memory of `obj`'s `__dlpack__()` tensor (contiguous). A CUDA
/// tensor's producer is not asked to synchronize any stream: the call is
/// ordered on the stream the caller names.
pub fn take(obj: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let capsule = obj.call_method0("__dlpack__")?;
    // SAFETY: PyCapsule_GetPointer on any object is defined: it returns NULL (and sets an
    // exception) unless it is a capsule of that name.
    let p = unsafe { pyo3::ffi::PyCapsule_GetPointer(capsule.as_ptr(), NAME.as_ptr()) } as *const DLManagedTensor;
    if p.is_null() {
        return Err(PyErr::take(obj.py()).unwrap_or_else(|| invalid("__dlpack__ did not return a dltensor capsule")));
    }
    // SAFETY: a live "dltensor" capsule points to its producer's DLManagedTensor, valid while
    // the capsule lives (we keep it); its shape holds ndim entries, its strides ndim or none.
    let t = unsafe { &(*p).dl_tensor };
    let cuda = match t.device.device_type {
        CPU | CUDA_HOST => None,
        CUDA => Some(usize::try_from(t.device.device_id).map_err(|_| invalid("a DLPack tensor of a negative device"))?),
        other => {
            return Err(invalid(format!(
                "a DLPack tensor on device type {other} (host memory or a CUDA device's: move it there)"
            )))
        }
    };
    let dtype = dtype_of(&t.dtype)?;
    let ndim = usize::try_from(t.ndim).map_err(|_| invalid("a DLPack tensor of negative ndim"))?;
    // SAFETY: as above: `shape` and (when not NULL) `strides` hold `ndim` entries.
    let shape: &[i64] = if ndim == 0 { &[] } else { unsafe { std::slice::from_raw_parts(t.shape, ndim) } };
    let numel: i64 = shape.iter().product();
    if !t.strides.is_null() && numel > 1 {
        // SAFETY: as above.
        let strides = unsafe { std::slice::from_raw_parts(t.strides, ndim) };
        let mut expect = 1i64;
        for (&n, &s) in shape.iter().zip(strides).rev() {
            if n > 1 && s != expect {
                return Err(invalid("a non-contiguous DLPack tensor (call .contiguous() first)"));
            }
            expect *= n;
        }
    }
    let len = usize::try_from(numel).map_err(|_| invalid("a DLPack tensor of negative size"))? * dtype.size();
    let addr = t.data as usize + t.byte_offset as usize;
    Ok(Tensor { addr, len, dtype, cuda, capsule: capsule.unbind() })
}

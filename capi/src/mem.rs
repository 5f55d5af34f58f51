//! Memory for buffers: page-aligned host memory (what the transports
//! register or map best), or with `OXCCL_DEVICE=emu` memory of the
//! emulated device (device memory for tests without a GPU), freed with
//! oxcclMemFree; and a communicator's shared memory (oxcclCommMemAlloc),
//! which peers on the host read and write directly: zero copy.

use std::ffi::c_void;

use crate::error::{guard, Failure};
use crate::types::*;

/// Allocates `size` bytes of page-aligned, zeroed host memory into `*ptr`
/// — or, with OXCCL_DEVICE=emu, of the emulated device's memory (host
/// memory underneath, so a program can read and write it between calls).
#[no_mangle]
pub extern "C" fn oxcclMemAlloc(ptr: *mut *mut c_void, size: usize) -> oxcclResult_t {
    guard(None, || {
        if ptr.is_null() {
            return Err(Failure::invalid("ptr is NULL"));
        }
        if let Some(made) = oxccl_cuda::foreign::emu_alloc(size) {
            let addr = made.map_err(|e| Failure { code: oxcclSystemError, text: format!("oxcclMemAlloc: {e}") })?;
            // SAFETY: `ptr` is writable (checked non-null).
            unsafe { ptr.write(addr as *mut c_void) };
            return Ok(());
        }
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: posix_memalign writes an allocation of `size.max(1)` bytes into `p`.
        let rc = unsafe { libc::posix_memalign(&mut p, 4096, size.max(1)) };
        if rc != 0 || p.is_null() {
            return Err(Failure { code: oxcclSystemError, text: format!("oxcclMemAlloc of {size} bytes: error {rc}") });
        }
        // SAFETY: `p` holds `size.max(1)` bytes just allocated; `ptr` is writable (checked non-null).
        unsafe {
            std::ptr::write_bytes(p.cast::<u8>(), 0, size.max(1));
            ptr.write(p);
        }
        Ok(())
    })
}

/// Frees memory of oxcclMemAlloc (NULL is ignored).
#[no_mangle]
pub extern "C" fn oxcclMemFree(ptr: *mut c_void) -> oxcclResult_t {
    guard(None, || {
        if oxccl_cuda::foreign::emu_free(ptr as usize) {
            return Ok(());
        }
        // SAFETY: NULL or an allocation of oxcclMemAlloc (posix_memalign), freed once.
        unsafe { libc::free(ptr) };
        Ok(())
    })
}

/// (oxccl) Allocates `size` bytes of zeroed memory from the communicator's
/// shared memory into `*ptr` (where its transport has none, as over TCP:
/// page-aligned host memory). Peers on the host read and write such
/// buffers directly, so calls on them copy nothing through the transport:
/// when every rank passes such buffers (all alike), the automatic choice
/// is the direct algorithm. Free it with oxcclCommMemFree before the
/// communicator is destroyed (destroying it frees what is left).
#[no_mangle]
pub extern "C" fn oxcclCommMemAlloc(comm: oxcclComm_t, ptr: *mut *mut c_void, size: usize) -> oxcclResult_t {
    crate::with_comm(comm, |c| {
        if ptr.is_null() {
            return Err(Failure::invalid("ptr is NULL"));
        }
        let buf = c.core().host()?.alloc_shared::<u8>(size.max(1))?;
        let addr = buf.as_ptr() as usize;
        c.shared.lock().unwrap_or_else(|p| p.into_inner()).insert(addr, buf);
        // SAFETY: `ptr` is writable (checked non-null).
        unsafe { ptr.write(addr as *mut c_void) };
        Ok(())
    })
}

/// (oxccl) Frees memory of oxcclCommMemAlloc on the same communicator
/// (NULL is ignored).
#[no_mangle]
pub extern "C" fn oxcclCommMemFree(comm: oxcclComm_t, ptr: *mut c_void) -> oxcclResult_t {
    crate::with_comm(comm, |c| {
        if ptr.is_null() {
            return Ok(());
        }
        match c.shared.lock().unwrap_or_else(|p| p.into_inner()).remove(&(ptr as usize)) {
            Some(_) => Ok(()),
            None => Err(Failure::invalid(format!("{ptr:?} is not memory of oxcclCommMemAlloc on this communicator"))),
        }
    })
}

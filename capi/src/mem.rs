//! Memory for buffers: page-aligned host memory (what the transports
//! register or map best), freed with oxcclMemFree.

use std::ffi::c_void;

use crate::error::{guard, Failure};
use crate::types::*;

/// Allocates `size` bytes of page-aligned, zeroed host memory into `*ptr`.
#[no_mangle]
pub extern "C" fn oxcclMemAlloc(ptr: *mut *mut c_void, size: usize) -> oxcclResult_t {
    guard(None, || {
        if ptr.is_null() {
            return Err(Failure::invalid("ptr is NULL"));
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
        // SAFETY: NULL or an allocation of oxcclMemAlloc (posix_memalign), freed once.
        unsafe { libc::free(ptr) };
        Ok(())
    })
}

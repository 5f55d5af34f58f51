//! oxccl's C ABI: `liboxccl.so` and `include/oxccl.h` (generated from this
//! crate by cbindgen; `capi/tests/header.rs` keeps the two equal), shaped
//! like `nccl.h` so a program written for NCCL ports by renaming.
//!
//! * `types.rs`: result codes, data types and operators (plain ints with
//!   named constants: any value a C caller passes is checked), the unique
//!   id, the versioned configuration, the communicator handle.
//! * `error.rs`: every exported function runs through `guard` — errors
//!   become result codes with a last-error text, panics are caught.
//! * `init.rs`: unique id, init by rank (and with a configuration), init of
//!   every rank in this process, init from a launcher's environment,
//!   destroy, finalize, abort, async error, count, rank.
//! * `coll.rs`: every collective, send and receive, on host or device memory.
//! * `device.rs`: calls on device memory (a GPU's, or the emulated device's).
//! * `group.rs`: group start and end (calls recorded, then issued together).
//! * `mem.rs`: memory allocation.
//!
//! Unsafe code here reads and writes the memory a C caller hands over, each
//! block with the contract it relies on.

#![allow(non_snake_case, non_upper_case_globals)]
// Every export is called from C, where Rust's `unsafe fn` means nothing: the
// exports are safe Rust functions whose raw pointers are C's contract, and
// each dereference says what it relies on.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod coll;
mod device;
mod error;
mod group;
mod init;
mod mem;
mod types;

pub use coll::*;
pub use group::*;
pub use init::*;
pub use mem::*;
pub use types::*;

use error::{guard, Failure};

/// Runs `body` on the communicator behind `comm`: NULL is an invalid
/// argument, and a communicator another thread is inside is an invalid
/// usage (a communicator is used by one thread at a time).
pub(crate) fn with_comm(comm: oxcclComm_t, body: impl FnOnce(&oxcclComm) -> Result<(), Failure>) -> oxcclResult_t {
    if comm.is_null() {
        return guard(None, || Err(Failure::invalid("comm is NULL")));
    }
    // SAFETY: a handle made by an init call and not yet destroyed (the caller's contract).
    let c = unsafe { &*comm };
    let _busy = match Busy::enter(c) {
        Some(b) => b,
        None => return guard(Some(c), || Err(Failure::usage("the communicator is in use by another thread"))),
    };
    guard(Some(c), || body(c))
}

impl oxcclComm {
    /// What the communicator runs on (entered: see [`with_comm`]).
    pub(crate) fn core(&self) -> std::sync::MutexGuard<'_, oxccl_cuda::foreign::ForeignComm> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A communicator entered by a thread, left when dropped.
pub(crate) struct Busy<'a>(&'a oxcclComm);

impl<'a> Busy<'a> {
    pub(crate) fn enter(c: &'a oxcclComm) -> Option<Busy<'a>> {
        use std::sync::atomic::Ordering;
        c.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).ok().map(|_| Busy(c))
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, std::sync::atomic::Ordering::Release);
    }
}

//! Errors across the boundary: every exported function runs its body
//! through [`guard`], which turns an error into its result code and keeps
//! its text for oxcclGetLastError (the thread's, and the communicator's),
//! and catches any panic, so nothing unwinds into C.

use std::cell::RefCell;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

use oxccl_core::{Error, ErrorKind};

use crate::types::*;

/// An error of the C API: a result code and what happened.
pub struct Failure {
    pub code: oxcclResult_t,
    pub text: String,
}

impl Failure {
    pub fn invalid(text: impl Into<String>) -> Failure {
        Failure { code: oxcclInvalidArgument, text: text.into() }
    }

    pub fn usage(text: impl Into<String>) -> Failure {
        Failure { code: oxcclInvalidUsage, text: text.into() }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match e.kind() {
            ErrorKind::InvalidArgument => oxcclInvalidArgument,
            ErrorKind::InvalidUsage => oxcclInvalidUsage,
            ErrorKind::RemoteFailure => oxcclRemoteError,
            ErrorKind::Timeout => oxcclTimeout,
            ErrorKind::System => oxcclSystemError,
            ErrorKind::Internal => oxcclInternalError,
        };
        Failure { code, text: e.to_string() }
    }
}

thread_local! {
    /// The last error of a call made on this thread.
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

fn c_text(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).unwrap_or_default()
}

/// Runs `body`; an error or a panic becomes its result code, its text kept
/// as this thread's last error and, when `comm` is given, the
/// communicator's.
pub fn guard(comm: Option<&oxcclComm>, body: impl FnOnce() -> Result<(), Failure>) -> oxcclResult_t {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(Failure { code: oxcclInternalError, text: format!("internal error (please report): {what}") })
    });
    match outcome {
        Ok(()) => oxcclSuccess,
        Err(f) => {
            remember(comm, &f.text);
            f.code
        }
    }
}

/// Keeps `text` as this thread's last error and `comm`'s.
pub fn remember(comm: Option<&oxcclComm>, text: &str) {
    let c = c_text(text);
    if let Some(comm) = comm {
        *comm.last_error.lock().unwrap_or_else(|p| p.into_inner()) = c.clone();
    }
    LAST.with(|l| *l.borrow_mut() = c);
}

/// This thread's last error's text, valid until its next failing call.
pub fn thread_last() -> *const std::ffi::c_char {
    LAST.with(|l| l.borrow().as_ptr())
}

/// The text of a result code.
pub fn describe(code: oxcclResult_t) -> &'static std::ffi::CStr {
    match code {
        oxcclSuccess => c"no error",
        oxcclUnhandledCudaError => c"unhandled cuda error",
        oxcclSystemError => c"unhandled system error (the machine refused: memory, threads, files, sockets)",
        oxcclInternalError => c"internal error (a bug in oxccl: please report it)",
        oxcclInvalidArgument => c"invalid argument",
        oxcclInvalidUsage => c"invalid usage (the ranks disagree, or the communicator is used wrongly)",
        oxcclRemoteError => c"remote process exited or there was a network error",
        oxcclInProgress => c"operation in progress",
        oxcclTimeout => c"a wait passed its deadline",
        _ => c"unknown result code",
    }
}

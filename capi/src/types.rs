//! The types and constants of the C API, as `include/oxccl.h` declares
//! them. Result codes, data types and operators are plain `int`s with named
//! constants (a C caller may pass any value: an unknown one is an
//! `oxcclInvalidArgument`, never undefined behaviour).

#![allow(non_camel_case_types, non_upper_case_globals)]

use std::ffi::{c_char, c_int, c_uint};

/// This library's version: major·10000 + minor·100 + patch.
pub const OXCCL_VERSION_CODE: c_int = 100;

/// What every call returns (NCCL's values, plus `oxcclTimeout`).
pub type oxcclResult_t = c_int;
pub const oxcclSuccess: oxcclResult_t = 0;
/// Not returned today (kept so that NCCL's values line up).
pub const oxcclUnhandledCudaError: oxcclResult_t = 1;
/// The machine refused: memory, threads, files, sockets.
pub const oxcclSystemError: oxcclResult_t = 2;
/// A bug in oxccl: please report it with oxcclGetLastError's text.
pub const oxcclInternalError: oxcclResult_t = 3;
/// Fix this call's arguments.
pub const oxcclInvalidArgument: oxcclResult_t = 4;
/// The ranks disagree, or the communicator is used wrongly.
pub const oxcclInvalidUsage: oxcclResult_t = 5;
/// Another rank failed or aborted (the communicator is aborted).
pub const oxcclRemoteError: oxcclResult_t = 6;
/// Not returned today (every call completes before it returns).
pub const oxcclInProgress: oxcclResult_t = 7;
/// A wait passed the communicator's deadline (the communicator is aborted).
pub const oxcclTimeout: oxcclResult_t = 8;
pub const oxcclNumResults: oxcclResult_t = 9;

/// Element types.
pub type oxcclDataType_t = c_int;
pub const oxcclInt8: oxcclDataType_t = 0;
pub const oxcclChar: oxcclDataType_t = 0;
pub const oxcclUint8: oxcclDataType_t = 1;
pub const oxcclInt32: oxcclDataType_t = 2;
pub const oxcclInt: oxcclDataType_t = 2;
pub const oxcclUint32: oxcclDataType_t = 3;
pub const oxcclInt64: oxcclDataType_t = 4;
pub const oxcclUint64: oxcclDataType_t = 5;
pub const oxcclFloat16: oxcclDataType_t = 6;
pub const oxcclHalf: oxcclDataType_t = 6;
pub const oxcclFloat32: oxcclDataType_t = 7;
pub const oxcclFloat: oxcclDataType_t = 7;
pub const oxcclFloat64: oxcclDataType_t = 8;
pub const oxcclDouble: oxcclDataType_t = 8;
pub const oxcclBfloat16: oxcclDataType_t = 9;
pub const oxcclNumTypes: oxcclDataType_t = 10;

/// Reduction operators. `oxcclAvg` divides the sum by the number of ranks
/// (integers: truncated toward zero).
pub type oxcclRedOp_t = c_int;
pub const oxcclSum: oxcclRedOp_t = 0;
pub const oxcclProd: oxcclRedOp_t = 1;
pub const oxcclMax: oxcclRedOp_t = 2;
pub const oxcclMin: oxcclRedOp_t = 3;
pub const oxcclAvg: oxcclRedOp_t = 4;
pub const oxcclNumOps: oxcclRedOp_t = 5;

/// Bytes of a unique id.
pub const OXCCL_UNIQUE_ID_BYTES: usize = 128;

/// What every rank of a new communicator needs to find the others: made by
/// one rank with oxcclGetUniqueId and handed to the others by any means
/// (MPI_Bcast, a file, a store). It names where that rank will serve the
/// rendezvous, so the rank that made it must be one of the group.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct oxcclUniqueId {
    pub internal: [c_char; OXCCL_UNIQUE_ID_BYTES],
}

/// `magic` of a configuration made by OXCCL_CONFIG_INITIALIZER.
pub const OXCCL_CONFIG_MAGIC: c_uint = 0x6f78_6363;

/// Settings of a new communicator (oxcclCommInitRankConfig). Start from
/// OXCCL_CONFIG_INITIALIZER and change what you need: `size`, `magic` and
/// `version` say which fields a caller knows of, so a program built against
/// an older header keeps working.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct oxcclConfig_t {
    /// sizeof(oxcclConfig_t) as the caller knows it.
    pub size: usize,
    pub magic: c_uint,
    /// OXCCL_VERSION_CODE of the caller's header.
    pub version: c_uint,
    /// 1 (the default) or 0 (NCCL's non-blocking mode). Both are accepted,
    /// and in both a call has done its part when it returns: on host memory
    /// it has completed, on device memory it is enqueued. So a communicator
    /// never reports oxcclInProgress, which NCCL's non-blocking contract
    /// allows: a program polling oxcclCommGetAsyncError sees oxcclSuccess.
    pub blocking: c_int,
    /// Deadline of every wait in milliseconds; 0: OXCCL_TIMEOUT, else 300 s.
    pub timeoutMs: c_int,
    /// Largest message in bytes; 0: OXCCL_SLICE_BYTES, else 128 KiB.
    pub sliceBytes: c_int,
    /// The algorithm of every call: 0 ring, 1 tree, 2 halving-doubling,
    /// 3 direct; -1: chosen per call.
    pub algorithm: c_int,
}

/// A communicator: one rank of a group (opaque).
pub struct oxcclComm {
    /// What it runs its calls on (host memory until a call on device memory).
    pub(crate) core: std::sync::Mutex<oxccl_cuda::foreign::ForeignComm>,
    /// Aborts the group from any thread (oxcclCommAbort).
    pub(crate) abort: oxccl_core::AbortHandle,
    pub(crate) rank: usize,
    pub(crate) world: usize,
    /// The last error on this communicator, for oxcclGetLastError.
    pub(crate) last_error: std::sync::Mutex<std::ffi::CString>,
    /// Set while a thread is inside a call on it.
    pub(crate) busy: std::sync::atomic::AtomicBool,
    /// Memory of its shared heap handed out by oxcclCommMemAlloc, by address.
    pub(crate) shared: std::sync::Mutex<std::collections::HashMap<usize, oxccl_core::SharedBuf<u8>>>,
}

/// A communicator handle.
pub type oxcclComm_t = *mut oxcclComm;

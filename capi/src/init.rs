//! Making and ending communicators: the unique id, init by rank (with a
//! configuration), init of every rank in this process, init from a
//! launcher's environment, destroy, abort, and the queries.

use std::ffi::{c_char, c_int, CStr, CString};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use oxccl_core::bootstrap::connect::TransportKind;
use oxccl_core::bootstrap::env::{Launch, Master};
use oxccl_core::{Algorithm, Communicator, Config};
use oxccl_cuda::foreign::ForeignComm;

use crate::error::{describe, guard, remember, thread_last, Failure};
use crate::types::*;
use crate::with_comm;

fn handle(comm: Communicator) -> oxcclComm_t {
    Box::into_raw(Box::new(oxcclComm {
        abort: comm.abort_handle(),
        rank: comm.rank(),
        world: comm.world(),
        core: Mutex::new(ForeignComm::Host(Box::new(comm))),
        last_error: Mutex::new(CString::default()),
        busy: AtomicBool::new(false),
        shared: Mutex::default(),
    }))
}

/// Writes `value` through `out`, which must not be null.
fn put<T>(out: *mut T, what: &str, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a valid, writable pointer (checked non-null above).
    unsafe { out.write(value) };
    Ok(())
}

/// Sets `*version` to OXCCL_VERSION_CODE.
#[no_mangle]
pub extern "C" fn oxcclGetVersion(version: *mut c_int) -> oxcclResult_t {
    guard(None, || put(version, "version", OXCCL_VERSION_CODE))
}

/// This host's address as peers on other hosts reach it: OXCCL_ID_HOST if
/// set, else the address of the interface a route out of the host uses,
/// else the loopback address (a group on one host).
fn this_host() -> String {
    if let Ok(h) = std::env::var("OXCCL_ID_HOST") {
        if !h.trim().is_empty() {
            return h.trim().to_string();
        }
    }
    // Connecting a UDP socket sends nothing; it only picks the route's address.
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("10.255.255.255:1").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
}

/// Makes a unique id naming this host and a free port, where the rank
/// that made it serves the group's rendezvous (it must be one of the
/// group's ranks, as with NCCL).
#[no_mangle]
pub extern "C" fn oxcclGetUniqueId(id: *mut oxcclUniqueId) -> oxcclResult_t {
    guard(None, || {
        let host = this_host();
        let port = TcpListener::bind((host.as_str(), 0))
            .or_else(|_| TcpListener::bind(("0.0.0.0", 0)))
            .and_then(|l| l.local_addr())
            .map_err(|e| Failure { code: oxcclSystemError, text: format!("no free port on {host}: {e}") })?
            .port();
        let text = format!("oxccl-id-1 {host} {port}");
        let mut out = oxcclUniqueId { internal: [0; OXCCL_UNIQUE_ID_BYTES] };
        for (d, s) in out.internal.iter_mut().zip(text.bytes()) {
            *d = s as c_char;
        }
        put(id, "id", out)
    })
}

fn parse_id(id: &oxcclUniqueId) -> Result<Master, Failure> {
    let bytes: Vec<u8> = id.internal.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    let text = String::from_utf8_lossy(&bytes);
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next().and_then(|p| p.parse::<u16>().ok())) {
        (Some("oxccl-id-1"), Some(host), Some(port)) => Ok(Master { host: host.to_string(), port }),
        _ => Err(Failure::invalid(format!("not an oxccl unique id: {text:?} (made by oxcclGetUniqueId?)"))),
    }
}

fn config_from(config: *const oxcclConfig_t) -> Result<Config, Failure> {
    let mut out = Config::default();
    if config.is_null() {
        return Ok(out);
    }
    // SAFETY: a non-null configuration points to at least its `size`, `magic` and `version`
    // (every version of the struct starts with them); later fields are read only when `size`
    // says the caller's struct has them.
    let c = unsafe { config.read_unaligned() };
    if c.magic != OXCCL_CONFIG_MAGIC {
        return Err(Failure::invalid("the configuration was not made by OXCCL_CONFIG_INITIALIZER (bad magic)"));
    }
    if c.size < std::mem::size_of::<oxcclConfig_t>() {
        return Err(Failure::invalid(format!(
            "a configuration of {} bytes; this library knows {} (rebuild against its header)",
            c.size,
            std::mem::size_of::<oxcclConfig_t>()
        )));
    }
    if c.blocking != 0 && c.blocking != 1 {
        return Err(Failure::invalid(format!("blocking = {} (0 or 1)", c.blocking)));
    }
    if c.timeoutMs < 0 || c.sliceBytes < 0 {
        return Err(Failure::invalid("timeoutMs and sliceBytes must be 0 (default) or positive"));
    }
    if c.timeoutMs > 0 {
        out.timeout = Duration::from_millis(c.timeoutMs as u64);
    }
    if c.sliceBytes > 0 {
        out.slice_bytes = c.sliceBytes as usize;
    }
    out.algorithm = match c.algorithm {
        -1 => None,
        0 => Some(Algorithm::Ring),
        1 => Some(Algorithm::Tree),
        2 => Some(Algorithm::HalvingDoubling),
        3 => Some(Algorithm::Direct),
        a => {
            return Err(Failure::invalid(format!(
                "algorithm {a} (0 ring, 1 tree, 2 halving-doubling, 3 direct, -1 auto)"
            )))
        }
    };
    Ok(out)
}

fn init_rank(
    comm: *mut oxcclComm_t,
    nranks: c_int,
    id: &oxcclUniqueId,
    rank: c_int,
    config: Config,
) -> Result<(), Failure> {
    if comm.is_null() {
        return Err(Failure::invalid("comm is NULL"));
    }
    if nranks < 1 || rank < 0 || rank >= nranks {
        return Err(Failure::invalid(format!("rank {rank} of {nranks} ranks")));
    }
    let launch = Launch {
        rank: rank as usize,
        world: nranks as usize,
        local_rank: None,
        local_world: None,
        master: parse_id(id)?,
        launcher: "oxcclCommInitRank",
    };
    let kind = TransportKind::from_env()?;
    let c = Communicator::init_with(&launch, kind, config)?;
    put(comm, "comm", handle(c))
}

/// Makes this process's rank `rank` of `nranks`, meeting the others through
/// `id` (collective: every rank calls it with the same id and count).
#[no_mangle]
pub extern "C" fn oxcclCommInitRank(
    comm: *mut oxcclComm_t,
    nranks: c_int,
    id: oxcclUniqueId,
    rank: c_int,
) -> oxcclResult_t {
    guard(None, || init_rank(comm, nranks, &id, rank, Config::default()))
}

/// As oxcclCommInitRank with settings (NULL: the defaults).
#[no_mangle]
pub extern "C" fn oxcclCommInitRankConfig(
    comm: *mut oxcclComm_t,
    nranks: c_int,
    id: oxcclUniqueId,
    rank: c_int,
    config: *mut oxcclConfig_t,
) -> oxcclResult_t {
    guard(None, || init_rank(comm, nranks, &id, rank, config_from(config)?))
}

/// Makes `ndev` ranks in this process at once, `comms[i]` being rank `i`
/// (`devlist` is for device memory and may be NULL). Drive them from one
/// thread inside a group, or from a thread each.
#[no_mangle]
pub extern "C" fn oxcclCommInitAll(comms: *mut oxcclComm_t, ndev: c_int, devlist: *const c_int) -> oxcclResult_t {
    let _ = devlist;
    guard(None, || {
        if comms.is_null() || ndev < 1 {
            return Err(Failure::invalid(format!("comms is NULL or ndev = {ndev}")));
        }
        let group = Communicator::local_group_with(ndev as usize, Config::default())?;
        for (i, c) in group.into_iter().enumerate() {
            // SAFETY: `comms` holds `ndev` handles (the caller's contract); `i` < ndev.
            unsafe { comms.add(i).write(handle(c)) };
        }
        Ok(())
    })
}

/// (oxccl) Makes this process's rank of a job a launcher started (oxccl
/// run, mpirun, srun, torchrun), from its environment: rank, world size
/// and the rendezvous address, as the launcher names them.
#[no_mangle]
pub extern "C" fn oxcclCommInitFromEnv(comm: *mut oxcclComm_t) -> oxcclResult_t {
    guard(None, || {
        if comm.is_null() {
            return Err(Failure::invalid("comm is NULL"));
        }
        let c = Communicator::init(Config::default())?;
        put(comm, "comm", handle(c))
    })
}

/// Frees the communicator (NULL is ignored). Collective in spirit: peers
/// still waiting on it time out.
#[no_mangle]
pub extern "C" fn oxcclCommDestroy(comm: oxcclComm_t) -> oxcclResult_t {
    guard(None, || {
        if !comm.is_null() {
            // SAFETY: made by Box::into_raw in `handle`, destroyed once (the caller's contract).
            drop(unsafe { Box::from_raw(comm) });
        }
        Ok(())
    })
}

/// Completes the communicator's outstanding work: every call has completed
/// when it returns, so there is none.
#[no_mangle]
pub extern "C" fn oxcclCommFinalize(comm: oxcclComm_t) -> oxcclResult_t {
    with_comm(comm, |_| Ok(()))
}

/// Aborts the group (every rank's waits end with an error) and frees the
/// communicator.
#[no_mangle]
pub extern "C" fn oxcclCommAbort(comm: oxcclComm_t) -> oxcclResult_t {
    guard(None, || {
        if !comm.is_null() {
            // SAFETY: as in oxcclCommDestroy.
            let c = unsafe { Box::from_raw(comm) };
            c.abort.abort("oxcclCommAbort");
        }
        Ok(())
    })
}

/// The group's failure, if any: oxcclSuccess while all is well, else the
/// code of the error that failed it (the communicator's text says which).
#[no_mangle]
pub extern "C" fn oxcclCommGetAsyncError(comm: oxcclComm_t, asyncError: *mut oxcclResult_t) -> oxcclResult_t {
    with_comm(comm, |c| {
        let code = match c.abort.cause() {
            None => oxcclSuccess,
            Some(e) => {
                let f = Failure::from(e);
                remember(Some(c), &f.text);
                f.code
            }
        };
        put(asyncError, "asyncError", code)
    })
}

/// The number of ranks.
#[no_mangle]
pub extern "C" fn oxcclCommCount(comm: oxcclComm_t, count: *mut c_int) -> oxcclResult_t {
    with_comm(comm, |c| put(count, "count", c.world as c_int))
}

/// This rank.
#[no_mangle]
pub extern "C" fn oxcclCommUserRank(comm: oxcclComm_t, rank: *mut c_int) -> oxcclResult_t {
    with_comm(comm, |c| put(rank, "rank", c.rank as c_int))
}

/// The CUDA device of a communicator: the GPU its device memory is on,
/// once a call has run on device memory; -1 and oxcclInvalidUsage before
/// that (a host communicator) and on the emulated device.
#[no_mangle]
pub extern "C" fn oxcclCommCuDevice(comm: oxcclComm_t, device: *mut c_int) -> oxcclResult_t {
    use oxccl_cuda::foreign::Located;
    with_comm(comm, |c| match c.core().located() {
        Some(on) => match on {
            Located::Gpu(n) => put(device, "device", n as c_int),
            _ => {
                put(device, "device", -1)?;
                Err(Failure::usage("a communicator of the emulated device has no CUDA device"))
            }
        },
        None => {
            put(device, "device", -1)?;
            Err(Failure::usage("a host communicator has no CUDA device (no call has run on device memory)"))
        }
    })
}

/// A result code's text (a static string).
#[no_mangle]
pub extern "C" fn oxcclGetErrorString(result: oxcclResult_t) -> *const c_char {
    describe(result).as_ptr()
}

/// What the last failing call on `comm` said (NULL: on this thread);
/// valid until the next failing call there.
#[no_mangle]
pub extern "C" fn oxcclGetLastError(comm: oxcclComm_t) -> *const c_char {
    if comm.is_null() {
        return thread_last();
    }
    // SAFETY: a live handle (the caller's contract); the text lives in it until replaced.
    let c = unsafe { &*comm };
    let text = c.last_error.lock().unwrap_or_else(|p| p.into_inner());
    let p = text.as_ptr();
    drop(text);
    if unsafe_is_empty(p) {
        thread_last()
    } else {
        p
    }
}

fn unsafe_is_empty(p: *const c_char) -> bool {
    // SAFETY: `p` points to a NUL-terminated string of a CString that is kept alive.
    unsafe { CStr::from_ptr(p) }.is_empty()
}

//! The collectives, send and receive on host memory. Each checks its
//! arguments at once; inside a group (`group.rs`) it is then recorded,
//! otherwise it runs and has completed when it returns. In place follows
//! NCCL: the send buffer is the receive buffer (all-gather: its own block
//! of it; reduce-scatter: the receive buffer is the send buffer's own
//! block).

use std::ffi::{c_int, c_void};

use oxccl_core::{Bytes, Call, Collective, Communicator, DType, P2p, ReduceOp};

use crate::error::Failure;
use crate::group::{record, Op};
use crate::types::*;
use crate::with_comm;

pub(crate) fn dtype_of(d: oxcclDataType_t) -> Result<DType, Failure> {
    Ok(match d {
        oxcclInt8 => DType::I8,
        oxcclUint8 => DType::U8,
        oxcclInt32 => DType::I32,
        oxcclUint32 => DType::U32,
        oxcclInt64 => DType::I64,
        oxcclUint64 => DType::U64,
        oxcclFloat16 => DType::F16,
        oxcclFloat32 => DType::F32,
        oxcclFloat64 => DType::F64,
        oxcclBfloat16 => DType::BF16,
        other => return Err(Failure::invalid(format!("data type {other} (0 ..= 9: see oxcclDataType_t)"))),
    })
}

fn op_of(op: oxcclRedOp_t) -> Result<ReduceOp, Failure> {
    Ok(match op {
        oxcclSum => ReduceOp::Sum,
        oxcclProd => ReduceOp::Prod,
        oxcclMax => ReduceOp::Max,
        oxcclMin => ReduceOp::Min,
        oxcclAvg => ReduceOp::Avg,
        other => return Err(Failure::invalid(format!("reduction operator {other} (0 ..= 4: see oxcclRedOp_t)"))),
    })
}

/// A collective's buffers as the caller passed them.
#[derive(Clone, Copy)]
pub(crate) struct Buffers {
    pub send: *const u8,
    pub recv: *mut u8,
}

/// Runs `call` on the caller's buffers (checked by [`check`]).
pub(crate) fn run(comm: &Communicator, call: &Call, b: Buffers) -> Result<(), Failure> {
    let (c, n, es) = (call.collective, comm.world(), call.dtype.size());
    let (input, output) = (c.input_len(n, call.count) * es, c.output_len(n, call.count) * es);
    let rank = comm.rank();
    let (io, oo) = c.in_place_offsets(rank, call.count);
    if call.count == 0 {
        return Ok(comm.run(call, Bytes::InPlace(&mut []))?);
    }
    // Reduce's receive buffer matters on the root only: NULL elsewhere.
    let mut spare = Vec::new();
    let recv = if b.recv.is_null() && c == Collective::Reduce && rank != call.root {
        spare.resize(output, 0u8);
        spare.as_mut_ptr()
    } else {
        b.recv
    };
    // Broadcast's send buffer matters on the root only: NULL elsewhere is in place.
    let send =
        if b.send.is_null() && c == Collective::Broadcast && rank != call.root { recv as *const u8 } else { b.send };
    // (Wrapping: any addresses a caller passes compare without overflow.)
    if (send as usize).wrapping_sub(io * es) == (recv as usize).wrapping_sub(oo * es) {
        let whole = c.in_place_len(n, call.count) * es;
        // SAFETY: in place, the caller's one array holds the collective's in-place length at
        // NCCL's offsets (its contract for these calls), and nothing else touches it meanwhile.
        let buf = unsafe { std::slice::from_raw_parts_mut(recv.sub(oo * es), whole) };
        return Ok(comm.run(call, Bytes::InPlace(buf))?);
    }
    let (s0, r0) = (send as usize, recv as usize);
    if s0 < r0 + output && r0 < s0 + input {
        return Err(Failure::invalid(format!(
            "{c}: the send buffer ({input} bytes at {s0:#x}) overlaps the receive buffer ({output} bytes at \
             {r0:#x}) other than in place"
        )));
    }
    // SAFETY: the caller's buffers hold the collective's input and output lengths (its
    // contract), they do not overlap (checked above), and nothing else touches them meanwhile.
    let (s, r) = unsafe { (std::slice::from_raw_parts(send, input), std::slice::from_raw_parts_mut(recv, output)) };
    Ok(comm.run(call, Bytes::OutOfPlace { send: s, recv: r })?)
}

/// Checks, then runs or records, one collective.
#[allow(clippy::too_many_arguments)]
fn collective(
    comm: oxcclComm_t,
    collective: Collective,
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    op: oxcclRedOp_t,
    root: c_int,
) -> oxcclResult_t {
    let checked = |c: &oxcclComm| -> Result<(Call, Buffers), Failure> {
        let dtype = dtype_of(datatype)?;
        let op = if collective.reduces() { op_of(op)? } else { ReduceOp::Sum };
        let world = c.comm.world();
        if collective.rooted() && (root < 0 || root as usize >= world) {
            return Err(Failure::invalid(format!("{collective}: root {root} of {world} ranks")));
        }
        let root = if collective.rooted() { root as usize } else { 0 };
        let me = c.comm.rank();
        let send_needed = !(collective == Collective::Broadcast && me != root);
        let recv_needed = !(collective == Collective::Reduce && me != root);
        if count > 0 && ((send_needed && send.is_null()) || (recv_needed && recv.is_null())) {
            return Err(Failure::invalid(format!("{collective}: a NULL buffer for {count} elements")));
        }
        let call = Call { collective, dtype, op, count, root, algorithm: None };
        Ok((call, Buffers { send: send.cast(), recv: recv.cast() }))
    };
    if let Some(code) = record(comm, |c| Ok(Op::Collective(checked(c)?))) {
        return code;
    }
    with_comm(comm, |c| {
        let (call, b) = checked(c)?;
        run(&c.comm, &call, b)
    })
}

/// Every rank's `recvbuff` = the ranks' `sendbuff`s (count elements)
/// combined under `op`.
#[no_mangle]
pub extern "C" fn oxcclAllReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    op: oxcclRedOp_t,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    collective(comm, Collective::AllReduce, sendbuff, recvbuff, count, datatype, op, 0)
}

/// Every rank's `recvbuff` = `root`'s `sendbuff` (count elements; the
/// send buffer is read on the root only and may be NULL elsewhere).
#[no_mangle]
pub extern "C" fn oxcclBroadcast(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    root: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    collective(comm, Collective::Broadcast, sendbuff, recvbuff, count, datatype, oxcclSum, root)
}

/// Broadcast in place.
#[no_mangle]
pub extern "C" fn oxcclBcast(
    buff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    root: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    collective(comm, Collective::Broadcast, buff, buff, count, datatype, oxcclSum, root)
}

/// `root`'s `recvbuff` = the ranks' `sendbuff`s combined under `op` (the
/// receive buffer is written on the root only and may be NULL elsewhere).
#[no_mangle]
pub extern "C" fn oxcclReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    op: oxcclRedOp_t,
    root: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    collective(comm, Collective::Reduce, sendbuff, recvbuff, count, datatype, op, root)
}

/// Every rank's `recvbuff` (nranks · sendcount elements) = the ranks'
/// `sendbuff`s in rank order.
#[no_mangle]
pub extern "C" fn oxcclAllGather(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: oxcclDataType_t,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    collective(comm, Collective::AllGather, sendbuff, recvbuff, sendcount, datatype, oxcclSum, 0)
}

/// Rank r's `recvbuff` (recvcount elements) = block r of the ranks'
/// `sendbuff`s (nranks · recvcount elements) combined under `op`.
#[no_mangle]
pub extern "C" fn oxcclReduceScatter(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: oxcclDataType_t,
    op: oxcclRedOp_t,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    collective(comm, Collective::ReduceScatter, sendbuff, recvbuff, recvcount, datatype, op, 0)
}

/// Block p (count elements) of rank r's `sendbuff` lands in block r of
/// rank p's `recvbuff`; both hold nranks · count elements.
#[no_mangle]
pub extern "C" fn oxcclAlltoAll(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    collective(comm, Collective::AllToAll, sendbuff, recvbuff, count, datatype, oxcclSum, 0)
}

/// Checks, then runs or records, one send or receive.
fn p2p(
    comm: oxcclComm_t,
    send: bool,
    buf: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    peer: c_int,
) -> oxcclResult_t {
    let checked = |c: &oxcclComm| -> Result<Op, Failure> {
        let dtype = dtype_of(datatype)?;
        let world = c.comm.world();
        if peer < 0 || peer as usize >= world || peer as usize == c.comm.rank() {
            return Err(Failure::invalid(format!("peer {peer} (this is rank {} of {world})", c.comm.rank())));
        }
        if count > 0 && buf.is_null() {
            return Err(Failure::invalid(format!("a NULL buffer for {count} elements")));
        }
        let bytes = count.checked_mul(dtype.size()).ok_or_else(|| Failure::invalid("count overflows"))?;
        Ok(Op::P2p { send, buf: buf.cast(), bytes, dtype, peer: peer as usize })
    };
    if let Some(code) = record(comm, checked) {
        return code;
    }
    with_comm(comm, |c| {
        let op = checked(c)?;
        exchange(&c.comm, &[op])
    })
}

/// Runs the sends and receives among `ops` together.
pub(crate) fn exchange(comm: &Communicator, ops: &[Op]) -> Result<(), Failure> {
    let mut transfers: Vec<P2p> = Vec::new();
    for op in ops {
        if let Op::P2p { send, buf, bytes, dtype, peer } = *op {
            let empty = bytes == 0 || buf.is_null();
            transfers.push(match send {
                // SAFETY: the caller's buffer holds `bytes` (count elements, its contract) and is
                // not written (send) or not touched by anything else (receive) until this returns.
                true if !empty => P2p::Send { buf: unsafe { std::slice::from_raw_parts(buf, bytes) }, dtype, peer },
                false if !empty => {
                    // SAFETY: as above.
                    let buf = unsafe { std::slice::from_raw_parts_mut(buf, bytes) };
                    P2p::Recv { buf, dtype, peer }
                }
                true => P2p::Send { buf: &[], dtype, peer },
                false => P2p::Recv { buf: &mut [], dtype, peer },
            });
        }
    }
    Ok(comm.exchange(&mut transfers)?)
}

/// Sends `count` elements to `peer`, which receives them with oxcclRecv.
#[no_mangle]
pub extern "C" fn oxcclSend(
    sendbuff: *const c_void,
    count: usize,
    datatype: oxcclDataType_t,
    peer: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    p2p(comm, true, sendbuff.cast_mut(), count, datatype, peer)
}

/// Receives `count` elements from `peer`.
#[no_mangle]
pub extern "C" fn oxcclRecv(
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    peer: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let _ = stream;
    p2p(comm, false, recvbuff, count, datatype, peer)
}

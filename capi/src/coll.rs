//! The collectives, send and receive on host memory. Each checks its
//! arguments at once; inside a group (`group.rs`) it is then recorded,
//! otherwise it runs and has completed when it returns. In place follows
//! NCCL: the send buffer is the receive buffer (all-gather: its own block
//! of it; reduce-scatter: the receive buffer is the send buffer's own
//! block).

use std::ffi::{c_int, c_void};

use oxccl_core::{Bytes, Call, Collective, Communicator, DType, P2p, ReduceOp};
use oxccl_cuda::foreign::Located;

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

/// A collective's buffers and stream as the caller passed them.
#[derive(Clone, Copy)]
pub(crate) struct Buffers {
    pub send: *const u8,
    pub recv: *mut u8,
    /// The caller's stream (a `cudaStream_t`; 0: the default stream).
    pub stream: usize,
}

/// Where a collective's data lies in the caller's memory: addresses and
/// lengths in bytes.
pub(crate) enum Layout {
    Empty,
    InPlace {
        addr: usize,
        len: usize,
    },
    /// `recv` is `None` for reduce's receive buffer off the root, left out.
    OutOfPlace {
        send: (usize, usize),
        recv: Option<(usize, usize)>,
    },
}

impl Layout {
    /// The start of every buffer.
    pub(crate) fn addrs(&self) -> Vec<usize> {
        match *self {
            Layout::Empty => Vec::new(),
            Layout::InPlace { addr, .. } => vec![addr],
            Layout::OutOfPlace { send, recv } => std::iter::once(send.0).chain(recv.map(|r| r.0)).collect(),
        }
    }
}

/// The layout of `call` on the caller's buffers (its arguments checked by
/// `collective`): NCCL's in-place forms, and the buffers a rank may leave
/// NULL (broadcast's send buffer and reduce's receive buffer off the root).
pub(crate) fn layout(call: &Call, world: usize, rank: usize, b: Buffers) -> Result<Layout, Failure> {
    let (c, n, es) = (call.collective, world, call.dtype.size());
    if call.count == 0 {
        return Ok(Layout::Empty);
    }
    let (input, output) = (c.input_len(n, call.count) * es, c.output_len(n, call.count) * es);
    let (io, oo) = c.in_place_offsets(rank, call.count);
    let left_out = b.recv.is_null() && c == Collective::Reduce && rank != call.root;
    let recv = b.recv as usize;
    let send = if b.send.is_null() && c == Collective::Broadcast && rank != call.root { recv } else { b.send as usize };
    if left_out {
        return Ok(Layout::OutOfPlace { send: (send, input), recv: None });
    }
    // (Wrapping: any addresses a caller passes compare without overflow.)
    if send.wrapping_sub(io * es) == recv.wrapping_sub(oo * es) {
        return Ok(Layout::InPlace { addr: recv.wrapping_sub(oo * es), len: c.in_place_len(n, call.count) * es });
    }
    if send < recv.saturating_add(output) && recv < send.saturating_add(input) {
        return Err(Failure::invalid(format!(
            "{c}: the send buffer ({input} bytes at {send:#x}) overlaps the receive buffer ({output} bytes at \
             {recv:#x}) other than in place"
        )));
    }
    Ok(Layout::OutOfPlace { send: (send, input), recv: Some((recv, output)) })
}

/// Runs `call` on the caller's buffers: on the host, or on the device
/// whose memory they are (`device.rs`).
pub(crate) fn run(c: &oxcclComm, call: &Call, b: Buffers) -> Result<(), Failure> {
    let layout = layout(call, c.world, c.rank, b)?;
    let mut core = c.core();
    match oxccl_cuda::foreign::placed(&call.collective.to_string(), &layout.addrs())? {
        Located::Host => run_host(core.host()?, call, &layout),
        on => crate::device::run(&mut core, on, call, &layout, b.stream),
    }
}

/// Runs `call` on host memory.
fn run_host(comm: &Communicator, call: &Call, layout: &Layout) -> Result<(), Failure> {
    match *layout {
        Layout::Empty => Ok(comm.run(call, Bytes::InPlace(&mut []))?),
        Layout::InPlace { addr, len } => {
            // SAFETY: in place, the caller's one array holds the collective's in-place length at
            // NCCL's offsets (its contract for these calls), and nothing else touches it meanwhile.
            let buf = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) };
            Ok(comm.run(call, Bytes::InPlace(buf))?)
        }
        Layout::OutOfPlace { send, recv } => {
            let mut spare = Vec::new();
            let (r, rlen) = recv.unwrap_or_else(|| {
                spare.resize(call.collective.output_len(comm.world(), call.count) * call.dtype.size(), 0u8);
                (spare.as_mut_ptr() as usize, spare.len())
            });
            // SAFETY: the caller's buffers hold the collective's input and output lengths (its
            // contract), they do not overlap (checked by `layout`), and nothing else touches
            // them meanwhile.
            let (s, r) = unsafe {
                (
                    std::slice::from_raw_parts(send.0 as *const u8, send.1),
                    std::slice::from_raw_parts_mut(r as *mut u8, rlen),
                )
            };
            Ok(comm.run(call, Bytes::OutOfPlace { send: s, recv: r })?)
        }
    }
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
    stream: *mut c_void,
) -> oxcclResult_t {
    let checked = |c: &oxcclComm| -> Result<(Call, Buffers), Failure> {
        let dtype = dtype_of(datatype)?;
        let op = if collective.reduces() { op_of(op)? } else { ReduceOp::Sum };
        let world = c.world;
        if collective.rooted() && (root < 0 || root as usize >= world) {
            return Err(Failure::invalid(format!("{collective}: root {root} of {world} ranks")));
        }
        let root = if collective.rooted() { root as usize } else { 0 };
        let me = c.rank;
        let send_needed = !(collective == Collective::Broadcast && me != root);
        let recv_needed = !(collective == Collective::Reduce && me != root);
        if count > 0 && ((send_needed && send.is_null()) || (recv_needed && recv.is_null())) {
            return Err(Failure::invalid(format!("{collective}: a NULL buffer for {count} elements")));
        }
        let call = Call { collective, dtype, op, count, root, algorithm: None };
        Ok((call, Buffers { send: send.cast(), recv: recv.cast(), stream: stream as usize }))
    };
    if let Some(code) = record(comm, |c| Ok(Op::Collective(checked(c)?))) {
        return code;
    }
    with_comm(comm, |c| {
        let (call, b) = checked(c)?;
        run(c, &call, b)
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
    collective(comm, Collective::AllReduce, sendbuff, recvbuff, count, datatype, op, 0, stream)
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
    collective(comm, Collective::Broadcast, sendbuff, recvbuff, count, datatype, oxcclSum, root, stream)
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
    collective(comm, Collective::Broadcast, buff, buff, count, datatype, oxcclSum, root, stream)
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
    collective(comm, Collective::Reduce, sendbuff, recvbuff, count, datatype, op, root, stream)
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
    collective(comm, Collective::AllGather, sendbuff, recvbuff, sendcount, datatype, oxcclSum, 0, stream)
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
    collective(comm, Collective::ReduceScatter, sendbuff, recvbuff, recvcount, datatype, op, 0, stream)
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
    collective(comm, Collective::AllToAll, sendbuff, recvbuff, count, datatype, oxcclSum, 0, stream)
}

/// Checks, then runs or records, one send or receive.
fn p2p(
    comm: oxcclComm_t,
    send: bool,
    buf: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    peer: c_int,
    stream: *mut c_void,
) -> oxcclResult_t {
    let checked = |c: &oxcclComm| -> Result<Op, Failure> {
        let dtype = dtype_of(datatype)?;
        let world = c.world;
        if peer < 0 || peer as usize >= world || peer as usize == c.rank {
            return Err(Failure::invalid(format!("peer {peer} (this is rank {} of {world})", c.rank)));
        }
        if count > 0 && buf.is_null() {
            return Err(Failure::invalid(format!("a NULL buffer for {count} elements")));
        }
        let bytes = count.checked_mul(dtype.size()).ok_or_else(|| Failure::invalid("count overflows"))?;
        Ok(Op::P2p { send, buf: buf.cast(), bytes, dtype, peer: peer as usize, stream: stream as usize })
    };
    if let Some(code) = record(comm, checked) {
        return code;
    }
    with_comm(comm, |c| {
        let op = checked(c)?;
        exchange(c, &[op])
    })
}

/// Runs the sends and receives among `ops` together: on the host, or on
/// the device whose memory they are (staged through host memory).
pub(crate) fn exchange(c: &oxcclComm, ops: &[Op]) -> Result<(), Failure> {
    let p2p: Vec<_> = ops
        .iter()
        .filter_map(|op| match *op {
            Op::P2p { send, buf, bytes, dtype, peer, stream } => Some((send, buf, bytes, dtype, peer, stream)),
            Op::Collective(_) => None,
        })
        .collect();
    let addrs: Vec<usize> = p2p.iter().filter(|t| t.2 > 0 && !t.1.is_null()).map(|t| t.1 as usize).collect();
    let mut core = c.core();
    match oxccl_cuda::foreign::placed("send/recv", &addrs)? {
        Located::Host => {}
        on => {
            let ops: Vec<_> = p2p
                .iter()
                .map(|&(send, buf, bytes, dtype, peer, _)| oxccl_cuda::foreign::DeviceP2p {
                    send,
                    buf: oxccl_core::mem::Region::from_raw(buf as usize, if buf.is_null() { 0 } else { bytes }),
                    dtype,
                    peer,
                })
                .collect();
            let stream = p2p.first().map_or(0, |t| t.5);
            return crate::device::exchange(&mut core, on, &ops, stream);
        }
    }
    let mut transfers: Vec<P2p> = Vec::new();
    for &(send, buf, bytes, dtype, peer, _) in &p2p {
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
    Ok(core.host()?.exchange(&mut transfers)?)
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
    p2p(comm, true, sendbuff.cast_mut(), count, datatype, peer, stream)
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
    p2p(comm, false, recvbuff, count, datatype, peer, stream)
}

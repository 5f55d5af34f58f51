//! Calls on device memory: a GPU's (`cudaMalloc`), or the emulated
//! device's (`OXCCL_DEVICE=emu`, where oxcclMemAlloc hands it out: how CI
//! runs this path without a GPU). The first call on device memory makes
//! the communicator a device communicator of that device (every rank does,
//! as they make the same calls: collective); its calls then go through the
//! GPU collectives — stream-ordered between processes that can open each
//! other's device memory, else staged through host memory — ordered on the
//! caller's stream ([`oxccl_cuda::foreign`]). Sends and receives on device
//! memory are staged through host memory.

use oxccl_core::mem::Region;
use oxccl_core::{Call, Regions};
use oxccl_cuda::foreign::{DeviceP2p, ForeignComm as Core, Located};

use crate::coll::Layout;
use crate::error::Failure;

/// Runs `call` on device memory at `on`, ordered on the caller's `stream`.
pub(crate) fn run(core: &mut Core, on: Located, call: &Call, layout: &Layout, stream: usize) -> Result<(), Failure> {
    let d = core.device(on)?;
    let bufs = match *layout {
        Layout::Empty => unreachable!("an empty call's buffers are the host's"),
        Layout::InPlace { addr, len } => Regions::InPlace(Region::from_raw(addr, len)),
        Layout::OutOfPlace { send, recv } => {
            let recv = match recv {
                Some((addr, len)) => Region::from_raw(addr, len),
                None => d.spare(call.collective.output_len(d.host().world(), call.count) * call.dtype.size())?,
            };
            Regions::OutOfPlace { send: Region::from_raw(send.0, send.1), recv }
        }
    };
    // SAFETY: the caller's buffers are device memory of `on` (located above; the device checks
    // their extent) that stays valid and untouched until its stream has run the call, and
    // `stream` is its live stream of that device (its contract, as with NCCL).
    Ok(unsafe { d.run(call, bufs, stream) }?)
}

/// Runs sends and receives on device memory at `on` together.
pub(crate) fn exchange(core: &mut Core, on: Located, ops: &[DeviceP2p], stream: usize) -> Result<(), Failure> {
    let d = core.device(on)?;
    // SAFETY: as in `run`, for every buffer.
    Ok(unsafe { d.exchange(ops, stream) }?)
}

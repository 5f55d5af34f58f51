//! Memory spaces: where a collective's bytes live, and how the executor
//! moves and combines them there.
//!
//! The executor never touches the bytes of a [`Region`] itself: it asks the
//! call's [`MemorySpace`] to copy, reduce and finalize, and before it
//! announces a result to another rank (a message committed, a posting, a
//! barrier arrival, the end of a call) it asks the space to complete what
//! it issued. [`Host`] is ordinary memory: operations run on the calling
//! thread and are complete when they return. A device space (the GPU
//! collectives) issues them to the device instead and completes them by
//! waiting for its queue; the schedules, the checker and the transports
//! stay as they are.

use crate::dtype::{DType, ReduceOp};
use crate::error::Error;
use crate::mem::{copy_streaming, Region};
use crate::reduce;

/// See the module docs. Regions passed in are the executor's: each is live
/// for the call, and the schedule discipline (proven by the checker) gives
/// the caller sole access to every region it writes and no concurrent
/// writer to any region it reads.
pub trait MemorySpace: Send + Sync {
    /// For people: `host`, `cuda:0`.
    fn name(&self) -> &'static str;

    /// `dst = src`: disjoint regions of equal length. `stream`: the data will
    /// not be read again soon, so it may bypass the caches.
    ///
    /// # Safety
    /// As for the trait: `dst` is the caller's alone and nobody writes `src`.
    unsafe fn copy(&self, dst: Region, src: Region, stream: bool);

    /// `dst = a ⊕ b` element-wise in `dtype` under `op`; `dst` may be `a`
    /// itself and overlaps nothing else; all three are equally long.
    ///
    /// # Safety
    /// As for [`MemorySpace::copy`].
    unsafe fn reduce(&self, dtype: DType, op: ReduceOp, dst: Region, a: Region, b: Region);

    /// Applies `op`'s final step over `world` ranks to the complete
    /// reduction in `dst` (avg's division; nothing for the others).
    ///
    /// # Safety
    /// As for [`MemorySpace::copy`].
    unsafe fn finalize(&self, dtype: DType, op: ReduceOp, world: usize, dst: Region);

    /// Completes every operation issued so far, so that its results may be
    /// announced to other ranks.
    fn complete(&self) -> Result<(), Error>;

    /// Scratch space in this space for a call, `bytes` long: one of two
    /// (`half`, which the executor alternates by call, as with the
    /// transport's scratch). `None`, the default, where the transport's
    /// scratch serves (host memory).
    fn scratch(&self, half: usize, bytes: usize) -> Option<Result<Region, Error>> {
        let _ = (half, bytes);
        None
    }

    /// A work area in this space of at least `bytes`, private to the rank
    /// (direct steps combine a block there before writing it to several
    /// destinations). `None`, the default, where the executor's own host
    /// block serves.
    fn work_area(&self, bytes: usize) -> Option<Result<Region, Error>> {
        let _ = bytes;
        None
    }

    /// `Ok` when `r` is memory of this space that a call may name as a
    /// rank's buffer; else what it is instead (host memory where device
    /// memory is expected, another device's). Checked before a call issues
    /// anything. The default accepts everything (the host).
    fn check(&self, what: &'static str, r: Region) -> Result<(), Error> {
        let _ = (what, r);
        Ok(())
    }

    /// The host space itself, so that callers on the hottest paths can call
    /// it directly rather than through the trait (every host operation is
    /// complete as it returns). `None` for every other space.
    fn as_host(&self) -> Option<&Host> {
        None
    }
}

/// Ordinary memory of this process (or memory it maps), reduced on the CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Host;

/// The host space, for callers that need a `&'static dyn MemorySpace`.
pub static HOST: Host = Host;

impl MemorySpace for Host {
    fn name(&self) -> &'static str {
        "host"
    }

    #[inline]
    unsafe fn copy(&self, dst: Region, src: Region, stream: bool) {
        // SAFETY: the caller guarantees sole access to `dst` and no writer
        // of `src` (the trait's contract); they are disjoint.
        let (d, s) = unsafe { (dst.bytes_mut(), src.bytes()) };
        if stream {
            copy_streaming(d, s);
        } else {
            d.copy_from_slice(s);
        }
    }

    #[inline]
    unsafe fn reduce(&self, dtype: DType, op: ReduceOp, dst: Region, a: Region, b: Region) {
        if dst == a {
            // SAFETY: dst and b are disjoint; sole access by the trait's contract.
            reduce::reduce_in_place(dtype, op, unsafe { dst.bytes_mut() }, unsafe { b.bytes() });
        } else {
            // SAFETY: dst is disjoint from a and b; sole access by the trait's contract.
            reduce::reduce(dtype, op, unsafe { dst.bytes_mut() }, unsafe { a.bytes() }, unsafe { b.bytes() });
        }
    }

    unsafe fn finalize(&self, dtype: DType, op: ReduceOp, world: usize, dst: Region) {
        // SAFETY: sole access to `dst` by the trait's contract.
        reduce::finalize(dtype, op, world, unsafe { dst.bytes_mut() });
    }

    /// Host operations are complete when they return.
    fn complete(&self) -> Result<(), Error> {
        Ok(())
    }

    fn as_host(&self) -> Option<&Host> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_copies_reduces_and_finalizes() {
        let a = [1f32, 2.0, 3.0];
        let mut b = [10f32, 20.0, 30.0];
        let mut out = [0f32; 3];
        let region = |x: &mut [f32]| Region::of_mut(bytemuck::cast_slice_mut(x));
        let (ra, rb, ro) = (Region::of(bytemuck::cast_slice(&a)), region(&mut b), region(&mut out));
        // SAFETY: the three arrays are distinct locals, used by nothing else meanwhile.
        unsafe {
            HOST.reduce(DType::F32, ReduceOp::Avg, ro, ra, rb);
            HOST.reduce(DType::F32, ReduceOp::Avg, ro, ro, rb);
            HOST.finalize(DType::F32, ReduceOp::Avg, 3, ro);
        }
        assert_eq!(out, [7.0, 14.0, 21.0]);
        for stream in [false, true] {
            // SAFETY: as above.
            unsafe { HOST.copy(rb, ra, stream) };
            assert_eq!(b, a);
            b = [0.0; 3];
        }
        assert!(HOST.complete().is_ok() && HOST.as_host().is_some());
        assert_eq!(HOST.name(), "host");
    }
}

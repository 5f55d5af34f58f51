//! One call on one rank: buffers from the heap or the communicator's shared
//! pool, laid out in place (NCCL's layout) or not, outputs poisoned first.

use std::ops::{Deref, DerefMut};

use oxccl::{Bytes, Call, Communicator, Element, Error, SharedBuf};

use crate::num::Num;

/// A buffer from the heap or from the communicator's shared pool.
pub enum Mem<T: Element> {
    Heap(Vec<T>),
    Shared(SharedBuf<T>),
}

impl<T: Element> Mem<T> {
    /// `len` elements, all `fill`; from `alloc_shared` when `shared`.
    pub fn new(comm: &Communicator, len: usize, shared: bool, fill: T) -> Result<Mem<T>, Error> {
        if shared {
            let mut b = comm.alloc_shared::<T>(len)?;
            b.fill(fill);
            Ok(Mem::Shared(b))
        } else {
            Ok(Mem::Heap(vec![fill; len]))
        }
    }
}

impl<T: Element> Deref for Mem<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Mem::Heap(v) => v,
            Mem::Shared(b) => b,
        }
    }
}

impl<T: Element> DerefMut for Mem<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Mem::Heap(v) => v,
            Mem::Shared(b) => b,
        }
    }
}

/// What one call left on this rank.
pub struct Output<T> {
    /// The output, as long as the collective's output.
    pub out: Vec<T>,
    /// Out of place: whether the input buffer still holds the input.
    pub input_kept: bool,
}

/// Where a call's buffers live and how it is run there: host memory
/// ([`HostMemory`], through [`run`]) or a device's, in crates that have one.
pub trait Memory {
    /// Runs `call` on this rank with `input` as [`run`] does, on this memory.
    fn run<T: Num>(
        &self,
        comm: &Communicator,
        call: &Call,
        input: &[T],
        in_place: bool,
        shared: bool,
    ) -> oxccl::Result<Output<T>>;
}

/// Host memory: the heap, or the communicator's shared pool.
pub struct HostMemory;

impl Memory for HostMemory {
    fn run<T: Num>(
        &self,
        comm: &Communicator,
        call: &Call,
        input: &[T],
        in_place: bool,
        shared: bool,
    ) -> oxccl::Result<Output<T>> {
        run(comm, call, input, in_place, shared)
    }
}

/// Runs `call` on this rank with `input`, in place or not, over buffers from
/// `alloc_shared` (`shared`) or the heap whose output part holds
/// [`Num::poison`]; returns the output.
pub fn run<T: Num>(
    comm: &Communicator,
    call: &Call,
    input: &[T],
    in_place: bool,
    shared: bool,
) -> oxccl::Result<Output<T>> {
    let (n, r, c, count) = (comm.world(), comm.rank(), call.collective, call.count);
    let (in_len, out_len) = (c.input_len(n, count), c.output_len(n, count));
    if in_place {
        let mut buf = Mem::new(comm, c.in_place_len(n, count), shared, T::poison())?;
        let (io, oo) = c.in_place_offsets(r, count);
        buf[io..io + in_len].copy_from_slice(input);
        comm.run(call, Bytes::InPlace(bytemuck::cast_slice_mut(&mut buf[..])))?;
        Ok(Output { out: buf[oo..oo + out_len].to_vec(), input_kept: true })
    } else {
        let mut send = Mem::new(comm, in_len, shared, T::poison())?;
        send.copy_from_slice(input);
        let mut recv = Mem::new(comm, out_len, shared, T::poison())?;
        comm.run(
            call,
            Bytes::OutOfPlace { send: bytemuck::cast_slice(&send[..]), recv: bytemuck::cast_slice_mut(&mut recv[..]) },
        )?;
        Ok(Output { out: recv.to_vec(), input_kept: send[..] == *input })
    }
}

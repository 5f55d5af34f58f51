//! [`SharedBuf`]: memory other ranks reach directly, handed out by the
//! communicator ([`crate::Communicator::alloc_shared`]) from its transport's
//! shared pool.

use std::sync::Arc;

use crate::mem::{Lines, Region};
use crate::transport::Transport;

/// A buffer other ranks can reach directly ([`crate::Communicator::alloc_shared`]):
/// carved from the transport's shared pool where it has one, ordinary
/// aligned memory otherwise. Dereferences to `[T]`, zeroed when made.
pub struct SharedBuf<T: bytemuck::Pod> {
    region: Region,
    len: usize,
    backing: Backing,
    _t: std::marker::PhantomData<T>,
}

enum Backing {
    Transport(Arc<dyn Transport>),
    Heap(#[allow(dead_code)] Lines),
}

impl<T: bytemuck::Pod> SharedBuf<T> {
    /// `len` elements from `t`'s shared memory, or from the heap when `t`
    /// has none to offer.
    pub fn new(t: Arc<dyn Transport>, len: usize) -> crate::Result<SharedBuf<T>> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| {
            crate::Error::InvalidArgument(format!("{len} elements of {} bytes overflow", size_of::<T>()))
        })?;
        let (region, backing) = match t.alloc(bytes)? {
            Some(r) => (r, Backing::Transport(t)),
            None => {
                let lines = Lines::new(bytes);
                (lines.region().sub(0..bytes).expect("sized"), Backing::Heap(lines))
            }
        };
        if region.addr() % align_of::<T>() != 0 {
            return Err(crate::Error::System("shared memory is not aligned for the element type".into()));
        }
        // SAFETY: the region was just handed to this buffer alone.
        unsafe { region.bytes_mut().fill(0) };
        Ok(SharedBuf { region, len, backing, _t: std::marker::PhantomData })
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for SharedBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the region holds `len` aligned, initialised (zeroed, then
        // only written as T) elements and belongs to this buffer; peers touch
        // it only inside collectives, which borrow the buffer.
        unsafe { std::slice::from_raw_parts(self.region.addr() as *const T, self.len) }
    }
}

impl<T: bytemuck::Pod> std::ops::DerefMut for SharedBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for Deref, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.region.addr() as *mut T, self.len) }
    }
}

impl<T: bytemuck::Pod> Drop for SharedBuf<T> {
    fn drop(&mut self) {
        if let Backing::Transport(t) = &self.backing {
            t.free(self.region);
        }
    }
}

//! Device buffers: an owned, typed allocation on one device's stream.
//! f16 and bf16 data live in `DeviceBuffer<u16>` (their bit patterns), as
//! the kernels take them.

use std::ops::Range;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, ValidAsZeroBits};

use crate::device::Device;
use crate::error::{DriverContext, Error, Result};

/// `len` elements of `T` in device memory.
#[derive(Debug)]
pub struct DeviceBuffer<T> {
    slice: CudaSlice<T>,
}

impl<T: DeviceRepr> DeviceBuffer<T> {
    pub fn len(&self) -> usize {
        self.slice.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slice.len() == 0
    }

    /// The whole buffer, for a launcher's input.
    pub fn view(&self) -> CudaView<'_, T> {
        self.slice.as_view()
    }

    /// The whole buffer, for a launcher's output.
    pub fn view_mut(&mut self) -> CudaViewMut<'_, T> {
        self.slice.as_view_mut()
    }

    /// Elements `range`, or an error naming the bounds.
    pub fn slice(&self, range: Range<usize>) -> Result<CudaView<'_, T>> {
        let len = self.len();
        self.slice.try_slice(range.clone()).ok_or_else(|| out_of_range(range, len))
    }

    pub fn slice_mut(&mut self, range: Range<usize>) -> Result<CudaViewMut<'_, T>> {
        let len = self.len();
        self.slice.try_slice_mut(range.clone()).ok_or_else(|| out_of_range(range, len))
    }
}

fn out_of_range(range: Range<usize>, len: usize) -> Error {
    Error::invalid("DeviceBuffer::slice", format!("{range:?} outside a buffer of {len} elements"))
}

impl Device {
    /// A zero-filled buffer of `len` elements (at least one is allocated).
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let slice = self.stream().alloc_zeros::<T>(len.max(1)).during("cuMemAllocAsync")?;
        Ok(DeviceBuffer { slice })
    }

    /// A new buffer holding a copy of `host`.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<DeviceBuffer<T>> {
        let slice = self.stream().clone_htod(host).during("cuMemcpyHtoDAsync")?;
        Ok(DeviceBuffer { slice })
    }

    /// Copies `host` into the start of `buf`.
    pub fn upload_into<T: DeviceRepr>(&self, host: &[T], buf: &mut CudaViewMut<'_, T>) -> Result<()> {
        if host.len() != buf.len() {
            return Err(Error::invalid("upload_into", format!("{} elements into {}", host.len(), buf.len())));
        }
        self.stream().memcpy_htod(host, buf).during("cuMemcpyHtoDAsync")
    }

    /// Copies a device view into `host` (same length) and waits for it.
    pub fn download_into<T: DeviceRepr>(&self, view: &CudaView<'_, T>, host: &mut [T]) -> Result<()> {
        if host.len() != view.len() {
            return Err(Error::invalid("download_into", format!("{} elements into {}", view.len(), host.len())));
        }
        self.stream().memcpy_dtoh(view, host).during("cuMemcpyDtoHAsync")?;
        self.synchronize()
    }

    /// Device-to-device copy of equal-length views.
    pub fn copy<T: DeviceRepr>(&self, src: &CudaView<'_, T>, dst: &mut CudaViewMut<'_, T>) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::invalid("copy", format!("{} elements into {}", src.len(), dst.len())));
        }
        self.stream().memcpy_dtod(src, dst).during("cuMemcpyDtoDAsync")
    }
}

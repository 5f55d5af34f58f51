//! Raw views of memory that ranks share.
//!
//! The executor works on [`Region`]s: a rank's own buffers, other ranks'
//! buffers (when they share an address space) and transport slots. A region
//! is a pointer and a length with no lifetime; turning one into a slice is the
//! only unsafe step, and it lives here. Callers uphold two rules, which the
//! checker proves for every schedule: a region is only used while the
//! collective that published it runs, and no two ranks touch one element
//! between two synchronisations unless both only read it.

use std::ops::Range;

/// A span of bytes somewhere in this address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a region is an address and a length; who may access the bytes, and
// when, is governed by the schedule discipline described in the module docs.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    pub const EMPTY: Region = Region { ptr: std::ptr::NonNull::<u64>::dangling().as_ptr() as *mut u8, len: 0 };

    /// A region for bytes the caller will only read.
    pub fn of(bytes: &[u8]) -> Region {
        Region { ptr: bytes.as_ptr() as *mut u8, len: bytes.len() }
    }

    /// A region for bytes the caller may write.
    pub fn of_mut(bytes: &mut [u8]) -> Region {
        Region { ptr: bytes.as_mut_ptr(), len: bytes.len() }
    }

    /// A region from an address and length published by another thread
    /// (see [`Region::addr`]); using it is as unsafe as any region.
    pub fn from_raw(addr: usize, len: usize) -> Region {
        Region { ptr: addr as *mut u8, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// The bytes `r` of this region, or `None` when `r` is out of bounds.
    pub fn sub(&self, r: Range<usize>) -> Option<Region> {
        (r.start <= r.end && r.end <= self.len).then(|| Region {
            // SAFETY: r.start <= len, so the result stays inside (or one past) the allocation.
            ptr: unsafe { self.ptr.add(r.start) },
            len: r.end - r.start,
        })
    }

    /// True when the two regions share a byte.
    pub fn overlaps(&self, o: &Region) -> bool {
        self.len > 0 && o.len > 0 && self.addr() < o.addr() + o.len && o.addr() < self.addr() + self.len
    }

    /// Reads the region.
    ///
    /// # Safety
    /// The region must be live and no other thread may write it until the
    /// returned slice is dropped.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        // SAFETY: guaranteed by the caller (see above).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Writes the region.
    ///
    /// # Safety
    /// The region must be live and no other thread, and no other slice in
    /// this thread, may touch it until the returned slice is dropped.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut<'a>(self) -> &'a mut [u8] {
        // SAFETY: guaranteed by the caller (see above).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// A 64-byte aligned line; buffers the library allocates are made of these so
/// every dtype is aligned and neighbours do not share cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [u8; 64]);

/// An owned, 64-byte aligned, zeroed byte buffer whose bytes other threads
/// may access through [`Region`]s.
pub struct Lines {
    lines: Box<[std::cell::UnsafeCell<Line>]>,
}

// SAFETY: the bytes are only reached through regions, under the discipline above.
unsafe impl Sync for Lines {}

impl Lines {
    pub fn new(bytes: usize) -> Lines {
        let n = bytes.div_ceil(64);
        Lines { lines: (0..n).map(|_| std::cell::UnsafeCell::new(Line([0; 64]))).collect() }
    }

    pub fn len(&self) -> usize {
        self.lines.len() * 64
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The whole buffer as a region.
    pub fn region(&self) -> Region {
        if self.lines.is_empty() {
            return Region::EMPTY;
        }
        Region { ptr: self.lines[0].get().cast::<u8>(), len: self.len() }
    }
}

/// Copies `src` into `dst` (same length) with stores that bypass the cache
/// where the machine has them (x86-64: `movntdq`). For outputs far larger than
/// the caches this saves the read a normal store makes of every line it
/// writes; for data that will be read again soon a plain copy is better.
pub(crate) fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy between unequal lengths");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        // The head up to 16-byte alignment of dst, and the tail, go plainly.
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        let body = (dst.len() - head) / 16 * 16;
        dst[..head].copy_from_slice(&src[..head]);
        let (d, s) = (&mut dst[head..head + body], &src[head..head + body]);
        for (dc, sc) in d.chunks_exact_mut(16).zip(s.chunks_exact(16)) {
            // SAFETY: SSE2 is part of x86-64; `dc` is 16 bytes, 16-byte
            // aligned (head skipped to alignment), and `sc` is 16 readable
            // bytes (unaligned load).
            unsafe {
                _mm_stream_si128(dc.as_mut_ptr().cast::<__m128i>(), _mm_loadu_si128(sc.as_ptr().cast::<__m128i>()))
            };
        }
        // SAFETY: a store fence has no preconditions; it orders the streaming
        // stores before whatever publishes this data to other threads.
        unsafe { _mm_sfence() };
        dst[head + body..].copy_from_slice(&src[head + body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_copy_matches_at_every_alignment() {
        let src: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for off in 0..20 {
            for len in [0, 1, 15, 16, 17, 100, 977] {
                let mut dst = vec![0u8; 1024];
                copy_streaming(&mut dst[off..off + len], &src[3..3 + len]);
                assert_eq!(&dst[off..off + len], &src[3..3 + len]);
                assert!(dst[..off].iter().chain(&dst[off + len..]).all(|&b| b == 0));
            }
        }
    }
}

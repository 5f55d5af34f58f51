//! The shared pool's allocator: first fit over a free list of byte ranges,
//! 64-byte aligned, merging neighbours on free. Only the owning process
//! allocates from its pool; peers merely read and write what it hands out.

use std::collections::BTreeMap;

const ALIGN: usize = 64;

pub struct Pool {
    /// Free ranges: start → length.
    free: BTreeMap<usize, usize>,
}

impl Pool {
    pub fn new(len: usize) -> Pool {
        let len = len / ALIGN * ALIGN;
        Pool { free: if len > 0 { BTreeMap::from([(0, len)]) } else { BTreeMap::new() } }
    }

    /// The offset of `bytes` (rounded up to the alignment), if they fit.
    pub fn alloc(&mut self, bytes: usize) -> Option<usize> {
        let need = bytes.max(1).div_ceil(ALIGN) * ALIGN;
        let (&start, &len) = self.free.iter().find(|(_, &len)| len >= need)?;
        self.free.remove(&start);
        if len > need {
            self.free.insert(start + need, len - need);
        }
        Some(start)
    }

    /// Returns the allocation of `bytes` at `start`.
    pub fn free(&mut self, start: usize, bytes: usize) {
        let mut start = start;
        let mut len = bytes.max(1).div_ceil(ALIGN) * ALIGN;
        if let Some((&next, &nlen)) = self.free.range(start + len..).next() {
            if next == start + len {
                self.free.remove(&next);
                len += nlen;
            }
        }
        if let Some((&prev, &plen)) = self.free.range(..start).next_back() {
            if prev + plen == start {
                self.free.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        self.free.insert(start, len);
    }

    /// Free bytes in all.
    pub fn available(&self) -> usize {
        self.free.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_do_not_overlap_and_free_merges() {
        let mut p = Pool::new(1 << 20);
        let a = p.alloc(100).unwrap();
        let b = p.alloc(1000).unwrap();
        let c = p.alloc(64).unwrap();
        assert!(a + 128 <= b && b + 1024 <= c);
        assert_eq!(a % ALIGN + b % ALIGN + c % ALIGN, 0);
        assert!(p.alloc(2 << 20).is_none());
        p.free(b, 1000);
        p.free(a, 100);
        p.free(c, 64);
        assert_eq!(p.available(), 1 << 20);
        assert_eq!(p.alloc(1 << 20), Some(0));
    }
}

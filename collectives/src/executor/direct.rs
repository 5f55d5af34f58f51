//! Direct steps: other ranks' buffers, found through their postings, read
//! and written one-sidedly in cache-sized blocks.

use super::{buf_index, Exec, DIRECT_BLOCK, STREAM_BYTES};
use crate::error::{Error, Result};
use crate::mem::Region;
use crate::schedule::{At, Direct, Rank};

impl Exec<'_> {
    /// Buffer `i` of peer `r`, as posted for this call: read when it entered,
    /// else from the board.
    pub(super) fn peer_buf(&self, r: Rank, i: usize) -> Result<Option<Region>> {
        if !self.t.shares_memory() {
            return Err(Error::NeedsSharedMemory { algorithm: "direct" });
        }
        if let Some(bufs) = self.state.peers[r] {
            return Ok(bufs[i]);
        }
        match self.t.posting(r, self.seq) {
            Some(post) => Ok(post.bufs[i]),
            None => Err(self.not_posted(r)),
        }
    }

    #[cold]
    pub(super) fn not_posted(&self, r: Rank) -> Error {
        Error::Protocol { peer: r, what: format!("no buffers posted for {}", self.label()) }
    }

    /// `len` elements at `a`, in this rank's buffers or a peer's.
    pub(super) fn resolve(&self, a: &At, len: usize) -> Result<Region> {
        let i = buf_index(a.loc.buf);
        let buf = if a.rank == self.rank { Some(self.bufs[i]) } else { self.peer_buf(a.rank, i)? };
        match buf {
            Some(buf) => self.locate_in(buf, a.loc, len),
            None => Err(self.not_shared(a)),
        }
    }

    #[cold]
    pub(super) fn not_shared(&self, a: &At) -> Error {
        Error::InvalidArgument(format!(
            "{}: rank {}'s {:?} buffer is not shared with other ranks (allocate buffers with \
             Communicator::alloc_shared to use the direct algorithm across processes)",
            self.label(),
            a.rank,
            a.loc.buf
        ))
    }

    pub(super) fn direct(&mut self, d: &Direct) -> Result<()> {
        // The lists live in the rank's state so their memory is reused.
        self.state.srcs.clear();
        for a in &d.srcs {
            self.state.srcs.push(self.resolve(a, d.len)?);
        }
        self.state.dsts.clear();
        for a in &d.dsts {
            self.state.dsts.push(self.resolve(a, d.len)?);
        }
        self.combine_direct(d, &self.state.srcs, &self.state.dsts)
    }

    /// Combines `srcs` in blocks and writes each block to every one of `dsts`.
    pub(super) fn combine_direct(&self, d: &Direct, srcs: &[Region], dsts: &[Region]) -> Result<()> {
        let bytes = d.len * self.esize();
        let finalize = d.finalize && self.collective.reduces();
        if srcs.len() == 1 && !finalize {
            for &dst in dsts {
                self.copy(dst, srcs[0])?;
            }
            return Ok(());
        }
        // One small destination that no source overlaps: combine straight into it.
        if let [dst] = dsts {
            if bytes <= DIRECT_BLOCK && srcs.len() > 1 && !srcs.iter().any(|s| s.overlaps(dst)) {
                self.reduce(*dst, srcs[0], srcs[1])?;
                for &s in &srcs[2..] {
                    self.reduce(*dst, *dst, s)?;
                }
                if finalize {
                    self.finalize(*dst);
                }
                return Ok(());
            }
        }
        // Outputs far larger than the caches are written around them.
        let stream = bytes * dsts.len() >= STREAM_BYTES;
        let block = self.work_area()?;
        let step = DIRECT_BLOCK / self.esize() * self.esize();
        let mut off = 0;
        while off < bytes {
            // A failing peer waits for this step: stop at the next block.
            if self.t.abort_flag().load(std::sync::atomic::Ordering::Relaxed) {
                return Err(super::aborted(self.t));
            }
            let n = step.min(bytes - off);
            let piece = |r: &Region| r.sub(off..off + n).expect("inside the region");
            let tmp = block.sub(0..n).expect("inside the block");
            match srcs.len() {
                1 => self.copy(tmp, piece(&srcs[0]))?,
                _ => self.reduce(tmp, piece(&srcs[0]), piece(&srcs[1]))?,
            }
            for s in srcs.iter().skip(2) {
                self.reduce(tmp, tmp, piece(s))?;
            }
            if finalize {
                self.finalize(tmp);
            }
            for dst in dsts {
                // A destination that is also a source (in place) was just
                // read into the cache: a plain store is cheaper there.
                let cached = srcs.contains(dst);
                self.copy_with(piece(dst), tmp, stream && !cached)?;
            }
            off += n;
        }
        Ok(())
    }
}

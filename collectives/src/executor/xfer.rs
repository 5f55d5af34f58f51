//! Xfers: NCCL's fused primitive run over a transport's channels, and the
//! checks every received message's header goes through.

use super::Exec;
use crate::error::{Error, Result};
use crate::mem::Region;
use crate::schedule::{Rank, Xfer};
use crate::transport::{Header, Kind};

impl Exec<'_> {
    #[inline(never)]
    pub(super) fn xfer(&mut self, x: &Xfer) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        let bytes = x.len * self.esize();
        // Wait until every message has arrived and every receiver has room.
        self.wait("message or free slot", || {
            if let Some(p) = x.recv.iter().find(|&p| t.try_recv(me, p).is_none()) {
                return Err(p);
            }
            match x.send.iter().find(|&p| t.try_send_slot(me, p).is_none()) {
                Some(p) => Err(p),
                None => Ok(()),
            }
        })?;
        let mut recvd = [Region::EMPTY; 3];
        for (i, p) in x.recv.iter().enumerate() {
            let (h, data) = t.try_recv(me, p).expect("checked ready");
            self.check_args(p, &h)?;
            self.check_header(p, h, Kind::Collective, self.seq, bytes)?;
            recvd[i] = data;
        }
        let mut slots = [Region::EMPTY; 3];
        for (i, p) in x.send.iter().enumerate() {
            let slot = t.try_send_slot(me, p).expect("checked ready");
            slots[i] = slot.sub(0..bytes).ok_or_else(|| self.internal(format!("{bytes} bytes exceed a slot")))?;
        }
        let src = x.src.map(|l| self.locate(&self.bufs, l, x.len)).transpose()?;
        let dst = x.dst.map(|l| self.locate(&self.bufs, l, x.len)).transpose()?;
        let nrecv = x.recv.len();
        if let (Some(s), 0, None) = (src, nrecv, dst) {
            if !(x.finalize && self.collective.reduces()) {
                return self.send_from(x, s, &slots);
            }
        }
        if !self.host {
            return self.xfer_staged(x, src, dst, &recvd[..nrecv], &slots);
        }
        let target = dst.unwrap_or(slots[0]);
        // Combine: start from the source or the first message, reduce the rest.
        let reduced = match src {
            Some(s) if nrecv == 0 => {
                self.copy(target, s)?;
                0
            }
            Some(s) => {
                self.reduce(target, s, recvd[0])?;
                1
            }
            None => {
                self.copy(target, recvd[0])?;
                1
            }
        };
        for &r in &recvd[reduced..nrecv] {
            self.reduce(target, target, r)?;
        }
        if x.finalize {
            // `target` is this rank's own destination or a slot it holds.
            self.finalize(target);
        }
        if !x.send.is_empty() {
            self.complete()?;
        }
        for (i, p) in x.send.iter().enumerate() {
            if slots[i] != target {
                self.copy(slots[i], target)?;
            }
            t.commit(me, p, Header { kind: Kind::Collective, seq: self.seq, len: bytes, total: 0, args: self.args });
        }
        for p in x.recv.iter() {
            t.release(me, p);
        }
        Ok(())
    }

    /// [`Exec::xfer`]'s combination in a memory space of its own (a device),
    /// whose reducer reads only its own memory, over a transport whose slots
    /// are host memory: each received message is first copied into the
    /// space's work area, the result is computed in the destination or
    /// there, then copied into each slot; the space completes all of it
    /// before anything is committed or a received slot released.
    #[cold]
    #[inline(never)]
    fn xfer_staged(
        &mut self,
        x: &Xfer,
        src: Option<Region>,
        dst: Option<Region>,
        recvd: &[Region],
        slots: &[Region; 3],
    ) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        let bytes = x.len * self.esize();
        let area = self.work_area_of((recvd.len() + 1) * bytes)?;
        let piece = |k: usize| area.sub(k * bytes..(k + 1) * bytes).expect("inside the work area");
        let mut staged = [Region::EMPTY; 3];
        for (k, &r) in recvd.iter().enumerate() {
            staged[k] = piece(k + 1);
            self.copy(staged[k], r)?;
        }
        let target = dst.unwrap_or(piece(0));
        let reduced = match src {
            Some(s) if recvd.is_empty() => {
                self.copy(target, s)?;
                0
            }
            Some(s) => {
                self.reduce(target, s, staged[0])?;
                1
            }
            None => {
                self.copy(target, staged[0])?;
                1
            }
        };
        for &r in &staged[reduced..recvd.len()] {
            self.reduce(target, target, r)?;
        }
        if x.finalize {
            self.finalize(target);
        }
        for slot in &slots[..x.send.len()] {
            self.copy(*slot, target)?;
        }
        self.complete()?;
        for p in x.send.iter() {
            t.commit(me, p, Header { kind: Kind::Collective, seq: self.seq, len: bytes, total: 0, args: self.args });
        }
        for p in x.recv.iter() {
            t.release(me, p);
        }
        Ok(())
    }

    /// A step that only sends this rank's own data `src`: straight from it
    /// where the transport can reach it (registered memory), else copied
    /// into each slot.
    pub(super) fn send_from(&mut self, x: &Xfer, src: Region, slots: &[Region; 3]) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        let header = Header { kind: Kind::Collective, seq: self.seq, len: src.len(), total: 0, args: self.args };
        for (i, p) in x.send.iter().enumerate() {
            // Only host memory is sent straight from (a transport reads it with the CPU or the NIC).
            if self.host && t.commit_from(me, p, header, src) {
                self.state.unsettled = true;
                continue;
            }
            self.copy(slots[i], src)?;
            self.complete()?;
            t.commit(me, p, header);
        }
        Ok(())
    }

    /// Waits until the transport no longer reads this rank's buffers for
    /// messages sent straight from them.
    #[inline]
    pub(super) fn settle(&mut self) -> Result<()> {
        if std::mem::take(&mut self.state.unsettled) {
            self.t.settle(self.rank).map_err(|e| match e {
                Error::Timeout { call: None, rank, peer, what, waited } => {
                    Error::Timeout { call: Some(self.label()), rank, peer, what, waited }
                }
                e => e,
            })?;
        }
        Ok(())
    }

    /// A message of the same collective carries the sender's arguments: any
    /// difference is a mismatch, reported with both values.
    pub(super) fn check_args(&self, peer: Rank, h: &Header) -> Result<()> {
        let (Some(mine), Some(theirs)) = (self.args, h.args) else { return Ok(()) };
        if h.seq != self.seq || mine == theirs {
            return Ok(());
        }
        let Some((field, mine, theirs)) = mine.difference(&theirs) else { return Ok(()) };
        let err = Error::Mismatch { call: self.label(), field, rank: self.rank, mine, peer, theirs };
        self.t.abort(err.clone());
        Err(err)
    }

    pub(super) fn check_header(&self, peer: Rank, h: Header, kind: Kind, seq: u64, len: usize) -> Result<()> {
        if h.kind != kind || h.seq != seq || h.len != len {
            let err = Error::Protocol {
                peer,
                what: format!(
                    "rank {} expected a {kind:?} message #{seq} of {len} bytes, got a {:?} message #{} of {} bytes",
                    self.rank, h.kind, h.seq, h.len
                ),
            };
            self.t.abort(err.clone());
            return Err(err);
        }
        Ok(())
    }
}

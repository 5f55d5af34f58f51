//! Point-to-point: `send` and `recv` cut a transfer into slot-sized
//! messages numbered per pair of ranks, with no schedule.

use super::Exec;
use crate::error::{Error, Result};
use crate::mem::Region;
use crate::schedule::Rank;
use crate::transport::{Header, Kind};

impl Exec<'_> {
    /// Sends `data` to `peer` as point-to-point message number `seq`.
    pub fn send(&mut self, peer: Rank, data: Region, seq: u64) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        self.seq = seq;
        let slot_bytes = t.slot_bytes() / self.esize() * self.esize();
        let mut off = 0;
        loop {
            let n = slot_bytes.min(data.len() - off);
            self.wait("free slot", || t.try_send_slot(me, peer).map(|_| ()).ok_or(peer))?;
            let slot = t.try_send_slot(me, peer).expect("checked ready");
            let piece = data.sub(off..off + n).expect("within data");
            let header = Header { kind: Kind::PointToPoint, seq, len: n, total: data.len(), args: None };
            if t.commit_from(me, peer, header, piece) {
                self.state.unsettled = true;
            } else {
                self.copy(slot.sub(0..n).expect("within slot"), piece)?;
                self.complete()?;
                t.commit(me, peer, header);
            }
            off += n;
            if off >= data.len() {
                return self.settle();
            }
        }
    }

    /// Receives point-to-point message number `seq` from `peer` into `out`.
    pub fn recv(&mut self, peer: Rank, out: Region, seq: u64) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        self.seq = seq;
        let slot_bytes = t.slot_bytes() / self.esize() * self.esize();
        let mut off = 0;
        loop {
            let n = slot_bytes.min(out.len() - off);
            self.wait("message", || t.try_recv(me, peer).map(|_| ()).ok_or(peer))?;
            let (h, data) = t.try_recv(me, peer).expect("checked ready");
            if h.kind == Kind::PointToPoint && h.seq == seq && h.total != out.len() {
                let err = Error::Mismatch {
                    call: self.label(),
                    field: "bytes",
                    rank: me,
                    mine: out.len().to_string(),
                    peer,
                    theirs: h.total.to_string(),
                };
                t.abort(err.clone());
                return Err(err);
            }
            self.check_header(peer, h, Kind::PointToPoint, seq, n)?;
            self.copy(out.sub(off..off + n).expect("within out"), data)?;
            t.release(me, peer);
            off += n;
            if off >= out.len() {
                return Ok(());
            }
        }
    }
}

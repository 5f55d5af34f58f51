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

/// One send or receive of a group ([`Exec::exchange`]): `data` is the
/// buffer, `seq` the transfer's number on its pair of ranks, `esize` its
/// element size (messages are cut at whole elements, as by `send`).
#[derive(Clone, Copy, Debug)]
pub struct GroupOp {
    pub send: bool,
    pub peer: Rank,
    pub data: Region,
    pub seq: u64,
    pub esize: usize,
}

impl Exec<'_> {
    /// Runs every send and receive of a group together: whichever can move
    /// moves (a message into a free slot, an arrived message out of its
    /// slot), so that ranks exchanging with each other in any order never
    /// wait on each other, whatever the sizes. Transfers to (or from) one
    /// peer move in the order given, as the channel is first in, first out.
    /// The messages are those `send` and `recv` make, so a group's send
    /// pairs with a plain `recv` and the reverse.
    pub fn exchange(&mut self, ops: &[GroupOp]) -> Result<()> {
        let (t, me) = (self.t, self.rank);
        let mut off = vec![0usize; ops.len()];
        let mut done = vec![false; ops.len()];
        let chunk = |op: &GroupOp| (t.slot_bytes() / op.esize.max(1) * op.esize.max(1)).max(op.esize.max(1));
        // The op that may move on each (peer, direction) now: the first unfinished one.
        let movable = |done: &[bool], i: usize| {
            let op = &ops[i];
            !done[i] && !ops[..i].iter().zip(done).any(|(o, &d)| !d && o.peer == op.peer && o.send == op.send)
        };
        loop {
            let mut moved = false;
            for i in 0..ops.len() {
                if !movable(&done, i) {
                    continue;
                }
                let op = ops[i];
                let n = chunk(&op).min(op.data.len() - off[i]);
                if op.send {
                    let Some(slot) = t.try_send_slot(me, op.peer) else { continue };
                    let piece = op.data.sub(off[i]..off[i] + n).expect("within data");
                    let header =
                        Header { kind: Kind::PointToPoint, seq: op.seq, len: n, total: op.data.len(), args: None };
                    self.seq = op.seq;
                    if t.commit_from(me, op.peer, header, piece) {
                        self.state.unsettled = true;
                    } else {
                        self.copy(slot.sub(0..n).expect("within slot"), piece)?;
                        self.complete()?;
                        t.commit(me, op.peer, header);
                    }
                } else {
                    let Some((h, data)) = t.try_recv(me, op.peer) else { continue };
                    self.seq = op.seq;
                    if h.kind == Kind::PointToPoint && h.seq == op.seq && h.total != op.data.len() {
                        let err = Error::Mismatch {
                            call: self.label(),
                            field: "bytes",
                            rank: me,
                            mine: op.data.len().to_string(),
                            peer: op.peer,
                            theirs: h.total.to_string(),
                        };
                        t.abort(err.clone());
                        return Err(err);
                    }
                    self.check_header(op.peer, h, Kind::PointToPoint, op.seq, n)?;
                    self.copy(op.data.sub(off[i]..off[i] + n).expect("within data"), data)?;
                    t.release(me, op.peer);
                }
                off[i] += n;
                done[i] = off[i] >= op.data.len();
                moved = true;
            }
            if done.iter().all(|&d| d) {
                return self.settle();
            }
            if !moved {
                self.wait("message or free slot", || {
                    let waiting = (0..ops.len()).filter(|&i| movable(&done, i));
                    for i in waiting.clone() {
                        let op = &ops[i];
                        let ready = match op.send {
                            true => t.try_send_slot(me, op.peer).is_some(),
                            false => t.try_recv(me, op.peer).is_some(),
                        };
                        if ready {
                            return Ok(());
                        }
                    }
                    Err(waiting.map(|i| ops[i].peer).next().unwrap_or(me))
                })?;
            }
        }
    }
}

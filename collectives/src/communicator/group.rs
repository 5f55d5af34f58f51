//! Point-to-point transfers issued together, as between NCCL's
//! `ncclGroupStart` and `ncclGroupEnd`: every send and receive of the group
//! progresses at once, so ranks that send to each other before receiving
//! never wait on each other, whatever the sizes.

use super::Communicator;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::executor::GroupOp;
use crate::mem::Region;
use crate::schedule::Rank;

/// One transfer of a group, on bytes of whole `dtype` elements.
#[derive(Debug)]
pub enum P2p<'a> {
    Send { buf: &'a [u8], dtype: DType, peer: Rank },
    Recv { buf: &'a mut [u8], dtype: DType, peer: Rank },
}

impl Communicator {
    /// Runs the sends and receives of a group together (see the module
    /// docs); transfers with one peer in one direction keep their order.
    /// Each pairs with the peer's matching transfer, grouped or not, in
    /// the order the peer issued them. A failure aborts the group, as a
    /// failed `send` or `recv` does.
    pub fn exchange(&self, ops: &mut [P2p<'_>]) -> Result<()> {
        self.check_alive(|| "group of sends and receives".to_string())?;
        for op in ops.iter() {
            let (peer, dtype, len) = match op {
                P2p::Send { buf, dtype, peer } => (*peer, *dtype, buf.len()),
                P2p::Recv { buf, dtype, peer } => (*peer, *dtype, buf.len()),
            };
            self.check_peer(peer)?;
            if len % dtype.size() != 0 {
                return Err(Error::InvalidArgument(format!(
                    "a grouped transfer of {len} bytes is not whole {dtype} elements"
                )));
            }
        }
        let Some(first) = ops.first() else { return Ok(()) };
        let dtype = match first {
            P2p::Send { dtype, .. } | P2p::Recv { dtype, .. } => *dtype,
        };
        let group: Vec<GroupOp> = ops
            .iter_mut()
            .map(|op| match op {
                P2p::Send { buf, dtype, peer } => {
                    let mut sent = self.sent.borrow_mut();
                    sent[*peer] += 1;
                    GroupOp { send: true, peer: *peer, data: Region::of(buf), seq: sent[*peer], esize: dtype.size() }
                }
                P2p::Recv { buf, dtype, peer } => {
                    let mut received = self.received.borrow_mut();
                    received[*peer] += 1;
                    let seq = received[*peer];
                    GroupOp { send: false, peer: *peer, data: Region::of_mut(buf), seq, esize: dtype.size() }
                }
            })
            .collect();
        let mut state = self.state.borrow_mut();
        let mut ex = self.p2p_exec(&mut state, "group", dtype);
        ex.exchange(&group).inspect_err(|e| self.t.abort(e.clone()))
    }
}

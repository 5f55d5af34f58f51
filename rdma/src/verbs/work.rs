//! Work requests of the RDMA transport: how many each queue pair holds,
//! the id each carries (what it was, and for which peer) and what a failed
//! completion means for that peer.

use oxccl::Rank;

use crate::channel::SLOTS;

/// Send work requests per queue pair: messages, credits, abort, goodbye,
/// heartbeat, probe, state.
pub const SEND_DEPTH: u32 = 4 * SLOTS as u32 + 10;
/// Receives kept posted per queue pair (every write with immediate consumes one).
pub const RECV_DEPTH: u32 = 4 * SLOTS as u32 + 10;

/// What a work request was, in the top byte of its id (the peer is below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Work {
    Recv = 1,
    Message = 2,
    Credit = 3,
    Abort = 4,
    Bye = 5,
    Beat = 6,
    Probe = 7,
    State = 8,
}

pub(super) fn wr_id(work: Work, peer: Rank) -> u64 {
    (work as u64) << 56 | peer as u64
}

/// The id of a receive posted for `peer`'s writes.
pub(crate) fn recv_id(peer: Rank) -> u64 {
    wr_id(Work::Recv, peer)
}

pub(super) fn parse_wr_id(id: u64) -> (Option<Work>, Rank) {
    let work = match id >> 56 {
        1 => Some(Work::Recv),
        2 => Some(Work::Message),
        3 => Some(Work::Credit),
        4 => Some(Work::Abort),
        5 => Some(Work::Bye),
        6 => Some(Work::Beat),
        7 => Some(Work::Probe),
        8 => Some(Work::State),
        _ => None,
    };
    (work, (id & 0xffff_ffff) as Rank)
}

/// What a failed work completion means for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Unreachable or gone (retries exhausted, no response, the queue pair
    /// flushed after an earlier error): as a closed connection on TCP.
    Gone,
    /// Reached, but the operation was refused (a bad key, address or
    /// length): the two sides disagree, a protocol error.
    Refused,
}

/// The meaning of a work completion status other than success.
pub fn classify(status: u32) -> Failure {
    use ibverbs_sys::ibv_wc_status::*;
    match status {
        IBV_WC_REM_ACCESS_ERR
        | IBV_WC_REM_INV_REQ_ERR
        | IBV_WC_REM_OP_ERR
        | IBV_WC_LOC_PROT_ERR
        | IBV_WC_LOC_LEN_ERR
        | IBV_WC_LOC_ACCESS_ERR
        | IBV_WC_LOC_QP_OP_ERR
        | IBV_WC_BAD_RESP_ERR => Failure::Refused,
        _ => Failure::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibverbs_sys::ibv_wc_status::*;

    #[test]
    fn completion_errors_are_named_failures() {
        for s in [IBV_WC_RETRY_EXC_ERR, IBV_WC_RNR_RETRY_EXC_ERR, IBV_WC_WR_FLUSH_ERR, IBV_WC_RESP_TIMEOUT_ERR] {
            assert_eq!(classify(s), Failure::Gone, "{}", super::super::cq::status_name(s));
        }
        for s in [IBV_WC_REM_ACCESS_ERR, IBV_WC_REM_INV_REQ_ERR, IBV_WC_LOC_PROT_ERR, IBV_WC_LOC_LEN_ERR] {
            assert_eq!(classify(s), Failure::Refused, "{}", super::super::cq::status_name(s));
        }
    }

    #[test]
    fn work_request_ids_round_trip() {
        for work in
            [Work::Recv, Work::Message, Work::Credit, Work::Abort, Work::Bye, Work::Beat, Work::Probe, Work::State]
        {
            for peer in [0, 1, 4095] {
                assert_eq!(parse_wr_id(wr_id(work, peer)), (Some(work), peer));
            }
        }
        assert_eq!(parse_wr_id(0).0, None);
    }
}

//! Reliable-connected queue pairs, with their life cycle in the type: a
//! [`QueuePair<Unconnected>`] is created and moved to INIT (its number can
//! then be published); [`QueuePair::connect`] takes the peer's published
//! end through RTR to RTS and gives a [`QueuePair<Connected>`], the only
//! kind that can post work requests.

use std::marker::PhantomData;
use std::sync::Arc;

use ibverbs_sys as ffi;
use oxccl::{Error, Result};

use super::cq::Cq;
use super::memory::Pd;
use crate::endpoint::Address;

/// Created and in INIT: not yet able to send or receive.
pub struct Unconnected;
/// In RTS: connected to one peer's queue pair.
pub struct Connected;

/// How long a queue pair waits for an acknowledgement before it retries:
/// 4.096 µs × 2^16 ≈ 268 ms; with [`RETRIES`], a peer that stopped
/// answering fails the send after about two seconds.
pub const ACK_TIMEOUT: u8 = 16;
pub const RETRIES: u8 = 7;
/// 7: retry forever while the receiver has no receive posted (it reposts as it goes).
const RNR_RETRIES: u8 = 7;

/// One scatter/gather entry: `len` bytes at `addr` of registered memory `lkey`.
#[derive(Clone, Copy, Debug)]
pub struct Sge {
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

pub struct QueuePair<S> {
    pd: Arc<Pd>,
    _cq: Arc<Cq>,
    qp: *mut ffi::ibv_qp,
    psn: u32,
    _state: PhantomData<S>,
}

// SAFETY: posting to one queue pair from several threads is allowed by
// libibverbs (providers lock their queues); the handle is otherwise immutable.
unsafe impl<S> Send for QueuePair<S> {}
// SAFETY: as for Send.
unsafe impl<S> Sync for QueuePair<S> {}

impl<S> QueuePair<S> {
    pub fn qpn(&self) -> u32 {
        // SAFETY: `qp` is live.
        unsafe { (*self.qp).qp_num }
    }

    /// The first packet sequence number this side sends with.
    pub fn psn(&self) -> u32 {
        self.psn
    }

    /// Posts a receive for one RDMA write with immediate (the data lands
    /// where the writer says; the receive only carries the immediate).
    pub fn post_recv(&self, wr_id: u64) -> Result<()> {
        let mut wr = ffi::ibv_recv_wr { wr_id, next: std::ptr::null_mut(), sg_list: std::ptr::null_mut(), num_sge: 0 };
        let mut bad = std::ptr::null_mut();
        // SAFETY: post_recv is the provider's entry point for this live queue
        // pair; the request has no buffers.
        let rc = unsafe {
            let ctx = (*self.qp).context;
            let post = (*ctx).ops.post_recv.expect("provider has post_recv");
            post(self.qp, &mut wr, &mut bad)
        };
        if rc != 0 {
            return Err(self.post_error("posting a receive", rc));
        }
        Ok(())
    }

    fn post_error(&self, what: &str, rc: i32) -> Error {
        Error::io(
            format!("{}: queue pair {}: {what}", self.pd.device().name(), self.qpn()),
            std::io::Error::from_raw_os_error(rc),
        )
    }

    fn modify(&self, attr: &mut ffi::ibv_qp_attr, mask: ffi::ibv_qp_attr_mask, what: &str) -> Result<()> {
        // SAFETY: `qp` is live; `attr` is a valid attribute block for `mask`.
        let rc = unsafe { ffi::ibv_modify_qp(self.qp, attr, mask.0 as i32) };
        if rc != 0 {
            return Err(Error::io(
                format!("{}: moving queue pair {} to {what}", self.pd.device().name(), self.qpn()),
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        Ok(())
    }
}

impl QueuePair<Unconnected> {
    /// A queue pair completing into `cq`, with room for `send` and `recv`
    /// outstanding work requests of up to `sges` entries, moved to INIT.
    pub fn new(pd: &Arc<Pd>, cq: &Arc<Cq>, send: u32, recv: u32, sges: u32, psn: u32) -> Result<Self> {
        let dev = pd.device();
        let mut init = ffi::ibv_qp_init_attr {
            send_cq: cq.cq,
            recv_cq: cq.cq,
            cap: ffi::ibv_qp_cap {
                max_send_wr: send,
                max_recv_wr: recv,
                max_send_sge: sges,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: ffi::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
            ..Default::default()
        };
        // SAFETY: PD and CQ are live (held by the new queue pair); `init` is valid.
        let qp = unsafe { ffi::ibv_create_qp(pd.pd, &mut init) };
        if qp.is_null() {
            return Err(Error::last_os_error(format!("{}: ibv_create_qp", dev.name())));
        }
        let q = QueuePair { pd: pd.clone(), _cq: cq.clone(), qp, psn: psn & 0xff_ffff, _state: PhantomData };
        let mut attr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_INIT,
            pkey_index: 0,
            port_num: dev.port(),
            qp_access_flags: (ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
                | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE)
                .0,
            ..Default::default()
        };
        use ffi::ibv_qp_attr_mask as M;
        q.modify(&mut attr, M::IBV_QP_STATE | M::IBV_QP_PKEY_INDEX | M::IBV_QP_PORT | M::IBV_QP_ACCESS_FLAGS, "INIT")?;
        Ok(q)
    }

    /// Connects to the peer queue pair `qpn` (first sequence number `psn`) at
    /// `addr`, over a path MTU of `mtu` (an `ibv_mtu` value): INIT → RTR → RTS.
    pub fn connect(self, addr: Address, qpn: u32, psn: u32, mtu: u32) -> Result<QueuePair<Connected>> {
        let dev = self.pd.device().clone();
        let mut ah =
            ffi::ibv_ah_attr { dlid: addr.lid, sl: 0, src_path_bits: 0, port_num: dev.port(), ..Default::default() };
        if dev.is_ethernet() || addr.gid != [0; 16] {
            ah.is_global = 1;
            ah.grh.dgid = ffi::ibv_gid { raw: addr.gid };
            ah.grh.hop_limit = 0xff;
            ah.grh.sgid_index = dev.gid_index();
        }
        let mut rtr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTR,
            path_mtu: mtu,
            dest_qp_num: qpn,
            rq_psn: psn & 0xff_ffff,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 12,
            ah_attr: ah,
            ..Default::default()
        };
        use ffi::ibv_qp_attr_mask as M;
        self.modify(
            &mut rtr,
            M::IBV_QP_STATE
                | M::IBV_QP_AV
                | M::IBV_QP_PATH_MTU
                | M::IBV_QP_DEST_QPN
                | M::IBV_QP_RQ_PSN
                | M::IBV_QP_MAX_DEST_RD_ATOMIC
                | M::IBV_QP_MIN_RNR_TIMER,
            "RTR",
        )?;
        let mut rts = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTS,
            sq_psn: self.psn,
            timeout: ACK_TIMEOUT,
            retry_cnt: RETRIES,
            rnr_retry: RNR_RETRIES,
            max_rd_atomic: 1,
            ..Default::default()
        };
        self.modify(
            &mut rts,
            M::IBV_QP_STATE
                | M::IBV_QP_SQ_PSN
                | M::IBV_QP_TIMEOUT
                | M::IBV_QP_RETRY_CNT
                | M::IBV_QP_RNR_RETRY
                | M::IBV_QP_MAX_QP_RD_ATOMIC,
            "RTS",
        )?;
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so each field is moved out exactly once.
        let (pd, cq) = unsafe { (std::ptr::read(&this.pd), std::ptr::read(&this._cq)) };
        Ok(QueuePair { pd, _cq: cq, qp: this.qp, psn: this.psn, _state: PhantomData })
    }
}

impl QueuePair<Connected> {
    /// Writes the concatenation of `sges` to `remote_addr` (key `rkey`) of
    /// the peer, with immediate value `imm` when given; always signalled.
    ///
    /// # Safety
    /// The memory `sges` name must stay registered and unchanged until this
    /// request's completion has been polled.
    pub unsafe fn post_write(
        &self,
        wr_id: u64,
        sges: &[Sge],
        remote_addr: u64,
        rkey: u32,
        imm: Option<u32>,
    ) -> Result<()> {
        let mut list: Vec<ffi::ibv_sge> =
            sges.iter().map(|s| ffi::ibv_sge { addr: s.addr, length: s.len, lkey: s.lkey }).collect();
        let mut wr = ffi::ibv_send_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: list.as_mut_ptr(),
            num_sge: list.len() as i32,
            opcode: if imm.is_some() {
                ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
            } else {
                ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE
            },
            send_flags: ffi::ibv_send_flags::IBV_SEND_SIGNALED.0,
            ..Default::default()
        };
        wr.__bindgen_anon_1.imm_data = imm.unwrap_or(0).to_be();
        wr.wr.rdma = ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr, rkey };
        let mut bad = std::ptr::null_mut();
        // SAFETY: post_send is the provider's entry point for this live queue
        // pair; the caller keeps the gathered memory valid until completion,
        // and the list itself is copied by the provider before this returns.
        let rc = unsafe {
            let ctx = (*self.qp).context;
            let post = (*ctx).ops.post_send.expect("provider has post_send");
            post(self.qp, &mut wr, &mut bad)
        };
        if rc != 0 {
            return Err(self.post_error("posting a write", rc));
        }
        Ok(())
    }
}

impl<S> Drop for QueuePair<S> {
    fn drop(&mut self) {
        // SAFETY: `qp` is live and owned by this value; its PD and CQ outlive it (held here).
        unsafe { ffi::ibv_destroy_qp(self.qp) };
    }
}

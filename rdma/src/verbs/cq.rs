//! A completion queue with its completion channel, so that the thread that
//! drains it can sleep until something completes.

use std::sync::Arc;
use std::time::Duration;

use ibverbs_sys as ffi;
use oxccl::{Error, Result};

use super::device::Device;

/// What one work completion says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    pub wr_id: u64,
    /// `None`: success; else the status and its name.
    pub error: Option<(u32, &'static str)>,
    pub byte_len: usize,
    pub imm: Option<u32>,
}

pub struct Cq {
    dev: Arc<Device>,
    channel: *mut ffi::ibv_comp_channel,
    pub(crate) cq: *mut ffi::ibv_cq,
}

// SAFETY: completion queues and channels are handles verbs calls accept from
// any thread; `Cq` is drained by one thread at a time (its owner's progress thread).
unsafe impl Send for Cq {}
// SAFETY: as for Send; polling is done by one thread, posting to queue pairs may be from others.
unsafe impl Sync for Cq {}

impl Cq {
    /// A queue of at least `entries` completions.
    pub fn new(dev: &Arc<Device>, entries: i32) -> Result<Arc<Cq>> {
        let sys = |what: &str| Error::last_os_error(format!("{}: {what}", dev.name()));
        // SAFETY: the context is open for as long as `dev` lives.
        let channel = unsafe { ffi::ibv_create_comp_channel(dev.ctx) };
        if channel.is_null() {
            return Err(sys("ibv_create_comp_channel"));
        }
        // SAFETY: context and channel are live.
        let cq = unsafe { ffi::ibv_create_cq(dev.ctx, entries, std::ptr::null_mut(), channel, 0) };
        if cq.is_null() {
            let e = sys("ibv_create_cq");
            // SAFETY: created above, used by nothing.
            unsafe { ffi::ibv_destroy_comp_channel(channel) };
            return Err(e);
        }
        // SAFETY: `channel` is live; its fd is ours to make non-blocking.
        let fd = unsafe { (*channel).fd };
        // SAFETY: plain fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
        let cq = Arc::new(Cq { dev: dev.clone(), channel, cq });
        cq.arm()?;
        Ok(cq)
    }

    /// Takes up to `out.len()` completions; the number taken.
    pub fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        let mut wcs = [ffi::ibv_wc::default(); 16];
        let max = out.len().min(wcs.len()) as i32;
        // SAFETY: poll_cq is the provider's entry point for this live queue;
        // `wcs` has room for `max` completions.
        let n = unsafe {
            let ctx = (*self.cq).context;
            let poll = (*ctx).ops.poll_cq.expect("provider has poll_cq");
            poll(self.cq, max, wcs.as_mut_ptr())
        };
        if n < 0 {
            return Err(Error::System(format!("{}: ibv_poll_cq failed ({n})", self.dev.name())));
        }
        for (o, wc) in out.iter_mut().zip(&wcs[..n as usize]) {
            *o = Completion {
                wr_id: wc.wr_id(),
                error: wc.error().map(|(s, _)| (s, status_name(s))),
                byte_len: wc.len(),
                imm: wc.imm_data().map(u32::from_be),
            };
        }
        Ok(n as usize)
    }

    /// Asks for an event on the next completion.
    pub fn arm(&self) -> Result<()> {
        // SAFETY: req_notify_cq is the provider's entry point for this live queue.
        let rc = unsafe {
            let ctx = (*self.cq).context;
            let notify = (*ctx).ops.req_notify_cq.expect("provider has req_notify_cq");
            notify(self.cq, 0)
        };
        if rc != 0 {
            return Err(Error::System(format!("{}: ibv_req_notify_cq failed ({rc})", self.dev.name())));
        }
        Ok(())
    }

    /// Sleeps until the armed queue has an event or `timeout` passes; true
    /// on an event (which is consumed: arm again before the next wait).
    pub fn wait(&self, timeout: Duration) -> bool {
        // SAFETY: `channel` is live.
        let fd = unsafe { (*self.channel).fd };
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            return false;
        }
        let mut cq = std::ptr::null_mut();
        let mut ctx = std::ptr::null_mut();
        // SAFETY: the channel is live and non-blocking; on success the event is acknowledged at once.
        unsafe {
            if ffi::ibv_get_cq_event(self.channel, &mut cq, &mut ctx) != 0 {
                return false;
            }
            ffi::ibv_ack_cq_events(cq, 1);
        }
        true
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: every queue pair using this queue holds an Arc to it, so none is left;
        // every event taken was acknowledged.
        unsafe {
            ffi::ibv_destroy_cq(self.cq);
            ffi::ibv_destroy_comp_channel(self.channel);
        }
    }
}

/// The name of a work completion status (as `ibv_wc_status_str` gives it).
pub fn status_name(s: u32) -> &'static str {
    use ffi::ibv_wc_status::*;
    #[allow(non_upper_case_globals)]
    match s {
        IBV_WC_SUCCESS => "success",
        IBV_WC_LOC_LEN_ERR => "local length error",
        IBV_WC_LOC_QP_OP_ERR => "local QP operation error",
        IBV_WC_LOC_PROT_ERR => "local protection error",
        IBV_WC_WR_FLUSH_ERR => "work request flushed",
        IBV_WC_BAD_RESP_ERR => "bad response",
        IBV_WC_LOC_ACCESS_ERR => "local access error",
        IBV_WC_REM_INV_REQ_ERR => "remote invalid request",
        IBV_WC_REM_ACCESS_ERR => "remote access error",
        IBV_WC_REM_OP_ERR => "remote operation error",
        IBV_WC_RETRY_EXC_ERR => "transport retry counter exceeded",
        IBV_WC_RNR_RETRY_EXC_ERR => "receiver-not-ready retry counter exceeded",
        IBV_WC_REM_ABORT_ERR => "remote aborted",
        IBV_WC_FATAL_ERR => "fatal error",
        IBV_WC_RESP_TIMEOUT_ERR => "response timeout",
        _ => "other error",
    }
}

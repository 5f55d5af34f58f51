//! Protection domain and registered memory.

use std::sync::Arc;

use ibverbs_sys as ffi;
use oxccl::mem::Region;
use oxccl::{Error, Result};

use super::device::Device;

/// A protection domain: queue pairs and memory regions of one transport.
pub struct Pd {
    pub(crate) dev: Arc<Device>,
    pub(crate) pd: *mut ffi::ibv_pd,
}

// SAFETY: a protection domain is a handle that verbs calls from any thread accept.
unsafe impl Send for Pd {}
// SAFETY: as for Send.
unsafe impl Sync for Pd {}

impl Pd {
    pub fn new(dev: Arc<Device>) -> Result<Arc<Pd>> {
        // SAFETY: the context is open for as long as `dev` lives.
        let pd = unsafe { ffi::ibv_alloc_pd(dev.ctx) };
        if pd.is_null() {
            return Err(Error::last_os_error(format!("{}: ibv_alloc_pd", dev.name())));
        }
        Ok(Arc::new(Pd { dev, pd }))
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: every queue pair and region of this domain holds an Arc to it, so none is left.
        unsafe { ffi::ibv_dealloc_pd(self.pd) };
    }
}

/// Memory registered for local access and remote writes. The registration
/// does not own the memory: whoever made the `Mr` keeps it alive (and
/// unmoved) for as long as the `Mr` lives.
pub struct Mr {
    _pd: Arc<Pd>,
    mr: *mut ffi::ibv_mr,
    region: Region,
}

// SAFETY: a memory region handle may be used from any thread; its keys are plain numbers.
unsafe impl Send for Mr {}
// SAFETY: as for Send.
unsafe impl Sync for Mr {}

impl Mr {
    /// Registers `region` (local write, remote write).
    ///
    /// # Safety
    /// `region` must stay allocated, and not move, until the returned `Mr` is dropped.
    pub unsafe fn register(pd: &Arc<Pd>, region: Region) -> Result<Mr> {
        let access = ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        // A zero-length registration is refused by some providers: register one byte past nothing.
        let len = region.len().max(1);
        // SAFETY: the caller keeps `region` alive; the PD is alive through `pd`.
        let mr = unsafe { ffi::ibv_reg_mr(pd.pd, region.addr() as *mut _, len, access.0 as i32) };
        if mr.is_null() {
            return Err(Error::last_os_error(format!(
                "{}: registering {} bytes of memory (is `ulimit -l` large enough?)",
                pd.dev.name(),
                region.len()
            )));
        }
        Ok(Mr { _pd: pd.clone(), mr, region })
    }

    pub fn lkey(&self) -> u32 {
        // SAFETY: `mr` is a live registration.
        unsafe { (*self.mr).lkey }
    }

    pub fn rkey(&self) -> u32 {
        // SAFETY: `mr` is a live registration.
        unsafe { (*self.mr).rkey }
    }

    pub fn region(&self) -> Region {
        self.region
    }

    /// True when `r` lies inside this registration.
    pub fn covers(&self, r: Region) -> bool {
        r.addr() >= self.region.addr() && r.addr() + r.len() <= self.region.addr() + self.region.len()
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: `mr` is a live registration; no work request uses it any more
        // (its owner drops it only after its queue pairs are gone or idle).
        unsafe { ffi::ibv_dereg_mr(self.mr) };
    }
}

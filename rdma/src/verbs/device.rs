//! Opening the device, port and GID a rank uses.
//!
//! The choice follows [`RdmaConfig`]: the first device (in the order
//! `ibv_get_device_list` gives) and active port that `OXCCL_IB_HCA` admits
//! (`OXCCL_IB_PORT` narrows the port), then the GID index
//! `OXCCL_IB_GID_INDEX` names or, by default, a RoCE v2 GID carrying an IPv4
//! address (what routable RoCE needs), else any RoCE v2 GID, else index 0.
//! Every way of finding nothing is an error that says what was there.

use std::ffi::CStr;
use std::sync::Arc;

use ibverbs_sys as ffi;
use oxccl::{Error, Result};

use crate::config::RdmaConfig;
use crate::endpoint::Address;

/// An open device context and the port this rank uses on it.
pub struct Device {
    pub(crate) ctx: *mut ffi::ibv_context,
    name: String,
    port: u8,
    gid_index: u8,
    addr: Address,
    /// `ibv_mtu` value of the port's active MTU.
    mtu: u32,
    ethernet: bool,
}

// SAFETY: a verbs context may be used from any thread (libibverbs and its
// providers lock internally); `Device` only hands out the raw pointer to
// verbs calls.
unsafe impl Send for Device {}
// SAFETY: as for Send: concurrent verbs calls on one context are allowed.
unsafe impl Sync for Device {}

impl Device {
    /// Opens the device, port and GID `config` chooses; see the module docs.
    pub fn open(config: &RdmaConfig) -> Result<Arc<Device>> {
        let mut n = 0;
        // SAFETY: plain FFI call; `n` receives the length of the list.
        let list = unsafe { ffi::ibv_get_device_list(&mut n) };
        if list.is_null() || n <= 0 {
            if !list.is_null() {
                // SAFETY: `list` came from ibv_get_device_list.
                unsafe { ffi::ibv_free_device_list(list) };
            }
            return Err(Error::System(
                "no RDMA device found (ibv_get_device_list returned none): load the driver of your adapter, or \
                 for Soft-RoCE `rdma link add rxe0 type rxe netdev <interface>`"
                    .into(),
            ));
        }
        // SAFETY: the list holds `n` device pointers until it is freed below.
        let devices = unsafe { std::slice::from_raw_parts(list, n as usize) };
        let result = choose(devices, config);
        // SAFETY: `list` came from ibv_get_device_list; opened contexts stay valid after it is freed.
        unsafe { ffi::ibv_free_device_list(list) };
        result.map(Arc::new)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u8 {
        self.port
    }

    pub fn gid_index(&self) -> u8 {
        self.gid_index
    }

    /// Where peers reach this port.
    pub fn address(&self) -> Address {
        self.addr
    }

    /// The port's active MTU as an `ibv_mtu` value.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// True for RoCE (an Ethernet link layer), false for InfiniBand.
    pub fn is_ethernet(&self) -> bool {
        self.ethernet
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: `ctx` was opened by ibv_open_device; everything made on it
        // holds an `Arc<Device>`, so nothing uses it any more.
        unsafe { ffi::ibv_close_device(self.ctx) };
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} port {} gid[{}]", self.name, self.port, self.gid_index)
    }
}

fn device_name(dev: *mut ffi::ibv_device) -> String {
    // SAFETY: `dev` is an entry of the live device list; the name is a C string it owns.
    let p = unsafe { ffi::ibv_get_device_name(dev) };
    if p.is_null() {
        return "?".into();
    }
    // SAFETY: non-null, NUL-terminated, owned by the device.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn choose(devices: &[*mut ffi::ibv_device], config: &RdmaConfig) -> Result<Device> {
    let names: Vec<String> = devices.iter().map(|&d| device_name(d)).collect();
    let mut seen = Vec::new();
    for (&dev, name) in devices.iter().zip(&names) {
        if config.hca.as_ref().is_some_and(|f| !(1..=u8::MAX).any(|p| f.matches(name, p))) {
            continue;
        }
        // SAFETY: `dev` is an entry of the live device list.
        let ctx = unsafe { ffi::ibv_open_device(dev) };
        if ctx.is_null() {
            seen.push(format!("{name}: cannot open ({})", std::io::Error::last_os_error()));
            continue;
        }
        match open_port(ctx, name, config, &mut seen) {
            Some(d) => return d,
            None => {
                // SAFETY: opened just above and not shared.
                unsafe { ffi::ibv_close_device(ctx) };
            }
        }
    }
    let filter = config.hca.as_ref().map_or(String::new(), |f| format!(" admitted by the device filter {f:?}"));
    let found = if seen.is_empty() { format!("devices present: {}", names.join(", ")) } else { seen.join("; ") };
    Err(Error::System(format!("no usable RDMA port{filter} ({found})")))
}

/// The first active port of `ctx` that the config admits, with its GID; `None`
/// (with the reasons noted in `seen`) when there is none. An explicit GID
/// index that the port lacks is an error.
fn open_port(
    ctx: *mut ffi::ibv_context,
    name: &str,
    config: &RdmaConfig,
    seen: &mut Vec<String>,
) -> Option<Result<Device>> {
    let mut dattr = ffi::ibv_device_attr::default();
    // SAFETY: `ctx` is open; `dattr` is a valid out-parameter.
    if unsafe { ffi::ibv_query_device(ctx, &mut dattr) } != 0 {
        seen.push(format!("{name}: ibv_query_device failed"));
        return None;
    }
    for port in 1..=dattr.phys_port_cnt {
        if config.port.is_some_and(|p| p != port) || config.hca.as_ref().is_some_and(|f| !f.matches(name, port)) {
            continue;
        }
        let mut pattr = ffi::ibv_port_attr::default();
        // SAFETY: `ctx` is open; `pattr` is a valid out-parameter of the size the library expects.
        if unsafe { ffi::ibv_query_port(ctx, port, &mut pattr as *mut ffi::ibv_port_attr as *mut _) } != 0 {
            seen.push(format!("{name}:{port}: ibv_query_port failed"));
            continue;
        }
        if pattr.state != ffi::ibv_port_state::IBV_PORT_ACTIVE {
            seen.push(format!("{name}:{port}: port not active (state {})", pattr.state));
            continue;
        }
        let table = gid_table(ctx, port, pattr.gid_tbl_len);
        let index = match config.gid_index_for(&table) {
            Ok(i) => i,
            Err(Error::InvalidArgument(why)) => {
                return Some(Err(Error::InvalidArgument(format!("{name} port {port}: {why}"))))
            }
            Err(e) => return Some(Err(e)),
        };
        let gid = table.iter().find(|g| g.0 == index).map_or([0; 16], |g| g.1);
        let ethernet = u32::from(pattr.link_layer) == ffi::IBV_LINK_LAYER_ETHERNET;
        if ethernet && gid == [0; 16] {
            seen.push(format!("{name}:{port}: RoCE port without a GID (give the interface an address)"));
            continue;
        }
        return Some(Ok(Device {
            ctx,
            name: name.to_string(),
            port,
            gid_index: index,
            addr: Address { gid, lid: pattr.lid },
            mtu: pattr.active_mtu,
            ethernet,
        }));
    }
    None
}

/// The port's non-zero GIDs: (index, gid, whether it is a RoCE v2 GID).
fn gid_table(ctx: *mut ffi::ibv_context, port: u8, len: i32) -> Vec<(u8, [u8; 16], bool)> {
    let mut out = Vec::new();
    for index in 0..len.clamp(0, 256) {
        let mut entry = ffi::ibv_gid_entry::default();
        // SAFETY: `ctx` is open; `entry` is a valid out-parameter of the size passed.
        let rc = unsafe {
            ffi::_ibv_query_gid_ex(ctx, u32::from(port), index as u32, &mut entry, 0, size_of::<ffi::ibv_gid_entry>())
        };
        if rc != 0 {
            continue;
        }
        // SAFETY: every bit pattern of the union is a valid byte array.
        let gid = unsafe { entry.gid.raw };
        if gid == [0; 16] {
            continue;
        }
        out.push((index as u8, gid, entry.gid_type == ffi::IBV_GID_TYPE_ROCE_V2));
    }
    out
}

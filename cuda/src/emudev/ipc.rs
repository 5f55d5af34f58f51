//! IPC handles of the emulated device, as `cudaIpcGetMemHandle` and
//! `cudaIpcOpenMemHandle`: device memory another process of the host can
//! map. Such memory lives in a file of the host's shared memory
//! (`/dev/shm/oxccl-emu-<pid>-<n>`), mapped by its owner and by every
//! process that opens its handle; the handle is the file's name and
//! length. The owner removes the file once every peer has opened it
//! ([`EmuBuffer::unlink`]) or when the buffer is dropped, so a crash after
//! set-up leaves nothing behind.
//!
//! Memory opened through a handle belongs to no device of this process
//! ([`IPC_DEVICE`]); every device of the process may reach it, as a GPU
//! reaches memory opened through CUDA IPC.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapMut;
use oxccl::mem::Region;

use super::{Backing, EmuBuffer, EmuDevice};
use crate::error::{Error, Result};

/// The device number of memory opened through an IPC handle.
pub const IPC_DEVICE: usize = usize::MAX;

/// Bytes of a handle's wire form ([`EmuIpcHandle::to_bytes`]).
pub const HANDLE_BYTES: usize = 128;

/// Names another process can open: a shared-memory file and its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmuIpcHandle {
    pub name: String,
    pub len: usize,
}

impl EmuIpcHandle {
    /// A fixed-size record: the length (8 bytes, little-endian), then the
    /// name, zero-padded.
    pub fn to_bytes(&self) -> [u8; HANDLE_BYTES] {
        let mut b = [0u8; HANDLE_BYTES];
        b[..8].copy_from_slice(&(self.len as u64).to_le_bytes());
        b[8..8 + self.name.len()].copy_from_slice(self.name.as_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Result<EmuIpcHandle> {
        let bad = || Error::invalid("emu ipc handle", format!("{} bytes that are not a handle", b.len()));
        if b.len() != HANDLE_BYTES {
            return Err(bad());
        }
        let len = u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize;
        let end = b[8..].iter().position(|&c| c == 0).map_or(HANDLE_BYTES, |i| 8 + i);
        let name = std::str::from_utf8(&b[8..end]).map_err(|_| bad())?;
        if !name.starts_with("oxccl-emu-") || name.contains('/') {
            return Err(bad());
        }
        Ok(EmuIpcHandle { name: name.to_string(), len })
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/dev/shm").join(&self.name)
    }
}

/// A shared mapping, and the file to remove when its owner drops it.
pub(super) struct SharedMap {
    /// Kept for the mapping's lifetime.
    _map: MmapMut,
    owned: Option<PathBuf>,
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        if let Some(path) = self.owned.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn io(what: &'static str, e: std::io::Error) -> Error {
    Error::invalid(what, e.to_string())
}

fn map(file: &File, len: usize) -> Result<MmapMut> {
    // SAFETY: the file is a shared-memory file of exactly `len` bytes (at least one) that
    // nothing truncates while it is mapped; its bytes are accessed only as device memory
    // through regions, by the owner's and peers' streams.
    unsafe { MmapMut::map_mut(file) }.map_err(|e| io("emu ipc mmap", e)).and_then(|m| match m.len() >= len {
        true => Ok(m),
        false => Err(Error::invalid("emu ipc mmap", format!("{} bytes mapped of {len}", m.len()))),
    })
}

impl EmuDevice {
    /// `bytes` of zero-filled device memory that other processes may open
    /// through the returned handle (`cudaMalloc` + `cudaIpcGetMemHandle`).
    pub fn alloc_shareable(self: &Arc<Self>, bytes: usize) -> Result<(EmuBuffer, EmuIpcHandle)> {
        self.ipc_allowed("emu ipc alloc")?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("oxccl-emu-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let handle = EmuIpcHandle { name, len: bytes };
        let path = handle.path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io("emu ipc create", e))?;
        file.set_len(bytes.max(1) as u64).map_err(|e| io("emu ipc size", e))?;
        let mut m = map(&file, bytes)?;
        let addr = m.as_mut_ptr() as usize;
        self.allocs.map.lock().unwrap_or_else(|e| e.into_inner()).insert(addr, (bytes, self.ordinal));
        let backing = Backing::Shared(SharedMap { _map: m, owned: Some(path) });
        Ok((EmuBuffer { dev: self.clone(), region: Region::from_raw(addr, bytes), backing }, handle))
    }

    /// Maps memory another process shared (`cudaIpcOpenMemHandle`): it
    /// belongs to [`IPC_DEVICE`], and this device may reach it.
    pub fn open_ipc(self: &Arc<Self>, handle: &EmuIpcHandle) -> Result<EmuBuffer> {
        self.ipc_allowed("emu ipc open")?;
        let file = OpenOptions::new().read(true).write(true).open(handle.path()).map_err(|e| io("emu ipc open", e))?;
        let mut m = map(&file, handle.len)?;
        let addr = m.as_mut_ptr() as usize;
        self.allocs.map.lock().unwrap_or_else(|e| e.into_inner()).insert(addr, (handle.len, IPC_DEVICE));
        let backing = Backing::Shared(SharedMap { _map: m, owned: None });
        Ok(EmuBuffer { dev: self.clone(), region: Region::from_raw(addr, handle.len), backing })
    }
}

impl EmuDevice {
    fn ipc_allowed(&self, what: &'static str) -> Result<()> {
        match self.allocs.no_ipc.load(Ordering::Acquire) {
            true => Err(Error::invalid(what, "IPC between processes is refused on this platform (refuse_ipc)")),
            false => Ok(()),
        }
    }
}

impl EmuBuffer {
    /// Removes the shared-memory file of memory this process shared, once
    /// every peer has opened it (the mappings stay); nothing otherwise.
    pub fn unlink(&mut self) {
        if let Backing::Shared(SharedMap { owned, .. }) = &mut self.backing {
            if let Some(path) = owned.take() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

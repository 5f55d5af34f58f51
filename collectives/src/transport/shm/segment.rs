//! Shared-memory segments: files under `/dev/shm` mapped by several processes.
//!
//! A segment is created zero-filled by its owner and opened by name by its
//! peers. Once every peer has mapped it the owner unlinks the name, so a
//! crash after set-up leaks nothing; `oxccl run` also removes names left by
//! ranks that died during set-up (they all start with [`PREFIX`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::Error;

/// Every segment name starts with this, then the creator's pid.
pub const PREFIX: &str = "oxccl-";

/// Where segments live.
pub fn dir() -> PathBuf {
    PathBuf::from(std::env::var_os("OXCCL_SHM_DIR").unwrap_or_else(|| "/dev/shm".into()))
}

/// A mapped segment.
pub(crate) struct Segment {
    map: MmapRaw,
    name: String,
    /// Still to unlink (owner only).
    linked: bool,
}

fn sys(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(what, e)
}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes named `name`.
    pub fn create(name: &str, len: usize) -> Result<Segment, Error> {
        let path = dir().join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(sys(format!("creating shared memory {}", path.display())))?;
        file.set_len(len as u64).map_err(sys(format!("sizing shared memory {} to {len} bytes", path.display())))?;
        let mut seg = Segment::map(&file, name, len)?;
        seg.linked = true;
        Ok(seg)
    }

    /// Maps a peer's segment, which must be at least `len` bytes.
    pub fn open(name: &str, len: usize) -> Result<Segment, Error> {
        let path = dir().join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(sys(format!("opening a peer's shared memory {}", path.display())))?;
        let have = file.metadata().map_err(sys(format!("reading {}", path.display())))?.len();
        if have < len as u64 {
            return Err(Error::System(format!("shared memory {} holds {have} bytes, expected {len}", path.display())));
        }
        Segment::map(&file, name, len)
    }

    fn map(file: &File, name: &str, len: usize) -> Result<Segment, Error> {
        let map = MmapOptions::new().len(len).map_raw(file).map_err(sys(format!("mapping shared memory {name}")))?;
        Ok(Segment { map, name: name.to_string(), linked: false })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Removes the name (the mapping stays valid for every process that has it).
    pub fn unlink(&mut self) {
        if std::mem::take(&mut self.linked) {
            let _ = std::fs::remove_file(dir().join(&self.name));
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Removes every segment name a process with `pid` created (for launchers
/// cleaning up after ranks that died before unlinking).
pub fn remove_leftovers(pid: u32) -> usize {
    let prefix = format!("{PREFIX}{pid}-");
    let Ok(entries) = std::fs::read_dir(dir()) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

//! A CUDA device: its context, one stream, and the cache of loaded PTX
//! modules (one per kernel file, loaded on first use).
//!
//! cudarc loads the CUDA libraries at run time and panics when one is
//! missing, so [`Libraries::probe`] checks for them first and
//! [`Device::new`] turns an absent driver into [`Error::NoDriver`] before
//! any driver call.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::error::{DriverContext, Error, Result};
use crate::kernels;
use crate::ptx::{self, Arch};

/// Which CUDA libraries this process can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Libraries {
    /// libcuda (the driver).
    pub driver: bool,
    /// libnvrtc (run-time compilation; not needed to load our PTX).
    pub nvrtc: bool,
    /// libnccl.
    pub nccl: bool,
}

impl Libraries {
    /// Tries to load each library once per process.
    pub fn probe() -> Libraries {
        static PROBED: OnceLock<Libraries> = OnceLock::new();
        *PROBED.get_or_init(|| Libraries {
            // SAFETY: each call only tries dlopen on the library's usual names and closes it
            // again; loading the system's CUDA libraries runs no code of ours.
            driver: unsafe { cudarc::driver::sys::is_culib_present() },
            // SAFETY: as above, for libnvrtc.
            nvrtc: unsafe { cudarc::nvrtc::sys::is_culib_present() },
            // SAFETY: as above, for libnccl.
            nccl: unsafe { cudarc::nccl::sys::is_culib_present() },
        })
    }

    /// Ok if the driver can be loaded, else [`Error::NoDriver`].
    pub fn require_driver(&self) -> Result<()> {
        if self.driver {
            Ok(())
        } else {
            Err(Error::NoDriver { lib: "libcuda.so" })
        }
    }

    pub fn require_nvrtc(&self) -> Result<()> {
        if self.nvrtc {
            Ok(())
        } else {
            Err(Error::NoLibrary { what: "NVRTC library", lib: "libnvrtc.so" })
        }
    }

    pub fn require_nccl(&self) -> Result<()> {
        if self.nccl {
            Ok(())
        } else {
            Err(Error::NoLibrary { what: "NCCL library", lib: "libnccl.so" })
        }
    }
}

/// Runs a cudarc call that may panic (a library or symbol it cannot load)
/// and turns the panic into an error.
fn guarded<T>(op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(Error::Library { op, message: msg })
    })
}

/// Number of CUDA devices, or [`Error::NoDriver`].
pub fn device_count() -> Result<usize> {
    Libraries::probe().require_driver()?;
    guarded("cuDeviceGetCount", || {
        CudaContext::device_count().during("cuDeviceGetCount").map(|c| usize::try_from(c).unwrap_or(0))
    })
}

/// One GPU, with a stream and a per-device module cache.
pub struct Device {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: Arch,
    capability: (i32, i32),
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("ordinal", &self.ordinal).field("arch", &self.arch).finish()
    }
}

impl Device {
    /// Opens device `ordinal`. On a machine without the driver this is
    /// `Err(Error::NoDriver)` ("no CUDA driver found (libcuda.so)").
    pub fn new(ordinal: usize) -> Result<Device> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        guarded("cuCtxCreate", || {
            let ctx = CudaContext::new(ordinal).during("cuDevicePrimaryCtxRetain")?;
            let capability = ctx.compute_capability().during("cuDeviceGetAttribute")?;
            let arch = Arch::for_capability(capability.0, capability.1).ok_or(Error::UnsupportedArch {
                ordinal,
                major: capability.0,
                minor: capability.1,
            })?;
            let stream = ctx.new_stream().during("cuStreamCreate")?;
            Ok(Device { ordinal, ctx, stream, arch, capability, modules: Mutex::new(HashMap::new()) })
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The PTX flavour this device loads.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Compute capability (major, minor).
    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }

    pub fn name(&self) -> Result<String> {
        self.ctx.name().during("cuDeviceGetName")
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch and copy of this device goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().during("cuStreamSynchronize")
    }

    /// The kernel `name`, loading its module into this device on first use.
    pub fn function(&self, name: &'static str) -> Result<CudaFunction> {
        let module_name = kernels::module_of(name).ok_or(Error::MissingKernel { kernel: name, module: "?" })?;
        let module = ptx::module(module_name).ok_or(Error::MissingKernel { kernel: name, module: module_name })?;
        let text = module.ptx(self.arch);
        if !ptx::entries(text).contains(&name) {
            return Err(Error::MissingKernel { kernel: name, module: module_name });
        }
        let loaded = {
            let mut cache = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(module_name) {
                Some(m) => m.clone(),
                None => {
                    let m = self.ctx.load_module(Ptx::from_src(text)).during("cuModuleLoadData")?;
                    cache.insert(module_name, m.clone());
                    m
                }
            }
        };
        loaded.load_function(name).during("cuModuleGetFunction")
    }
}

//! The one error type of `oxccl-cuda`.

use cudarc::driver::DriverError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller can do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Fix the arguments of this call.
    InvalidArgument,
    /// This machine lacks what the call needs (driver, library, device, architecture).
    Unavailable,
    /// The driver or the emulator failed.
    System,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The driver library could not be loaded; checked before any CUDA call.
    #[error("no CUDA driver found ({lib})")]
    NoDriver { lib: &'static str },

    /// A library other than the driver (NVRTC, NCCL) could not be loaded.
    #[error("no {what} found ({lib})")]
    NoLibrary { what: &'static str, lib: &'static str },

    #[error("no CUDA device {ordinal}: the driver reports {count}")]
    NoDevice { ordinal: usize, count: usize },

    #[error("device {ordinal} is sm_{major}{minor}; the kernels need sm_80 or newer")]
    UnsupportedArch { ordinal: usize, major: i32, minor: i32 },

    #[error("{op}: {source}")]
    Driver {
        op: &'static str,
        #[source]
        source: DriverError,
    },

    /// cudarc panicked inside a call (a library or symbol it could not load).
    #[error("{op}: {message}")]
    Library { op: &'static str, message: String },

    #[error("{kernel}: {what}")]
    InvalidArgument { kernel: &'static str, what: String },

    #[error("kernel {kernel} is not an .entry of the embedded PTX module {module}")]
    MissingKernel { kernel: &'static str, module: &'static str },

    #[error("{kernel}: emulated launch refused (code {code})")]
    EmuLaunch { kernel: &'static str, code: i32 },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoDriver { .. }
            | Error::NoLibrary { .. }
            | Error::NoDevice { .. }
            | Error::UnsupportedArch { .. }
            | Error::MissingKernel { .. } => ErrorKind::Unavailable,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::Driver { .. } | Error::EmuLaunch { .. } | Error::Library { .. } => ErrorKind::System,
        }
    }

    pub(crate) fn invalid(kernel: &'static str, what: impl Into<String>) -> Self {
        Error::InvalidArgument { kernel, what: what.into() }
    }
}

/// Attaches the name of the driver operation to a cudarc error.
pub(crate) trait DriverContext<T> {
    fn during(self, op: &'static str) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, DriverError> {
    fn during(self, op: &'static str) -> Result<T> {
        self.map_err(|source| Error::Driver { op, source })
    }
}

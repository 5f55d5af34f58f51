//! oxccl's errors as Python exceptions: `oxccl.Error` and a subclass per
//! kind, each keeping oxccl's message (the call, its sequence number, the
//! peer).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(oxccl, Error, PyException, "An oxccl failure; the message says which call, rank and peer.");
create_exception!(oxccl, InvalidArgument, Error, "Fix this call's arguments (nothing was sent).");
create_exception!(oxccl, InvalidUsage, Error, "The ranks disagree, or the communicator is used wrongly.");
create_exception!(oxccl, RemoteError, Error, "Another rank failed or aborted: the group is aborted.");
create_exception!(oxccl, Timeout, Error, "A wait passed its deadline: the group is aborted.");
create_exception!(oxccl, SystemError, Error, "The machine refused: memory, threads, files, sockets.");
create_exception!(oxccl, InternalError, Error, "A bug in oxccl: please report it with this message.");

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("InvalidUsage", py.get_type::<InvalidUsage>())?;
    m.add("RemoteError", py.get_type::<RemoteError>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("SystemError", py.get_type::<SystemError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}

/// The exception for an oxccl error.
pub fn to_py(e: oxccl_core::Error) -> PyErr {
    use oxccl_core::ErrorKind as K;
    let text = e.to_string();
    match e.kind() {
        K::InvalidArgument => InvalidArgument::new_err(text),
        K::InvalidUsage => InvalidUsage::new_err(text),
        K::RemoteFailure => RemoteError::new_err(text),
        K::Timeout => Timeout::new_err(text),
        K::System => SystemError::new_err(text),
        K::Internal => InternalError::new_err(text),
    }
}

pub fn invalid(text: impl Into<String>) -> PyErr {
    InvalidArgument::new_err(text.into())
}

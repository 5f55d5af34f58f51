//! The RDMA verbs transport: the verbs objects (device, memory, completion
//! queue, queue pairs) as owned handles over the `ibverbs` crate's bindings,
//! and the [`RdmaTransport`] built from them.
//!
//! The `ibverbs` crate's safe types tie every object to its context by a
//! lifetime, which a transport that owns all of them (and hands them to a
//! progress thread) cannot express; and it has no RDMA write with immediate
//! or registration of memory it did not allocate. So the handles here own
//! their object and hold an `Arc` to what it was made from, and call the
//! crate's `ffi` bindings (each unsafe block says why it is sound).

pub mod connect;
pub mod connector;
pub mod cq;
pub mod device;
pub mod layout;
pub mod memory;
mod probe;
pub mod progress;
pub mod qp;
mod send;
pub mod setup;
mod shared;
pub mod transport;
pub mod work;

pub use connect::{communicator, communicator_auto, connect, connect_auto, loopback_group};
pub use device::Device;
pub use setup::RdmaSetup;
pub use transport::RdmaTransport;

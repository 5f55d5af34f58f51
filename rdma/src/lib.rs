//! oxccl-rdma: the RDMA verbs transport of oxccl.
//!
//! Ranks on hosts joined by InfiniBand or RoCE move their messages with
//! verbs: queue pairs between every pair of ranks, registered memory for
//! the slots. The crate has two layers:
//!
//! - [`config`]: how a rank picks its device, port and GID, from
//!   `OXCCL_IB_*` variables (`NCCL_IB_*` syntax). Pure code: it builds and
//!   is tested everywhere.
//! - `verbs` (feature `verbs`): the transport itself, over the `ibverbs`
//!   crate. Building it needs cmake, libclang, libnl and pkg-config (the
//!   `ibverbs-sys` build script compiles its bundled rdma-core and
//!   generates bindings); running it needs the system `libibverbs` and a
//!   provider for the device. Without the feature nothing here touches an
//!   RDMA library, so `cargo build` and `cargo test` work on any machine.
//!
//! No machine here has an RDMA device: the verbs tests run inside a qemu
//! guest with Soft-RoCE (`rxe0` on the guest's loopback), driven by
//! `rdma/guest/run.sh`; CI does that in `rdma/guest/ci.sh`. Correctness
//! there, performance only on real hardware.

pub mod channel;
pub mod config;
pub mod endpoint;
pub mod imm;
#[cfg(feature = "verbs")]
pub mod verbs;

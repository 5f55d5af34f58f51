//! From a launcher's environment to a transport: make this rank's
//! endpoints, meet the others at rendezvous, and connect with the best
//! transport the group allows.
//!
//! Choice ([`TransportKind`]), per pair of ranks: shared memory between
//! ranks on one host (equal host ids), TCP between hosts — a group entirely on
//! this host uses shared memory alone (and may run the direct algorithm), a
//! group spread over hosts a [`Composite`] of both. `OXCCL_TRANSPORT=shm|tcp`
//! (or the `Communicator::init_with` argument) forces one transport for
//! every pair. RDMA verbs live in their own crate (`oxccl-rdma`, which needs
//! the verbs libraries): [`TransportKind::Rdma`] names it, and [`connect`]
//! refuses it with an error saying where it is.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use super::env::Launch;
use super::rendezvous::{host_id, rendezvous};
use super::PeerInfo;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::transport::composite::Composite;
use crate::transport::shm::{ShmConfig, ShmSetup};
use crate::transport::tcp::{TcpConfig, TcpTransport};
use crate::transport::{Signals, Transport};

/// Which transport a group of processes uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// Shared memory when all ranks share this host, else TCP.
    Auto,
    Shm,
    Tcp,
    /// RDMA verbs for every pair: `oxccl_rdma::verbs::connect`, not [`connect`].
    Rdma,
}

impl FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(TransportKind::Auto),
            "shm" => Ok(TransportKind::Shm),
            "tcp" => Ok(TransportKind::Tcp),
            "rdma" => Ok(TransportKind::Rdma),
            _ => Err(format!("unknown transport '{s}' (expected auto, shm, tcp or rdma)")),
        }
    }
}

impl TransportKind {
    /// `OXCCL_TRANSPORT`, else auto.
    pub fn from_env() -> Result<TransportKind> {
        match std::env::var("OXCCL_TRANSPORT") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(Error::InvalidArgument),
            _ => Ok(TransportKind::Auto),
        }
    }
}

/// Connects this process's rank to the group its launcher started.
pub fn connect(launch: &Launch, kind: TransportKind, config: &Config) -> Result<Arc<dyn Transport>> {
    if kind == TransportKind::Rdma {
        return Err(Error::InvalidArgument(
            "the RDMA transport is in the oxccl-rdma crate (feature `verbs`): connect with \
             oxccl_rdma::verbs::connect (`oxccl perf` has it when built with --features rdma)"
                .into(),
        ));
    }
    let deadline = Instant::now() + config.timeout;
    let (rank, world) = (launch.rank, launch.world);
    // Shared memory only makes sense if some peer may be on this host.
    let shm = match kind {
        TransportKind::Tcp | TransportKind::Rdma => None,
        _ => Some(ShmSetup::create(rank, world, ShmConfig::new(config.slice_bytes, config.timeout))?),
    };
    let mut tcp_config = TcpConfig::from_env(config)?;
    // The launcher may say every rank is here: then loopback will do.
    tcp_config.all_local = launch.local_world == Some(world);
    let (listener, tcp_addr) = TcpTransport::listen(&tcp_config)?;
    let me = PeerInfo {
        rank,
        host_id: host_id(),
        pid: std::process::id(),
        tcp_addr,
        shm_name: shm.as_ref().map(|s| s.name().to_string()),
        rdma: None,
    };
    let peers = rendezvous(launch, me.clone(), deadline)?;
    // Per peer: on this host, with a segment (so shared memory can reach it).
    let here: Vec<bool> = peers.iter().map(|p| p.host_id == me.host_id && p.shm_name.is_some()).collect();
    let all_here = here.iter().all(|&h| h);
    let tcp = |listener, signals| {
        TcpTransport::connect_with(rank, world, listener, &peers, comm_id(launch), &tcp_config, signals)
    };
    match (kind, shm) {
        (TransportKind::Shm, _) if !all_here => {
            let other = &peers[here.iter().position(|&h| !h).expect("one is elsewhere")];
            Err(Error::InvalidArgument(format!(
                "shared memory asked for, but rank {} is on another host ({}) or has no segment",
                other.rank, other.host_id
            )))
        }
        // Everyone here: shared memory for every pair.
        (TransportKind::Shm | TransportKind::Auto, Some(setup)) if all_here => {
            drop(listener);
            let names: Vec<String> = peers.iter().map(|p| p.shm_name.clone().expect("checked")).collect();
            Ok(Arc::new(setup.connect(&names)?))
        }
        // Some here, some elsewhere: shared memory to those here, TCP to the rest.
        (TransportKind::Auto, Some(setup)) if here.iter().filter(|&&h| h).count() > 1 => {
            let names: Vec<Option<String>> =
                peers.iter().zip(&here).map(|(p, &h)| h.then(|| p.shm_name.clone()).flatten()).collect();
            let shm = Arc::new(setup.connect_some(&names)?);
            let signals: Arc<dyn Signals> = shm.clone();
            let tcp = tcp(listener, Some(signals))?;
            Ok(Arc::new(Composite::new(rank, here, shm, tcp)))
        }
        // Unused segments go when `shm`'s remains drop here.
        _ => Ok(tcp(listener, None)?),
    }
}

/// An id every rank of one job computes alike (frames of other jobs that
/// reach our ports are refused by it).
pub fn comm_id(launch: &Launch) -> u64 {
    // FNV-1a: the same in every build.
    format!("{}/{}", launch.master, launch.world)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

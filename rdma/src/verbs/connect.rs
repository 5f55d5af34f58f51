//! From a launcher's environment, or from nothing (tests), to connected
//! RDMA transports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use oxccl::bootstrap::connect::comm_id;
use oxccl::bootstrap::{host_id, rendezvous, Launch, PeerInfo};
use oxccl::transport::composite::Composite;
use oxccl::transport::shm::{ShmConfig, ShmSetup};
use oxccl::transport::{Signals, Transport};
use oxccl::{Communicator, Config, Error, Result};

use super::setup::RdmaSetup;
use super::transport::RdmaTransport;
use crate::config::RdmaConfig;
use crate::endpoint::Card;

/// Connects this process's rank to the group its launcher started, over
/// RDMA for every pair (`OXCCL_IB_*` choose the device): the queue pairs'
/// numbers, GIDs and memory keys travel through the rendezvous store.
pub fn connect(launch: &Launch, config: &Config) -> Result<Arc<RdmaTransport>> {
    let deadline = Instant::now() + config.timeout;
    let rdma = RdmaConfig::from_env(config)?;
    let setup = RdmaSetup::new(launch.rank, launch.world, &rdma)?;
    let me = info(launch, &setup, None);
    let peers = rendezvous(launch, me.clone(), deadline)?;
    let cards = cards(&peers, launch.world)?;
    let local = peers.iter().filter(|p| p.host_id == me.host_id).count();
    setup.connect(&cards, comm_id(launch), local, None)
}

/// The best transport per pair of ranks, as NCCL chooses: shared memory
/// between ranks on one host (equal host ids, see
/// [`oxccl::bootstrap::host_id`]), RDMA between hosts. A group entirely on
/// this host uses shared memory alone (the direct algorithm can then run);
/// a group spread over hosts a [`Composite`] of both, or RDMA alone for a
/// rank with no peer on its host. Fails like [`connect`] when this host
/// has no RDMA device (a caller may then fall back to TCP:
/// [`oxccl::bootstrap::connect::connect`]).
pub fn connect_auto(launch: &Launch, config: &Config) -> Result<Arc<dyn Transport>> {
    let deadline = Instant::now() + config.timeout;
    let (rank, world) = (launch.rank, launch.world);
    let setup = RdmaSetup::new(rank, world, &RdmaConfig::from_env(config)?)?;
    let shm = ShmSetup::create(rank, world, ShmConfig::new(config.slice_bytes, config.timeout))?;
    let me = info(launch, &setup, Some(shm.name().to_string()));
    let peers = rendezvous(launch, me.clone(), deadline)?;
    let here: Vec<bool> = peers.iter().map(|p| p.host_id == me.host_id && p.shm_name.is_some()).collect();
    let names: Vec<Option<String>> =
        peers.iter().zip(&here).map(|(p, &h)| h.then(|| p.shm_name.clone()).flatten()).collect();
    let local = here.iter().filter(|&&h| h).count();
    if local == world {
        // Every rank sees the same: nobody connects a queue pair.
        let names: Vec<String> = names.into_iter().map(|n| n.expect("here")).collect();
        return Ok(Arc::new(shm.connect(&names)?));
    }
    let cards = cards(&peers, world)?;
    if local == 1 {
        return Ok(setup.connect(&cards, comm_id(launch), local, None)?);
    }
    let shm = Arc::new(shm.connect_some(&names)?);
    let signals: Arc<dyn Signals> = shm.clone();
    // Queue pairs go to every rank (those here too, unused): every rank
    // connects to all others, whichever way it was placed.
    let rdma = setup.connect(&cards, comm_id(launch), local, Some(signals))?;
    Ok(Arc::new(Composite::new(rank, here, shm, rdma)))
}

/// This rank's rendezvous entry: its RDMA endpoint, and its shared-memory
/// segment when it has one.
fn info(launch: &Launch, setup: &RdmaSetup, shm_name: Option<String>) -> PeerInfo {
    PeerInfo {
        rank: launch.rank,
        host_id: host_id(),
        pid: std::process::id(),
        // No TCP transport listens: an unspecified address says so.
        tcp_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        shm_name,
        rdma: Some(setup.card().encode()),
    }
}

/// Every rank's RDMA endpoint, from the rendezvous entries.
fn cards(peers: &[PeerInfo], world: usize) -> Result<Vec<Card>> {
    peers
        .iter()
        .map(|p| {
            let text = p.rdma.as_deref().ok_or_else(|| Error::Protocol {
                peer: p.rank,
                what: "it set up no RDMA endpoint (is it running with another transport?)".into(),
            })?;
            Card::decode(text, p.rank, world)
                .map_err(|what| Error::Protocol { peer: p.rank, what: format!("its RDMA endpoint: {what}") })
        })
        .collect()
}

/// [`connect`], as a communicator.
pub fn communicator(launch: &Launch, config: Config) -> Result<Communicator> {
    let t: Arc<dyn Transport> = connect(launch, &config)?;
    Communicator::from_transport(launch.rank, t, config)
}

/// [`connect_auto`], as a communicator.
pub fn communicator_auto(launch: &Launch, config: Config) -> Result<Communicator> {
    let t = connect_auto(launch, &config)?;
    Communicator::from_transport(launch.rank, t, config)
}

/// `world` ranks in this process, each with its own transport, connected
/// through the device `config` chooses (for tests): rank `r`'s is element `r`.
pub fn loopback_group(world: usize, config: &RdmaConfig) -> Result<Vec<Arc<RdmaTransport>>> {
    let setups = (0..world).map(|r| RdmaSetup::new(r, world, config)).collect::<Result<Vec<_>>>()?;
    let cards: Vec<Card> = setups.iter().map(RdmaSetup::card).collect();
    // Every card goes through its text form, as at a real rendezvous.
    let cards = cards
        .iter()
        .enumerate()
        .map(|(r, c)| Card::decode(&c.encode(), r, world).map_err(|what| Error::Protocol { peer: r, what }))
        .collect::<Result<Vec<_>>>()?;
    let comm_id = oxccl::transport::unshared::fresh_id(world as u64);
    setups.into_iter().map(|s| s.connect(&cards, comm_id, world, None)).collect()
}

//! From a launcher's environment, or from nothing (tests), to connected
//! RDMA transports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use oxccl::bootstrap::connect::comm_id;
use oxccl::bootstrap::{host_id, rendezvous, Launch, PeerInfo};
use oxccl::transport::Transport;
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
    let me = PeerInfo {
        rank: launch.rank,
        host_id: host_id(),
        pid: std::process::id(),
        // No TCP transport listens: an unspecified address says so.
        tcp_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        shm_name: None,
        rdma: Some(setup.card().encode()),
    };
    let peers = rendezvous(launch, me.clone(), deadline)?;
    let cards = peers
        .iter()
        .map(|p| {
            let text = p.rdma.as_deref().ok_or_else(|| Error::Protocol {
                peer: p.rank,
                what: "it set up no RDMA endpoint (is it running with another transport?)".into(),
            })?;
            Card::decode(text, p.rank, launch.world)
                .map_err(|what| Error::Protocol { peer: p.rank, what: format!("its RDMA endpoint: {what}") })
        })
        .collect::<Result<Vec<_>>>()?;
    let local = peers.iter().filter(|p| p.host_id == me.host_id).count();
    setup.connect(&cards, comm_id(launch), local, None)
}

/// [`connect`], as a communicator.
pub fn communicator(launch: &Launch, config: Config) -> Result<Communicator> {
    let t: Arc<dyn Transport> = connect(launch, &config)?;
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

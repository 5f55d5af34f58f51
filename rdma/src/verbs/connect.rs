//! From a launcher's environment, or from nothing (tests), to connected
//! RDMA transports: the RDMA connector joins the transport table
//! ([`oxccl::bootstrap::connect::connect_over`] does the rendezvous and the
//! choice per pair).

use std::sync::Arc;

use oxccl::bootstrap::connect::connect_over;
use oxccl::bootstrap::Launch;
use oxccl::transport::connector::Connector;
use oxccl::transport::shm::connector::ShmConnector;
use oxccl::transport::tcp::connector::TcpConnector;
use oxccl::transport::Transport;
use oxccl::{Communicator, Config, Error, Result};

use super::connector::RdmaConnector;
use super::setup::RdmaSetup;
use super::transport::RdmaTransport;
use crate::config::RdmaConfig;
use crate::endpoint::Card;

/// Connects this process's rank to the group its launcher started, over
/// RDMA for every pair (`OXCCL_IB_*` choose the device): the queue pairs'
/// numbers, GIDs and memory keys travel through the rendezvous store.
pub fn connect(launch: &Launch, config: &Config) -> Result<Arc<dyn Transport>> {
    let rdma = RdmaConnector::new(launch.rank, launch.world, config)?;
    connect_over(launch, vec![Box::new(rdma)], config)
}

/// The best transport per pair of ranks, as NCCL chooses: shared memory
/// between ranks on one host (equal host ids, see
/// [`oxccl::bootstrap::host_id`]), RDMA between hosts, TCP where a rank has
/// no usable RDMA device (then every rank uses TCP between hosts, since the
/// network transport must reach every rank). A group entirely on this host
/// uses shared memory alone (the direct algorithm can then run); a group
/// spread over hosts a composite of shared memory and the network transport.
pub fn connect_auto(launch: &Launch, config: &Config) -> Result<Arc<dyn Transport>> {
    let (rank, world) = (launch.rank, launch.world);
    let mut table: Vec<Box<dyn Connector>> = vec![Box::new(ShmConnector::new(rank, world, config)?)];
    // No device here: this rank publishes no RDMA endpoint, and every rank
    // leaves RDMA out alike.
    if let Ok(rdma) = RdmaConnector::new(rank, world, config) {
        table.push(Box::new(rdma));
    }
    let all_local = launch.local_world == Some(world);
    table.push(Box::new(TcpConnector::new(config, all_local)?));
    connect_over(launch, table, config)
}

/// [`connect`], as a communicator.
pub fn communicator(launch: &Launch, config: Config) -> Result<Communicator> {
    let t = connect(launch, &config)?;
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

//! RDMA's entry in the transport table: the card (queue pair numbers, GID,
//! memory keys) is the endpoint, and it reaches every rank that published
//! one. It connects queue pairs to every rank of the group (those reached
//! through shared memory too, unused), so it can carry the group-wide
//! operations beside shared memory.

use std::sync::Arc;

use oxccl::bootstrap::PeerInfo;
use oxccl::transport::connector::{Caps, Connected, Connector, Join};
use oxccl::transport::Signals;
use oxccl::{Config, Error, Rank, Result};

use super::setup::RdmaSetup;
use crate::config::RdmaConfig;
use crate::endpoint::Card;

/// The name RDMA endpoints are published under.
pub const NAME: &str = "rdma";

/// See the module docs.
pub struct RdmaConnector {
    setup: RdmaSetup,
}

impl RdmaConnector {
    /// Opens the device `OXCCL_IB_*` choose and makes this rank's queue
    /// pairs and registered memory; fails when this host has no usable
    /// device.
    pub fn new(rank: Rank, world: usize, config: &Config) -> Result<RdmaConnector> {
        Ok(RdmaConnector { setup: RdmaSetup::new(rank, world, &RdmaConfig::from_env(config)?)? })
    }
}

impl Connector for RdmaConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn endpoint(&self) -> Option<String> {
        Some(self.setup.card().encode())
    }

    fn reaches(&self, me: &PeerInfo, peer: &PeerInfo) -> bool {
        me.endpoint(NAME).is_some() && peer.endpoint(NAME).is_some()
    }

    fn caps(&self) -> Caps {
        Caps { registers_memory: true, ..Caps::default() }
    }

    fn connect(self: Box<Self>, join: &Join<'_>, _to: &[bool], signals: Option<Arc<dyn Signals>>) -> Result<Connected> {
        let cards = cards(join.peers, join.world)?;
        let me = &join.peers[join.rank];
        let local = join.peers.iter().filter(|p| p.host_id == me.host_id).count();
        let t = self.setup.connect(&cards, join.comm_id, local, signals)?;
        Ok(Connected { transport: t, signals: None })
    }
}

/// Every rank's RDMA endpoint, from the rendezvous entries.
fn cards(peers: &[PeerInfo], world: usize) -> Result<Vec<Card>> {
    peers
        .iter()
        .map(|p| {
            let text = p.endpoint(NAME).ok_or_else(|| Error::Protocol {
                peer: p.rank,
                what: "it set up no RDMA endpoint (is it running with another transport?)".into(),
            })?;
            Card::decode(text, p.rank, world)
                .map_err(|what| Error::Protocol { peer: p.rank, what: format!("its RDMA endpoint: {what}") })
        })
        .collect()
}

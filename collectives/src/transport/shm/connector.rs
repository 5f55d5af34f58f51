//! Shared memory's entry in the transport table: the segment name is the
//! endpoint, and it reaches the ranks on this host (equal host ids) that
//! made a segment too.

use std::sync::Arc;

use super::{ShmConfig, ShmSetup};
use crate::bootstrap::PeerInfo;
use crate::config::Config;
use crate::error::Result;
use crate::schedule::Rank;
use crate::transport::connector::{Caps, Connected, Connector, Join};
use crate::transport::{Signals, Transport};

/// The name shared memory's endpoints are published under.
pub(crate) const NAME: &str = "shm";

/// See the module docs.
pub struct ShmConnector {
    setup: ShmSetup,
}

impl ShmConnector {
    /// Makes this rank's segments (they are unlinked once every peer on this
    /// host has mapped them, or when the connector drops unused).
    pub fn new(rank: Rank, world: usize, config: &Config) -> Result<ShmConnector> {
        let setup = ShmSetup::create(rank, world, ShmConfig::new(config.slice_bytes, config.timeout))?;
        Ok(ShmConnector { setup })
    }
}

impl Connector for ShmConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn endpoint(&self) -> Option<String> {
        Some(self.setup.name().to_string())
    }

    fn reaches(&self, me: &PeerInfo, peer: &PeerInfo) -> bool {
        me.host_id == peer.host_id && me.endpoint(NAME).is_some() && peer.endpoint(NAME).is_some()
    }

    fn caps(&self) -> Caps {
        Caps { shares_memory: true, ..Caps::default() }
    }

    fn serves_some(&self) -> bool {
        true
    }

    fn connect(self: Box<Self>, join: &Join<'_>, to: &[bool], _signals: Option<Arc<dyn Signals>>) -> Result<Connected> {
        let names: Vec<Option<String>> =
            join.peers.iter().map(|p| to[p.rank].then(|| p.endpoint(NAME).map(str::to_string)).flatten()).collect();
        let shm = Arc::new(self.setup.connect_some(&names)?);
        let signals: Arc<dyn Signals> = shm.clone();
        let transport: Arc<dyn Transport> = shm;
        Ok(Connected { transport, signals: Some(signals) })
    }
}

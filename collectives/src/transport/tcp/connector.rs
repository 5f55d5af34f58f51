//! TCP's entry in the transport table: the listening address is the
//! endpoint, and it reaches every rank that listens too. It connects to every
//! rank of the group, so it can carry the group-wide operations beside
//! shared memory.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use super::{TcpConfig, TcpTransport, NAME};
use crate::bootstrap::PeerInfo;
use crate::config::Config;
use crate::error::Result;
use crate::transport::connector::{Caps, Connected, Connector, Join};
use crate::transport::Signals;

/// See the module docs.
pub struct TcpConnector {
    listener: TcpListener,
    addr: SocketAddr,
    config: TcpConfig,
}

impl TcpConnector {
    /// Listens where `OXCCL_SOCKET_*` say (loopback when `all_local`: the
    /// launcher says every rank is on this host).
    pub fn new(config: &Config, all_local: bool) -> Result<TcpConnector> {
        let mut config = TcpConfig::from_env(config)?;
        config.all_local = all_local;
        let (listener, addr) = TcpTransport::listen(&config)?;
        Ok(TcpConnector { listener, addr, config })
    }
}

impl Connector for TcpConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn endpoint(&self) -> Option<String> {
        Some(self.addr.to_string())
    }

    fn reaches(&self, me: &PeerInfo, peer: &PeerInfo) -> bool {
        me.endpoint(NAME).is_some() && peer.endpoint(NAME).is_some()
    }

    fn caps(&self) -> Caps {
        Caps::default()
    }

    fn connect(self: Box<Self>, join: &Join<'_>, _to: &[bool], signals: Option<Arc<dyn Signals>>) -> Result<Connected> {
        let t = TcpTransport::connect_with(
            join.rank,
            join.world,
            self.listener,
            join.peers,
            join.comm_id,
            &self.config,
            signals,
        )?;
        Ok(Connected { transport: t, signals: None })
    }
}

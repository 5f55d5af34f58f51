//! From a launcher's environment to a transport: make this rank's
//! endpoints, meet the others at rendezvous, and connect each pair of ranks
//! with the first transport of the table that reaches it
//! ([`connect_over`]; the table: [`crate::transport::connector`]).
//!
//! The built-in table ([`TransportKind`]): shared memory between ranks on one
//! host (equal host ids), TCP between hosts — a group entirely on this host
//! uses shared memory alone (and may run the direct algorithm), a group
//! spread over hosts a composite of both (one transport per peer).
//! `OXCCL_TRANSPORT=shm|tcp` (or the `Communicator::init_with` argument)
//! keeps only that transport in the table. RDMA verbs live in their own
//! crate (`oxccl-rdma`, which needs the verbs libraries) and add their
//! connector to the table there: [`TransportKind::Rdma`] names it, and
//! [`Communicator::init_with`] refuses it with an error saying where it is.
//!
//! Public here: [`TransportKind`] and [`connect_over`], the selection loop a
//! transport outside this crate connects through (see
//! [`crate::transport`]); the built-in table and its helpers are internal.
//!
//! [`Communicator::init_with`]: crate::Communicator::init_with

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use super::env::Launch;
use super::rendezvous::{host_id, rendezvous};
use super::PeerInfo;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::schedule::Rank;
use crate::transport::composite::Composite;
use crate::transport::connector::{Connector, Join};
use crate::transport::shm::connector::ShmConnector;
use crate::transport::tcp::connector::TcpConnector;
use crate::transport::Transport;

/// Which transport a group of processes uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// Shared memory when all ranks share this host, else TCP.
    Auto,
    Shm,
    Tcp,
    /// RDMA verbs for every pair: `oxccl_rdma::verbs::connect`
    /// ([`Communicator::init_with`](crate::Communicator::init_with) refuses it).
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

/// The built-in table for `kind`, in priority order: its connectors have
/// made this rank's endpoints (a segment, a listening socket).
pub(crate) fn table(launch: &Launch, kind: TransportKind, config: &Config) -> Result<Vec<Box<dyn Connector>>> {
    let (rank, world) = (launch.rank, launch.world);
    // The launcher may say every rank is here: then loopback will do for TCP.
    let all_local = launch.local_world == Some(world);
    let shm = || -> Result<Box<dyn Connector>> { Ok(Box::new(ShmConnector::new(rank, world, config)?)) };
    let tcp = || -> Result<Box<dyn Connector>> { Ok(Box::new(TcpConnector::new(config, all_local)?)) };
    match kind {
        TransportKind::Auto => Ok(vec![shm()?, tcp()?]),
        TransportKind::Shm => Ok(vec![shm()?]),
        TransportKind::Tcp => Ok(vec![tcp()?]),
        TransportKind::Rdma => Err(Error::InvalidArgument(
            "the RDMA transport is in the oxccl-rdma crate (feature `verbs`): connect with \
             oxccl_rdma::verbs::connect (`oxccl perf` has it when built with --features rdma)"
                .into(),
        )),
    }
}

/// Connects this process's rank to the group its launcher started, over the
/// built-in table for `kind` ([`table`]).
pub(crate) fn connect(launch: &Launch, kind: TransportKind, config: &Config) -> Result<Arc<dyn Transport>> {
    connect_over(launch, table(launch, kind, config)?, config)
}

/// Connects this process's rank to the group its launcher started: publishes
/// every connector's endpoint at rendezvous, gives each peer the first
/// connector in `connectors` (priority order) that reaches it (a network
/// transport that cannot serve some peers only must reach every rank, else it
/// is left out on every rank alike), and connects those chosen — one
/// transport, or a composite of the two a group spread over hosts uses (one
/// transport per peer, the second carrying the group-wide operations). Connectors not chosen are dropped (their
/// endpoints go with them).
pub fn connect_over(
    launch: &Launch,
    connectors: Vec<Box<dyn Connector>>,
    config: &Config,
) -> Result<Arc<dyn Transport>> {
    let deadline = Instant::now() + config.timeout;
    let (rank, world) = (launch.rank, launch.world);
    let mut me = PeerInfo { rank, host_id: host_id(), pid: std::process::id(), ..PeerInfo::default() };
    for c in &connectors {
        if let Some(endpoint) = c.endpoint() {
            me = me.with_endpoint(c.name(), endpoint);
        }
    }
    let peers = rendezvous(launch, me, deadline)?;
    let by_peer = choose(&connectors, &peers, rank)?;
    let join = Join { rank, world, peers: &peers, comm_id: comm_id(launch) };
    let mut used: Vec<usize> = by_peer.clone();
    used.sort_unstable();
    used.dedup();
    let mut connectors: Vec<Option<Box<dyn Connector>>> = connectors.into_iter().map(Some).collect();
    let mut take = |i: usize| connectors[i].take().expect("each connector is used once");
    match used[..] {
        [only] => Ok(take(only).connect(&join, &vec![true; world], None)?.transport),
        [first, second] => {
            let (first, second) = (take(first), take(second));
            if !first.serves_some() {
                return Err(Error::InvalidArgument(format!(
                    "{} cannot carry some peers of rank {rank} while {} carries the others",
                    first.name(),
                    second.name()
                )));
            }
            let to: Vec<bool> = by_peer.iter().map(|&i| i == used[0]).collect();
            let local = first.connect(&join, &to, None)?;
            let signals = local.signals.expect("a transport that serves some peers lends its signals");
            let net = second.connect(&join, &vec![true; world], Some(signals.clone()))?;
            let index = by_peer.iter().map(|&i| usize::from(i != used[0])).collect();
            Ok(Arc::new(Composite::new(rank, index, vec![local.transport, net.transport], signals)))
        }
        _ => {
            let names: Vec<&str> = used.iter().map(|&i| connectors_name(&connectors, i)).collect();
            Err(Error::InvalidArgument(format!(
                "rank {rank} would need {} transports ({}); a rank uses at most two",
                used.len(),
                names.join(", ")
            )))
        }
    }
}

fn connectors_name(connectors: &[Option<Box<dyn Connector>>], i: usize) -> &'static str {
    connectors[i].as_ref().map_or("?", |c| c.name())
}

/// Per rank, the index in `connectors` of the transport that carries its
/// pair with `rank`: the first that reaches it (of those that reach every
/// rank, unless they can serve some peers only). This rank's own entry is the
/// first transport any peer uses (for a world of one: the first connector
/// with an endpoint). Both ranks of a pair come to the same answer, since
/// every rank has the same table and `reaches` looks at both entries alike.
pub(crate) fn choose(connectors: &[Box<dyn Connector>], peers: &[PeerInfo], rank: Rank) -> Result<Vec<usize>> {
    let me = &peers[rank];
    // A transport that cannot serve some peers beside another carries the
    // group-wide operations, so it must reach every rank: one that some rank
    // did not set up (no device there) is left out for everyone alike.
    let usable: Vec<bool> =
        connectors.iter().map(|c| c.serves_some() || peers.iter().all(|p| p.endpoint(c.name()).is_some())).collect();
    let mut by_peer = Vec::with_capacity(peers.len());
    for p in peers {
        if p.rank == rank {
            by_peer.push(usize::MAX);
            continue;
        }
        match connectors.iter().zip(&usable).position(|(c, &u)| u && c.reaches(me, p)) {
            Some(i) => by_peer.push(i),
            None => return Err(unreachable(connectors, me, p)),
        }
    }
    let own = by_peer.iter().copied().filter(|&i| i != usize::MAX).min();
    let own = own.or_else(|| connectors.iter().position(|c| c.endpoint().is_some())).unwrap_or(0);
    by_peer[rank] = own;
    Ok(by_peer)
}

#[cold]
fn unreachable(connectors: &[Box<dyn Connector>], me: &PeerInfo, peer: &PeerInfo) -> Error {
    let names: Vec<&str> = connectors.iter().map(|c| c.name()).collect();
    let theirs: Vec<&str> = peer.endpoints.keys().map(String::as_str).collect();
    let where_ = if peer.host_id == me.host_id { "this host".to_string() } else { format!("host {}", peer.host_id) };
    Error::InvalidArgument(format!(
        "no transport of rank {}'s table ({}) reaches rank {} (pid {} on {where_}, with endpoints for: {}); \
         shared memory reaches only ranks on this host",
        me.rank,
        names.join(", "),
        peer.rank,
        peer.pid,
        if theirs.is_empty() { "none".to_string() } else { theirs.join(", ") },
    ))
}

/// An id every rank of one job computes alike (frames of other jobs that
/// reach our ports are refused by it).
pub(crate) fn comm_id(launch: &Launch) -> u64 {
    // FNV-1a: the same in every build.
    format!("{}/{}", launch.master, launch.world)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::connector::{Caps, Connected};
    use crate::transport::Signals;

    /// A connector that is only looked at, never connected.
    struct Fake {
        name: &'static str,
        same_host: bool,
        some: bool,
    }

    impl Connector for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn endpoint(&self) -> Option<String> {
            Some("x".into())
        }
        fn reaches(&self, me: &PeerInfo, peer: &PeerInfo) -> bool {
            (!self.same_host || me.host_id == peer.host_id)
                && me.endpoint(self.name).is_some()
                && peer.endpoint(self.name).is_some()
        }
        fn caps(&self) -> Caps {
            Caps::default()
        }
        fn serves_some(&self) -> bool {
            self.some
        }
        fn connect(self: Box<Self>, _: &Join<'_>, _: &[bool], _: Option<Arc<dyn Signals>>) -> Result<Connected> {
            unreachable!("only chosen")
        }
    }

    fn table() -> Vec<Box<dyn Connector>> {
        vec![
            Box::new(Fake { name: "shm", same_host: true, some: true }),
            Box::new(Fake { name: "rdma", same_host: false, some: false }),
            Box::new(Fake { name: "tcp", same_host: false, some: false }),
        ]
    }

    /// Ranks on `hosts[r]`, each publishing the endpoints named in `has[r]`.
    fn peers(hosts: &[&str], has: &[&[&str]]) -> Vec<PeerInfo> {
        hosts
            .iter()
            .zip(has)
            .enumerate()
            .map(|(rank, (h, names))| {
                let p = PeerInfo { rank, host_id: h.to_string(), pid: rank as u32, ..PeerInfo::default() };
                names.iter().fold(p, |p, n| p.with_endpoint(n, "x"))
            })
            .collect()
    }

    const ALL: &[&str] = &["shm", "rdma", "tcp"];

    #[test]
    fn one_host_is_shared_memory_alone() {
        let ps = peers(&["a"; 3], &[ALL; 3]);
        for r in 0..3 {
            assert_eq!(choose(&table(), &ps, r).unwrap(), vec![0; 3]);
        }
    }

    #[test]
    fn two_hosts_take_shared_memory_here_and_rdma_there() {
        let ps = peers(&["a", "a", "b", "b"], &[ALL; 4]);
        assert_eq!(choose(&table(), &ps, 0).unwrap(), vec![0, 0, 1, 1]);
        assert_eq!(choose(&table(), &ps, 3).unwrap(), vec![1, 1, 0, 0]);
        // Alone on its host: the network transport is its own too.
        let ps = peers(&["a", "b", "b"], &[ALL; 3]);
        assert_eq!(choose(&table(), &ps, 0).unwrap(), vec![1, 1, 1]);
    }

    /// One rank without a device: RDMA is left out on every rank, not only
    /// for the pairs with that rank (the network transport carries the
    /// group-wide operations, so it must reach everyone).
    #[test]
    fn a_rank_without_the_device_leaves_it_out_for_everyone() {
        let ps = peers(&["a", "a", "b", "c"], &[ALL, ALL, ALL, &["shm", "tcp"]]);
        for r in 0..4 {
            let got = choose(&table(), &ps, r).unwrap();
            assert!(got.iter().all(|&i| i != 1), "rank {r}: {got:?}");
        }
        assert_eq!(choose(&table(), &ps, 0).unwrap(), vec![0, 0, 2, 2]);
    }

    #[test]
    fn an_unreachable_peer_is_named() {
        let shm_only: Vec<Box<dyn Connector>> = vec![Box::new(Fake { name: "shm", same_host: true, some: true })];
        let ps = peers(&["a", "b"], &[&["shm"], &["shm"]]);
        let e = choose(&shm_only, &ps, 0).unwrap_err().to_string();
        assert!(e.contains("reaches rank 1") && e.contains("host b") && e.contains("(shm)"), "{e}");
    }

    #[test]
    fn a_world_of_one_takes_the_first_transport() {
        assert_eq!(choose(&table(), &peers(&["a"], &[ALL]), 0).unwrap(), vec![0]);
    }
}

//! The TCP transport: ranks are processes on one or several hosts.
//!
//! One [`TcpTransport`] per process serves its own rank. Setting one up takes
//! two steps around the rendezvous: [`TcpTransport::listen`] binds a
//! listener on the chosen address (module `address`) so it can be published in
//! the rank's [`PeerInfo`]; [`TcpTransport::connect`] then opens
//! [`TcpConfig::streams`] connections to every peer and checks each with a
//! handshake (module `handshake`).
//!
//! Messages travel as frames ([`crate::transport::wire`]) with a 64-byte
//! header that every receiver checks (magic, version, communicator id, kind,
//! message number, collective sequence number, length and the collective's
//! arguments). Flow control is by credits: a peer's
//! [`SLOTS`](crate::transport::SLOTS) receive slots each hold one message, a
//! sender writes only while the peer has one free, and the receiver returns a
//! credit on every release (module `pair`). Frames are read
//! straight into the receive slots by whoever holds the stream's receiver
//! (module `receive`): the rank's own thread while it waits for the peer
//! (non-blocking reads, so a message needs no thread to wake up), otherwise
//! a thread per stream (module `stream`) that sleeps in `poll(2)` and rings
//! the rank's doorbell; the executor's thread
//! writes its own frames (`TCP_NODELAY`, one system call per message). A channel's messages are dealt round-robin
//! over the pair's streams and handed out in order by number, so several
//! streams carry a large transfer while the order stays exact.
//!
//! Failures: a malformed frame aborts the group with [`Error::Protocol`]
//! naming the sender; [`Transport::abort`] sets the local flag, wakes the
//! rank and sends an abort frame with its cause to every peer, whose
//! receive thread aborts its group with that cause; a peer whose connections
//! all closed is gone ([`Transport::peer_alive`] says so, and a rank waiting
//! for it fails with [`Error::PeerGone`]), and a send to it or a connection
//! broken in the middle of a frame aborts the group with [`Error::PeerGone`].
//! Every socket operation has a timeout; dropping the transport waits
//! (briefly) until peers have taken what was sent to them, then shuts its
//! sockets down and joins its threads.
//!
//! Ranks share no memory: [`Transport::shares_memory`] is false, so the
//! direct algorithm is refused before anything moves and the barrier
//! methods are never called (they do nothing). Postings stay local — a
//! mismatch between ranks is caught from the arguments every message
//! carries.
//!
//! Environment ([`TcpConfig::from_env`]): `OXCCL_SOCKET_IFNAME` (interfaces,
//! `NCCL_SOCKET_IFNAME` syntax), `OXCCL_SOCKET_ADDR` (an explicit address to
//! listen on), `OXCCL_TCP_STREAMS` (connections per peer, default 2).
//!
//! Public: [`connector::TcpConnector`] (its entry in the transport table,
//! which the RDMA crate's `connect_auto` puts last), and [`TcpConfig`] and
//! [`TcpTransport`], only because `collectives/tests/tcp.rs` builds ranks
//! over loopback and fakes a peer from raw frames, which no public
//! constructor offers.

pub(crate) mod address;
pub mod connector;
mod handshake;
pub(crate) mod pair;
mod receive;
mod stream;

use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bootstrap::PeerInfo;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mem::Region;
use crate::schedule::Rank;
use crate::transport::unshared::{fresh_id, AbortState, Own, WaitState};
use crate::transport::wait::Activity;
use crate::transport::wire::{self, Limits};
use crate::transport::{Doorbell, Header, Posting, Signals, Transport};
use pair::Pair;

/// How often an idle receive thread looks up from its socket.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// The name TCP's endpoints are published under.
pub(crate) const NAME: &str = "tcp";

/// Longest a dropped transport waits for peers to take what it sent.
const LINGER: Duration = Duration::from_secs(5);
/// Stack of a receive thread (it holds a header and an abort cause).
const RECEIVE_STACK: usize = 256 << 10;
/// Most connections per peer.
pub const MAX_STREAMS: usize = 16;
/// Longest a probe waits for its answer, and an answer for a free stream.
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// How a rank's TCP transport is set up. Public only for
/// `collectives/tests/tcp.rs` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Listen on this address (port 0: any port); `OXCCL_SOCKET_ADDR`.
    pub addr: Option<SocketAddr>,
    /// Interfaces to listen on, `NCCL_SOCKET_IFNAME` syntax; `OXCCL_SOCKET_IFNAME`.
    pub ifname: Option<String>,
    /// Every rank runs on this host: without `addr` or `ifname`, listen on loopback.
    pub all_local: bool,
    /// Connections per peer (1 ..= [`MAX_STREAMS`]); `OXCCL_TCP_STREAMS`, default 2.
    pub streams: usize,
    /// Bytes per message: the communicator's slice rounded up to 64. Every rank must agree.
    pub slot_bytes: usize,
    /// Deadline of connecting, and of any socket operation that stalls.
    pub timeout: Duration,
}

impl TcpConfig {
    /// The transport for a communicator with `config` (its slice and its
    /// timeout), two streams per peer, the address chosen automatically.
    pub fn new(config: &Config) -> TcpConfig {
        TcpConfig {
            addr: None,
            ifname: None,
            all_local: false,
            streams: 2,
            slot_bytes: config.slice_bytes.div_ceil(64) * 64,
            timeout: config.timeout,
        }
    }

    /// [`TcpConfig::new`], then `OXCCL_SOCKET_ADDR`, `OXCCL_SOCKET_IFNAME`
    /// and `OXCCL_TCP_STREAMS` where set.
    pub fn from_env(config: &Config) -> Result<TcpConfig> {
        TcpConfig::from_vars(config, |name| std::env::var(name).ok())
    }

    /// [`TcpConfig::from_env`] with the variables read through `get`.
    fn from_vars(config: &Config, get: impl Fn(&str) -> Option<String>) -> Result<TcpConfig> {
        let mut c = TcpConfig::new(config);
        let var = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if let Some(a) = var("OXCCL_SOCKET_ADDR") {
            let parsed = a.parse::<SocketAddr>().or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| (ip, 0).into()));
            c.addr =
                Some(parsed.map_err(|_| {
                    Error::InvalidArgument(format!("OXCCL_SOCKET_ADDR={a}: not an IP address or IP:port"))
                })?);
        }
        c.ifname = var("OXCCL_SOCKET_IFNAME");
        if let Some(s) = var("OXCCL_TCP_STREAMS") {
            c.streams =
                s.parse().map_err(|_| Error::InvalidArgument(format!("OXCCL_TCP_STREAMS={s}: not a number")))?;
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_STREAMS).contains(&self.streams) {
            return Err(Error::InvalidArgument(format!("{} TCP streams (must be 1 ..= {MAX_STREAMS})", self.streams)));
        }
        if self.slot_bytes == 0 || self.slot_bytes > 1 << 30 || self.slot_bytes % 64 != 0 {
            return Err(Error::InvalidArgument(format!(
                "slots of {} bytes (must be a multiple of 64 in 64 B ..= 1 GiB)",
                self.slot_bytes
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::InvalidArgument("zero TCP timeout".into()));
        }
        Ok(())
    }
}

/// What the transport and its receive threads share.
pub(crate) struct Shared {
    rank: Rank,
    world: usize,
    comm_id: u64,
    slot_bytes: usize,
    streams: usize,
    timeout: Duration,
    /// Indexed by peer; `None` for this rank.
    pairs: Vec<Option<Pair>>,
    /// Doorbell, abort flag (this transport's or, when another one serves
    /// this rank too, that one's [`Signals`]) and abort cause.
    pub(crate) signal: AbortState,
    closing: AtomicBool,
}

impl Shared {
    fn new(
        rank: Rank,
        world: usize,
        comm_id: u64,
        config: &TcpConfig,
        pairs: Vec<Option<Pair>>,
        local: usize,
        signals: Option<Arc<dyn Signals>>,
    ) -> Shared {
        Shared {
            rank,
            world,
            comm_id,
            slot_bytes: config.slot_bytes,
            streams: config.streams,
            timeout: config.timeout,
            pairs,
            signal: AbortState::new(local, signals),
            closing: AtomicBool::new(false),
        }
    }

    fn pair(&self, peer: Rank) -> &Pair {
        match self.pairs.get(peer) {
            Some(Some(p)) => p,
            _ => panic!("rank {} has no channel with rank {peer} (world {})", self.rank, self.world),
        }
    }

    fn limits(&self) -> Limits {
        Limits { comm_id: self.comm_id, max_payload: self.slot_bytes, world: self.world }
    }

    fn bell(&self) -> &Doorbell {
        self.signal.bell()
    }

    fn flag(&self) -> &AtomicBool {
        self.signal.flag()
    }

    fn aborted(&self) -> bool {
        self.signal.aborted()
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Aborts the group: locally, and on every peer through an abort frame
    /// when the cause is kept. The peers are told before the flag goes up: a
    /// rank that sees the flag may return and exit at once, and its peers
    /// must learn the cause from it, not from a closed socket.
    fn abort(&self, cause: Error) {
        let frame = wire::encode_abort(self.comm_id, &cause);
        if self.signal.keep_cause(cause) {
            for p in self.pairs.iter().flatten() {
                p.send_abort(&frame, self.timeout);
            }
        }
        self.signal.raise();
    }

    /// Answers `pair`'s probe number `nonce` with what this rank is doing.
    pub(crate) fn answer_probe(&self, pair: &Pair, nonce: u64) {
        let frame = wire::encode_state(self.comm_id, nonce, self.bell().state());
        pair.send_control(&frame, PROBE_WAIT, PROBE_WAIT, self.timeout);
    }

    /// Asks `peer` what its rank is doing; `None` when no answer comes
    /// within `wait` (the process is stopped, or gone).
    fn probe(&self, peer: Rank, wait: Duration) -> Option<WaitState> {
        let pair = self.pair(peer);
        let nonce = fresh_id(peer as u64);
        if pair.gone().is_some()
            || !pair.send_control(&wire::encode_probe(self.comm_id, nonce), wait, wait, self.timeout)
        {
            return None;
        }
        pair.answer.wait(nonce, wait, || pair.gone().is_some(), || pair.pump(self))
    }

    /// A peer aborted the group: abort here, without telling the others
    /// (the peer tells each of them).
    fn abort_from_peer(&self, cause: Error) {
        self.signal.keep_cause(cause);
        self.signal.raise();
    }
}

/// One rank's TCP transport; see the module docs. Public only for
/// `collectives/tests/tcp.rs` (see the module docs).
pub struct TcpTransport {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// This rank's postings, scratch and finished count (peers never see them).
    own: Own,
}

impl TcpTransport {
    /// Binds the listener peers will connect to, on the address `config`
    /// chooses (module `address`); publish the returned address at rendezvous.
    pub fn listen(config: &TcpConfig) -> Result<(TcpListener, SocketAddr)> {
        config.validate()?;
        let interfaces = if config.addr.is_none() && (config.ifname.is_some() || !config.all_local) {
            address::interfaces()?
        } else {
            vec![]
        };
        let at = address::choose(config.addr, config.ifname.as_deref(), config.all_local, &interfaces)?;
        let listener = TcpListener::bind(at).map_err(|e| Error::io(format!("TCP listen on {at}"), e))?;
        let addr = listener.local_addr().map_err(|e| Error::io(format!("TCP listen on {at}"), e))?;
        Ok((listener, addr))
    }

    /// Connects rank `rank` of `world` to every peer (`peers[p]` is rank
    /// `p`'s rendezvous record, this rank's included) and starts the
    /// receive threads. `comm_id` must be the same on every rank and
    /// different for every group. Fails, naming the rank, when a peer does
    /// not connect within [`TcpConfig::timeout`] or disagrees in its
    /// handshake.
    pub fn connect(
        rank: Rank,
        world: usize,
        listener: TcpListener,
        peers: &[PeerInfo],
        comm_id: u64,
        config: &TcpConfig,
    ) -> Result<Arc<TcpTransport>> {
        Self::connect_with(rank, world, listener, peers, comm_id, config, None)
    }

    /// [`TcpTransport::connect`], waking and stopping this rank through
    /// `signals` (another transport's doorbell and abort flag) when given.
    pub fn connect_with(
        rank: Rank,
        world: usize,
        listener: TcpListener,
        peers: &[PeerInfo],
        comm_id: u64,
        config: &TcpConfig,
        signals: Option<Arc<dyn Signals>>,
    ) -> Result<Arc<TcpTransport>> {
        config.validate()?;
        let conns = handshake::establish(rank, world, listener, peers, comm_id, config)?;
        let sys = |e: std::io::Error| Error::io("TCP transport", e);
        let pairs = conns
            .into_iter()
            .enumerate()
            .map(|(p, c)| (p != rank).then(|| Pair::new(p, config.slot_bytes, config.streams, c)).transpose())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(sys)?;
        let local = peers.iter().filter(|p| p.host_id == peers[rank].host_id).count();
        let shared = Arc::new(Shared::new(rank, world, comm_id, config, pairs, local, signals));
        let mut t = TcpTransport { shared: shared.clone(), threads: Vec::new(), own: Own::default() };
        for pair in shared.pairs.iter().flatten() {
            for s in 0..config.streams {
                let (sh, peer) = (shared.clone(), pair.peer);
                let thread = std::thread::Builder::new()
                    .name(format!("oxccl-tcp-{rank}<{peer}.{s}"))
                    .stack_size(RECEIVE_STACK)
                    .spawn(move || stream::stream_thread(&sh, peer, s))
                    .map_err(sys)?;
                t.threads.push(thread);
            }
        }
        Ok(Arc::new(t))
    }

    /// `world` ranks in this process, connected over loopback (for tests
    /// and benchmarks): rank `r`'s transport is element `r`.
    pub fn loopback_group(world: usize, config: &TcpConfig) -> Result<Vec<Arc<TcpTransport>>> {
        if world == 0 {
            return Err(Error::ZeroRanks);
        }
        let config = TcpConfig { all_local: true, ..config.clone() };
        let listeners = (0..world).map(|_| TcpTransport::listen(&config)).collect::<Result<Vec<_>>>()?;
        let peers: Vec<PeerInfo> = listeners
            .iter()
            .enumerate()
            .map(|(rank, (_, addr))| {
                PeerInfo { rank, host_id: "loopback".into(), pid: std::process::id(), ..PeerInfo::default() }
                    .with_endpoint(NAME, addr.to_string())
            })
            .collect();
        let comm_id = fresh_id(0);
        std::thread::scope(|s| {
            let hs: Vec<_> = listeners
                .into_iter()
                .enumerate()
                .map(|(rank, (l, _))| {
                    let (peers, config) = (&peers, &config);
                    s.spawn(move || TcpTransport::connect(rank, world, l, peers, comm_id, config))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a rank panicked while connecting".into()))))
                .collect()
        })
    }

    /// This transport's rank.
    pub fn rank(&self) -> Rank {
        self.shared.rank
    }

    fn me(&self, rank: Rank, what: &str) {
        assert_eq!(
            rank, self.shared.rank,
            "{what}: the TCP transport of rank {} serves only that rank",
            self.shared.rank
        );
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        let s = &self.shared;
        // Let peers take what was sent to them (closing a socket with data
        // unread can reset the connection and lose what it still carries).
        let deadline = Instant::now() + s.timeout.min(LINGER);
        while !s.aborted() && Instant::now() < deadline && s.pairs.iter().flatten().any(|p| !p.drained()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.closing.store(true, Ordering::Release);
        for p in s.pairs.iter().flatten() {
            p.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Transport for TcpTransport {
    fn describe(&self) -> String {
        format!("tcp ({} streams per peer)", self.shared.streams)
    }

    fn world(&self) -> usize {
        self.shared.world
    }

    fn slot_bytes(&self) -> usize {
        self.shared.slot_bytes
    }

    fn shares_memory(&self) -> bool {
        false
    }

    /// Pumps the peer's streams itself (its credits) when no slot is free.
    fn try_send_slot(&self, from: Rank, to: Rank) -> Option<Region> {
        self.me(from, "try_send_slot");
        let pair = self.shared.pair(to);
        pair.try_send_slot().or_else(|| {
            pair.pump(&self.shared);
            pair.try_send_slot()
        })
    }

    fn commit(&self, from: Rank, to: Rank, header: Header) {
        self.me(from, "commit");
        let s = &self.shared;
        if s.aborted() {
            return;
        }
        if let Err(cause) = s.pair(to).commit(s.rank, s.comm_id, &header, s.timeout, s.flag()) {
            s.abort(cause);
        }
    }

    /// Pumps the peer's streams itself when nothing is there yet (see
    /// `receive::Receiver`).
    fn try_recv(&self, to: Rank, from: Rank) -> Option<(Header, Region)> {
        self.me(to, "try_recv");
        let pair = self.shared.pair(from);
        pair.try_recv().or_else(|| {
            pair.pump(&self.shared);
            pair.try_recv()
        })
    }

    fn release(&self, to: Rank, from: Rank) {
        self.me(to, "release");
        let s = &self.shared;
        let pair = s.pair(from);
        let released = pair.release();
        if s.aborted() {
            return;
        }
        if let Err(cause) = pair.send_credit(s.rank, s.comm_id, released) {
            s.abort(cause);
        }
    }

    /// Never called: without shared memory no schedule with barriers runs.
    fn barrier_arrive(&self, _rank: Rank, _k: u64) {}

    /// Never called (see `barrier_arrive`); nobody is ever missing.
    fn barrier_missing(&self, _k: u64) -> Option<Rank> {
        None
    }

    /// Keeps this rank's postings; peers' are never seen here (ranks compare
    /// arguments through message headers instead).
    fn post(&self, rank: Rank, posting: Posting) {
        self.me(rank, "post");
        self.own.post(&posting);
    }

    /// This rank's own posting; `None` for any peer.
    fn posting(&self, rank: Rank, seq: u64) -> Option<Posting> {
        if rank != self.shared.rank {
            return None;
        }
        self.own.posting(seq)
    }

    fn scratch(&self, rank: Rank, half: usize, bytes: usize) -> Result<Region, Error> {
        self.me(rank, "scratch");
        Ok(self.own.scratch(half, bytes))
    }

    fn finish(&self, rank: Rank, seq: u64) {
        self.me(rank, "finish");
        self.own.finish(seq);
    }

    /// See [`Own::finished`].
    fn finished(&self, rank: Rank) -> u64 {
        self.own.finished(self.shared.rank, rank)
    }

    /// False once every connection of `peer` has closed — unless the group
    /// is aborted: a peer that aborted the group sent its cause before it
    /// closed, and that cause (which a waiting rank reports next) says more
    /// than its absence.
    fn peer_alive(&self, peer: Rank) -> bool {
        let s = &self.shared;
        peer == s.rank || s.aborted() || !matches!(s.pairs.get(peer), Some(Some(p)) if p.gone().is_some())
    }

    fn doorbell(&self, rank: Rank) -> &Doorbell {
        self.me(rank, "doorbell");
        self.shared.bell()
    }

    fn abort_flag(&self) -> &AtomicBool {
        self.shared.flag()
    }

    fn abort(&self, cause: Error) {
        self.shared.abort(cause);
    }

    fn abort_cause(&self) -> Option<Error> {
        self.shared.signal.cause()
    }

    /// This rank's from its doorbell; a peer's by probing it (no answer
    /// within the probe's wait: stopped).
    fn activity(&self, rank: Rank, fresh: Duration) -> Option<Activity> {
        let s = &self.shared;
        if rank == s.rank {
            return Some(s.bell().activity(fresh));
        }
        Some(Activity::answered(s.probe(rank, fresh.min(PROBE_WAIT))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn configuration_from_the_environment() {
        let cfg = Config { timeout: Duration::from_secs(7), slice_bytes: 100, algorithm: None, ..Config::default() };
        let c = TcpConfig::from_vars(&cfg, vars(&[])).unwrap();
        assert_eq!(c, TcpConfig::new(&cfg));
        assert_eq!((c.streams, c.slot_bytes, c.timeout, c.addr, c.ifname), (2, 128, cfg.timeout, None, None));
        let c = TcpConfig::from_vars(
            &cfg,
            vars(&[
                ("OXCCL_SOCKET_ADDR", " 10.1.2.3 "),
                ("OXCCL_SOCKET_IFNAME", "^docker,lo"),
                ("OXCCL_TCP_STREAMS", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(c.addr, Some("10.1.2.3:0".parse().unwrap()));
        assert_eq!((c.ifname.as_deref(), c.streams), (Some("^docker,lo"), 4));
        let c = TcpConfig::from_vars(&cfg, vars(&[("OXCCL_SOCKET_ADDR", "[::1]:4000")])).unwrap();
        assert_eq!(c.addr, Some("[::1]:4000".parse().unwrap()));
        for bad in [("OXCCL_SOCKET_ADDR", "eth0"), ("OXCCL_TCP_STREAMS", "two"), ("OXCCL_TCP_STREAMS", "0")] {
            let e = TcpConfig::from_vars(&cfg, vars(&[bad])).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn an_explicit_address_is_where_it_listens() {
        let cfg = Config { timeout: Duration::from_secs(7), slice_bytes: 100, algorithm: None, ..Config::default() };
        let c = TcpConfig { addr: Some("127.0.0.1:0".parse().unwrap()), ..TcpConfig::new(&cfg) };
        let (_l, a) = TcpTransport::listen(&c).unwrap();
        assert!(a.ip().is_loopback() && a.port() != 0);
        let c = TcpConfig { ifname: Some("lo".into()), ..TcpConfig::new(&cfg) };
        let (_l, a) = TcpTransport::listen(&c).unwrap();
        assert!(a.ip().is_loopback(), "{a}");
        let c = TcpConfig { ifname: Some("no-such-interface".into()), ..TcpConfig::new(&cfg) };
        assert!(matches!(TcpTransport::listen(&c), Err(Error::InvalidArgument(_))));
    }
}

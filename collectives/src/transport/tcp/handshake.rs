//! Opening a rank's connections: each rank dials every lower rank (one
//! connection per stream) and accepts one from every higher rank per
//! stream, so every pair is connected exactly once per stream and the order
//! never deadlocks (rank r waits only on ranks below it, which reach their
//! accept phase without waiting on r). Each connection starts with a hello
//! each way ([`wire::Hello`]): magic, version, communicator id, rank, world
//! size, stream, slot size and count must all agree, or the set-up fails
//! with [`Error::Protocol`] naming the peer. Every step has the deadline
//! [`TcpConfig::timeout`]; a rank that never connects is named in an
//! [`Error::Timeout`]. Connections from strangers (no oxccl magic) are
//! dropped and accepting goes on.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::pair::SLOTS;
use super::TcpConfig;
use crate::bootstrap::PeerInfo;
use crate::error::{Error, Result};
use crate::schedule::Rank;
use crate::transport::wire::{self, Frame, Hello, Limits, HEADER_BYTES};

/// Longest wait for a stranger's hello before giving up on it.
const HELLO_WAIT: Duration = Duration::from_secs(2);

struct Setup<'a> {
    rank: Rank,
    world: usize,
    comm_id: u64,
    config: &'a TcpConfig,
    began: Instant,
    deadline: Instant,
}

impl Setup<'_> {
    fn hello(&self, stream: usize) -> [u8; HEADER_BYTES] {
        wire::encode_hello(
            self.comm_id,
            &Hello {
                rank: self.rank as u64,
                world: self.world as u64,
                slot_bytes: self.config.slot_bytes as u64,
                streams: self.config.streams as u64,
                stream: stream as u64,
                slots: SLOTS as u32,
            },
        )
    }

    fn limits(&self) -> Limits {
        Limits { comm_id: self.comm_id, max_payload: self.config.slot_bytes, world: self.world }
    }

    /// What in `h` disagrees with this rank's settings.
    fn disagreement(&self, h: &Hello) -> Option<String> {
        let mine = [
            ("world size", self.world as u64, h.world),
            ("slot bytes", self.config.slot_bytes as u64, h.slot_bytes),
            ("streams", self.config.streams as u64, h.streams),
            ("slots", SLOTS as u64, h.slots.into()),
        ];
        mine.iter().find(|(_, a, b)| a != b).map(|(what, a, b)| format!("{what}: {b} there, {a} here"))
    }

    fn left(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    fn timeout(&self, call: String, peer: Rank, what: &'static str) -> Error {
        Error::Timeout { call: Some(call), rank: self.rank, peer, what, waited: self.began.elapsed() }
    }

    fn protocol(&self, peer: Rank, what: String) -> Error {
        Error::Protocol { peer, what: format!("TCP handshake with rank {}: {what}", self.rank) }
    }
}

/// The rank a hello claims to come from, for error messages.
fn claimed(head: &[u8; HEADER_BYTES]) -> Rank {
    let mut w = [0u8; 8];
    w.copy_from_slice(&head[16..24]);
    usize::try_from(u64::from_le_bytes(w)).unwrap_or(usize::MAX)
}

/// Connects rank `rank` to every peer: `conns[p][s]` is stream `s` with
/// peer `p` (empty for `rank` itself).
pub(crate) fn establish(
    rank: Rank,
    world: usize,
    listener: TcpListener,
    peers: &[PeerInfo],
    comm_id: u64,
    config: &TcpConfig,
) -> Result<Vec<Vec<TcpStream>>> {
    if rank >= world {
        return Err(Error::RankOutOfRange { rank, world });
    }
    if peers.len() != world {
        return Err(Error::InvalidArgument(format!("{} peers for a world of {world}", peers.len())));
    }
    if let Some((i, p)) = peers.iter().enumerate().find(|(i, p)| p.rank != *i) {
        return Err(Error::InvalidArgument(format!("peer {i} says it is rank {}", p.rank)));
    }
    let began = Instant::now();
    let s = Setup { rank, world, comm_id, config, began, deadline: began + config.timeout };
    let mut conns: Vec<Vec<TcpStream>> = (0..world).map(|_| Vec::new()).collect();
    for (p, info) in peers.iter().enumerate().take(rank) {
        let addr = endpoint(info)?;
        if addr.ip().is_unspecified() || (addr.ip().is_loopback() && info.host_id != peers[rank].host_id) {
            return Err(Error::InvalidArgument(format!(
                "rank {p} listens on {addr}, which rank {rank} on another host cannot reach \
                 (choose an interface with OXCCL_SOCKET_IFNAME or an address with OXCCL_SOCKET_ADDR)"
            )));
        }
        for stream in 0..config.streams {
            conns[p].push(dial(&s, p, addr, stream)?);
        }
    }
    accept_all(&s, &listener, &mut conns)?;
    for c in conns.iter().flatten() {
        let io = |e: std::io::Error| Error::io("TCP socket options", e);
        c.set_nodelay(true).map_err(io)?;
        c.set_read_timeout(Some(super::POLL)).map_err(io)?;
        c.set_write_timeout(Some(config.timeout)).map_err(io)?;
    }
    Ok(conns)
}

/// Stream `stream` to lower rank `p`, handshake done.
fn dial(s: &Setup<'_>, p: Rank, addr: SocketAddr, stream: usize) -> Result<TcpStream> {
    let call = || format!("TCP connect to {addr}");
    let mut last = None;
    let mut conn = loop {
        let Some(left) = s.left() else {
            let why = last.map_or(String::new(), |e: std::io::Error| format!(" (last attempt: {e})"));
            return Err(s.timeout(format!("{}{why}", call()), p, "connection"));
        };
        match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(2))) {
            Ok(c) => break c,
            // Not listening yet, or its backlog is full: try again.
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20).min(left));
            }
        }
    };
    let Some(left) = s.left() else { return Err(s.timeout(call(), p, "handshake reply")) };
    let io = |e: std::io::Error| Error::io("TCP socket options", e);
    conn.set_read_timeout(Some(left)).map_err(io)?;
    conn.set_write_timeout(Some(left)).map_err(io)?;
    conn.write_all(&s.hello(stream)).map_err(|e| s.protocol(p, format!("sending the hello failed: {e}")))?;
    let mut head = [0u8; HEADER_BYTES];
    if let Err(e) = conn.read_exact(&mut head) {
        return Err(match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => s.timeout(call(), p, "handshake reply"),
            _ => s.protocol(p, format!("it closed the connection instead of answering the hello ({e})")),
        });
    }
    let h = match wire::decode_header(&head, &s.limits()) {
        Ok(Frame::Hello(h)) => h,
        Ok(other) => return Err(s.protocol(p, format!("it answered the hello with {other:?}"))),
        Err(e) => return Err(s.protocol(p, format!("its answer: {e}"))),
    };
    if h.rank != p as u64 || h.stream != stream as u64 {
        return Err(
            s.protocol(p, format!("{addr} answered as rank {} stream {}, expected stream {stream}", h.rank, h.stream))
        );
    }
    if let Some(d) = s.disagreement(&h) {
        return Err(s.protocol(p, d));
    }
    Ok(conn)
}

/// Accepts every stream of every higher rank into `conns`.
fn accept_all(s: &Setup<'_>, listener: &TcpListener, conns: &mut [Vec<TcpStream>]) -> Result<()> {
    let higher = s.rank + 1..s.world;
    let mut got: Vec<Vec<Option<TcpStream>>> =
        higher.clone().map(|_| (0..s.config.streams).map(|_| None).collect()).collect();
    let mut missing = higher.len() * s.config.streams;
    let sys = |e: std::io::Error| Error::io("TCP accept", e);
    listener.set_nonblocking(true).map_err(sys)?;
    while missing > 0 {
        match listener.accept() {
            Ok((conn, _)) => {
                let Some((p, stream, conn)) = greet(s, conn)? else { continue };
                let place = &mut got[p - s.rank - 1][stream];
                if place.is_some() {
                    return Err(s.protocol(p, format!("stream {stream} connected twice")));
                }
                *place = Some(conn);
                missing -= 1;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                if s.left().is_none() {
                    let first = got.iter().position(|g| g.iter().any(Option::is_none)).unwrap_or(0);
                    let call = format!("TCP accept on {}", listener.local_addr().map_or("?".into(), |a| a.to_string()));
                    return Err(s.timeout(call, s.rank + 1 + first, "connection"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(sys(e)),
        }
    }
    for (p, streams) in higher.zip(got) {
        conns[p] = streams.into_iter().map(|c| c.expect("every stream accepted")).collect();
    }
    Ok(())
}

/// Reads an accepted connection's hello and answers it: `None` for a
/// stranger, the peer and stream otherwise.
fn greet(s: &Setup<'_>, mut conn: TcpStream) -> Result<Option<(Rank, usize, TcpStream)>> {
    let sys = |e: std::io::Error| Error::io("TCP accept", e);
    conn.set_nonblocking(false).map_err(sys)?;
    let wait = s.left().unwrap_or(Duration::from_millis(1)).min(HELLO_WAIT);
    conn.set_read_timeout(Some(wait)).map_err(sys)?;
    conn.set_write_timeout(Some(wait)).map_err(sys)?;
    // The magic first, so a stranger is told apart as soon as it speaks.
    let mut head = [0u8; HEADER_BYTES];
    if conn.read_exact(&mut head[..4]).is_err() || head[0..4] != wire::MAGIC || conn.read_exact(&mut head[4..]).is_err()
    {
        return Ok(None);
    }
    let who = claimed(&head);
    let h = match wire::decode_header(&head, &s.limits()) {
        Ok(Frame::Hello(h)) => h,
        Ok(other) => return Err(s.protocol(who, format!("it opened with {other:?} instead of a hello"))),
        Err(e) => {
            // Let it see what it connected to before the connection drops.
            let _ = conn.write_all(&s.hello(0));
            return Err(s.protocol(who, format!("its hello: {e}")));
        }
    };
    let _ = conn.write_all(&s.hello(h.stream as usize));
    if h.rank <= s.rank as u64 || h.rank >= s.world as u64 {
        return Err(
            s.protocol(who, format!("rank {} connected, but only higher ranks connect to rank {}", h.rank, s.rank))
        );
    }
    if let Some(d) = s.disagreement(&h) {
        return Err(s.protocol(who, d));
    }
    Ok(Some((h.rank as Rank, h.stream as usize, conn)))
}

/// The address `info`'s rank listens on, from its `tcp` endpoint.
pub fn endpoint(info: &crate::bootstrap::PeerInfo) -> Result<std::net::SocketAddr> {
    let text = info.endpoint(super::NAME).ok_or_else(|| Error::Protocol {
        peer: info.rank,
        what: "it published no TCP endpoint (it set up no TCP transport)".into(),
    })?;
    text.parse().map_err(|_| Error::Protocol {
        peer: info.rank,
        what: format!("its TCP endpoint {text:?} is not a socket address"),
    })
}

//! A rank's side of the store: one TCP connection to rank 0's server (and,
//! on rank 0, the server itself), with the calls [`Store`] offers.
//!
//! Connecting retries until the deadline (rank 0 may start after the others;
//! if it never does, the error names rank 0). Each call sends one request and
//! reads its reply under a deadline; a call that leaves the connection in an
//! unknown state (a timeout, a bad reply) makes every later call fail.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::codec::{bye_key, encode_hello, read_reply, write_request, Op, Status, MAX_KEY, MAX_VALUE, VERSION};
use super::lock;
use super::server::Server;
use crate::bootstrap::env::Master;
use crate::error::{Error, Result};
use crate::schedule::Rank;

/// Extra time a client waits for a reply beyond the wait it asked the server for.
const REPLY_SLACK: Duration = Duration::from_secs(5);

/// One rank's connection to the store (and, on rank 0, the server).
pub struct Store {
    rank: Rank,
    world: usize,
    /// The server's address, for messages.
    server_addr: String,
    /// Deadline of calls that do not take one (`Store::set`, [`Store::create`]).
    op_timeout: Duration,
    conn: Mutex<Conn>,
    server: Option<Server>,
}

struct Conn {
    stream: TcpStream,
    /// Set when a call left the stream in an unknown state (timeout, bad reply).
    broken: Option<String>,
}

/// What a [`Store::create`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The key was new and now holds the value.
    New,
    /// The key was already set; this is its value, left unchanged.
    Exists(Vec<u8>),
}

impl Store {
    /// Rank 0 starts the server on the master address; every rank then
    /// connects, retrying until `deadline` (rank 0 may start after the others;
    /// if it never does, an [`Error::Rendezvous`] naming rank 0).
    /// Calls without their own deadline get as long as this one had.
    pub fn start(rank: Rank, world: usize, master: &Master, deadline: Instant) -> Result<Store> {
        if world == 0 {
            return Err(Error::ZeroRanks);
        }
        if rank >= world {
            return Err(Error::RankOutOfRange { rank, world });
        }
        let began = Instant::now();
        let op_timeout = deadline.saturating_duration_since(began).max(Duration::from_secs(1));
        let server = if rank == 0 { Some(Server::start(master, world)?) } else { None };
        let stream = match &server {
            Some(s) => connect(&[s.addr()], rank, master, began, deadline)?,
            None => {
                let addrs = resolve_until(master, rank, began, deadline)?;
                connect(&addrs, rank, master, began, deadline)?
            }
        };
        let store = Store {
            rank,
            world,
            server_addr: master.to_string(),
            op_timeout,
            conn: Mutex::new(Conn { stream, broken: None }),
            server,
        };
        let reply_deadline = Instant::now() + op_timeout;
        match store.call(Op::Hello, b"", &encode_hello(rank, world), VERSION, reply_deadline)? {
            (Status::Ok, _) => Ok(store),
            (Status::Refused, msg) => Err(Error::InvalidArgument(format!(
                "the rendezvous store at {master} refused rank {rank}: {}",
                String::from_utf8_lossy(&msg)
            ))),
            (status, _) => Err(store.protocol(format!("unexpected reply {status:?} to hello"))),
        }
    }

    /// Sets `key` to `value`, replacing any value it had (the rendezvous
    /// uses [`Store::create`]; tests set keys).
    #[cfg(test)]
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        check_sizes(key, value)?;
        match self.call(Op::Set, key.as_bytes(), value, 0, Instant::now() + self.op_timeout)? {
            (Status::Ok, _) => Ok(()),
            (status, _) => Err(self.protocol(format!("unexpected reply {status:?} to set"))),
        }
    }

    /// Sets `key` to `value` unless it is already set.
    pub fn create(&self, key: &str, value: &[u8]) -> Result<Created> {
        check_sizes(key, value)?;
        match self.call(Op::Create, key.as_bytes(), value, 0, Instant::now() + self.op_timeout)? {
            (Status::Ok, _) => Ok(Created::New),
            (Status::Exists, v) => Ok(Created::Exists(v)),
            (status, _) => Err(self.protocol(format!("unexpected reply {status:?} to create"))),
        }
    }

    /// The value of `key` if it is set now.
    pub fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_sizes(key, &[])?;
        match self.call(Op::Get, key.as_bytes(), &[], 0, Instant::now() + self.op_timeout)? {
            (Status::Found, v) => Ok(Some(v)),
            (Status::Missing, _) => Ok(None),
            (status, _) => Err(self.protocol(format!("unexpected reply {status:?} to get"))),
        }
    }

    /// The value of `key`, waiting until some rank sets it; after `deadline`,
    /// an [`Error::StoreTimeout`] naming the key (the rendezvous waits for
    /// several keys with [`Store::wait`]; tests get one).
    #[cfg(test)]
    pub fn get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>> {
        self.wait(&[key], deadline).map(|mut v| v.remove(0))
    }

    /// The values of `keys`, in order, waiting until all are set; after
    /// `deadline` (or when rank 0 gives up), an [`Error::StoreTimeout`] naming
    /// every key still missing.
    pub fn wait<K: AsRef<str>>(&self, keys: &[K], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        let began = Instant::now();
        let mut values = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            match self.get_until(key, deadline)? {
                Some(v) => values.push(v),
                None => {
                    let mut missing = vec![key.to_string()];
                    for k in &keys[i + 1..] {
                        // The server may be stopping: a failure here only shortens the list.
                        match self.try_get(k.as_ref()) {
                            Ok(Some(_)) => {}
                            Ok(None) => missing.push(k.as_ref().to_string()),
                            Err(_) => break,
                        }
                    }
                    return Err(Error::StoreTimeout { rank: self.rank, keys: missing, waited: began.elapsed() });
                }
            }
        }
        Ok(values)
    }

    /// Says goodbye; on rank 0, then waits until every rank has said goodbye
    /// (or `deadline`, an [`Error::StoreTimeout`] naming the `_bye/<rank>` keys
    /// still missing) and stops the server.
    pub fn close(self, deadline: Instant) -> Result<()> {
        match self.call(Op::Bye, b"", &[], self.rank as u64, Instant::now() + self.op_timeout)? {
            (Status::Ok, _) => {}
            (status, _) => return Err(self.protocol(format!("unexpected reply {status:?} to goodbye"))),
        }
        if self.server.is_some() {
            let keys: Vec<String> = (0..self.world).map(bye_key).collect();
            self.wait(&keys, deadline)?;
        }
        Ok(())
    }

    /// One get that the server holds until the key is set or `deadline`;
    /// `None` when the deadline passed or rank 0 gave up.
    fn get_until(&self, key: &str, deadline: Instant) -> Result<Option<Vec<u8>>> {
        check_sizes(key, &[])?;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            match self.call(Op::Get, key.as_bytes(), &[], ms, Instant::now() + wait + REPLY_SLACK)? {
                (Status::Found, v) => return Ok(Some(v)),
                (Status::GaveUp, _) => return Ok(None),
                (Status::Missing, _) if Instant::now() >= deadline || ms == 0 => return Ok(None),
                // The server's clock ran a little ahead of ours: ask again.
                (Status::Missing, _) => {}
                (status, _) => return Err(self.protocol(format!("unexpected reply {status:?} to get"))),
            }
        }
    }

    /// Sends one request and reads its reply, the reply by `reply_deadline`.
    fn call(&self, op: Op, key: &[u8], value: &[u8], arg: u64, reply_deadline: Instant) -> Result<(Status, Vec<u8>)> {
        let mut conn = lock(&self.conn);
        if let Some(why) = &conn.broken {
            return Err(self.gone(format!("the connection is unusable after an earlier error: {why}")));
        }
        let began = Instant::now();
        let timeout = reply_deadline.saturating_duration_since(began).max(Duration::from_millis(1));
        let io = (|| {
            conn.stream.set_write_timeout(Some(timeout))?;
            conn.stream.set_read_timeout(Some(timeout))?;
            write_request(&mut conn.stream, op, key, value, arg)?;
            read_reply(&mut conn.stream)
        })();
        match io {
            Ok((Status::Refused, msg)) if op != Op::Hello => {
                let msg = String::from_utf8_lossy(&msg).into_owned();
                conn.broken = Some(format!("refused: {msg}"));
                Err(self.protocol(format!("the server refused a request: {msg}")))
            }
            Ok(reply) => Ok(reply),
            Err(e) => {
                conn.broken = Some(e.to_string());
                Err(match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
                        call: Some(format!("rendezvous store {op:?}")),
                        rank: self.rank,
                        peer: 0,
                        what: "a reply from the store server",
                        waited: began.elapsed(),
                    },
                    io::ErrorKind::InvalidData => self.protocol(e.to_string()),
                    _ => self.gone(format!("lost the connection to the store at {}: {e}", self.server_addr)),
                })
            }
        }
    }

    fn gone(&self, what: String) -> Error {
        Error::PeerGone { call: Some("rendezvous store".into()), rank: self.rank, peer: 0, what }
    }

    fn protocol(&self, what: String) -> Error {
        Error::Protocol { peer: 0, what: format!("rendezvous store at {}: {what}", self.server_addr) }
    }
}

fn check_sizes(key: &str, value: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY {
        return Err(Error::InvalidArgument(format!("store key of {} bytes (at most {MAX_KEY})", key.len())));
    }
    if value.len() > MAX_VALUE {
        return Err(Error::InvalidArgument(format!("store value of {} bytes (at most {MAX_VALUE})", value.len())));
    }
    Ok(())
}

/// Rank 0 serves the store, so a store that never answers is rank 0 missing.
fn connect_timeout_error(rank: Rank, master: &Master, began: Instant, last: &str) -> Error {
    Error::Rendezvous {
        rank,
        missing: vec![0],
        waited: began.elapsed(),
        what: format!("rank 0 serves the store at {master}; last error: {last}"),
    }
}

/// Resolves the master's name, retrying until `deadline`.
fn resolve_until(master: &Master, rank: Rank, began: Instant, deadline: Instant) -> Result<Vec<SocketAddr>> {
    let mut pause = Duration::from_millis(10);
    loop {
        match master.resolve() {
            Ok(addrs) => return Ok(addrs),
            Err(e) if Instant::now() + pause >= deadline => {
                return Err(connect_timeout_error(rank, master, began, &e.to_string()))
            }
            Err(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Connects to one of `addrs`, retrying until `deadline`.
fn connect(addrs: &[SocketAddr], rank: Rank, master: &Master, began: Instant, deadline: Instant) -> Result<TcpStream> {
    let mut pause = Duration::from_millis(10);
    let mut last = String::from("no address");
    loop {
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(connect_timeout_error(rank, master, began, &last));
            }
            match TcpStream::connect_timeout(addr, left.min(Duration::from_secs(2))) {
                // Connecting to a free port of this host can pick that same
                // port as the source and connect the socket to itself.
                Ok(s) if s.local_addr().ok() == s.peer_addr().ok() => last = format!("{addr}: connected to itself"),
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(connect_timeout_error(rank, master, began, &last));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::store::{free_master, soon};

    #[test]
    fn set_get_create_and_wait_across_threads() {
        let master = free_master();
        let deadline = soon(10_000);
        let s0 = Store::start(0, 2, &master, deadline).unwrap();
        let m = master.clone();
        let t = std::thread::spawn(move || {
            let s1 = Store::start(1, 2, &m, deadline).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s1.set("b", b"from 1").unwrap();
            let a = s1.get("a", deadline).unwrap();
            s1.close(deadline).unwrap();
            a
        });
        s0.set("a", b"from 0").unwrap();
        // Blocks until rank 1 sets it.
        assert_eq!(s0.get("b", deadline).unwrap(), b"from 1");
        assert_eq!(s0.wait(&["a", "b"], deadline).unwrap(), vec![b"from 0".to_vec(), b"from 1".to_vec()]);
        assert_eq!(s0.try_get("nothing").unwrap(), None);
        assert_eq!(s0.create("c", b"1").unwrap(), Created::New);
        assert_eq!(s0.create("c", b"2").unwrap(), Created::Exists(b"1".to_vec()));
        s0.set("big", &vec![7u8; MAX_VALUE]).unwrap();
        assert_eq!(s0.try_get("big").unwrap().unwrap().len(), MAX_VALUE);
        assert!(s0.set("toobig", &vec![0u8; MAX_VALUE + 1]).is_err());
        assert_eq!(t.join().unwrap(), b"from 0");
        s0.close(deadline).unwrap();
    }

    #[test]
    fn a_wait_past_its_deadline_names_the_missing_keys() {
        let master = free_master();
        let s0 = Store::start(0, 1, &master, soon(5_000)).unwrap();
        s0.set("here", b"").unwrap();
        let began = Instant::now();
        let e = s0.wait(&["here", "gone/1", "gone/2"], soon(300)).unwrap_err();
        let waited = began.elapsed();
        assert!(waited >= Duration::from_millis(290) && waited < Duration::from_secs(3), "{waited:?}");
        match e {
            Error::StoreTimeout { rank: 0, keys, .. } => assert_eq!(keys, ["gone/1", "gone/2"]),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn clients_wait_for_a_late_rank_0() {
        let master = free_master();
        let deadline = soon(10_000);
        let m = master.clone();
        let t = std::thread::spawn(move || {
            let s1 = Store::start(1, 2, &m, deadline).unwrap();
            let v = s1.get("x", deadline).unwrap();
            s1.close(deadline).unwrap();
            v
        });
        std::thread::sleep(Duration::from_millis(400));
        let s0 = Store::start(0, 2, &master, deadline).unwrap();
        s0.set("x", b"late").unwrap();
        assert_eq!(t.join().unwrap(), b"late");
        s0.close(deadline).unwrap();
    }

    #[test]
    fn no_server_is_rank_0_missing() {
        let master = free_master();
        let began = Instant::now();
        let Err(e) = Store::start(1, 2, &master, soon(300)) else { panic!("connected to nothing") };
        assert!(began.elapsed() < Duration::from_secs(3));
        match &e {
            Error::Rendezvous { rank: 1, missing, what, .. } => {
                assert_eq!(missing, &[0]);
                assert!(what.contains(&master.to_string()), "{e}");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn a_vanished_server_is_rank_0_gone() {
        let master = free_master();
        let deadline = soon(10_000);
        let s0 = Store::start(0, 2, &master, deadline).unwrap();
        let s1 = Store::start(1, 2, &master, deadline).unwrap();
        // As if rank 0's process died: its connections close with no answer.
        s0.server.as_ref().unwrap().vanish();
        match s1.get("never", deadline).unwrap_err() {
            Error::PeerGone { rank: 1, peer: 0, .. } => {}
            e => panic!("{e}"),
        }
    }

    #[test]
    fn close_on_rank_0_waits_for_every_goodbye() {
        let master = free_master();
        let s0 = Store::start(0, 3, &master, soon(5_000)).unwrap();
        let s1 = Store::start(1, 3, &master, soon(5_000)).unwrap();
        let s2 = Store::start(2, 3, &master, soon(5_000)).unwrap();
        s1.close(soon(5_000)).unwrap();
        drop(s2); // gone without a goodbye
        match s0.close(soon(300)).unwrap_err() {
            Error::StoreTimeout { keys, .. } => assert_eq!(keys, ["_bye/2"]),
            e => panic!("{e}"),
        }
    }
}

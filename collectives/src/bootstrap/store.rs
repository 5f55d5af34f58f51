//! A small TCP key-value store for starting a job, like NCCL's bootstrap.
//!
//! Rank 0 serves it from a thread bound to the master address; every rank,
//! rank 0 included, is a client over one TCP connection. Values are bytes,
//! keys are strings; [`Store::get`] blocks (on the server) until the key is
//! set or the deadline passes.
//!
//! Wire format, all integers little-endian. A request is a 24-byte header,
//! the key, then the value:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `OXKV` |
//! | 4 | op: 1 hello, 2 set, 3 get, 4 create, 5 goodbye |
//! | 5..8 | zero |
//! | 8..12 | key length (at most [`MAX_KEY`]) |
//! | 12..16 | value length (at most [`MAX_VALUE`]) |
//! | 16..24 | argument: the protocol version (hello), milliseconds to wait (get), the rank (goodbye) |
//!
//! A reply is a 12-byte header (magic, status: 0 ok, 1 found, 2 missing,
//! 3 exists, 4 refused, 5 gave up; three zero bytes; payload length) and the payload: the
//! value (found, exists) or a message (refused). Lengths are checked before
//! anything is allocated; a bad frame gets a refusal and the connection is
//! closed. Hello carries the client's rank and world size (16 bytes) and the
//! server refuses a world size other than its own, so a rank that reaches
//! another job's store on the same port fails instead of mixing the jobs.
//!
//! Ending: [`Store::close`] says goodbye, which the server answers and only
//! then records as the key `_bye/<rank>` (so its answer is out before rank 0
//! can see it and stop); on rank 0 it then waits for every rank's goodbye
//! before stopping the server, so no rank loses the server while it still
//! reads.
//!
//! Giving up: dropping rank 0's store without closing it (its rendezvous
//! failed, say) first answers every blocked get, and every later one, with
//! "gave up", which the client reports as an [`Error::StoreTimeout`] naming
//! the keys still missing, as if its own deadline had passed; quick requests
//! are still served while clients remain connected, for at most [`LINGER`];
//! then the server stops. So when rank 0 times out waiting for rank 2, the
//! other ranks also report rank 2, not rank 0's disappearance.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::env::Master;
use crate::error::{Error, Result};
use crate::schedule::Rank;

/// Longest key in bytes.
pub const MAX_KEY: usize = 1024;
/// Longest value in bytes.
pub const MAX_VALUE: usize = 16 << 20;

const MAGIC: [u8; 4] = *b"OXKV";
const VERSION: u64 = 1;
const REQUEST_HEADER: usize = 24;
const REPLY_HEADER: usize = 12;
/// Extra time a client waits for a reply beyond the wait it asked the server for.
const REPLY_SLACK: Duration = Duration::from_secs(5);
/// How long a server that gives up keeps serving connected clients.
pub const LINGER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Hello = 1,
    Set = 2,
    Get = 3,
    Create = 4,
    Bye = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok = 0,
    Found = 1,
    Missing = 2,
    Exists = 3,
    Refused = 4,
    GaveUp = 5,
}

struct Request {
    op: Op,
    key: Vec<u8>,
    value: Vec<u8>,
    arg: u64,
}

/// Reads one request; `Ok(None)` at a clean end of stream.
fn read_request(r: &mut impl Read) -> io::Result<Option<Request>> {
    let mut h = [0u8; REQUEST_HEADER];
    match r.read(&mut h[..1]) {
        Ok(0) => return Ok(None),
        Ok(_) => r.read_exact(&mut h[1..])?,
        Err(e) => return Err(e),
    }
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if h[..4] != MAGIC {
        return Err(bad(format!("bad magic {:02x?}", &h[..4])));
    }
    let op = match h[4] {
        1 => Op::Hello,
        2 => Op::Set,
        3 => Op::Get,
        4 => Op::Create,
        5 => Op::Bye,
        other => return Err(bad(format!("unknown op {other}"))),
    };
    let key_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let value_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    let arg = u64::from_le_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]);
    if key_len > MAX_KEY || value_len > MAX_VALUE {
        return Err(bad(format!("key of {key_len} bytes or value of {value_len} bytes is over the limit")));
    }
    let mut key = vec![0u8; key_len];
    r.read_exact(&mut key)?;
    let mut value = vec![0u8; value_len];
    r.read_exact(&mut value)?;
    Ok(Some(Request { op, key, value, arg }))
}

fn write_request(w: &mut impl Write, op: Op, key: &[u8], value: &[u8], arg: u64) -> io::Result<()> {
    let mut frame = Vec::with_capacity(REQUEST_HEADER + key.len() + value.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[op as u8, 0, 0, 0]);
    frame.extend_from_slice(&(key.len() as u32).to_le_bytes());
    frame.extend_from_slice(&(value.len() as u32).to_le_bytes());
    frame.extend_from_slice(&arg.to_le_bytes());
    frame.extend_from_slice(key);
    frame.extend_from_slice(value);
    w.write_all(&frame)
}

fn write_reply(w: &mut impl Write, status: Status, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(REPLY_HEADER + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[status as u8, 0, 0, 0]);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame)
}

/// Reads one reply; a malformed one is an `InvalidData` error.
fn read_reply(r: &mut impl Read) -> io::Result<(Status, Vec<u8>)> {
    let mut h = [0u8; REPLY_HEADER];
    r.read_exact(&mut h)?;
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if h[..4] != MAGIC {
        return Err(bad(format!("bad magic {:02x?} in a reply", &h[..4])));
    }
    let status = match h[4] {
        0 => Status::Ok,
        1 => Status::Found,
        2 => Status::Missing,
        3 => Status::Exists,
        4 => Status::Refused,
        5 => Status::GaveUp,
        other => return Err(bad(format!("unknown reply status {other}"))),
    };
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if len > MAX_VALUE {
        return Err(bad(format!("reply of {len} bytes is over the limit")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok((status, payload))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the server's threads share.
struct Shared {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    changed: Condvar,
    /// Blocking gets are answered "gave up" (see the module documentation).
    giving_up: AtomicBool,
    /// Every request is refused and every connection shut down.
    stop: AtomicBool,
    /// Clones of the open connections, by number, shut down to stop their threads.
    conns: Mutex<HashMap<u64, TcpStream>>,
    world: usize,
}

/// Rank 0's server: an accept thread and a thread per connection.
struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(master: &Master, world: usize) -> Result<Server> {
        let mut last = None;
        let mut listener = None;
        for addr in master.resolve()? {
            match TcpListener::bind(addr) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let listener = listener.ok_or_else(|| {
            let e = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
            Error::System(format!(
                "rank 0 cannot serve the rendezvous store on {master}: {e} \
                 (is the port taken? set OXCCL_MASTER_PORT to a free one)"
            ))
        })?;
        let addr = listener.local_addr().map_err(|e| Error::System(format!("rendezvous store: {e}")))?;
        let shared = Arc::new(Shared {
            map: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            giving_up: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            world,
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("oxccl-store".into())
            .spawn(move || accept_loop(&listener, &s))
            .map_err(|e| Error::System(format!("cannot start the rendezvous store thread: {e}")))?;
        Ok(Server { shared, addr, accept: Some(accept) })
    }
}

impl Server {
    /// Sets a flag that blocked gets check, and wakes them.
    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        // Take the map's lock so no waiter misses the wake-up between its
        // check of the flag and its wait.
        let _map = lock(&self.shared.map);
        self.shared.changed.notify_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.raise(&self.shared.giving_up);
        let until = Instant::now() + LINGER;
        while !lock(&self.shared.conns).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.raise(&self.shared.stop);
        for c in lock(&self.shared.conns).values() {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wake the accept call with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.accept.take() {
                let _ = t.join();
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut threads = Vec::new();
    for (id, conn) in (0u64..).zip(listener.incoming()) {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else {
            // Out of descriptors, say: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = conn.set_nodelay(true);
        match conn.try_clone() {
            Ok(clone) => {
                lock(&shared.conns).insert(id, clone);
            }
            Err(_) => continue,
        }
        // The connection may have been accepted just as the server stopped.
        if shared.stop.load(Ordering::SeqCst) {
            let _ = conn.shutdown(Shutdown::Both);
            break;
        }
        let s = Arc::clone(shared);
        let spawned = std::thread::Builder::new().name("oxccl-store-conn".into()).spawn(move || {
            serve(&conn, &s);
            // Close it for the client too: the clone above would keep it open.
            let _ = conn.shutdown(Shutdown::Both);
            lock(&s.conns).remove(&id);
        });
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                if let Some(c) = lock(&shared.conns).remove(&id) {
                    let _ = c.shutdown(Shutdown::Both);
                }
            }
        }
        threads.retain(|t| !t.is_finished());
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Answers one client's requests until it hangs up, sends a bad frame or the server stops.
fn serve(mut conn: &TcpStream, shared: &Shared) {
    loop {
        let req = match read_request(&mut conn) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let _ = write_reply(&mut conn, Status::Refused, e.to_string().as_bytes());
                }
                return;
            }
        };
        let written = match req.op {
            Op::Hello => {
                let refusal = hello_refusal(&req, shared.world);
                let refused = refusal.is_some();
                let w = match refusal {
                    Some(msg) => write_reply(&mut conn, Status::Refused, msg.as_bytes()),
                    None => write_reply(&mut conn, Status::Ok, &[]),
                };
                if refused {
                    return;
                }
                w
            }
            Op::Set => {
                lock(&shared.map).insert(req.key, req.value);
                shared.changed.notify_all();
                write_reply(&mut conn, Status::Ok, &[])
            }
            Op::Bye => {
                // Answer first: once the goodbye is recorded, rank 0 may stop the server.
                let w = write_reply(&mut conn, Status::Ok, &[]);
                lock(&shared.map).insert(bye_key(req.arg as usize).into_bytes(), Vec::new());
                shared.changed.notify_all();
                w
            }
            Op::Create => {
                let mut map = lock(&shared.map);
                if let Some(existing) = map.get(&req.key) {
                    let existing = existing.clone();
                    drop(map);
                    write_reply(&mut conn, Status::Exists, &existing)
                } else {
                    map.insert(req.key, req.value);
                    drop(map);
                    shared.changed.notify_all();
                    write_reply(&mut conn, Status::Ok, &[])
                }
            }
            Op::Get => {
                let wait = Duration::from_millis(req.arg);
                let ended = || shared.giving_up.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst);
                let map = lock(&shared.map);
                let (map, _) = shared
                    .changed
                    .wait_timeout_while(map, wait, |m| !m.contains_key(&req.key) && !ended())
                    .unwrap_or_else(PoisonError::into_inner);
                let value = map.get(&req.key).cloned();
                drop(map);
                match value {
                    Some(v) => write_reply(&mut conn, Status::Found, &v),
                    None if req.arg > 0 && ended() => write_reply(&mut conn, Status::GaveUp, &[]),
                    None => write_reply(&mut conn, Status::Missing, &[]),
                }
            }
        };
        if written.is_err() {
            return;
        }
    }
}

fn hello_refusal(req: &Request, world: usize) -> Option<String> {
    if req.arg != VERSION {
        return Some(format!("protocol version {} (the server speaks {VERSION})", req.arg));
    }
    let Ok(v) = <[u8; 16]>::try_from(req.value.as_slice()) else {
        return Some("a hello must carry a rank and a world size".into());
    };
    let rank = u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
    let theirs = u64::from_le_bytes([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]);
    if theirs != world as u64 {
        return Some(format!(
            "rank {rank} says the world has {theirs} ranks, this store's has {world} (another job on the same port?)"
        ));
    }
    if rank >= theirs {
        return Some(format!("rank {rank} is out of range for a world of {world}"));
    }
    None
}

/// One rank's connection to the store (and, on rank 0, the server).
pub struct Store {
    rank: Rank,
    world: usize,
    /// The server's address, for messages.
    server_addr: String,
    /// Deadline of calls that do not take one ([`Store::set`], [`Store::create`]).
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
            Some(s) => connect(&[s.addr], rank, master, began, deadline)?,
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
        let mut hello = Vec::with_capacity(16);
        hello.extend_from_slice(&(rank as u64).to_le_bytes());
        hello.extend_from_slice(&(world as u64).to_le_bytes());
        let reply_deadline = Instant::now() + op_timeout;
        match store.call(Op::Hello, b"", &hello, VERSION, reply_deadline)? {
            (Status::Ok, _) => Ok(store),
            (Status::Refused, msg) => Err(Error::InvalidArgument(format!(
                "the rendezvous store at {master} refused rank {rank}: {}",
                String::from_utf8_lossy(&msg)
            ))),
            (status, _) => Err(store.protocol(format!("unexpected reply {status:?} to hello"))),
        }
    }

    pub fn rank(&self) -> Rank {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Sets `key` to `value`, replacing any value it had.
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
    /// an [`Error::StoreTimeout`] naming the key.
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
                        call: format!("rendezvous store {op:?}"),
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
        Error::PeerGone { call: "rendezvous store".into(), rank: self.rank, peer: 0, what }
    }

    fn protocol(&self, what: String) -> Error {
        Error::Protocol { peer: 0, what: format!("rendezvous store at {}: {what}", self.server_addr) }
    }
}

fn bye_key(rank: Rank) -> String {
    format!("_bye/{rank}")
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
    use std::io::Cursor;

    fn free_master() -> Master {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        Master { host: "127.0.0.1".into(), port: l.local_addr().unwrap().port() }
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_request(&mut buf, Op::Set, b"k", b"value", 7).unwrap();
        let req = read_request(&mut Cursor::new(&buf)).unwrap().unwrap();
        assert_eq!((req.op, req.key.as_slice(), req.value.as_slice(), req.arg), (Op::Set, &b"k"[..], &b"value"[..], 7));
        assert!(read_request(&mut Cursor::new(&[][..])).unwrap().is_none());
        let mut buf = Vec::new();
        write_reply(&mut buf, Status::Found, b"xyz").unwrap();
        assert_eq!(read_reply(&mut Cursor::new(&buf)).unwrap(), (Status::Found, b"xyz".to_vec()));
    }

    #[test]
    fn bad_frames_are_rejected_without_allocating_their_lengths() {
        let mut good = Vec::new();
        write_request(&mut good, Op::Get, b"key", b"", 0).unwrap();
        let kind = |bytes: &[u8]| read_request(&mut Cursor::new(bytes)).err().map(|e| e.kind());
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(kind(&bad), Some(io::ErrorKind::InvalidData));
        let mut bad = good.clone();
        bad[4] = 99;
        assert_eq!(kind(&bad), Some(io::ErrorKind::InvalidData));
        // A 4 GiB value: refused from the header alone (a read would hit end of stream).
        let mut bad = good.clone();
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(kind(&bad), Some(io::ErrorKind::InvalidData));
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&((MAX_KEY + 1) as u32).to_le_bytes());
        assert_eq!(kind(&bad), Some(io::ErrorKind::InvalidData));
        assert_eq!(kind(&good[..good.len() - 1]), Some(io::ErrorKind::UnexpectedEof));
        let mut reply = Vec::new();
        write_reply(&mut reply, Status::Ok, b"").unwrap();
        reply[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_reply(&mut Cursor::new(&reply)).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

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
    fn another_jobs_world_size_is_refused() {
        let master = free_master();
        let _s0 = Store::start(0, 2, &master, soon(5_000)).unwrap();
        let Err(e) = Store::start(1, 3, &master, soon(5_000)) else { panic!("joined another job") };
        assert!(e.to_string().contains("another job"), "{e}");
    }

    #[test]
    fn a_server_that_gives_up_ends_the_clients_waits() {
        let master = free_master();
        let deadline = soon(10_000);
        let s0 = Store::start(0, 2, &master, deadline).unwrap();
        let s1 = Store::start(1, 2, &master, deadline).unwrap();
        let m = Instant::now();
        let waiting = std::thread::spawn(move || s1.get("never", deadline));
        std::thread::sleep(Duration::from_millis(100));
        drop(s0);
        let e = waiting.join().unwrap().unwrap_err();
        assert!(m.elapsed() < Duration::from_secs(5));
        match e {
            Error::StoreTimeout { rank: 1, keys, .. } => assert_eq!(keys, ["never"]),
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
        s0.server.as_ref().unwrap().raise(&s0.server.as_ref().unwrap().shared.stop);
        for c in lock(&s0.server.as_ref().unwrap().shared.conns).values() {
            c.shutdown(Shutdown::Both).unwrap();
        }
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

    #[test]
    fn garbage_from_a_stranger_is_refused_and_the_server_keeps_serving() {
        let master = free_master();
        let s0 = Store::start(0, 1, &master, soon(5_000)).unwrap();
        let mut stranger = TcpStream::connect(("127.0.0.1", master.port)).unwrap();
        // Exactly one header's worth, so the server has read all of it when it closes.
        stranger.write_all(b"GET / HTTP/1.1\r\nHost:x\r\n").unwrap();
        let (status, msg) = read_reply(&mut stranger).unwrap();
        assert_eq!(status, Status::Refused);
        assert!(String::from_utf8_lossy(&msg).contains("bad magic"));
        let mut rest = Vec::new();
        assert_eq!(stranger.read_to_end(&mut rest).unwrap(), 0, "the server closes the connection");
        s0.set("still", b"ok").unwrap();
        assert_eq!(s0.try_get("still").unwrap().unwrap(), b"ok");
    }
}

//! Rank 0's server: an accept thread and a thread per connection, answering
//! requests from a map behind one lock.
//!
//! A get with a wait is held on the server until its key is set or the wait
//! passes. Dropping the server gives up (see the [module
//! documentation](super)): blocked and later gets are answered "gave up",
//! quick requests are served for at most [`LINGER`] while clients remain
//! connected, then every connection is shut down and the threads joined.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::codec::{bye_key, decode_hello, read_request, write_reply, Op, Request, Status, VERSION};
use super::lock;
use crate::bootstrap::env::Master;
use crate::error::{Error, Result};

/// How long a server that gives up keeps serving connected clients.
pub const LINGER: Duration = Duration::from_secs(2);

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
pub(super) struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub(super) fn start(master: &Master, world: usize) -> Result<Server> {
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
            let what = format!(
                "rank 0 cannot serve the rendezvous store on {master} (is the port taken? set \
                 OXCCL_MASTER_PORT to a free one)"
            );
            match last {
                Some(e) => Error::io(what, e),
                None => Error::System(format!("{what}: no address")),
            }
        })?;
        let addr = listener.local_addr().map_err(|e| Error::io("rendezvous store", e))?;
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
            .map_err(|e| Error::io("cannot start the rendezvous store thread", e))?;
        Ok(Server { shared, addr, accept: Some(accept) })
    }

    /// The address the server listens on.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets a flag that blocked gets check, and wakes them.
    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        // Take the map's lock so no waiter misses the wake-up between its
        // check of the flag and its wait.
        let _map = lock(&self.shared.map);
        self.shared.changed.notify_all();
    }

    /// Stops serving and closes every connection with no answer, as if rank
    /// 0's process had died.
    #[cfg(test)]
    pub(super) fn vanish(&self) {
        self.raise(&self.shared.stop);
        for c in lock(&self.shared.conns).values() {
            c.shutdown(Shutdown::Both).unwrap();
        }
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
    let Some((rank, theirs)) = decode_hello(&req.value) else {
        return Some("a hello must carry a rank and a world size".into());
    };
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::bootstrap::store::codec::read_reply;
    use crate::bootstrap::store::{free_master, soon, Store};

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

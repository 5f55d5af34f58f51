//! A small TCP key-value store for starting a job.
//!
//! Rank 0 serves it from a thread bound to the master address; every rank,
//! rank 0 included, is a client over one TCP connection. Values are bytes,
//! keys are strings; a get ([`Store::wait`]) blocks (on the server) until the key is
//! set or the deadline passes.
//!
//! - `codec`: the wire format (requests, replies, the hello and goodbye).
//! - `server`: rank 0's server, an accept thread and a thread per connection.
//! - `client`: [`Store`], a rank's connection and the calls it makes.
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
//! are still served while clients remain connected, for at most [`LINGER`](server::LINGER);
//! then the server stops. So when rank 0 times out waiting for rank 2, the
//! other ranks also report rank 2, not rank 0's disappearance.
//!
//! [`Error::StoreTimeout`]: crate::error::Error::StoreTimeout

mod client;
mod codec;
mod server;

pub use client::{Created, Store};

use std::sync::{Mutex, MutexGuard, PoisonError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
fn free_master() -> super::env::Master {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    super::env::Master { host: "127.0.0.1".into(), port: l.local_addr().unwrap().port() }
}

#[cfg(test)]
fn soon(ms: u64) -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_millis(ms)
}

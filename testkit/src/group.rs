//! Ranks as threads of this process.

use std::sync::Arc;

use oxccl::transport::Transport;
use oxccl::{Communicator, Config};

/// Runs `f` on every rank, one thread each, and hands the communicators
/// back; the results in rank order.
pub fn on_ranks<R: Send>(comms: &mut Vec<Communicator>, f: impl Fn(&Communicator) -> R + Sync) -> Vec<R> {
    let taken = std::mem::take(comms);
    let (back, outs): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = taken
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let r = f(&c);
                    (c, r)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("rank panicked")).unzip()
    });
    *comms = back;
    outs
}

/// A communicator over each transport of a group: rank `r`'s over `ts[r]`.
pub fn communicators<T: Transport + 'static>(ts: &[Arc<T>], config: &Config) -> Vec<Communicator> {
    (ts.iter().enumerate())
        .map(|(r, t)| Communicator::from_transport(r, t.clone() as Arc<dyn Transport>, config.clone()).unwrap())
        .collect()
}

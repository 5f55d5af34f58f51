//! One rank served by two transports: shared memory to the peers on its
//! host, a network transport (TCP, or RDMA verbs from `oxccl-rdma`) to the
//! others — the best transport per pair of ranks.
//!
//! Both transports wake the rank through the shared-memory doorbell and stop
//! it through the shared-memory abort flag (the network transport is built
//! with them as its [`Signals`]), so the executor waits on one doorbell
//! whichever side a message comes from. An abort is told to the ranks on this
//! host through shared memory and to every rank through the network. The
//! group as a whole does not share memory, so the direct algorithm is refused
//! and group-wide operations (postings, scratch, progress) are the network
//! transport's, which keeps them local.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::Error;
use crate::mem::Region;
use crate::schedule::Rank;
use crate::transport::{Doorbell, Header, Posting, Signals, Transport};

pub struct Composite {
    /// Per rank, the index in `transports` of the one that carries its
    /// messages (this rank's own entry: 0).
    by_peer: Vec<usize>,
    /// First the transport that serves some peers and lends its signals;
    /// the last reaches every rank and carries the group-wide operations.
    transports: Vec<Arc<dyn Transport>>,
    signals: Arc<dyn Signals>,
}

impl Composite {
    /// `transports[by_peer[p]]` must have been connected to rank `p`, the
    /// last of `transports` to every rank, and every one after the first
    /// with `signals` (the first's) as its signals.
    pub fn new(
        rank: Rank,
        by_peer: Vec<usize>,
        transports: Vec<Arc<dyn Transport>>,
        signals: Arc<dyn Signals>,
    ) -> Composite {
        debug_assert!(by_peer.iter().all(|&i| i < transports.len()) && by_peer[rank] == 0);
        Composite { by_peer, transports, signals }
    }

    fn by(&self, peer: Rank) -> &dyn Transport {
        &*self.transports[self.by_peer[peer]]
    }

    /// The transport of the group-wide operations.
    fn group(&self) -> &dyn Transport {
        &**self.transports.last().expect("two transports")
    }
}

impl Transport for Composite {
    fn world(&self) -> usize {
        self.by_peer.len()
    }

    fn slot_bytes(&self) -> usize {
        self.transports.iter().map(|t| t.slot_bytes()).min().expect("two transports")
    }

    fn shares_memory(&self) -> bool {
        false
    }

    fn can_share(&self, _region: Region) -> bool {
        false
    }

    fn try_send_slot(&self, from: Rank, to: Rank) -> Option<Region> {
        self.by(to).try_send_slot(from, to)
    }

    fn commit(&self, from: Rank, to: Rank, header: Header) {
        self.by(to).commit(from, to, header);
    }

    fn try_recv(&self, to: Rank, from: Rank) -> Option<(Header, Region)> {
        self.by(from).try_recv(to, from)
    }

    fn release(&self, to: Rank, from: Rank) {
        self.by(from).release(to, from);
    }

    fn barrier_arrive(&self, rank: Rank, k: u64) {
        self.group().barrier_arrive(rank, k);
    }

    fn barrier_missing(&self, k: u64) -> Option<Rank> {
        self.group().barrier_missing(k)
    }

    fn post(&self, rank: Rank, posting: Posting) {
        self.group().post(rank, posting);
    }

    fn posting(&self, rank: Rank, seq: u64) -> Option<Posting> {
        self.group().posting(rank, seq)
    }

    fn posted(&self, rank: Rank, seq: u64) -> bool {
        self.group().posted(rank, seq)
    }

    fn scratch(&self, rank: Rank, half: usize, bytes: usize) -> Result<Region, Error> {
        self.group().scratch(rank, half, bytes)
    }

    fn finish(&self, rank: Rank, seq: u64) {
        self.group().finish(rank, seq);
    }

    fn finished(&self, rank: Rank) -> u64 {
        self.group().finished(rank)
    }

    fn peer_alive(&self, peer: Rank) -> bool {
        self.by(peer).peer_alive(peer)
    }

    fn doorbell(&self, _rank: Rank) -> &Doorbell {
        self.signals.bell()
    }

    fn abort_flag(&self) -> &AtomicBool {
        self.signals.flag()
    }

    fn abort(&self, cause: Error) {
        for t in &self.transports {
            t.abort(cause.clone());
        }
    }

    fn abort_cause(&self) -> Option<Error> {
        self.transports.iter().rev().find_map(|t| t.abort_cause())
    }

    fn activity(&self, rank: Rank, fresh: std::time::Duration) -> Option<super::Activity> {
        self.by(rank).activity(rank, fresh)
    }

    fn describe(&self) -> String {
        let first = self.by_peer.iter().filter(|&&i| i == 0).count();
        let names: Vec<String> = self.transports.iter().map(|t| t.describe()).collect();
        format!("{} ({first} of {} ranks on this host)", names.join("+"), self.by_peer.len())
    }
}

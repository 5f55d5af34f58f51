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
use crate::transport::shm::ShmTransport;
use crate::transport::{Doorbell, Header, Posting, Signals, Transport};

pub struct Composite {
    rank: Rank,
    /// Per rank: true when it is on this host (reached through shared memory).
    here: Vec<bool>,
    shm: Arc<ShmTransport>,
    /// The network transport, to the ranks elsewhere.
    net: Arc<dyn Transport>,
}

impl Composite {
    /// `shm` must know exactly the ranks `here` marks, and `net` must have
    /// been connected to every rank with `shm` as its signals.
    pub fn new(rank: Rank, here: Vec<bool>, shm: Arc<ShmTransport>, net: Arc<dyn Transport>) -> Composite {
        Composite { rank, here, shm, net }
    }

    fn by(&self, peer: Rank) -> &dyn Transport {
        if self.here[peer] {
            &*self.shm
        } else {
            &*self.net
        }
    }
}

impl Transport for Composite {
    fn world(&self) -> usize {
        self.here.len()
    }

    fn slot_bytes(&self) -> usize {
        self.net.slot_bytes().min(self.shm.slot_bytes())
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
        self.net.barrier_arrive(rank, k);
    }

    fn barrier_missing(&self, k: u64) -> Option<Rank> {
        self.net.barrier_missing(k)
    }

    fn post(&self, rank: Rank, posting: Posting) {
        self.net.post(rank, posting);
    }

    fn posting(&self, rank: Rank, seq: u64) -> Option<Posting> {
        self.net.posting(rank, seq)
    }

    fn posted(&self, rank: Rank, seq: u64) -> bool {
        self.net.posted(rank, seq)
    }

    fn scratch(&self, rank: Rank, half: usize, bytes: usize) -> Result<Region, Error> {
        self.net.scratch(rank, half, bytes)
    }

    fn finish(&self, rank: Rank, seq: u64) {
        self.net.finish(rank, seq);
    }

    fn finished(&self, rank: Rank) -> u64 {
        self.net.finished(rank)
    }

    fn peer_alive(&self, peer: Rank) -> bool {
        self.by(peer).peer_alive(peer)
    }

    fn doorbell(&self, _rank: Rank) -> &Doorbell {
        self.shm.bell()
    }

    fn abort_flag(&self) -> &AtomicBool {
        self.shm.flag()
    }

    fn abort(&self, cause: Error) {
        debug_assert!(self.here[self.rank]);
        self.shm.abort(cause.clone());
        self.net.abort(cause);
    }

    fn abort_cause(&self) -> Option<Error> {
        self.net.abort_cause().or_else(|| self.shm.abort_cause())
    }

    fn activity(&self, rank: Rank, fresh: std::time::Duration) -> Option<super::Activity> {
        self.by(rank).activity(rank, fresh)
    }

    fn describe(&self) -> String {
        let here = self.here.iter().filter(|&&h| h).count();
        format!("shm+{} ({here} of {} ranks on this host)", self.net.describe(), self.here.len())
    }
}

//! Setting a transport up in two steps around the rendezvous:
//! [`RdmaSetup::new`] opens the device, registers the memory and creates one
//! queue pair per peer (in INIT, receives posted), whose numbers and memory
//! keys go into the rank's [`Card`]; [`RdmaSetup::connect`] takes every
//! rank's card, moves each queue pair through RTR to RTS towards the peer's
//! matching one and starts the transport.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};

use oxccl::mem::Lines;
use oxccl::transport::{Doorbell, Signals};
use oxccl::{Error, Rank, Result};

use super::cq::Cq;
use super::device::Device;
use super::memory::{Mr, Pd};
use super::qp::{QueuePair, Unconnected};
use super::transport::{Layout, Peer, RdmaTransport, Shared, RECV_DEPTH, SEND_DEPTH};
use crate::channel::Channel;
use crate::config::RdmaConfig;
use crate::endpoint::{Card, PeerEnd};

/// A rank's RDMA resources before it knows its peers; see the module docs.
pub struct RdmaSetup {
    rank: Rank,
    world: usize,
    config: RdmaConfig,
    layout: Layout,
    qps: Vec<Option<QueuePair<Unconnected>>>,
    mr: Mr,
    mem: Lines,
    cq: Arc<Cq>,
    pd: Arc<Pd>,
    dev: Arc<Device>,
}

/// A first packet sequence number (24 bits) that differs between runs.
fn fresh_psn(rank: Rank, peer: Rank) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(rank << 20 | peer);
    (h.finish() & 0xff_ffff) as u32
}

impl RdmaSetup {
    pub fn new(rank: Rank, world: usize, config: &RdmaConfig) -> Result<RdmaSetup> {
        if world == 0 {
            return Err(Error::ZeroRanks);
        }
        if rank >= world {
            return Err(Error::RankOutOfRange { rank, world });
        }
        let dev = Device::open(config)?;
        let pd = Pd::new(dev.clone())?;
        let peers = world as i32 - 1;
        let cq = Cq::new(&dev, (peers * (SEND_DEPTH + RECV_DEPTH) as i32).max(1))?;
        let layout = Layout::new(config.slot_bytes);
        let mem = Lines::new(layout.total(world));
        // SAFETY: `mem` is kept with its registration (fields of the setup,
        // then of the transport's shared state, dropped after `mr`).
        let mr = unsafe { Mr::register(&pd, mem.region())? };
        let mut qps = Vec::with_capacity(world);
        for p in 0..world {
            if p == rank {
                qps.push(None);
                continue;
            }
            let qp = QueuePair::new(&pd, &cq, SEND_DEPTH, RECV_DEPTH, 2, fresh_psn(rank, p))?;
            for _ in 0..RECV_DEPTH {
                qp.post_recv(super::transport::recv_id(p))?;
            }
            qps.push(Some(qp));
        }
        Ok(RdmaSetup { rank, world, config: config.clone(), layout, qps, mr, mem, cq, pd, dev })
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// What peers need to connect to this rank.
    pub fn card(&self) -> Card {
        let base = self.mem.region().addr() as u64;
        Card {
            addr: self.dev.address(),
            mtu: self.dev.mtu(),
            slot: self.config.slot_bytes,
            peers: self
                .qps
                .iter()
                .enumerate()
                .map(|(p, qp)| {
                    qp.as_ref().map(|qp| PeerEnd {
                        qpn: qp.qpn(),
                        psn: qp.psn(),
                        ring_addr: base + self.layout.ring_of(p) as u64,
                        ring_rkey: self.mr.rkey(),
                    })
                })
                .collect(),
        }
    }

    /// Connects to every peer (`cards[p]` is rank `p`'s card) and starts the
    /// transport. `comm_id` must be the same on every rank of the group;
    /// `local` is the number of ranks on this host (for waiting); `signals`,
    /// when given, are another transport's doorbell and abort flag.
    pub fn connect(
        self,
        cards: &[Card],
        comm_id: u64,
        local: usize,
        signals: Option<Arc<dyn Signals>>,
    ) -> Result<Arc<RdmaTransport>> {
        let RdmaSetup { rank, world, config, layout, qps, mr, mem, cq, pd, dev } = self;
        if cards.len() != world {
            return Err(Error::InvalidArgument(format!("{} RDMA cards for a group of {world}", cards.len())));
        }
        let mut peers = Vec::with_capacity(world);
        for (p, qp) in qps.into_iter().enumerate() {
            let Some(qp) = qp else {
                peers.push(None);
                continue;
            };
            let card = &cards[p];
            if card.slot != config.slot_bytes {
                return Err(Error::InvalidArgument(format!(
                    "rank {p} uses RDMA slots of {} bytes, rank {rank} of {} (set the same slice size everywhere)",
                    card.slot, config.slot_bytes
                )));
            }
            let end = card.peers.get(rank).copied().flatten().ok_or_else(|| Error::Protocol {
                peer: p,
                what: format!("its RDMA card has no queue pair for rank {rank}"),
            })?;
            let qp = qp.connect(card.addr, end.qpn, end.psn, card.mtu.min(dev.mtu()))?;
            peers.push(Some(Peer {
                rank: p,
                qp,
                remote_ring: end.ring_addr,
                rkey: end.ring_rkey,
                chan: Channel::default(),
                in_flight: AtomicU32::new(0),
                credit_owed: AtomicU64::new(0),
                credit_sent: Mutex::new(0),
                aborts_sent: AtomicU64::new(0),
                aborts_seen: AtomicU64::new(0),
                beat_at: AtomicU64::new(0),
                left: AtomicBool::new(false),
            }));
        }
        let shared = Shared {
            rank,
            world,
            comm_id,
            slot_bytes: config.slot_bytes,
            timeout: config.timeout,
            layout,
            peers,
            mr,
            mem,
            cq,
            pd,
            user: Mutex::new(Vec::new()),
            bell: Doorbell::new(local.max(1)),
            aborted: AtomicBool::new(false),
            signals,
            cause: Mutex::new(None),
            closing: AtomicBool::new(false),
            epoch: std::time::Instant::now(),
        };
        drop(dev);
        Ok(Arc::new(RdmaTransport::start(shared)?))
    }
}

//! Setting a transport up in two steps around the rendezvous:
//! [`RdmaSetup::new`] opens the device, registers the memory and creates one
//! queue pair per peer (in INIT, receives posted), whose numbers and memory
//! keys go into the rank's [`Card`]; [`RdmaSetup::connect`] takes every
//! rank's card, moves each queue pair through RTR to RTS towards the peer's
//! matching one and starts the transport.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};

use oxccl::mem::Lines;
use oxccl::transport::unshared::{fresh_id, AbortState};
use oxccl::transport::Signals;
use oxccl::{Error, Rank, Result};

use super::cq::Cq;
use super::device::Device;
use super::layout::Layout;
use super::memory::{Mr, Pd};
use super::qp::{Connected, QueuePair, Sge, Unconnected};
use super::shared::{Peer, Shared};
use super::transport::RdmaTransport;
use super::work::{recv_id, RECV_DEPTH, SEND_DEPTH};
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
            let qp = QueuePair::new(
                &pd,
                &cq,
                SEND_DEPTH,
                RECV_DEPTH,
                2,
                (fresh_id((rank << 20 | p) as u64) & 0xff_ffff) as u32,
            )?;
            for _ in 0..RECV_DEPTH {
                qp.post_recv(recv_id(p))?;
            }
            qps.push(Some(qp));
        }
        Ok(RdmaSetup { rank, world, config: config.clone(), layout, qps, mr, mem, cq, pd, dev })
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
                unsettled: AtomicBool::new(false),
                aborts_sent: AtomicU64::new(0),
                beat_at: AtomicU64::new(0),
                answer: Default::default(),
                answering: AtomicBool::new(false),
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
            signal: AbortState::new(local.max(1), signals),
            closing: AtomicBool::new(false),
            epoch: std::time::Instant::now(),
            zero_copy: AtomicU64::new(0),
        };
        drop(dev);
        Ok(Arc::new(RdmaTransport::start(shared)?))
    }

    /// Connects the queue pairs like [`RdmaSetup::connect`] but starts no
    /// transport: the caller writes what it likes ([`RawRank`]). For tests
    /// of what a transport does with malformed writes from a peer.
    pub fn connect_raw(self, cards: &[Card]) -> Result<RawRank> {
        let RdmaSetup { rank, world, layout, qps, mr, mem, cq, dev, .. } = self;
        let mut peers = Vec::with_capacity(world);
        for (p, qp) in qps.into_iter().enumerate() {
            let Some(qp) = qp else {
                peers.push(None);
                continue;
            };
            let end = cards[p].peers[rank].ok_or_else(|| Error::InvalidArgument(format!("no end for rank {rank}")))?;
            let qp = qp.connect(cards[p].addr, end.qpn, end.psn, cards[p].mtu.min(dev.mtu()))?;
            peers.push(Some((qp, end.ring_addr, end.ring_rkey)));
        }
        Ok(RawRank { layout, peers, mr, mem, cq })
    }
}

/// A rank's connected queue pairs and registered memory with no transport
/// on them; see [`RdmaSetup::connect_raw`].
pub struct RawRank {
    pub layout: Layout,
    peers: Vec<Option<(QueuePair<Connected>, u64, u32)>>,
    mr: Mr,
    mem: Lines,
    cq: Arc<Cq>,
}

impl RawRank {
    /// Writes `bytes` into `peer`'s ring for this rank at `offset`, with
    /// immediate value `imm` (raw, as on the wire), and waits for the
    /// write's completion (`Err` with its status when it fails).
    pub fn write(&self, peer: Rank, offset: usize, bytes: &[u8], imm: Option<u32>) -> Result<()> {
        let (qp, ring, rkey) = self.peers[peer].as_ref().expect("a peer");
        assert!(bytes.len() <= self.mem.len());
        let at = self.mem.region().sub(0..bytes.len()).expect("fits");
        // SAFETY: this rank's own registered memory; nothing else uses it
        // while the write is in flight (this call waits for it).
        unsafe { at.bytes_mut() }.copy_from_slice(bytes);
        let sge = Sge { addr: at.addr() as u64, len: bytes.len() as u32, lkey: self.mr.lkey() };
        // SAFETY: the gathered bytes stay registered and unchanged until the
        // completion polled below.
        unsafe { qp.post_write(7, &[sge], ring + offset as u64, *rkey, imm)? };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut c = [super::cq::Completion::default(); 4];
        while std::time::Instant::now() < deadline {
            let n = self.cq.poll(&mut c)?;
            for done in &c[..n] {
                if done.wr_id == 7 {
                    return match done.error {
                        None => Ok(()),
                        Some((_, why)) => Err(Error::System(format!("raw write failed: {why}"))),
                    };
                }
            }
        }
        Err(Error::System("raw write: no completion within 10 s".into()))
    }
}

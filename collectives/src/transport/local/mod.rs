//! The in-process transport: ranks are threads of one process.
//!
//! Every ordered pair of ranks has a [`Channel`] of message slots;
//! the sender writes (or reduces) straight into the receiver's slot, and the
//! receiver reduces straight out of it, so a ring hop costs one pass over the
//! data. Ranks also see each other's posted buffers, which lets the direct
//! algorithm read and write peers' memory with no copy through a channel.
//! The barrier is one counter per rank; the board keeps each rank's last
//! postings.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::Error;
use crate::mem::{Lines, Region};
use crate::schedule::Rank;
use crate::transport::board;
use crate::transport::channel::Channel;
use crate::transport::wait::ring_all;
use crate::transport::{Doorbell, Header, Posting, Transport};

#[repr(align(128))]
struct Arrivals(AtomicU64);

pub struct LocalGroup {
    world: usize,
    slot_bytes: usize,
    channels: Vec<Channel>,
    /// Each channel's slot memory, allocated on first use so unused pairs of
    /// a large group cost nothing.
    slots: Vec<OnceLock<Lines>>,
    arrivals: Vec<Arrivals>,
    /// Per rank: the last collective it finished.
    done: Vec<Arrivals>,
    bells: Vec<Doorbell>,
    board: Vec<board::Slot>,
    /// Per rank: what it posted last.
    last: Vec<board::Last>,
    scratch: Vec<Mutex<[Lines; 2]>>,
    aborted: AtomicBool,
    cause: Mutex<Option<Error>>,
}

impl LocalGroup {
    pub fn new(world: usize, slot_bytes: usize) -> LocalGroup {
        LocalGroup {
            world,
            slot_bytes,
            channels: (0..world * world).map(|_| Channel::default()).collect(),
            slots: (0..world * world).map(|_| OnceLock::new()).collect(),
            arrivals: (0..world).map(|_| Arrivals(AtomicU64::new(0))).collect(),
            done: (0..world).map(|_| Arrivals(AtomicU64::new(0))).collect(),
            bells: (0..world).map(|_| Doorbell::new(world)).collect(),
            board: (0..world * board::HISTORY).map(|_| board::Slot::default()).collect(),
            last: (0..world).map(|_| board::Last::default()).collect(),
            scratch: (0..world).map(|_| Mutex::new([Lines::new(0), Lines::new(0)])).collect(),
            aborted: AtomicBool::new(false),
            cause: Mutex::new(None),
        }
    }

    fn chan(&self, from: Rank, to: Rank) -> (&Channel, Region) {
        let i = from * self.world + to;
        let slots = self.slots[i].get_or_init(|| Lines::new(self.slot_bytes * crate::transport::SLOTS));
        (&self.channels[i], slots.region())
    }

    fn ring_others(&self, rank: Rank) {
        ring_all(self.bells.iter().enumerate().filter(|&(r, _)| r != rank).map(|(_, bell)| bell));
    }

    fn board(&self, rank: Rank) -> &[board::Slot] {
        &self.board[rank * board::HISTORY..(rank + 1) * board::HISTORY]
    }
}

impl Transport for LocalGroup {
    fn describe(&self) -> String {
        "local (threads of one process)".into()
    }

    fn world(&self) -> usize {
        self.world
    }

    fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    fn shares_memory(&self) -> bool {
        true
    }

    fn try_send_slot(&self, from: Rank, to: Rank) -> Option<Region> {
        let (ch, slots) = self.chan(from, to);
        ch.try_send_slot(slots, self.slot_bytes)
    }

    fn commit(&self, from: Rank, to: Rank, header: Header) {
        self.chan(from, to).0.commit(header);
        self.bells[to].ring();
    }

    fn try_recv(&self, to: Rank, from: Rank) -> Option<(Header, Region)> {
        let (ch, slots) = self.chan(from, to);
        ch.try_recv(slots, self.slot_bytes)
    }

    fn release(&self, to: Rank, from: Rank) {
        self.chan(from, to).0.release();
        self.bells[from].ring();
    }

    fn barrier_arrive(&self, rank: Rank, k: u64) {
        self.arrivals[rank].0.store(k, Ordering::SeqCst);
        self.ring_others(rank);
    }

    fn barrier_missing(&self, k: u64) -> Option<Rank> {
        self.arrivals.iter().position(|a| a.0.load(Ordering::Acquire) < k)
    }

    fn post(&self, rank: Rank, posting: Posting) {
        // One address space: buffers travel as addresses (0: not shared),
        // the slot's inline scratch as board::INLINE.
        let inline = board::inline(self.board(rank), posting.seq);
        let bufs = posting.bufs.map(|b| match b {
            Some(b) if !b.is_empty() && b.addr() == inline.addr() && b.len() <= inline.len() => {
                (board::INLINE, b.len() as u64)
            }
            Some(b) => (b.addr() as u64, b.len() as u64),
            None => (0, 0),
        });
        board::post(self.board(rank), &self.last[rank], posting.seq, &posting.args, bufs);
    }

    fn wake_peers(&self, rank: Rank) {
        self.ring_others(rank);
    }

    fn repost(&self, rank: Rank, seq: u64) -> bool {
        board::repost(self.board(rank), &self.last[rank], seq)
    }

    fn staged_alike(&self, peer: Rank, rank: Rank, seq: u64, bytes: usize) -> Option<Region> {
        board::staged_alike(&self.last[rank], self.board(peer), seq, bytes)
    }

    fn posted(&self, rank: Rank, seq: u64) -> bool {
        board::posted(self.board(rank), seq)
    }

    fn posting(&self, rank: Rank, seq: u64) -> Option<Posting> {
        let (args, raw) = board::get(self.board(rank), seq)?;
        let bufs = raw.map(|(a, l)| match a {
            0 => None,
            board::INLINE => board::inline(self.board(rank), seq).sub(0..l as usize),
            a => Some(Region::from_raw(a as usize, l as usize)),
        });
        Some(Posting { seq, args, bufs })
    }

    fn scratch(&self, rank: Rank, half: usize, bytes: usize) -> Result<Region, Error> {
        let mut halves = self.scratch[rank].lock().unwrap_or_else(|e| e.into_inner());
        if halves[half].len() < bytes {
            halves[half] = Lines::new(bytes);
        }
        Ok(halves[half].region().sub(0..bytes).expect("grown to fit"))
    }

    fn inline_scratch(&self, rank: Rank, seq: u64, bytes: usize) -> Option<Region> {
        (bytes <= board::INLINE_BYTES).then(|| board::inline(self.board(rank), seq).sub(0..bytes).expect("fits"))
    }

    /// Wakes nobody: whoever waits for this learns it from the rank's next
    /// posting too ([`Transport::has_finished`]), which rings.
    fn finish(&self, rank: Rank, seq: u64) {
        self.done[rank].0.store(seq, Ordering::Release);
    }

    fn finished(&self, rank: Rank) -> u64 {
        self.done[rank].0.load(Ordering::Acquire)
    }

    fn has_finished(&self, rank: Rank, seq: u64) -> bool {
        self.finished(rank) >= seq || board::entered(self.board(rank), seq + 1)
    }

    fn doorbell(&self, rank: Rank) -> &Doorbell {
        &self.bells[rank]
    }

    fn activity(&self, rank: Rank, fresh: std::time::Duration) -> Option<crate::transport::Activity> {
        Some(self.bells[rank].activity(fresh))
    }

    fn abort_flag(&self) -> &AtomicBool {
        &self.aborted
    }

    fn abort(&self, cause: Error) {
        {
            let mut c = self.cause.lock().unwrap_or_else(|e| e.into_inner());
            if c.is_none() {
                *c = Some(cause);
            }
        }
        self.aborted.store(true, Ordering::Release);
        for bell in &self.bells {
            bell.ring();
        }
    }

    fn abort_cause(&self) -> Option<Error> {
        if !self.aborted.load(Ordering::Acquire) {
            return None;
        }
        self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

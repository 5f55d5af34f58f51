//! What a rank publishes at rendezvous so that peers can connect to it: its
//! port's address (GID and LID), its path MTU, and for each peer the queue
//! pair that peer must connect to and where that peer's messages land (the
//! receive ring's address and remote key).
//!
//! The card travels as one line of text in the rank's peer info:
//!
//! ```text
//! oxccl-rdma/1 gid=00000000000000000000ffff7f000001 lid=0 mtu=3 slot=131072 peers=1:17:4660:7f12a0000000:1234,2:18:...
//! ```
//!
//! with, per peer, `rank:qpn:psn:ring address (hex):rkey`. [`Card::decode`]
//! is total: any text gives a card or an error saying what is wrong.

use std::fmt::Write as _;

use oxccl::Rank;

const TAG: &str = "oxccl-rdma/1";

/// A queue pair's address: where a peer's queue pair sends to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub gid: [u8; 16],
    pub lid: u16,
}

/// One peer's end, as published by the rank that owns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerEnd {
    /// The queue pair dedicated to that peer.
    pub qpn: u32,
    /// Its first packet sequence number.
    pub psn: u32,
    /// Where the peer writes: the receive ring for its messages.
    pub ring_addr: u64,
    pub ring_rkey: u32,
}

/// A rank's published endpoint; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Card {
    pub addr: Address,
    /// The port's active MTU (`ibv_mtu` value: 1 = 256 B ... 5 = 4096 B).
    pub mtu: u32,
    /// Bytes of each receive slot (every rank must agree).
    pub slot: usize,
    /// Indexed by peer rank; `None` for the rank itself.
    pub peers: Vec<Option<PeerEnd>>,
}

impl Card {
    pub fn encode(&self) -> String {
        let mut s = format!(
            "{TAG} gid={} lid={} mtu={} slot={} peers=",
            hex(&self.addr.gid),
            self.addr.lid,
            self.mtu,
            self.slot
        );
        let mut first = true;
        for (r, p) in self.peers.iter().enumerate() {
            if let Some(p) = p {
                let sep = if first { "" } else { "," };
                let _ = write!(s, "{sep}{r}:{}:{}:{:x}:{}", p.qpn, p.psn, p.ring_addr, p.ring_rkey);
                first = false;
            }
        }
        s
    }

    /// The card of a group of `world` ranks, published by `owner`.
    pub fn decode(text: &str, owner: Rank, world: usize) -> Result<Card, String> {
        let mut words = text.split_whitespace();
        if words.next() != Some(TAG) {
            return Err(format!("not an RDMA endpoint (expected it to start with {TAG})"));
        }
        let mut card = Card { peers: vec![None; world], ..Card::default() };
        let (mut gid, mut lid, mut mtu, mut slot, mut peers) = (None, None, None, None, None);
        for w in words {
            let (name, value) = w.split_once('=').ok_or_else(|| format!("'{w}' is not name=value"))?;
            match name {
                "gid" => gid = Some(value),
                "lid" => lid = Some(value),
                "mtu" => mtu = Some(value),
                "slot" => slot = Some(value),
                "peers" => peers = Some(value),
                _ => {} // later versions may add fields
            }
        }
        fn need<'a>(v: Option<&'a str>, what: &str) -> Result<&'a str, String> {
            v.ok_or_else(|| format!("no {what}"))
        }
        card.addr.gid = parse_gid(need(gid, "gid")?)?;
        card.addr.lid = need(lid, "lid")?.parse().map_err(|_| "lid is not a 16-bit number".to_string())?;
        card.mtu = need(mtu, "mtu")?.parse().ok().filter(|m| (1..=5).contains(m)).ok_or("mtu is not 1..=5")?;
        card.slot = need(slot, "slot")?.parse().map_err(|_| "slot is not a number".to_string())?;
        for entry in need(peers, "peers")?.split(',').filter(|e| !e.is_empty()) {
            let f: Vec<&str> = entry.split(':').collect();
            let bad = || format!("peer entry '{entry}' is not rank:qpn:psn:address:rkey");
            if f.len() != 5 {
                return Err(bad());
            }
            let r: Rank = f[0].parse().map_err(|_| bad())?;
            if r >= world || r == owner {
                return Err(format!("peer entry for rank {r} in a group of {world} published by rank {owner}"));
            }
            if card.peers[r].is_some() {
                return Err(format!("two peer entries for rank {r}"));
            }
            card.peers[r] = Some(PeerEnd {
                qpn: f[1].parse().map_err(|_| bad())?,
                psn: f[2].parse().map_err(|_| bad())?,
                ring_addr: u64::from_str_radix(f[3], 16).map_err(|_| bad())?,
                ring_rkey: f[4].parse().map_err(|_| bad())?,
            });
        }
        if let Some(r) = (0..world).find(|&r| r != owner && card.peers[r].is_none()) {
            return Err(format!("no queue pair for rank {r}"));
        }
        Ok(card)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_gid(s: &str) -> Result<[u8; 16], String> {
    let bad = || format!("gid '{s}' is not 32 hex digits");
    if s.len() != 32 || !s.is_ascii() {
        return Err(bad());
    }
    let mut gid = [0u8; 16];
    for (i, b) in gid.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(world: usize, owner: Rank) -> Card {
        let mut gid = [0u8; 16];
        gid[10] = 0xff;
        gid[11] = 0xff;
        gid[12..].copy_from_slice(&[127, 0, 0, 1]);
        Card {
            addr: Address { gid, lid: 0 },
            mtu: 3,
            slot: 4096,
            peers: (0..world)
                .map(|r| {
                    (r != owner).then_some(PeerEnd {
                        qpn: 17 + r as u32,
                        psn: 0x1234 * r as u32,
                        ring_addr: 0x7f12_a000_0000 + r as u64,
                        ring_rkey: 99,
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        for (world, owner) in [(1, 0), (2, 0), (2, 1), (5, 3)] {
            let c = card(world, owner);
            assert_eq!(Card::decode(&c.encode(), owner, world), Ok(c));
        }
    }

    #[test]
    fn malformed_cards_are_errors() {
        let good = card(3, 1).encode();
        let cases = [
            ("", "not an RDMA endpoint"),
            ("oxccl-rdma/1 lid=0 mtu=3 slot=64 peers=", "no gid"),
            (&good.replace(" slot=4096", ""), "no slot"),
            (&good.replace("gid=", "gid=zz"), "not 32 hex digits"),
            (&good.replace("mtu=3", "mtu=9"), "mtu"),
            (&good.replace("peers=0:", "peers=1:"), "published by rank 1"),
            (&good.replace(",2:", ",0:"), "two peer entries"),
            (&good.replace("peers=", "peers=7:1:1:1:1,"), "rank 7"),
            (good.split(",2:").next().unwrap(), "no queue pair for rank 2"),
            (&good.replace(":99", ":x"), "not rank:qpn"),
        ];
        for (text, want) in cases {
            let e = Card::decode(text, 1, 3).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}

//! Rendezvous: every rank publishes its [`PeerInfo`] and reads everyone's.
//!
//! Over the [`Store`] served by rank 0: each rank creates `peer/<rank>` with
//! its info (a second rank claiming the same number is an error naming both
//! processes), waits for all `peer/<r>`, then closes the store; rank 0's
//! close waits until every rank has read everything. A rank missing at any
//! step is an [`Error::Rendezvous`] naming it, on every rank that waited, by
//! the deadline: rank 0 missing shows as no store to connect to; another rank
//! missing as its `peer/<r>` never set (or, on rank 0, its goodbye never
//! said).
//!
//! The info is a small text, one `name=value` per line after a version line:
//!
//! ```text
//! oxccl-peer 2
//! rank=3
//! host_id=node7/5f0c...-.../shm=2d:1
//! pid=4242
//! endpoint.shm=oxccl-4242-3
//! endpoint.tcp=10.0.0.7:41234
//! ```
//!
//! One `endpoint.<transport>` line per transport the rank set up (see
//! [`PeerInfo::endpoints`]); unknown names are ignored, so later versions
//! can add capabilities.

use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use super::env::Launch;
use super::store::{Created, Store};
use super::PeerInfo;
use crate::error::{Error, Result};
use crate::schedule::Rank;

const HEADER: &str = "oxccl-peer 2";

/// The prefix of an endpoint line's name.
const ENDPOINT: &str = "endpoint.";

/// Every rank's info, indexed by rank; see the module documentation.
pub fn rendezvous(launch: &Launch, me: PeerInfo, deadline: Instant) -> Result<Vec<PeerInfo>> {
    if me.rank != launch.rank {
        return Err(Error::InvalidArgument(format!(
            "rendezvous: the peer info says rank {} but the launch says rank {}",
            me.rank, launch.rank
        )));
    }
    let rank = launch.rank;
    let store = Store::start(rank, launch.world, &launch.master, deadline)?;
    let text = encode(&me)?;
    if let Created::Exists(theirs) = store.create(&peer_key(rank), text.as_bytes())? {
        let theirs = String::from_utf8_lossy(&theirs);
        let other = decode(&theirs).map_or_else(|_| "another process".into(), |p| describe(&p));
        return Err(Error::InvalidArgument(format!(
            "rank {rank} joined the rendezvous at {} twice: {other} and {} (check the launcher's rank variables, \
             or another job on the same master port)",
            launch.master,
            describe(&me)
        )));
    }
    let keys: Vec<String> = (0..launch.world).map(peer_key).collect();
    let values = store.wait(&keys, deadline).map_err(|e| missing_ranks(e, "their peer info never came"))?;
    let mut peers = Vec::with_capacity(values.len());
    for (r, v) in values.iter().enumerate() {
        let text =
            std::str::from_utf8(v).map_err(|_| Error::Protocol { peer: r, what: "peer info is not UTF-8".into() })?;
        let info = decode(text).map_err(|what| Error::Protocol { peer: r, what: format!("peer info: {what}") })?;
        if info.rank != r {
            return Err(Error::Protocol { peer: r, what: format!("peer info under rank {r} says rank {}", info.rank) });
        }
        peers.push(info);
    }
    store
        .close(deadline)
        .map_err(|e| missing_ranks(e, "they published their info but never finished reading the others'"))?;
    Ok(peers)
}

fn peer_key(rank: Rank) -> String {
    format!("peer/{rank}")
}

/// A store timeout on `peer/<r>` or `_bye/<r>` keys, as the ranks it waited for.
fn missing_ranks(e: Error, what: &str) -> Error {
    match e {
        Error::StoreTimeout { rank, keys, waited } => {
            let missing: Vec<Rank> =
                keys.iter().filter_map(|k| k.rsplit_once('/').and_then(|(_, r)| r.parse().ok())).collect();
            Error::Rendezvous { rank, missing, waited, what: what.to_string() }
        }
        e => e,
    }
}

fn describe(p: &PeerInfo) -> String {
    format!("pid {} on {}", p.pid, p.host_id)
}

/// The text form of a peer's info.
pub fn encode(p: &PeerInfo) -> Result<String> {
    let fields = std::iter::once(("host_id", p.host_id.as_str()))
        .chain(p.endpoints.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (name, value) in fields {
        if value.contains(['\n', '\r']) {
            return Err(Error::InvalidArgument(format!("peer info: {name} {value:?} contains a line break")));
        }
    }
    if let Some(name) = p.endpoints.keys().find(|k| k.is_empty() || k.contains(['=', '\n', '\r'])) {
        return Err(Error::InvalidArgument(format!("peer info: transport name {name:?} is not a plain word")));
    }
    let mut s = format!("{HEADER}\nrank={}\nhost_id={}\npid={}\n", p.rank, p.host_id, p.pid);
    for (name, endpoint) in &p.endpoints {
        s.push_str(&format!("{ENDPOINT}{name}={endpoint}\n"));
    }
    Ok(s)
}

/// A peer's info from its text form.
pub fn decode(text: &str) -> std::result::Result<PeerInfo, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(HEADER) => {}
        other => return Err(format!("expected {HEADER:?} first, found {other:?}")),
    }
    let (mut rank, mut host_id, mut pid) = (None, None, None);
    let mut endpoints = std::collections::BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once('=').ok_or_else(|| format!("line {line:?} is not name=value"))?;
        let bad = |what: &str| format!("{name}={value:?} is not {what}");
        match name {
            "rank" => rank = Some(value.parse::<Rank>().map_err(|_| bad("a rank"))?),
            "host_id" => host_id = Some(value.to_string()),
            "pid" => pid = Some(value.parse::<u32>().map_err(|_| bad("a process id"))?),
            _ => {
                if let Some(transport) = name.strip_prefix(ENDPOINT).filter(|t| !t.is_empty()) {
                    endpoints.insert(transport.to_string(), value.to_string());
                }
            }
        }
    }
    let need = |name: &str| format!("{name} is missing");
    Ok(PeerInfo {
        rank: rank.ok_or_else(|| need("rank"))?,
        host_id: host_id.ok_or_else(|| need("host_id"))?,
        pid: pid.ok_or_else(|| need("pid"))?,
        endpoints,
    })
}

/// This machine's id for [`PeerInfo::host_id`]: `OXCCL_HOST_ID` if set, else
/// `host_id_from` the host name, the boot id and the identity of `/dev/shm`.
pub fn host_id() -> String {
    if let Some(id) = std::env::var("OXCCL_HOST_ID").ok().filter(|v| !v.trim().is_empty()) {
        return id.trim().to_string();
    }
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let hostname = read("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown-host".into());
    let boot_id = read("/proc/sys/kernel/random/boot_id").unwrap_or_else(|| "unknown-boot".into());
    let shm = std::fs::metadata("/dev/shm").ok().map(|m| format!("{:x}:{}", m.dev(), m.ino()));
    host_id_from(&hostname, &boot_id, shm.as_deref())
}

/// `hostname/boot_id/shm=dev:inode`: equal ids mean one kernel (the boot id
/// changes at every boot) and one `/dev/shm` mount, so shared memory works
/// between the two; containers with their own `/dev/shm` on one machine get
/// different ids. Line breaks are replaced by spaces.
pub fn host_id_from(hostname: &str, boot_id: &str, shm: Option<&str>) -> String {
    let id = format!("{hostname}/{boot_id}/shm={}", shm.unwrap_or("none"));
    id.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::bootstrap::env::Master;

    fn free_master() -> Master {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        Master { host: "127.0.0.1".into(), port: l.local_addr().unwrap().port() }
    }

    fn launch(rank: Rank, world: usize, master: &Master) -> Launch {
        Launch {
            rank,
            world,
            local_rank: Some(rank),
            local_world: Some(world),
            master: master.clone(),
            launcher: "test",
        }
    }

    fn info(rank: Rank) -> PeerInfo {
        let mut p =
            PeerInfo { rank, host_id: format!("host-{}", rank % 2), pid: 1000 + rank as u32, ..PeerInfo::default() }
                .with_endpoint("tcp", SocketAddr::from(([127, 0, 0, 1], 40000 + rank as u16)).to_string());
        if rank % 2 == 0 {
            p = p.with_endpoint("shm", format!("oxccl-{rank}"));
        }
        if rank % 3 == 0 {
            p = p.with_endpoint("rdma", format!("oxccl-rdma/1 gid=00 peers={rank}:1"));
        }
        p
    }

    /// Runs rendezvous for `ranks` of a world of `world`, rank 0 starting after `rank0_delay`.
    fn run(world: usize, ranks: &[Rank], rank0_delay: Duration, wait: Duration) -> Vec<(Rank, Result<Vec<PeerInfo>>)> {
        let master = free_master();
        let handles: Vec<_> = ranks
            .iter()
            .map(|&r| {
                let master = master.clone();
                thread::spawn(move || {
                    if r == 0 {
                        thread::sleep(rank0_delay);
                    }
                    (r, rendezvous(&launch(r, world, &master), info(r), Instant::now() + wait))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn every_rank_gets_every_peer() {
        let expected: Vec<PeerInfo> = (0..4).map(info).collect();
        for (r, got) in run(4, &[0, 1, 2, 3], Duration::ZERO, Duration::from_secs(20)) {
            assert_eq!(got.unwrap_or_else(|e| panic!("rank {r}: {e}")), expected);
        }
    }

    #[test]
    fn a_world_of_one() {
        assert_eq!(run(1, &[0], Duration::ZERO, Duration::from_secs(5))[0].1.as_ref().unwrap(), &vec![info(0)]);
    }

    #[test]
    fn a_late_rank_0_is_waited_for() {
        for (r, got) in run(3, &[0, 1, 2], Duration::from_millis(500), Duration::from_secs(20)) {
            assert_eq!(got.unwrap_or_else(|e| panic!("rank {r}: {e}")).len(), 3);
        }
    }

    #[test]
    fn a_missing_rank_is_named_on_every_other_rank_by_the_deadline() {
        let began = Instant::now();
        let results = run(4, &[0, 1, 3], Duration::ZERO, Duration::from_millis(600));
        assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
        for (r, got) in results {
            match got {
                Err(Error::Rendezvous { rank, missing, waited, .. }) => {
                    assert_eq!((rank, missing), (r, vec![2]));
                    assert!(waited <= Duration::from_secs(2), "{waited:?}");
                }
                other => panic!("rank {r}: {other:?}"),
            }
        }
    }

    #[test]
    fn when_rank_0_gives_up_the_others_name_the_missing_rank_at_once() {
        let master = free_master();
        let began = Instant::now();
        let others: Vec<_> = [1, 3]
            .into_iter()
            .map(|r| {
                let master = master.clone();
                thread::spawn(move || {
                    rendezvous(&launch(r, 4, &master), info(r), Instant::now() + Duration::from_secs(30))
                })
            })
            .collect();
        let e = rendezvous(&launch(0, 4, &master), info(0), Instant::now() + Duration::from_millis(300)).unwrap_err();
        assert!(matches!(&e, Error::Rendezvous { rank: 0, missing, .. } if missing == &[2]), "{e}");
        for (t, r) in others.into_iter().zip([1, 3]) {
            match t.join().unwrap() {
                Err(Error::Rendezvous { rank, missing, .. }) => assert_eq!((rank, missing), (r, vec![2])),
                other => panic!("rank {r}: {other:?}"),
            }
        }
        assert!(began.elapsed() < Duration::from_secs(5), "the others waited for their own deadline");
    }

    #[test]
    fn a_missing_rank_0_is_named() {
        for (r, got) in run(3, &[1, 2], Duration::ZERO, Duration::from_millis(400)) {
            match got {
                Err(e @ Error::Rendezvous { .. }) => {
                    let Error::Rendezvous { rank, ref missing, .. } = e else { unreachable!() };
                    assert_eq!((rank, missing.as_slice()), (r, &[0][..]));
                    assert!(e.to_string().contains("rank 0 serves the store"), "{e}");
                }
                other => panic!("rank {r}: {other:?}"),
            }
        }
    }

    #[test]
    fn two_processes_claiming_one_rank_are_an_error() {
        // Rank 2 never comes, so the rendezvous is still open when the second rank 1 joins.
        let results = run(3, &[0, 1, 1], Duration::ZERO, Duration::from_secs(1));
        let twice = results
            .iter()
            .filter(|(_, r)| matches!(r, Err(e) if e.to_string().contains("rank 1 joined the rendezvous") && e.to_string().contains("twice")))
            .count();
        assert_eq!(twice, 1, "{results:?}");
        let missing_2 = results
            .iter()
            .filter(|(_, r)| matches!(r, Err(Error::Rendezvous { missing, .. }) if missing == &[2]))
            .count();
        assert_eq!(missing_2, 2, "{results:?}");
    }

    #[test]
    fn the_info_must_match_the_launch() {
        let e = rendezvous(&launch(1, 2, &free_master()), info(0), Instant::now()).unwrap_err();
        assert!(e.to_string().contains("says rank 0 but the launch says rank 1"), "{e}");
    }

    #[test]
    fn peer_info_text_round_trips() {
        for p in [info(0), info(1)] {
            assert_eq!(decode(&encode(&p).unwrap()).unwrap(), p);
        }
        let mut v6 = info(3).with_endpoint("tcp", "[fe80::1]:9");
        v6.host_id = "h=with=equals".into();
        assert_eq!(decode(&encode(&v6).unwrap()).unwrap(), v6);
        // Unknown names are ignored.
        let text = format!("{}future=1\n", encode(&info(1)).unwrap());
        assert_eq!(decode(&text).unwrap(), info(1));
    }

    #[test]
    fn bad_peer_info_is_an_error() {
        let good = encode(&info(1)).unwrap();
        assert!(decode("").unwrap_err().contains("expected"));
        assert!(decode(&good.replace("oxccl-peer 2", "oxccl-peer 1")).is_err());
        assert!(decode(&good.replace("pid=1001", "pid=-1")).unwrap_err().contains("pid"));
        assert!(decode(&good.replace("pid=1001\n", "")).unwrap_err().contains("pid is missing"));
        // An endpoint line without a transport name is ignored, not a transport "".
        assert!(decode(&format!("{good}endpoint.=x\n")).unwrap().endpoints.len() == 1);
        assert!(decode(&good.replace("rank=1", "rank")).unwrap_err().contains("not name=value"));
        let mut p = info(0);
        p.host_id = "a\nrank=7".into();
        assert!(encode(&p).is_err());
        assert!(encode(&info(0).with_endpoint("tcp", "a\nb")).is_err());
        assert!(encode(&info(0).with_endpoint("a=b", "c")).is_err());
    }

    #[test]
    fn host_ids() {
        assert_eq!(host_id_from("n1", "b00t", Some("2d:1")), "n1/b00t/shm=2d:1");
        assert_eq!(host_id_from("n1\n", "b", None), "n1 /b/shm=none");
        let here = host_id();
        assert!(!here.is_empty() && !here.contains('\n'));
        assert_eq!(here, host_id(), "stable within a process");
    }
}

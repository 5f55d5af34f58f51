//! The TCP transport over loopback, ranks as threads of this process each
//! with its own `TcpTransport`: every collective × algorithm (ring, tree,
//! halving-doubling) × world size 1..=5 × awkward count × placement against
//! a sequential reduction in f64 (the test kit's grid), and every op and
//! dtype; point to point; then the failure paths
//! (mismatch, a rank that leaves, abort, malformed frames from a fake peer,
//! handshake errors); many small and large all-reduces in a row. (Their
//! speed is measured by `bench/benches/tcp_loopback.rs`.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxccl::bootstrap::PeerInfo;
use oxccl::transport::tcp::{TcpConfig, TcpTransport};
use oxccl::transport::wire::{self, Frame, Hello, Limits, HEADER_BYTES};
use oxccl::transport::{Header, Kind, Transport};
use oxccl::{Algorithm, Bytes, Call, Collective, Communicator, Config, DType, Error, ReduceOp};
use oxccl_testkit::checks::{abort_reaches_the_rank_that_never_joined, mismatch_is_reported, send_recv_ring};
use oxccl_testkit::grid::{Buffers, Grid};
use oxccl_testkit::{communicators, on_ranks};

fn config(slice_bytes: usize) -> Config {
    Config { timeout: Duration::from_secs(30), slice_bytes, algorithm: None, ..Config::default() }
}

fn tcp(config: &Config, streams: usize) -> TcpConfig {
    TcpConfig { streams, ..TcpConfig::new(config) }
}

/// `n` communicators over a fresh loopback TCP group.
fn group(n: usize, config: &Config, streams: usize) -> (Vec<Communicator>, Vec<Arc<TcpTransport>>) {
    let ts = TcpTransport::loopback_group(n, &tcp(config, streams)).expect("tcp group");
    (communicators(&ts, config), ts)
}

const COUNTS: [usize; 6] = [0, 1, 7, 31, 1000, 100_003];

/// Every collective, count and placement for `algo` on worlds 1..=5, one
/// group per world (so each group runs many collectives in a row), with
/// 256-byte slices to force many messages per step.
fn grid(algo: Algorithm) {
    let cfg = config(256);
    Grid::new()
        .every_collective(Some(algo), DType::F32, ReduceOp::Sum, &COUNTS, Buffers::Heap)
        .run(1..=5, |n| group(n, &cfg, 2).0);
}

#[test]
fn ring_every_collective() {
    grid(Algorithm::Ring);
}

#[test]
fn tree_every_collective() {
    grid(Algorithm::Tree);
}

#[test]
fn rhd_every_collective() {
    grid(Algorithm::HalvingDoubling);
}

#[test]
fn ops_dtypes_and_stream_counts() {
    for streams in [1, 3] {
        let (mut comms, _ts) = group(3, &config(4096), streams);
        Grid::ops_and_dtypes(100_003).run_group(&mut comms);
    }
}

#[test]
fn auto_algorithm_and_direct_refused() {
    let (mut comms, _ts) = group(3, &config(1024), 2);
    let outs = on_ranks(&mut comms, |c| {
        let r = c.rank() as f32;
        let mut out = vec![0f32; 5];
        c.all_reduce(&[r; 5], &mut out, ReduceOp::Sum).unwrap();
        let mut big = vec![1f32; 70_000];
        c.all_reduce_in_place(&mut big, ReduceOp::Sum).unwrap();
        let call = Call {
            collective: Collective::AllReduce,
            dtype: DType::F32,
            op: ReduceOp::Sum,
            count: 4,
            root: 0,
            algorithm: Some(Algorithm::Direct),
        };
        let direct = c.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(&mut [0f32; 4])));
        c.barrier().unwrap();
        (out, big.iter().all(|&v| v == 3.0), direct)
    });
    for (out, big, direct) in outs {
        assert_eq!(out, vec![3.0; 5]);
        assert!(big);
        assert!(matches!(direct, Err(Error::NeedsSharedMemory { .. })), "{direct:?}");
    }
}

#[test]
fn send_recv() {
    let (mut comms, _ts) = group(3, &config(4096), 2);
    for len in [0usize, 1, 1000, 70_001] {
        send_recv_ring(&mut comms, len);
    }
}

#[test]
fn mismatch_is_reported_from_message_headers() {
    for field in ["count", "dtype", "reduction op"] {
        let (mut comms, _ts) = group(3, &config(1024), 2);
        mismatch_is_reported(&mut comms, field);
    }
}

#[test]
fn a_rank_that_leaves_is_noticed_by_the_others() {
    let mut cfg = config(1024);
    cfg.algorithm = Some(Algorithm::Ring);
    let (mut comms, ts) = group(3, &cfg, 2);
    // A collective that succeeds first, so the group is warm.
    on_ranks(&mut comms, |c| c.all_reduce_in_place(&mut [1f32; 100], ReduceOp::Sum).unwrap());
    let gone = comms.pop().unwrap();
    let gone_t = ts[2].clone();
    drop(ts);
    let start = Instant::now();
    let outs = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|c| s.spawn(move || c.all_reduce_in_place(&mut [1f32; 10_000], ReduceOp::Sum)))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        drop(gone);
        let left = Instant::now();
        drop(gone_t); // the last handle: sockets shut, threads joined
        assert!(left.elapsed() < Duration::from_secs(1), "dropping took {:?}", left.elapsed());
        hs.into_iter().map(|h| (h.join().unwrap(), start.elapsed())).collect::<Vec<_>>()
    });
    for (r, took) in &outs {
        assert!(*took < Duration::from_secs(3), "took {took:?}: {r:?}");
        match r {
            Err(Error::PeerGone { call, peer, .. }) => {
                assert_eq!(*peer, 2, "{r:?}");
                assert_eq!(call.as_deref(), Some("all_reduce #2"));
            }
            Err(Error::Aborted(why)) => assert!(why.contains("rank 2"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(outs.iter().any(|(r, _)| matches!(r, Err(Error::PeerGone { .. }))), "{outs:?}");
}

#[test]
fn abort_from_another_thread_unblocks_every_rank() {
    let (comms, ts) = group(3, &config(1024), 2);
    let (pause, limit, told) = (Duration::from_millis(100), Duration::from_secs(3), Duration::from_secs(2));
    abort_reaches_the_rank_that_never_joined(comms, || ts[2].abort_cause(), pause, limit, told);
}

/// A fake rank 1 of a world of 2: connects both streams to rank 0's
/// listener with a proper handshake, then sends whatever the test says.
struct FakePeer {
    streams: Vec<TcpStream>,
    comm_id: u64,
    slot_bytes: usize,
}

impl FakePeer {
    fn connect(addr: SocketAddr, comm_id: u64, slot_bytes: usize) -> FakePeer {
        let streams = (0..2)
            .map(|s| {
                let mut c = TcpStream::connect(addr).unwrap();
                let hello = Hello { rank: 1, world: 2, slot_bytes: slot_bytes as u64, streams: 2, stream: s, slots: 4 };
                c.write_all(&wire::encode_hello(comm_id, &hello)).unwrap();
                let mut head = [0u8; HEADER_BYTES];
                c.read_exact(&mut head).unwrap();
                let limits = Limits { comm_id, max_payload: slot_bytes, world: 2 };
                assert!(matches!(wire::decode_header(&head, &limits), Ok(Frame::Hello(h)) if h.rank == 0));
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c
            })
            .collect();
        FakePeer { streams, comm_id, slot_bytes }
    }

    /// Reads frames from rank 0 on `stream` until an abort frame: its cause.
    fn abort_cause(&mut self, stream: usize) -> Option<Error> {
        let limits = Limits { comm_id: self.comm_id, max_payload: self.slot_bytes, world: 2 };
        loop {
            let mut head = [0u8; HEADER_BYTES];
            self.streams[stream].read_exact(&mut head).ok()?;
            let frame = wire::decode_header(&head, &limits).unwrap();
            let mut payload = vec![0u8; frame.payload_len()];
            self.streams[stream].read_exact(&mut payload).ok()?;
            if let Frame::Abort { .. } = frame {
                return Some(wire::decode_cause(&payload).unwrap());
            }
        }
    }
}

/// Rank 0 of a world of 2 whose rank 1 is a [`FakePeer`].
fn rank0_with_fake(slot_bytes: usize) -> (Communicator, Arc<TcpTransport>, FakePeer) {
    let cfg =
        Config { timeout: Duration::from_secs(10), slice_bytes: slot_bytes, algorithm: None, ..Config::default() };
    let tcfg = TcpConfig { all_local: true, ..TcpConfig::new(&cfg) };
    let (listener, addr) = TcpTransport::listen(&tcfg).unwrap();
    let peers: Vec<PeerInfo> = (0..2)
        .map(|rank| {
            let at = if rank == 0 { addr.to_string() } else { "127.0.0.1:9".into() };
            PeerInfo { rank, host_id: "h".into(), ..PeerInfo::default() }.with_endpoint("tcp", at)
        })
        .collect();
    let comm_id = 0xC0FFEE;
    let (t, fake) = std::thread::scope(|s| {
        let h = s.spawn(|| TcpTransport::connect(0, 2, listener, &peers, comm_id, &tcfg).unwrap());
        let fake = FakePeer::connect(addr, comm_id, slot_bytes);
        (h.join().unwrap(), fake)
    });
    let comm = Communicator::from_transport(0, t.clone() as Arc<dyn Transport>, cfg).unwrap();
    (comm, t, fake)
}

#[test]
fn malformed_frames_abort_the_receiver_with_a_clear_error() {
    let slot = 256;
    let data = |index: u64, seq: u64, len: usize| {
        let h = Header { kind: Kind::PointToPoint, seq, len, total: len, args: None };
        wire::encode_data(0xC0FFEE, index, &h).to_vec()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wrong magic",
            {
                let mut f = data(0, 1, 0);
                f[0] = b'X';
                f
            },
            "bad magic",
        ),
        (
            "wrong version",
            {
                let mut f = data(0, 1, 0);
                f[4] = 77;
                f
            },
            "wire version 77",
        ),
        (
            "wrong communicator",
            {
                let mut f = data(0, 1, 0);
                f[9] ^= 1;
                f
            },
            "communicator id",
        ),
        (
            "unknown kind",
            {
                let mut f = data(0, 1, 0);
                f[6] = 42;
                f
            },
            "unknown frame kind 42",
        ),
        (
            "absurd length",
            {
                let mut f = data(0, 1, 0);
                f[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
                f
            },
            "at most 256",
        ),
        ("wrong message number", data(6, 1, 8), "message number 6 on stream 0, expected 0"),
        ("sequence number zero", data(0, 0, 8), "sequence number 0"),
        ("credit for nothing sent", wire::encode_credit(0xC0FFEE, 3).to_vec(), "credit for 3 messages"),
        (
            "handshake again",
            wire::encode_hello(
                0xC0FFEE,
                &Hello { rank: 1, world: 2, slot_bytes: 256, streams: 2, stream: 0, slots: 4 },
            )
            .to_vec(),
            "after the handshake",
        ),
        ("random bytes", (0..64u8).map(|i| i.wrapping_mul(37)).collect(), "bad magic"),
    ];
    for (name, bytes, expect) in cases {
        let (comm, t, mut fake) = rank0_with_fake(slot);
        let start = Instant::now();
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                fake.streams[0].write_all(&bytes).unwrap();
            });
            comm.recv(&mut [0f32; 4], 1)
        });
        assert!(start.elapsed() < Duration::from_secs(3), "{name}");
        let cause = t.abort_cause();
        match &cause {
            Some(Error::Protocol { peer: 1, what }) => assert!(what.contains(expect), "{name}: {what}"),
            other => panic!("{name}: {other:?}"),
        }
        assert!(result.as_ref().unwrap_err().to_string().contains(expect), "{name}: {result:?}");
        // Rank 0 told its peer why (on stream 0 or 1, whichever was free).
        let told = fake.abort_cause(0).or_else(|| fake.abort_cause(1));
        assert!(matches!(&told, Some(Error::Aborted(why)) if why.contains(expect)), "{name}: {told:?}");
        drop(comm);
        drop(t);
    }
}

#[test]
fn a_frame_cut_short_is_a_lost_peer() {
    let (comm, t, mut fake) = rank0_with_fake(256);
    let h = Header { kind: Kind::PointToPoint, seq: 1, len: 16, total: 16, args: None };
    let mut frame = wire::encode_data(0xC0FFEE, 0, &h).to_vec();
    frame.extend_from_slice(&[1, 2, 3]);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            fake.streams[0].write_all(&frame).unwrap();
            fake.streams[0].shutdown(std::net::Shutdown::Both).unwrap();
        });
        comm.recv(&mut [0f32; 4], 1)
    });
    match result {
        Err(Error::PeerGone { call, peer: 1, what, .. }) => {
            assert_eq!(call.as_deref(), Some("recv #1"));
            assert!(what.contains("middle of a frame"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    drop(comm);
    drop(t);
}

#[test]
fn a_fake_peer_can_complete_a_transfer() {
    // The fake speaks the protocol correctly: rank 0 receives its message,
    // and the fake receives rank 0's credit for it. This shows the fake
    // peer above is faithful, so its failures are the frames' doing.
    let (comm, t, mut fake) = rank0_with_fake(256);
    let h = Header { kind: Kind::PointToPoint, seq: 1, len: 16, total: 16, args: None };
    let mut frame = wire::encode_data(0xC0FFEE, 0, &h).to_vec();
    frame.extend_from_slice(bytemuck::cast_slice(&[1f32, 2.0, 3.0, 4.0]));
    fake.streams[0].write_all(&frame).unwrap();
    let mut got = [0f32; 4];
    comm.recv(&mut got, 1).unwrap();
    assert_eq!(got, [1.0, 2.0, 3.0, 4.0]);
    let mut head = [0u8; HEADER_BYTES];
    fake.streams[0].read_exact(&mut head).unwrap();
    let limits = Limits { comm_id: 0xC0FFEE, max_payload: 256, world: 2 };
    assert_eq!(wire::decode_header(&head, &limits), Ok(Frame::Credit { released: 1 }));
    assert_eq!(t.abort_cause(), None);
}

/// Connects `world` ranks with per-rank settings; `skip` ranks never connect.
fn connect_each(
    world: usize,
    comm_ids: &[u64],
    slot_bytes: &[usize],
    skip: &[usize],
    timeout: Duration,
) -> Vec<Option<oxccl::Result<Arc<TcpTransport>>>> {
    let cfgs: Vec<TcpConfig> = (0..world)
        .map(|r| {
            let c = Config { timeout, slice_bytes: slot_bytes[r], algorithm: None, ..Config::default() };
            TcpConfig { all_local: true, ..TcpConfig::new(&c) }
        })
        .collect();
    let ls: Vec<_> = cfgs.iter().map(|c| TcpTransport::listen(c).unwrap()).collect();
    let peers: Vec<PeerInfo> = ls
        .iter()
        .enumerate()
        .map(|(rank, (_, a))| {
            PeerInfo { rank, host_id: "h".into(), ..PeerInfo::default() }.with_endpoint("tcp", a.to_string())
        })
        .collect();
    std::thread::scope(|s| {
        let hs: Vec<_> = ls
            .into_iter()
            .enumerate()
            .map(|(r, (l, _))| {
                let (peers, cfgs) = (&peers, &cfgs);
                s.spawn(move || {
                    if skip.contains(&r) {
                        // Listening (its address was published) but never connecting.
                        std::thread::sleep(timeout + Duration::from_millis(500));
                        drop(l);
                        return None;
                    }
                    Some(TcpTransport::connect(r, world, l, peers, comm_ids[r], &cfgs[r]))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_rank_that_never_connects_is_named_within_the_deadline() {
    let start = Instant::now();
    let outs = connect_each(4, &[7; 4], &[256; 4], &[2], Duration::from_millis(800));
    for (r, out) in outs.iter().enumerate() {
        if r == 2 {
            continue;
        }
        match out {
            // Ranks 0 and 1 wait in vain for rank 2's connection; rank 3
            // dials rank 2, whose listener queues it but never answers.
            Some(Err(Error::Timeout { peer: 2, rank, what, .. })) => {
                assert_eq!(*rank, r);
                assert_eq!(*what, if r < 2 { "connection" } else { "handshake reply" });
            }
            other => {
                panic!("rank {r}: {}", other.as_ref().map_or("none".into(), |o| format!("{:?}", o.as_ref().err())))
            }
        }
    }
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_lower_rank_that_is_gone_is_named_by_those_that_dial_it() {
    let cfg = Config { timeout: Duration::from_millis(600), slice_bytes: 256, algorithm: None, ..Config::default() };
    let tcfg = TcpConfig { all_local: true, ..TcpConfig::new(&cfg) };
    let ls: Vec<_> = (0..2).map(|_| TcpTransport::listen(&tcfg).unwrap()).collect();
    let peers: Vec<PeerInfo> = ls
        .iter()
        .enumerate()
        .map(|(rank, (_, a))| {
            PeerInfo { rank, host_id: "h".into(), ..PeerInfo::default() }.with_endpoint("tcp", a.to_string())
        })
        .collect();
    let mut it = ls.into_iter();
    drop(it.next()); // rank 0 died after publishing its address
    let start = Instant::now();
    match TcpTransport::connect(1, 2, it.next().unwrap().0, &peers, 1, &tcfg) {
        Err(Error::Timeout { peer: 0, rank: 1, call: Some(call), what: "connection", .. }) => {
            assert!(call.contains(peers[0].endpoint("tcp").unwrap()) && call.contains("refused"), "{call}")
        }
        other => panic!("{:?}", other.err()),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn handshake_disagreements_are_protocol_errors() {
    let outs = connect_each(2, &[7, 8], &[256, 256], &[], Duration::from_secs(2));
    for (r, out) in outs.into_iter().enumerate() {
        match out.unwrap() {
            Err(Error::Protocol { peer, what }) => {
                assert_eq!(peer, 1 - r);
                assert!(what.contains("communicator id"), "{what}");
            }
            other => panic!("rank {r}: {:?}", other.err()),
        }
    }
    let outs = connect_each(2, &[7, 7], &[256, 512], &[], Duration::from_secs(2));
    for (r, out) in outs.into_iter().enumerate() {
        match out.unwrap() {
            Err(Error::Protocol { peer, what }) => {
                assert_eq!(peer, 1 - r);
                assert!(what.contains("slot bytes"), "{what}");
            }
            other => panic!("rank {r}: {:?}", other.err()),
        }
    }
}

#[test]
fn strangers_on_the_port_are_ignored() {
    let cfg = config(256);
    let tcfg = TcpConfig { all_local: true, ..TcpConfig::new(&cfg) };
    let ls: Vec<(TcpListener, SocketAddr)> = (0..2).map(|_| TcpTransport::listen(&tcfg).unwrap()).collect();
    let peers: Vec<PeerInfo> = ls
        .iter()
        .enumerate()
        .map(|(rank, (_, a))| {
            PeerInfo { rank, host_id: "h".into(), ..PeerInfo::default() }.with_endpoint("tcp", a.to_string())
        })
        .collect();
    // A stranger connects first and speaks HTTP.
    let mut stranger = TcpStream::connect(ls[0].1).unwrap();
    stranger.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut it = ls.into_iter();
    let (l0, l1) = (it.next().unwrap().0, it.next().unwrap().0);
    let ts = std::thread::scope(|s| {
        let a = s.spawn(|| TcpTransport::connect(0, 2, l0, &peers, 9, &tcfg));
        let b = s.spawn(|| TcpTransport::connect(1, 2, l1, &peers, 9, &tcfg));
        [a.join().unwrap().unwrap(), b.join().unwrap().unwrap()]
    });
    let mut comms: Vec<Communicator> = ts
        .iter()
        .enumerate()
        .map(|(r, t)| Communicator::from_transport(r, t.clone() as Arc<dyn Transport>, cfg.clone()).unwrap())
        .collect();
    let outs = on_ranks(&mut comms, |c| {
        let mut v = [c.rank() as i64 + 1; 3];
        c.all_reduce_in_place(&mut v, ReduceOp::Sum).map(|()| v)
    });
    assert!(outs.iter().all(|o| o == &Ok([3; 3])), "{outs:?}");
}

#[test]
fn many_collectives_in_a_row_then_a_clean_teardown() {
    // Ranks leave as soon as they are done; none may see its peers' exits
    // as a failure of a collective it still needs to finish.
    for round in 0..5 {
        let (mut comms, ts) = group(4, &config(512), 2);
        let outs = on_ranks(&mut comms, |c| {
            let mut v = vec![1f32; 3000];
            for _ in 0..20 {
                c.all_reduce_in_place(&mut v, ReduceOp::Max)?;
            }
            let mut g = vec![0f32; 4 * 1000];
            c.all_gather(&vec![c.rank() as f32; 1000], &mut g)?;
            Ok::<_, Error>(g)
        });
        // Drop each rank's communicator and transport on its own thread, at once.
        let ts: Vec<_> = ts.into_iter().zip(comms).collect();
        std::thread::scope(|s| {
            for pair in ts {
                s.spawn(move || drop(pair));
            }
        });
        for o in outs {
            let g = o.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(g.iter().enumerate().all(|(i, &v)| v == (i / 1000) as f32));
        }
    }
}

/// Many 8-byte all-reduces in a row on 2 ranks, each result checked; then
/// 64 MiB all-reduced in place repeatedly on 2 and 4 ranks (2 streams,
/// 128 KiB slices, the auto rule), the result checked after each round.
#[test]
fn repeated_small_and_large_all_reduces() {
    let cfg = config(128 << 10);
    let (mut comms, _ts) = group(2, &cfg, 2);
    on_ranks(&mut comms, |c| {
        let mut v = [c.rank() as f32 + 1.0, 1.0];
        for _ in 0..200 {
            c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        }
        c.barrier().unwrap();
        for i in 0..2000 {
            let mut w = [c.rank() as f32 + 1.0, 1.0];
            c.all_reduce_in_place(&mut w, ReduceOp::Sum).unwrap();
            assert_eq!(w, [3.0, 2.0], "call {i}");
        }
    });
    for n in [2, 4] {
        let (mut comms, _ts) = if n == 2 { (std::mem::take(&mut comms), Vec::new()) } else { group(n, &cfg, 2) };
        let count = (64usize << 20) / 4;
        on_ranks(&mut comms, |c| {
            let mut v = vec![1f32; count];
            for round in 1..=4 {
                c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
                assert!(v.iter().all(|&x| x == (n as f32).powi(round)), "{n} ranks, round {round}");
            }
        });
    }
}

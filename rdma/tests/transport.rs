//! The RDMA transport on a real verbs device (the Soft-RoCE guest's `rxe0`;
//! see `rdma/guest/`): ranks as threads of this process, each with its own
//! transport, queue pairs and memory, every collective × algorithm (ring,
//! tree, halving-doubling) × world size 1..=4 × awkward count × placement
//! against a sequential reduction in f64 (the test kit's grid), and every op
//! and dtype; point to point; mismatches caught
//! from message headers; abort; a rank that closes; and, with ranks as
//! processes meeting at a real rendezvous, a rank killed mid-collective and
//! a rank stopped mid-collective (named exactly by every survivor).
//!
//! Outside the guest (no `RXE_DEV`) every test fails and says where it runs.
#![cfg(feature = "verbs")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxccl::transport::wire::{self, HEADER_BYTES};
use oxccl::transport::{Header, Kind, Transport};
use oxccl::{Algorithm, Collective, Communicator, Config, DType, Error, ReduceOp};
use oxccl_rdma::config::RdmaConfig;
use oxccl_rdma::imm::Imm;
use oxccl_rdma::verbs::layout::Layout;
use oxccl_rdma::verbs::setup::RawRank;
use oxccl_rdma::verbs::{loopback_group, RdmaSetup, RdmaTransport};
use oxccl_testkit::checks::{abort_reaches_the_rank_that_never_joined, mismatch_is_reported, send_recv_ring};
use oxccl_testkit::grid::{Buffers, Grid};
use oxccl_testkit::{communicators, on_ranks};

fn in_guest() {
    assert!(
        std::env::var_os("RXE_DEV").is_some(),
        "RXE_DEV is not set: these tests run only inside the Soft-RoCE guest (rdma/guest/run.sh; CI: rdma/guest/ci.sh)"
    );
}

fn config(slice_bytes: usize) -> Config {
    Config { timeout: Duration::from_secs(60), slice_bytes, algorithm: None, ..Config::default() }
}

/// `n` communicators over a fresh group of RDMA transports in this process.
fn group(n: usize, config: &Config) -> (Vec<Communicator>, Vec<Arc<RdmaTransport>>) {
    in_guest();
    let ts = loopback_group(n, &RdmaConfig::from_env(config).unwrap()).expect("RDMA group");
    (communicators(&ts, config), ts)
}

const COUNTS: [usize; 6] = [0, 1, 7, 31, 1000, 10_007];

/// Every collective, count and placement for `algo` on worlds 1..=4, with
/// 1 KiB slices (so larger counts take many messages per step).
fn grid(algo: Algorithm) {
    let cfg = config(1024);
    Grid::new()
        .every_collective(Some(algo), DType::F32, ReduceOp::Sum, &COUNTS, Buffers::Heap)
        .run(1..=4, |n| group(n, &cfg).0);
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
fn ops_and_dtypes() {
    let (mut comms, _ts) = group(3, &config(4096));
    Grid::ops_and_dtypes(20_011).run_group(&mut comms);
}

#[test]
fn send_recv_and_auto() {
    let (mut comms, _ts) = group(3, &config(4096));
    for len in [0usize, 1, 1000, 20_001] {
        send_recv_ring(&mut comms, len);
        let sums = on_ranks(&mut comms, |c| {
            let mut sum = vec![0f32; 7];
            c.all_reduce(&[c.rank() as f32; 7], &mut sum, ReduceOp::Sum).unwrap();
            sum
        });
        assert!(sums.iter().all(|s| s == &[3.0; 7]), "{sums:?}");
    }
}

/// Buffers from `alloc_shared` are registered: messages leave straight from
/// them (no copy into staging), and the results are the same.
#[test]
fn registered_buffers_are_sent_without_a_copy() {
    let (mut comms, ts) = group(3, &config(1024));
    for algo in [Algorithm::Ring, Algorithm::Tree, Algorithm::HalvingDoubling] {
        let outs = on_ranks(&mut comms, |c| {
            let mut buf = c.alloc_shared::<f32>(5003).unwrap();
            let mut ok = true;
            for round in 0..3 {
                buf.iter_mut().enumerate().for_each(|(i, v)| *v = (i + c.rank() + round) as f32);
                c.run(
                    &oxccl::Call {
                        collective: Collective::AllReduce,
                        dtype: oxccl::DType::F32,
                        op: ReduceOp::Sum,
                        count: buf.len(),
                        root: 0,
                        algorithm: Some(algo),
                    },
                    oxccl::Bytes::InPlace(bytemuck::cast_slice_mut(&mut buf)),
                )
                .unwrap();
                ok &= buf.iter().enumerate().all(|(i, &v)| v == (3 * (i + round) + 3) as f32);
            }
            // Point to point from registered memory too.
            let (next, prev) = ((c.rank() + 1) % 3, (c.rank() + 2) % 3);
            let mut got = vec![0f32; 3001];
            buf[..3001].iter_mut().enumerate().for_each(|(i, v)| *v = (i * 3 + c.rank()) as f32);
            if c.rank() == 0 {
                c.send(&buf[..3001], next).unwrap();
                c.recv(&mut got, prev).unwrap();
            } else {
                c.recv(&mut got, prev).unwrap();
                c.send(&buf[..3001], next).unwrap();
            }
            ok && got.iter().enumerate().all(|(i, &v)| v == (i * 3 + prev) as f32)
        });
        assert!(outs.into_iter().all(|ok| ok), "{algo}");
    }
    for t in &ts {
        assert!(t.zero_copy_messages() > 0, "rank {} sent nothing straight from its buffer", t.rank());
    }
}

#[test]
fn mismatch_is_reported_from_message_headers() {
    for field in ["count", "dtype", "reduction op"] {
        let (mut comms, _ts) = group(3, &config(1024));
        mismatch_is_reported(&mut comms, field);
    }
}

#[test]
fn abort_from_another_thread_unblocks_every_rank() {
    let (comms, ts) = group(3, &config(1024));
    let (pause, limit, told) = (Duration::from_millis(300), Duration::from_secs(10), Duration::from_secs(10));
    abort_reaches_the_rank_that_never_joined(comms, || ts[2].abort_cause(), pause, limit, told);
}

#[test]
fn a_rank_that_closes_is_noticed_by_the_others() {
    let cfg = Config { timeout: Duration::from_secs(30), ..config(1024) };
    let (comms, ts) = group(3, &cfg);
    drop(ts);
    let mut comms = comms.into_iter();
    let (a, b) = (comms.next().unwrap(), comms.next().unwrap());
    drop(comms); // rank 2 closes its transport
    let start = Instant::now();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = [a, b]
            .into_iter()
            .map(|c| s.spawn(move || c.all_reduce_in_place(&mut [1f32; 64], ReduceOp::Sum)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(start.elapsed() < cfg.timeout, "took {:?}", start.elapsed());
    for r in outs {
        assert!(matches!(&r, Err(Error::PeerGone { peer: 2, .. })), "{r:?}");
    }
}

// ---- malformed writes from a peer ----

/// Rank 0 of a world of 2 with a real transport; rank 1 raw queue pairs
/// that write whatever the test says.
fn rank0_with_raw(slot_bytes: usize) -> (Communicator, Arc<RdmaTransport>, RawRank) {
    in_guest();
    let cfg =
        Config { timeout: Duration::from_secs(20), slice_bytes: slot_bytes, algorithm: None, ..Config::default() };
    let rc = RdmaConfig::from_env(&cfg).unwrap();
    let (s0, s1) = (RdmaSetup::new(0, 2, &rc).unwrap(), RdmaSetup::new(1, 2, &rc).unwrap());
    let cards = [s0.card(), s1.card()];
    let t = s0.connect(&cards, COMM_ID, 2, None).unwrap();
    let raw = s1.connect_raw(&cards).unwrap();
    let comm = Communicator::from_transport(0, t.clone() as Arc<dyn Transport>, cfg).unwrap();
    (comm, t, raw)
}

const COMM_ID: u64 = 0xC0FFEE;

#[test]
fn malformed_writes_abort_the_receiver_with_a_clear_error() {
    let slot = 256;
    let p2p = |len| Header { kind: Kind::PointToPoint, seq: 1, len, total: len, args: None };
    let frame = |index: u64, h: Header, payload: usize| {
        let mut f = wire::encode_data(COMM_ID, index, &h).to_vec();
        f.resize(HEADER_BYTES + payload, 7);
        f
    };
    let data = |i: u32| Some(Imm::Data(i).encode());
    // (name, bytes, offset in the ring, immediate, what the error says)
    type Case = (&'static str, Vec<u8>, usize, Option<u32>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "wrong magic",
            {
                let mut f = frame(0, p2p(8), 8);
                f[0] = b'X';
                f
            },
            0,
            data(0),
            "bad magic",
        ),
        ("other communicator", wire::encode_data(7, 0, &p2p(0)).to_vec(), 0, data(0), "communicator"),
        ("header and write disagree", frame(5, p2p(8), 8), 0, data(0), "header says message 5"),
        ("length not what was written", frame(0, p2p(8), 16), 0, data(0), "were written"),
        ("absurd length", frame(0, p2p(slot + 1), 0), 0, data(0), "at most 256"),
        ("message out of order", frame(3, p2p(8), 8), 0, data(3), "arrived, expected 0"),
        ("shorter than a header", vec![1; 10], 0, data(0), "shorter than its header"),
        ("credit for nothing sent", vec![], 0, Some(Imm::Credit(5).encode()), "credit for 5 messages"),
        ("abort slot garbage", vec![9; 100], Layout::new(slot).abort(0), Some(Imm::Abort(100).encode()), "magic"),
        ("abort length lie", vec![9; 100], Layout::new(slot).abort(0), Some(Imm::Abort(90).encode()), "abort frame"),
    ];
    for (name, bytes, offset, imm, expect) in cases {
        let (comm, t, raw) = rank0_with_raw(slot);
        let start = Instant::now();
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                raw.write(0, offset, &bytes, imm).unwrap();
            });
            comm.recv(&mut [0f32; 4], 1)
        });
        match &result {
            Err(Error::Protocol { peer: 1, what }) if what.contains(expect) => {}
            other => panic!("{name}: expected a protocol error saying {expect:?}, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{name}: took {:?}", start.elapsed());
        // The transport closes first, while the raw side still acknowledges its writes.
        drop((comm, t));
        drop(raw);
    }
}

// ---- ranks as processes: this test binary, run again as each rank ----

const CHILD: &str = "OXCCL_RDMA_TEST_CHILD";

/// A rank of the process tests, not a test itself (ignored, so it never
/// passes by doing nothing; the process tests run it with `--ignored`):
/// all-reduces in a loop until `OXCCL_RDMA_TEST_ITERS`, printing progress
/// and the error that ends it.
#[test]
#[ignore = "a rank the process tests spawn"]
fn child_rank() {
    assert!(std::env::var_os(CHILD).is_some(), "child_rank runs only as a rank spawned by the process tests");
    let iters: usize = std::env::var("OXCCL_RDMA_TEST_ITERS").unwrap().parse().unwrap();
    let timeout = std::env::var(TIMEOUT).map_or(20.0, |t| t.parse::<f64>().unwrap());
    let algorithm = std::env::var(ALGO).ok().map(|a| a.parse::<Algorithm>().unwrap());
    let cfg = Config { timeout: Duration::from_secs_f64(timeout), slice_bytes: 4096, algorithm, ..Config::default() };
    let launch = oxccl::bootstrap::Launch::from_env().unwrap();
    let comm = match std::env::var_os(AUTO) {
        Some(_) => oxccl_rdma::verbs::communicator_auto(&launch, cfg).unwrap(),
        None => oxccl_rdma::verbs::communicator(&launch, cfg).unwrap(),
    };
    println!("RANK-TRANSPORT {} {}", comm.rank(), comm.transport());
    let mut buf = vec![1f32; 10_000];
    for i in 0..iters {
        buf.fill(1.0);
        match comm.all_reduce_in_place(&mut buf, ReduceOp::Sum) {
            Ok(()) => assert!(buf.iter().all(|&v| v == comm.world() as f32)),
            Err(e) => {
                println!("RANK-ERROR {} {i}: {e:?}", comm.rank());
                std::process::exit(3);
            }
        }
        if i == 2 {
            println!("RANK-RUNNING {}", comm.rank());
        }
    }
    println!("RANK-DONE {}", comm.rank());
}

/// Set for ranks that connect with `connect_auto` (shared memory on a host,
/// RDMA between hosts).
const AUTO: &str = "OXCCL_RDMA_TEST_AUTO";
/// A child rank's deadline in seconds (default 20).
const TIMEOUT: &str = "OXCCL_RDMA_TEST_TIMEOUT";
/// A child rank's algorithm (default: the auto rule).
const ALGO: &str = "OXCCL_RDMA_TEST_ALGO";

fn spawn_ranks(world: usize, port: u16, iters: usize) -> Vec<Child> {
    spawn_ranks_with(world, port, iters, |_, _| {})
}

/// [`spawn_ranks`], with `more(rank, command)` adding to each rank's command.
fn spawn_ranks_with(world: usize, port: u16, iters: usize, more: impl Fn(usize, &mut Command)) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    (0..world)
        .map(|r| {
            let mut cmd = Command::new(&exe);
            more(r, &mut cmd);
            cmd.args(["--exact", "child_rank", "--ignored", "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .env("OXCCL_RDMA_TEST_ITERS", iters.to_string())
                .env("OXCCL_RANK", r.to_string())
                .env("OXCCL_WORLD_SIZE", world.to_string())
                .env("OXCCL_LOCAL_WORLD_SIZE", world.to_string())
                .env("OXCCL_MASTER_PORT", port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn output(c: Child) -> (Option<i32>, String) {
    let out = c.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn processes_complete_a_run() {
    in_guest();
    complete(spawn_ranks(3, 29611, 20), "rdma\n");
}

/// Waits for every rank, which must have finished its run over the
/// transport its line starts with.
fn complete(children: Vec<Child>, transport: &str) {
    for (r, (code, out)) in children.into_iter().map(output).enumerate() {
        assert_eq!(code, Some(0), "rank {r}: {out}");
        assert!(out.contains(&format!("RANK-TRANSPORT {r} {transport}")), "rank {r}: {out}");
        assert!(out.contains(&format!("RANK-DONE {r}")), "rank {r}: {out}");
    }
}

#[test]
fn a_killed_rank_is_named_by_every_survivor() {
    in_guest();
    kill_rank_1(spawn_ranks(3, 29612, usize::MAX));
}

/// Lets the ranks run a little, kills rank 1 mid-stream, and checks that
/// every survivor names it, in time.
fn kill_rank_1(mut children: Vec<Child>) {
    std::thread::sleep(Duration::from_secs(3));
    children[1].kill().unwrap();
    let killed_at = Instant::now();
    let _ = children[1].wait();
    for (r, c) in children.into_iter().enumerate().filter(|(r, _)| *r != 1) {
        let (code, out) = output(c);
        let took = killed_at.elapsed();
        println!("rank {r} after {took:?}: {}", out.lines().find(|l| l.starts_with("RANK-ERROR")).unwrap_or(""));
        assert_eq!(code, Some(3), "rank {r}: {out}");
        assert!(out.contains("RANK-RUNNING"), "rank {r} never ran: {out}");
        assert!(out.contains("peer: 1"), "rank {r} does not name rank 1: {out}");
        assert!(took < Duration::from_secs(20), "rank {r} took {took:?}");
    }
}

/// Two "hosts" of two ranks each (host ids set per rank): `connect_auto`
/// joins them with shared memory inside a host and RDMA between hosts, and
/// all-reduces over the composite are right; on one host it is shared
/// memory alone.
#[test]
fn auto_uses_shared_memory_on_a_host_and_rdma_between_hosts() {
    in_guest();
    let hosts = |r: usize, c: &mut Command| {
        c.env(AUTO, "1").env("OXCCL_HOST_ID", format!("host{}", r / 2));
    };
    complete(spawn_ranks_with(4, 29613, 30, hosts), "shm+rdma (2 of 4 ranks on this host)");
    let one_host = |_: usize, c: &mut Command| {
        c.env(AUTO, "1").env("OXCCL_HOST_ID", "one");
    };
    complete(spawn_ranks_with(3, 29614, 10, one_host), "shm\n");
}

/// A rank killed in a group joined by `connect_auto` (two hosts of two) is
/// named by the survivors on its host (shared memory) and on the other
/// (RDMA).
#[test]
fn auto_a_killed_rank_is_named_across_both_transports() {
    in_guest();
    let hosts = |r: usize, c: &mut Command| {
        c.env(AUTO, "1").env("OXCCL_HOST_ID", format!("host{}", r / 2));
    };
    kill_rank_1(spawn_ranks_with(4, 29615, usize::MAX, hosts));
}

/// Stops one rank with SIGSTOP (alive, holding its queue pairs, but
/// silent) while the ranks all-reduce: every survivor times out naming it —
/// those waiting for it directly and those waiting for a rank that waits for
/// it — for each algorithm, over RDMA alone (3 ranks) and across the
/// composite of two hosts of two (4 ranks).
#[test]
fn a_stopped_rank_is_named_by_every_survivor() {
    in_guest();
    let cases: [(&str, usize, bool, usize); 4] =
        [("ring", 3, false, 1), ("tree", 3, false, 0), ("rhd", 3, false, 2), ("ring", 4, true, 2)];
    for (i, (algo, world, auto, victim)) in cases.into_iter().enumerate() {
        let setup = |r: usize, c: &mut Command| {
            c.env(TIMEOUT, "5").env(ALGO, algo);
            if auto {
                c.env(AUTO, "1").env("OXCCL_HOST_ID", format!("host{}", r / 2));
            }
        };
        let mut children = spawn_ranks_with(world, 29620 + i as u16, usize::MAX, setup);
        std::thread::sleep(Duration::from_secs(3));
        // SAFETY: kill only sends a signal to the child's process id.
        assert_eq!(unsafe { libc::kill(children[victim].id() as libc::pid_t, libc::SIGSTOP) }, 0);
        let stopped_at = Instant::now();
        let survivors: Vec<(usize, Child)> = children.drain(..).enumerate().collect();
        let mut stopped = None;
        for (r, c) in survivors {
            if r == victim {
                stopped = Some(c);
                continue;
            }
            let (code, out) = output(c);
            let took = stopped_at.elapsed();
            let error = out.lines().find(|l| l.starts_with("RANK-ERROR")).unwrap_or("").to_string();
            println!("{algo}, {world} ranks, rank {victim} stopped: rank {r} after {took:?}: {error}");
            assert_eq!(code, Some(3), "{algo}: rank {r}: {out}");
            assert!(out.contains("RANK-RUNNING"), "{algo}: rank {r} never ran: {out}");
            assert!(error.contains("Timeout") || error.contains("timed out"), "{algo}: rank {r}: {error}");
            let named = error.contains(&format!("peer: {victim},")) || error.contains(&format!("for rank {victim} "));
            assert!(named, "{algo}: rank {r} does not name rank {victim}: {error}");
            assert!(took < Duration::from_secs(15), "{algo}: rank {r} took {took:?}");
        }
        let mut stopped = stopped.expect("the stopped rank");
        stopped.kill().unwrap();
        let _ = stopped.wait();
    }
}

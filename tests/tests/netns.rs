//! Ranks on several "hosts": network namespaces joined by veth pairs to a
//! bridge, made and removed by each test. Four ranks spread 2 + 1 + 1 over
//! three hosts, each told its host (`OXCCL_HOST_ID`) and interface
//! (`OXCCL_SOCKET_IFNAME`), meet at the first host's address with the
//! transport on `auto`, so they must choose TCP. Every collective must be
//! right; then a host's link is cut while the ranks loop, and a rank is
//! killed, and every rank left must report an error in time.
//!
//! These tests need root and iproute2's `ip netns`. Without them they fail,
//! saying so, unless `OXCCL_SKIP_NETNS=1` is set (then they print a loud
//! skip line and pass).

use std::path::Path;
use std::time::{Duration, Instant};

use oxccl_tests::harness::{
    all_ready, check_init, collectives, names_call, names_peer, report, serial, start, survivors_end, Placement,
    Problems, READY, TIMEOUT,
};
use oxccl_tests::netns::{self, Hosts};
use oxccl_tests::procs::shm_leftovers;

const BIN: &str = env!("CARGO_BIN_EXE_oxccl-rank");

/// The host of each rank: 2 + 1 + 1.
const HOST_OF: [usize; 4] = [0, 0, 1, 2];
const HOSTS: usize = 3;
const MASTER_PORT: u16 = 29_650;

/// Three hosts, or `None` (after a loud line) when namespaces cannot be made
/// here and `OXCCL_SKIP_NETNS=1` allows skipping; otherwise a failure.
fn hosts(test: &str) -> Option<Hosts> {
    let problem = match netns::unavailable() {
        Some(p) => p,
        None => match Hosts::create(HOSTS) {
            Ok(h) => return Some(h),
            Err(e) => format!("cannot create network namespaces: {e}"),
        },
    };
    if std::env::var("OXCCL_SKIP_NETNS").is_ok_and(|v| v.trim() == "1") {
        eprintln!("\n!!!!!!!! SKIPPED {test}: {problem} (OXCCL_SKIP_NETNS=1) !!!!!!!!\n");
        return None;
    }
    panic!(
        "{test} needs root and iproute2 `ip netns` to make network namespaces, but {problem}. \
         Run as root (CI does), or set OXCCL_SKIP_NETNS=1 to skip these tests."
    );
}

/// Ranks placed on `hosts` as [`HOST_OF`] says, meeting at host 0.
fn placement(hosts: &Hosts) -> Placement {
    let n = HOST_OF.len();
    let local = (0..n)
        .map(|r| {
            let h = HOST_OF[r];
            (HOST_OF[..r].iter().filter(|&&x| x == h).count(), HOST_OF.iter().filter(|&&x| x == h).count())
        })
        .collect();
    let extra = (0..n)
        .map(|r| {
            vec![
                ("OXCCL_HOST_ID".to_string(), hosts.hosts[HOST_OF[r]].clone()),
                ("OXCCL_SOCKET_IFNAME".to_string(), Hosts::IFNAME.to_string()),
            ]
        })
        .collect();
    Placement {
        netns: (0..n).map(|r| Some(hosts.hosts[HOST_OF[r]].clone())).collect(),
        master_addr: Hosts::addr(0),
        master_port: MASTER_PORT,
        local,
        extra,
    }
}

fn assert_cleaned(names: &[String], pids: &[u32]) {
    for ns in names {
        assert!(!netns::exists(ns), "network namespace {ns} left behind");
    }
    let left = shm_leftovers(pids);
    assert!(left.is_empty(), "left in /dev/shm by pids {pids:?}: {left:?}");
}

#[test]
fn netns_every_collective_over_tcp_across_three_hosts() {
    let _serial = serial();
    let Some(hosts) = hosts("netns_every_collective_over_tcp_across_three_hosts") else { return };
    let names = hosts.namespaces();
    let (took, pids) = collectives(Path::new(BIN), &placement(&hosts), "auto", "tcp", Duration::from_secs(100));
    eprintln!("netns collectives, 4 ranks on 3 hosts: {took:?}");
    drop(hosts);
    assert_cleaned(&names, &pids);
}

#[test]
fn netns_cut_link_is_reported_by_every_rank() {
    let _serial = serial();
    let Some(hosts) = hosts("netns_cut_link_is_reported_by_every_rank") else { return };
    let names = hosts.namespaces();
    let mut g = start(Path::new(BIN), &placement(&hosts), "auto", TIMEOUT, &["loop"]);
    let deadline = Instant::now() + READY;
    check_init(&g, "tcp", deadline);
    all_ready(&g, deadline);
    // Host 1 (rank 2 alone) loses its link mid-loop.
    let cut = Instant::now();
    hosts.link_down(1).unwrap_or_else(|e| panic!("{e}"));
    let everyone: Vec<usize> = (0..g.len()).collect();
    let mut problems = Problems::default();
    let ends = survivors_end(&mut g, &everyone, cut, &mut problems);
    report("netns: link of host 1 cut", &ends);
    for e in &ends {
        let (r, err) = (e.rank, &e.error);
        problems.check(names_call(err, "all_reduce"), || format!("rank {r} does not name the call: {err}"));
        // The ranks that can still reach each other must say who was cut
        // off, exactly (also those that waited only for a rank that waited
        // for rank 2); rank 2 itself may name any of them.
        problems.check(r == 2 || names_peer(err, 2), || format!("rank {r} does not name rank 2: {err}"));
    }
    problems.assert_none(&g);
    let pids = g.pids();
    drop(g);
    drop(hosts);
    assert_cleaned(&names, &pids);
}

#[test]
fn netns_killed_rank_is_reported_by_every_survivor() {
    let _serial = serial();
    let Some(hosts) = hosts("netns_killed_rank_is_reported_by_every_survivor") else { return };
    let names = hosts.namespaces();
    let mut g = start(Path::new(BIN), &placement(&hosts), "auto", TIMEOUT, &["loop"]);
    let deadline = Instant::now() + READY;
    check_init(&g, "tcp", deadline);
    all_ready(&g, deadline);
    // Rank 2, alone on host 1.
    let killed = Instant::now();
    g.kill(2).unwrap_or_else(|e| panic!("{e}\n{}", g.dump()));
    let survivors = [0, 1, 3];
    let mut problems = Problems::default();
    let ends = survivors_end(&mut g, &survivors, killed, &mut problems);
    report("netns: rank 2 killed", &ends);
    for e in &ends {
        let (r, err) = (e.rank, &e.error);
        problems.check(names_peer(err, 2), || format!("rank {r} does not name rank 2: {err}"));
        problems.check(names_call(err, "all_reduce"), || format!("rank {r} does not name the call: {err}"));
        problems.check(err.contains("rank 2 is gone"), || format!("rank {r}: the death was not noticed: {err}"));
    }
    problems.assert_none(&g);
    let pids = g.pids();
    drop(g);
    drop(hosts);
    assert_cleaned(&names, &pids);
}

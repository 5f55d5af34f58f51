//! Ranks as processes on this host, over shared memory and over TCP on
//! loopback: every collective correct with 2 and 4 processes, and each
//! failure (a rank killed with SIGKILL, a wedged rank, an abort) reported
//! by every other rank in time, naming the call and the rank at fault.
//! Shared-memory jobs must leave nothing in `/dev/shm`, crashes included.

use std::path::Path;
use std::time::{Duration, Instant};

use oxccl_tests::harness::{
    all_ready, check_init, collectives, names_call, names_peer, report, scenario, serial, start, survivors_end,
    Placement, Problems, READY, TIMEOUT,
};
use oxccl_tests::procs::shm_leftovers;
use oxccl_tests::scenarios::ABORT_REASON;

const BIN: &str = env!("CARGO_BIN_EXE_oxccl-rank");

fn bin() -> &'static Path {
    Path::new(BIN)
}

fn assert_no_leftovers(pids: &[u32]) {
    let left = shm_leftovers(pids);
    assert!(left.is_empty(), "left in /dev/shm by pids {pids:?}: {left:?}");
}

fn run_collectives(transport: &str, n: usize) {
    let _serial = serial();
    let (took, pids) = collectives(bin(), &Placement::local(n), transport, transport, Duration::from_secs(100));
    eprintln!("{transport} collectives with {n} processes: {took:?}");
    if transport == "shm" {
        assert_no_leftovers(&pids);
    }
}

#[test]
fn shm_collectives_2_processes() {
    run_collectives("shm", 2);
}

#[test]
fn shm_collectives_4_processes() {
    run_collectives("shm", 4);
}

#[test]
fn tcp_collectives_2_processes() {
    run_collectives("tcp", 2);
}

#[test]
fn tcp_collectives_4_processes() {
    run_collectives("tcp", 4);
}

/// Kills rank 1 of `n` with SIGKILL once all are in their loop; every
/// other rank must name rank 1 and its call, promptly.
fn kill_rank_1(transport: &str, n: usize, args: &[&str]) {
    let _serial = serial();
    let mut g = start(bin(), &Placement::local(n), transport, TIMEOUT, args);
    let deadline = Instant::now() + READY;
    check_init(&g, transport, deadline);
    all_ready(&g, deadline);
    let killed = Instant::now();
    g.kill(1).unwrap_or_else(|e| panic!("{e}\n{}", g.dump()));
    let survivors: Vec<usize> = (0..n).filter(|&r| r != 1).collect();
    let mut problems = Problems::default();
    let ends = survivors_end(&mut g, &survivors, killed, &mut problems);
    report(&format!("{transport} {args:?}: kill rank 1"), &ends);
    for e in &ends {
        let (r, err) = (e.rank, &e.error);
        problems.check(names_peer(err, 1), || format!("rank {r} does not name rank 1: {err}"));
        problems.check(names_call(err, "all_reduce"), || format!("rank {r} does not name the call: {err}"));
        // A dead process is noticed, not waited out.
        problems.check(err.contains("rank 1 is gone"), || format!("rank {r}: the death was not noticed: {err}"));
    }
    problems.assert_none(&g);
    let pids = g.pids();
    drop(g);
    if transport == "shm" {
        assert_no_leftovers(&pids);
    }
}

#[test]
fn shm_killed_rank_is_reported_by_every_survivor() {
    kill_rank_1("shm", 4, &["loop"]);
}

#[test]
fn shm_killed_rank_is_reported_by_every_survivor_with_shared_buffers() {
    kill_rank_1("shm", 3, &["loop", "shared"]);
}

#[test]
fn tcp_killed_rank_is_reported_by_every_survivor() {
    kill_rank_1("tcp", 4, &["loop"]);
}

/// Rank 1 stops answering after its first call; the others must time out
/// naming it.
fn wedged_rank_1(transport: &str, n: usize, args: &[&str]) {
    let _serial = serial();
    let mut g = start(bin(), &Placement::local(n), transport, TIMEOUT, args);
    let deadline = Instant::now() + READY;
    check_init(&g, transport, deadline);
    all_ready(&g, deadline);
    let wedged = g.wait_line(1, "rank 1 wedging", deadline).unwrap_or_else(|e| panic!("{e}")).at;
    let survivors: Vec<usize> = (0..n).filter(|&r| r != 1).collect();
    let mut problems = Problems::default();
    let ends = survivors_end(&mut g, &survivors, wedged, &mut problems);
    report(&format!("{transport} {args:?}: wedged rank 1"), &ends);
    // Blame is exact over either transport: every survivor names rank 1,
    // also those that were waiting only for a rank that waited for it.
    for e in &ends {
        let (r, err) = (e.rank, &e.error);
        problems.check(err.contains("timed out"), || format!("rank {r}: not a timeout: {err}"));
        problems.check(names_peer(err, 1), || format!("rank {r} does not name rank 1: {err}"));
        problems.check(names_call(err, "all_reduce"), || format!("rank {r} does not name the call: {err}"));
        let early = TIMEOUT - Duration::from_millis(500);
        problems.check(e.after >= early, || format!("rank {r} gave up early, after {:?}: {err}", e.after));
    }
    let wedged_exit = g.wait_exits(&[1], Instant::now());
    problems.check(wedged_exit[0].is_none(), || "the wedged rank exited".into());
    problems.assert_none(&g);
    let pids = g.pids();
    drop(g);
    if transport == "shm" {
        assert_no_leftovers(&pids);
    }
}

#[test]
fn shm_wedged_rank_times_out_every_survivor() {
    wedged_rank_1("shm", 4, &["wedge"]);
}

#[test]
fn shm_wedged_rank_times_out_every_survivor_with_shared_buffers() {
    wedged_rank_1("shm", 3, &["wedge", "shared"]);
}

#[test]
fn tcp_wedged_rank_times_out_every_survivor() {
    wedged_rank_1("tcp", 4, &["wedge"]);
}

/// Rank 0 aborts after its first call; every other rank gets the abort with
/// its reason.
fn abort_by_rank_0(transport: &str, n: usize, args: &[&str]) {
    let _serial = serial();
    let mut g = start(bin(), &Placement::local(n), transport, TIMEOUT, args);
    let deadline = Instant::now() + READY;
    check_init(&g, transport, deadline);
    let aborted = g.wait_line(0, "rank 0 aborting", deadline).unwrap_or_else(|e| panic!("{e}")).at;
    let others: Vec<usize> = (1..n).collect();
    let mut problems = Problems::default();
    let ends = survivors_end(&mut g, &others, aborted, &mut problems);
    report(&format!("{transport} {args:?}: abort by rank 0"), &ends);
    let want = format!("communicator aborted: {ABORT_REASON}");
    for e in &ends {
        problems.check(e.error == want, || format!("rank {}: {:?}, expected {want:?}", e.rank, e.error));
    }
    match g.wait_exits(&[0], Instant::now() + Duration::from_secs(10))[0] {
        Some((status, _)) => problems.check(status.success(), || format!("rank 0 exited with {status}")),
        None => problems.check(false, || "rank 0 did not exit after aborting".into()),
    }
    problems.check(g.find(0, "rank 0 aborted").is_some(), || "rank 0 did not print `aborted`".into());
    problems.assert_none(&g);
    let pids = g.pids();
    drop(g);
    if transport == "shm" {
        assert_no_leftovers(&pids);
    }
}

#[test]
fn shm_abort_reaches_every_rank() {
    abort_by_rank_0("shm", 4, &["abort"]);
}

#[test]
fn shm_abort_reaches_every_rank_with_shared_buffers() {
    abort_by_rank_0("shm", 3, &["abort", "shared"]);
}

#[test]
fn tcp_abort_reaches_every_rank() {
    abort_by_rank_0("tcp", 4, &["abort"]);
}

/// Many short jobs in a row: every set-up (rendezvous, then the transport's
/// connections) must succeed, so a race in either shows up here.
fn repeated_setups(transport: &str, jobs: usize, n: usize) {
    let _serial = serial();
    let began = Instant::now();
    for job in 0..jobs {
        let mut g = start(bin(), &Placement::local(n), transport, Duration::from_secs(10), &["barrier"]);
        let all: Vec<usize> = (0..n).collect();
        let exits = g.wait_exits(&all, Instant::now() + Duration::from_secs(30));
        let mut problems = Problems::default();
        for (r, e) in exits.iter().enumerate() {
            let ok = e.is_some_and(|(s, _)| s.success()) && g.find(r, &format!("rank {r} ok")).is_some();
            problems.check(ok, || format!("job {job} of {jobs}: rank {r} failed: {:?}", e.map(|e| e.0)));
        }
        problems.assert_none(&g);
        let pids = g.pids();
        drop(g);
        if transport == "shm" {
            assert_no_leftovers(&pids);
        }
    }
    eprintln!("{jobs} {transport} jobs of {n} ranks: {:?}", began.elapsed());
}

#[test]
fn shm_repeated_setups_all_succeed() {
    repeated_setups("shm", 10, 4);
}

#[test]
fn tcp_repeated_setups_all_succeed() {
    repeated_setups("tcp", 10, 4);
}

/// Device memory in rank processes over TCP: every process's emulated
/// device, data staged through the transport's host slots, every
/// collective of the staged algorithms checked; direct refused.
fn run_device_collectives(transport: &str, n: usize) {
    let _serial = serial();
    let (took, _) =
        scenario(bin(), &Placement::local(n), transport, transport, Duration::from_secs(300), "device-collectives");
    eprintln!("{transport} device collectives with {n} processes: {took:?}");
}

#[test]
fn tcp_device_collectives_2_processes() {
    run_device_collectives("tcp", 2);
}

#[test]
fn tcp_device_collectives_3_processes() {
    run_device_collectives("tcp", 3);
}

/// A rank killed during device all-reduces staged over TCP: every other
/// rank names it and the call, promptly.
#[test]
fn tcp_device_kill_rank_1() {
    kill_rank_1("tcp", 3, &["device-loop"]);
}

/// Stream-ordered device calls between rank processes over shared memory:
/// each process's emulated device, the ranks' areas shared through emulated
/// IPC handles (no file left in /dev/shm), every collective of the staged
/// algorithms checked; direct refused.
fn run_device_streamed(n: usize) {
    let _serial = serial();
    let (took, pids) = scenario(bin(), &Placement::local(n), "shm", "shm", Duration::from_secs(300), "device-streamed");
    eprintln!("shm stream-ordered device collectives with {n} processes: {took:?}");
    assert_no_leftovers(&pids);
}

#[test]
fn shm_device_streamed_2_processes() {
    run_device_streamed(2);
}

#[test]
fn shm_device_streamed_3_processes() {
    run_device_streamed(3);
}

/// A rank killed during stream-ordered device all-reduces between
/// processes: the survivors' streams stop waiting for it, and their
/// async-error query names it and the call, promptly.
#[test]
fn shm_device_streamed_kill_rank_1() {
    kill_rank_1("shm", 3, &["device-streamed-loop"]);
}

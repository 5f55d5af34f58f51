//! `oxccl perf --transport rdma` end to end: `oxccl run` starts 2 and 3
//! ranks that meet at rendezvous and sweep all-reduce sizes over RDMA with
//! every message-passing algorithm, checking every result.
//!
//! Needs an RDMA device: it runs inside the Soft-RoCE guest (`rdma/guest/`,
//! which CI drives through `rdma/guest/ci.sh` with this binary and `oxccl`
//! packed in); anywhere else it fails and says so. Speeds there are
//! emulation speeds, printed for the record, never asserted.
#![cfg(feature = "rdma")]

use std::process::Command;

fn in_guest() {
    assert!(
        std::env::var_os("RXE_DEV").is_some(),
        "RXE_DEV is not set: this test runs only inside the Soft-RoCE guest (rdma/guest/run.sh; CI: rdma/guest/ci.sh)"
    );
}

/// `oxccl run -n RANKS -- LAUNCH... perf all_reduce PERF...` with its
/// rendezvous at `port`: asserts it succeeded with every result right, and
/// returns (stdout, stderr).
fn perf(ranks: &str, port: &str, launch: &[&str], perf: &[&str], what: &str) -> (String, String) {
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    let out = Command::new(oxccl)
        .args(["run", "-n", ranks, "--"])
        .args(launch)
        .args(["perf", "all_reduce", "-c", "1", "--no-membw"])
        .args(perf)
        .env("OXCCL_MASTER_PORT", port)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("--- {what} (Soft-RoCE, emulation speed):\n{stdout}{stderr}");
    assert!(out.status.success(), "{what}: {:?}", out.status);
    assert!(stdout.contains("Out of bounds values : 0 OK"), "{what}: results not all correct");
    (stdout, stderr)
}

#[test]
fn perf_sweep_over_rdma() {
    in_guest();
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    for (ranks, port) in [("2", "29621"), ("3", "29622")] {
        let sweep = ["--transport", "rdma", "-b", "8", "-e", "1M", "-f", "32", "-n", "10", "-w", "2"];
        let what = format!("{ranks} ranks over RDMA");
        let (stdout, _) = perf(ranks, port, &[oxccl], &[&sweep[..], &["--algo", "ring,tree,rhd"]].concat(), &what);
        // 8 B, 256 B, 8 KiB, 256 KiB (and 1 MiB is past the end): rows for each algorithm.
        for algo in ["ring", "tree", "rhd"] {
            assert!(
                stdout.lines().any(|l| l.split_whitespace().next() == Some("262144") && l.contains(algo)),
                "{ranks} ranks: no {algo} row of 262144 B"
            );
        }
    }
}

/// `--transport auto` in a build with RDMA, ranks on two "hosts" (host ids
/// set per rank): shared memory inside a host, RDMA between them, every
/// result checked.
#[test]
fn perf_auto_over_shm_and_rdma() {
    in_guest();
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    let rank = format!("OXCCL_HOST_ID=host$((OXCCL_RANK / 2)) exec {oxccl} \"$@\"");
    let sweep =
        ["--transport", "auto", "-b", "8", "-e", "256K", "-f", "32", "-n", "5", "-w", "1", "--algo", "ring,rhd"];
    let (_, stderr) = perf("4", "29623", &["sh", "-c", &rank, "rank"], &sweep, "4 ranks on 2 hosts, transport auto");
    assert!(stderr.contains("rank 0's transport: shm+rdma (2 of 4 ranks on this host)"), "{stderr}");
}

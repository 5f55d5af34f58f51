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

#[test]
fn perf_sweep_over_rdma() {
    assert!(
        std::env::var_os("RXE_DEV").is_some(),
        "RXE_DEV is not set: this test runs only inside the Soft-RoCE guest (rdma/guest/run.sh; CI: rdma/guest/ci.sh)"
    );
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    for (ranks, port) in [("2", "29621"), ("3", "29622")] {
        let out = Command::new(oxccl)
            .args(["run", "-n", ranks, "--", oxccl, "perf", "all_reduce", "--transport", "rdma"])
            .args(["-b", "8", "-e", "1M", "-f", "32", "-n", "10", "-w", "2", "-c", "1", "--no-membw"])
            .args(["--algo", "ring,tree,rhd"])
            .env("OXCCL_MASTER_PORT", port)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("--- {ranks} ranks over RDMA (Soft-RoCE, emulation speed):\n{stdout}{stderr}");
        assert!(out.status.success(), "{ranks} ranks: {:?}", out.status);
        assert!(stdout.contains("Out of bounds values : 0 OK"), "{ranks} ranks: results not all correct");
        // 8 B, 256 B, 8 KiB, 256 KiB (and 1 MiB is past the end): rows for each algorithm.
        for size in ["262144"] {
            for algo in ["ring", "tree", "rhd"] {
                assert!(
                    stdout.lines().any(|l| l.split_whitespace().next() == Some(size) && l.contains(algo)),
                    "{ranks} ranks: no {algo} row of {size} B"
                );
            }
        }
    }
}

/// `--transport auto` in a build with RDMA, ranks on two "hosts" (host ids
/// set per rank): shared memory inside a host, RDMA between them, every
/// result checked.
#[test]
fn perf_auto_over_shm_and_rdma() {
    assert!(
        std::env::var_os("RXE_DEV").is_some(),
        "RXE_DEV is not set: this test runs only inside the Soft-RoCE guest"
    );
    let oxccl = env!("CARGO_BIN_EXE_oxccl");
    let rank = format!("OXCCL_HOST_ID=host$((OXCCL_RANK / 2)) exec {oxccl} \"$@\"");
    let out = Command::new(oxccl)
        .args(["run", "-n", "4", "--", "sh", "-c", &rank, "rank", "perf", "all_reduce", "--transport", "auto"])
        .args(["-b", "8", "-e", "256K", "-f", "32", "-n", "5", "-w", "1", "-c", "1", "--no-membw"])
        .args(["--algo", "ring,rhd"])
        .env("OXCCL_MASTER_PORT", "29623")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- 4 ranks on 2 hosts, transport auto (Soft-RoCE, emulation speed):\n{stdout}{stderr}");
    assert!(out.status.success(), "{:?}", out.status);
    assert!(stderr.contains("rank 0's transport: shm+rdma (2 of 4 ranks on this host)"), "{stderr}");
    assert!(stdout.contains("Out of bounds values : 0 OK"), "results not all correct");
}
